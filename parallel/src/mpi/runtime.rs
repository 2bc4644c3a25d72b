//! `MpiRuntime`: MPI initialised once per process, owned by the program (not a hidden global).
//!
//! Contract: `MpiRuntime::init(timeout)` calls MPI_Init_thread (asking for MPI_THREAD_MULTIPLE,
//! accepting SERIALIZED or better) and fails with an error if MPI is already initialised or not
//! available. Every communicator holds an `Arc` of the runtime, so MPI_Finalize runs when the
//! last one is dropped: drop the world and all groups before the process exits, or Open MPI
//! reports the rank as having exited without finalising. All MPI calls of the process go
//! through `lock()`, one at a time. Blocking calls are watched by a watchdog that ends the
//! process after `collective_timeout` (see `watchdog.rs`).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use mpi::environment::{Threading, Universe};

use crate::comm::error::CommError;
use crate::comm::Comm;
use crate::watchdog::Watchdog;

use super::comm::MpiComm;

/// Default collective timeout of the MPI backend.
pub const DEFAULT_COLLECTIVE_TIMEOUT: Duration = Duration::from_secs(300);

struct UniverseCell(#[allow(dead_code)] Universe);

// SAFETY: the universe is only touched when it is dropped (MPI_Finalize), which happens once,
// after every communicator holding the runtime is gone.
unsafe impl Send for UniverseCell {}
unsafe impl Sync for UniverseCell {}

/// The MPI library of this process.
pub struct MpiRuntime {
    watchdog: Watchdog,
    calls: Mutex<()>,
    _universe: UniverseCell,
}

impl MpiRuntime {
    /// Initialises MPI. Fails if MPI was already initialised in this process.
    pub fn init(collective_timeout: Duration) -> Result<Arc<MpiRuntime>, CommError> {
        let (universe, threading) = mpi::initialize_with_threading(Threading::Multiple)
            .ok_or_else(|| {
                CommError::Setup("MPI is already initialised in this process".to_string())
            })?;
        if threading < Threading::Serialized {
            return Err(CommError::Setup(format!(
                "the MPI library provides thread level {threading:?}; ferrotron needs Serialized or better"
            )));
        }
        Ok(Arc::new(MpiRuntime {
            watchdog: Watchdog::aborting(collective_timeout),
            calls: Mutex::new(()),
            _universe: UniverseCell(universe),
        }))
    }

    /// The communicator of all ranks of the job, named "world".
    pub fn world(self: &Arc<Self>) -> Arc<dyn Comm> {
        Arc::new(MpiComm::world(Arc::clone(self)))
    }

    pub(crate) fn watchdog(&self) -> &Watchdog {
        &self.watchdog
    }

    /// Serialises MPI calls across threads.
    pub(crate) fn lock(&self) -> MutexGuard<'_, ()> {
        self.calls
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
