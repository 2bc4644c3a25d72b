//! The launcher's command-line arguments and errors.

use std::net::ToSocketAddrs;
use std::path::PathBuf;

/// `ferrotron launch` arguments (torchrun's names).
#[derive(clap::Args, Clone, Debug, PartialEq, Eq)]
pub struct LaunchArgs {
    /// Ranks to start on this node.
    #[arg(long, default_value_t = 1)]
    pub nproc_per_node: usize,
    /// Nodes in the job.
    #[arg(long, default_value_t = 1)]
    pub nnodes: usize,
    /// This node's index in 0..nnodes.
    #[arg(long, default_value_t = 0)]
    pub node_rank: usize,
    /// Address of the node running global rank 0 (serves the rendezvous store).
    #[arg(long, default_value = "127.0.0.1")]
    pub master_addr: String,
    /// Port of the rendezvous store on the master node.
    #[arg(long, default_value_t = 29500)]
    pub master_port: u16,
    /// Arguments given to every rank, after `--` (e.g. `train RECIPE.toml`).
    #[arg(last = true, required = true)]
    pub args: Vec<String>,
    /// Program to start; None starts the current executable (what `ferrotron launch` does).
    #[arg(skip)]
    pub program: Option<PathBuf>,
}

/// Why the launcher could not start or supervise the ranks.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("invalid launch arguments: {0}")]
    InvalidArgs(String),
    #[error("could not start rank {rank} ({program}): {source}")]
    Spawn {
        rank: usize,
        program: String,
        source: std::io::Error,
    },
    #[error("could not find the current executable to launch: {0}")]
    CurrentExe(std::io::Error),
    #[error("could not supervise the ranks: {0}")]
    Wait(std::io::Error),
}

impl LaunchArgs {
    pub(crate) fn validate(&self) -> Result<(), LaunchError> {
        if self.nproc_per_node == 0 {
            return Err(LaunchError::InvalidArgs(
                "--nproc-per-node must be at least 1".into(),
            ));
        }
        if self.nnodes == 0 || self.node_rank >= self.nnodes {
            return Err(LaunchError::InvalidArgs(format!(
                "--node-rank {} must be below --nnodes {}",
                self.node_rank, self.nnodes
            )));
        }
        if (self.master_addr.as_str(), self.master_port)
            .to_socket_addrs()
            .map_or(true, |mut a| a.next().is_none())
        {
            return Err(LaunchError::InvalidArgs(format!(
                "--master-addr {} does not resolve to an address (ranks would wait for the rendezvous until it times out)",
                self.master_addr
            )));
        }
        if self.master_port == 0 {
            return Err(LaunchError::InvalidArgs(
                "--master-port must be a port number between 1 and 65535".into(),
            ));
        }
        Ok(())
    }
}
