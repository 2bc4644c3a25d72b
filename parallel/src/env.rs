//! Detecting how this process was started, from its environment variables. This is the one
//! place ferrotron reads launcher variables; the trainer passes the result on.
//!
//! Precedence (first match wins):
//! 1. torchrun / `ferrotron launch`: RANK, WORLD_SIZE (+ LOCAL_RANK, LOCAL_WORLD_SIZE,
//!    MASTER_ADDR, MASTER_PORT). Checked first because `srun ferrotron launch` and torchrun
//!    children also carry Slurm variables. Backend: TCP (rendezvous at MASTER_ADDR:MASTER_PORT).
//! 2. Open MPI (mpirun): OMPI_COMM_WORLD_RANK, OMPI_COMM_WORLD_SIZE, OMPI_COMM_WORLD_LOCAL_RANK.
//! 3. PMI (MPICH / Intel MPI hydra): PMI_RANK, PMI_SIZE.
//! 4. Slurm (srun): SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID. Backend: MPI (MPI_Init talks
//!    to Slurm's PMI). A batch step with SLURM_NTASKS > 1 but no srun is still detected as Slurm.
//! 5. Nothing: a single process.
//!
//! Malformed values are errors naming the variable.

use std::collections::HashMap;

/// Who started the process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Launcher {
    Single,
    Torchrun,
    OpenMpi,
    Pmi,
    Slurm,
}

/// Which communicator backend the world uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendKind {
    Local,
    Mpi,
    Tcp,
}

/// The distributed environment of this process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DistEnv {
    pub launcher: Launcher,
    pub rank: usize,
    pub world_size: usize,
    pub local_rank: usize,
    pub local_world_size: Option<usize>,
    pub master_addr: Option<String>,
    pub master_port: Option<u16>,
}

impl DistEnv {
    pub fn single() -> Self {
        DistEnv {
            launcher: Launcher::Single,
            rank: 0,
            world_size: 1,
            local_rank: 0,
            local_world_size: Some(1),
            master_addr: None,
            master_port: None,
        }
    }

    /// The backend that gives this launcher's ranks a world communicator.
    pub fn backend(&self) -> BackendKind {
        match self.launcher {
            Launcher::Single => BackendKind::Local,
            Launcher::Torchrun if self.world_size == 1 => BackendKind::Local,
            Launcher::Torchrun => BackendKind::Tcp,
            Launcher::OpenMpi | Launcher::Pmi | Launcher::Slurm => BackendKind::Mpi,
        }
    }
}

/// Detects the environment from the current process's variables.
pub fn detect_from_process() -> Result<DistEnv, String> {
    detect(&std::env::vars().collect())
}

/// Detects the environment from a map of variables (pure; unit-tested).
pub fn detect(vars: &HashMap<String, String>) -> Result<DistEnv, String> {
    let has = |k: &str| vars.contains_key(k);
    let (launcher, rank_var, size_var, local_var) = if has("RANK") && has("WORLD_SIZE") {
        (Launcher::Torchrun, "RANK", "WORLD_SIZE", "LOCAL_RANK")
    } else if has("OMPI_COMM_WORLD_RANK") {
        (
            Launcher::OpenMpi,
            "OMPI_COMM_WORLD_RANK",
            "OMPI_COMM_WORLD_SIZE",
            "OMPI_COMM_WORLD_LOCAL_RANK",
        )
    } else if has("PMI_RANK") {
        (Launcher::Pmi, "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID")
    } else if has("SLURM_PROCID") && has("SLURM_NTASKS") {
        (
            Launcher::Slurm,
            "SLURM_PROCID",
            "SLURM_NTASKS",
            "SLURM_LOCALID",
        )
    } else {
        return Ok(DistEnv::single());
    };
    let rank = required(vars, rank_var)?;
    let world_size = required(vars, size_var)?;
    if world_size == 0 || rank >= world_size {
        return Err(format!(
            "environment variable {rank_var}={rank} is not below {size_var}={world_size}"
        ));
    }
    let local_rank = optional(vars, local_var)?.unwrap_or(0);
    let local_world_size = match launcher {
        Launcher::Torchrun => optional(vars, "LOCAL_WORLD_SIZE")?,
        Launcher::OpenMpi => optional(vars, "OMPI_COMM_WORLD_LOCAL_SIZE")?,
        Launcher::Pmi => optional(vars, "MPI_LOCALNRANKS")?,
        _ => None,
    };
    let (master_addr, master_port) = if launcher == Launcher::Torchrun {
        let addr = vars.get("MASTER_ADDR").cloned();
        let port = optional(vars, "MASTER_PORT")?;
        let port = match port {
            Some(p) if p > u16::MAX as usize || p == 0 => {
                return Err(format!(
                    "environment variable MASTER_PORT={p} is not a TCP port"
                ))
            }
            Some(p) => Some(p as u16),
            None => None,
        };
        if world_size > 1 && (addr.is_none() || port.is_none()) {
            return Err(format!(
                "RANK and WORLD_SIZE={world_size} are set but MASTER_ADDR or MASTER_PORT is missing"
            ));
        }
        (addr, port)
    } else {
        (None, None)
    };
    Ok(DistEnv {
        launcher,
        rank,
        world_size,
        local_rank,
        local_world_size,
        master_addr,
        master_port,
    })
}

