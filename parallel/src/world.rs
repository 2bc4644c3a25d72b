//! Opening the world communicator for the environment this process was started in.
//!
//! Contract: the program calls `init_world(&env::detect_from_process()?, &options)` once, at
//! start, and passes the returned communicator (or `MeshComms` built from it) to the trainer.
//! - single process: `LocalComm`.
//! - mpirun / PMI / srun: `MpiComm`. MPI is initialised here and finalised when the last
//!   communicator is dropped: drop them before exiting.
//! - torchrun / ferrotron launch: `TcpComm`, rendezvous through the store at
//!   MASTER_ADDR:MASTER_PORT (served by rank 0).
//!
//! The MPI world size must agree with the detected one. A multi-rank world starts this rank's
//! status board (`forensics::start`, one all_gather) before it is returned.

use std::sync::Arc;
use std::time::Duration;

use crate::comm::error::CommError;
use crate::comm::local::LocalComm;
use crate::comm::Comm;
use crate::env::{BackendKind, DistEnv};
use crate::mpi::runtime::{MpiRuntime, DEFAULT_COLLECTIVE_TIMEOUT};
use crate::tcp::comm::TcpComm;

/// Timeouts used when opening the world.
#[derive(Clone, Copy, Debug)]
pub struct WorldOptions {
    /// How long one collective may block before the job fails (MPI: the process aborts;
    /// TCP: the call returns an error).
    pub collective_timeout: Duration,
    /// How long ranks wait for each other at start (TCP rendezvous).
    pub rendezvous_timeout: Duration,
}

impl Default for WorldOptions {
    fn default() -> Self {
        WorldOptions {
            collective_timeout: DEFAULT_COLLECTIVE_TIMEOUT,
            rendezvous_timeout: Duration::from_secs(300),
        }
    }
}

/// Opens the world communicator for `env`.
pub fn init_world(env: &DistEnv, options: &WorldOptions) -> Result<Arc<dyn Comm>, CommError> {
    match env.backend() {
        BackendKind::Local => Ok(Arc::new(LocalComm::new())),
        BackendKind::Mpi => {
            let runtime = MpiRuntime::init(options.collective_timeout)?;
            let world = runtime.world();
            if world.size() != env.world_size || world.rank() != env.rank {
                return Err(CommError::Setup(format!(
                    "MPI reports rank {} of {} but the environment says rank {} of {} (start the program with mpirun or srun, not directly inside an allocation)",
                    world.rank(),
                    world.size(),
                    env.rank,
                    env.world_size
                )));
            }
            crate::forensics::start(&*world, None)?;
            Ok(world)
        }
        BackendKind::Tcp => {
            let (addr, port) = match (&env.master_addr, env.master_port) {
                (Some(a), Some(p)) => (a.clone(), p),
                _ => return Err(CommError::Setup(
                    "MASTER_ADDR and MASTER_PORT must be set for a multi-rank torchrun-style job"
                        .to_string(),
                )),
            };
            let comm = TcpComm::connect_world(
                &addr,
                port,
                env.rank,
                env.world_size,
                options.rendezvous_timeout,
                options.collective_timeout,
            )?;
            crate::forensics::start(&comm, Some(&addr))?;
            Ok(Arc::new(comm))
        }
    }
}