fn optional(vars: &HashMap<String, String>, key: &str) -> Result<Option<usize>, String> {
    match vars.get(key) {
        None => Ok(None),
        Some(v) => {
            v.trim().parse::<usize>().map(Some).map_err(|_| {
                format!("environment variable {key}={v:?} is not a non-negative integer")
            })
        }
    }
}

fn required(vars: &HashMap<String, String>, key: &str) -> Result<usize, String> {
    optional(vars, key)?.ok_or_else(|| format!("environment variable {key} is missing"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn nothing_set_is_a_single_process() {
        let d = detect(&env(&[("HOME", "/root")])).unwrap();
        assert_eq!(d, DistEnv::single());
        assert_eq!(d.backend(), BackendKind::Local);
    }

    #[test]
    fn torchrun_variables() {
        let d = detect(&env(&[
            ("RANK", "3"),
            ("WORLD_SIZE", "4"),
            ("LOCAL_RANK", "1"),
            ("LOCAL_WORLD_SIZE", "2"),
            ("MASTER_ADDR", "10.0.0.1"),
            ("MASTER_PORT", "29500"),
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "2"),
        ]))
        .unwrap();
        assert_eq!(d.launcher, Launcher::Torchrun);
        assert_eq!((d.rank, d.world_size, d.local_rank), (3, 4, 1));
        assert_eq!(d.local_world_size, Some(2));
        assert_eq!(d.master_addr.as_deref(), Some("10.0.0.1"));
        assert_eq!(d.master_port, Some(29500));
        assert_eq!(d.backend(), BackendKind::Tcp);
    }

    #[test]
    fn open_mpi_variables() {
        let d = detect(&env(&[
            ("OMPI_COMM_WORLD_RANK", "1"),
            ("OMPI_COMM_WORLD_SIZE", "2"),
            ("OMPI_COMM_WORLD_LOCAL_RANK", "1"),
            ("OMPI_COMM_WORLD_LOCAL_SIZE", "2"),
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "1"),
        ]))
        .unwrap();
        assert_eq!(d.launcher, Launcher::OpenMpi);
        assert_eq!((d.rank, d.world_size, d.local_rank), (1, 2, 1));
        assert_eq!(d.backend(), BackendKind::Mpi);
    }

    #[test]
    fn pmi_and_slurm_variables() {
        let d = detect(&env(&[("PMI_RANK", "5"), ("PMI_SIZE", "8")])).unwrap();
        assert_eq!((d.launcher, d.rank, d.world_size), (Launcher::Pmi, 5, 8));
        let d = detect(&env(&[
            ("SLURM_PROCID", "2"),
            ("SLURM_NTASKS", "4"),
            ("SLURM_LOCALID", "0"),
        ]))
        .unwrap();
        assert_eq!((d.launcher, d.rank, d.world_size), (Launcher::Slurm, 2, 4));
        assert_eq!(d.backend(), BackendKind::Mpi);
    }

    #[test]
    fn malformed_values_name_the_variable() {
        let err = detect(&env(&[("RANK", "x"), ("WORLD_SIZE", "2")])).unwrap_err();
        assert_eq!(
            err,
            "environment variable RANK=\"x\" is not a non-negative integer"
        );
        let err = detect(&env(&[("PMI_RANK", "4"), ("PMI_SIZE", "4")])).unwrap_err();
        assert!(err.contains("PMI_RANK=4 is not below PMI_SIZE=4"), "{err}");
        let err = detect(&env(&[("RANK", "0"), ("WORLD_SIZE", "2")])).unwrap_err();
        assert!(err.contains("MASTER_ADDR"), "{err}");
        let err = detect(&env(&[("OMPI_COMM_WORLD_RANK", "0")])).unwrap_err();
        assert!(err.contains("OMPI_COMM_WORLD_SIZE is missing"), "{err}");
    }
}
