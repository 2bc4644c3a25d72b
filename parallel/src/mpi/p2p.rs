//! Non-blocking point-to-point of `MpiComm`: MPI_Isend / MPI_Irecv on buffers the request owns.
//!
//! Contract (see comm/p2p.rs for the user side):
//! - Start, test and cancel are single MPI calls under the runtime's call lock. `wait` polls
//!   MPI_Test, releasing the lock between polls (yield, then sleeps growing to 200 µs), so other
//!   threads' MPI calls are not shut out while a receive waits; the whole wait is armed on the
//!   runtime's watchdog like a blocking collective ("collective recv on group … timed out").
//! - MPI reads a send's buffer until the request completes: the buffer lives in the request. A
//!   send dropped unfinished is handed to MPI_Request_free (it still completes) and its buffer
//!   is leaked rather than freed under MPI's feet (error paths only).
//! - A receive dropped unfinished is cancelled (MPI_Cancel, then MPI_Wait, which returns at
//!   once for a cancelled receive).
//! - A message shorter than the posted receive is an error naming both lengths (a longer one is
//!   MPI_ERR_TRUNCATE, fatal under MPI's default error handler, like the blocking `recv`).

use std::mem::MaybeUninit;
use std::os::raw::{c_int, c_void};
use std::time::Duration;

use mpi::datatype::Equivalence;
use mpi::ffi;
use mpi::raw::AsRaw;
use mpi::topology::SimpleCommunicator;

use crate::comm::buffer::{Buf, Dtype};
use crate::comm::error::CommError;
use crate::comm::p2p::{OwnedBuf, PendingRecv, PendingSend};

use super::runtime::MpiRuntime;

/// Who is communicating, for the lock, the watchdog and error messages.
#[derive(Clone, Copy)]
pub(crate) struct Caller<'c> {
    pub runtime: &'c MpiRuntime,
    pub comm: &'c SimpleCommunicator,
    pub group: &'c str,
    pub rank: usize,
}

impl Caller<'_> {
    fn check(&self, op: &'static str, rc: c_int) -> Result<(), CommError> {
        if rc == ffi::MPI_SUCCESS as c_int {
            return Ok(());
        }
        Err(CommError::Transport {
            op,
            group: self.group.to_string(),
            rank: self.rank,
            reason: format!("MPI returned error code {rc}"),
        })
    }

    /// Polls `done` (which makes one MPI_Test under the lock) until it says true, armed on the
    /// watchdog for the whole wait.
    fn poll(
        &self,
        op: &'static str,
        mut done: impl FnMut() -> Result<bool, CommError>,
    ) -> Result<(), CommError> {
        let _watch = self.runtime.watchdog().arm(op, self.group, self.rank);
        let mut idle_polls = 0u32;
        while !done()? {
            idle_polls += 1;
            if idle_polls < 64 {
                std::thread::yield_now();
            } else {
                let micros = (idle_polls as u64 - 63).min(200);
                std::thread::sleep(Duration::from_micros(micros));
            }
        }
        Ok(())
    }
}

fn datatype(dtype: Dtype) -> ffi::MPI_Datatype {
    match dtype {
        Dtype::F32 => f32::equivalent_datatype().as_raw(),
        Dtype::F64 => f64::equivalent_datatype().as_raw(),
        Dtype::I32 => i32::equivalent_datatype().as_raw(),
    }
}

fn null_request() -> ffi::MPI_Request {
    // SAFETY: reads a constant the mpi-sys shim defines.
    unsafe { ffi::RSMPI_REQUEST_NULL }
}

/// MPI_Test on `request`; Some(status) once complete.
fn test_request(request: &mut ffi::MPI_Request) -> (c_int, Option<ffi::MPI_Status>) {
    let mut flag: c_int = 0;
    let mut status = MaybeUninit::<ffi::MPI_Status>::uninit();
    // SAFETY: `request` is a live request of this process; flag and status are written by MPI.
    let rc = unsafe { ffi::MPI_Test(request, &mut flag, status.as_mut_ptr()) };
    // SAFETY: MPI fills the status when flag is set.
    let status = (flag != 0).then(|| unsafe { status.assume_init() });
    (rc, status)
}

/// A send in flight; owns its buffer.
pub(crate) struct MpiSend<'c> {
    caller: Caller<'c>,
    request: ffi::MPI_Request,
    data: Option<OwnedBuf>,
    done: bool,
}

impl<'c> MpiSend<'c> {
    pub(crate) fn start(
        caller: Caller<'c>,
        data: OwnedBuf,
        dest: usize,
        tag: u32,
    ) -> Result<Self, CommError> {
        let mut request = null_request();
        let buf: Buf<'_> = data.as_buf();
        let rc = {
            let _serial = caller.runtime.lock();
            // SAFETY: the buffer is owned by the returned request and outlives the operation
            // (or is leaked, see Drop); count fits an int (checked by the caller).
            unsafe {
                ffi::MPI_Isend(
                    buf.as_bytes().as_ptr() as *const c_void,
                    buf.len() as c_int,
                    datatype(buf.dtype()),
                    dest as c_int,
                    tag as c_int,
                    caller.comm.as_raw(),
                    &mut request,
                )
            }
        };
        caller.check("isend", rc)?;
        Ok(MpiSend {
            caller,
            request,
            data: Some(data),
            done: false,
        })
    }
}

impl PendingSend for MpiSend<'_> {
    fn test(&mut self) -> Result<bool, CommError> {
        if !self.done {
            let (rc, status) = {
                let _serial = self.caller.runtime.lock();
                test_request(&mut self.request)
            };
            self.caller.check("isend", rc)?;
            if status.is_some() {
                self.done = true;
                self.data = None;
            }
        }
        Ok(self.done)
    }

    fn wait(&mut self) -> Result<(), CommError> {
        let caller = self.caller;
        caller.poll("send", || self.test())
    }
}

impl Drop for MpiSend<'_> {
    fn drop(&mut self) {
        if !self.done {
            let _serial = self.caller.runtime.lock();
            // SAFETY: the request is live; MPI completes it in the background. The buffer it
            // reads is leaked below so it stays valid.
            unsafe {
                ffi::MPI_Request_free(&mut self.request);
            }
            std::mem::forget(self.data.take());
        }
    }
}

/// A receive in flight; owns the buffer MPI writes.
pub(crate) struct MpiRecv<'c> {
    caller: Caller<'c>,
    request: ffi::MPI_Request,
    data: Option<OwnedBuf>,
    src: usize,
    done: bool,
}

impl<'c> MpiRecv<'c> {
    pub(crate) fn start(
        caller: Caller<'c>,
        dtype: Dtype,
        len: usize,
        src: usize,
        tag: u32,
    ) -> Result<Self, CommError> {
        let mut data = OwnedBuf::zeros(dtype, len);
        let mut request = null_request();
        let rc = {
            let mut view = data.as_buf_mut();
            let bytes = view.as_bytes_mut();
            let _serial = caller.runtime.lock();
            // SAFETY: the buffer (a Vec's heap block, which does not move with the request) is
            // owned by the returned request and stays alive until the receive completes or is
            // cancelled (Drop).
            unsafe {
                ffi::MPI_Irecv(
                    bytes.as_mut_ptr() as *mut c_void,
                    len as c_int,
                    datatype(dtype),
                    src as c_int,
                    tag as c_int,
                    caller.comm.as_raw(),
                    &mut request,
                )
            }
        };
        caller.check("irecv", rc)?;
        Ok(MpiRecv {
            caller,
            request,
            data: Some(data),
            src,
            done: false,
        })
    }
}

impl PendingRecv for MpiRecv<'_> {
    fn test(&mut self) -> Result<bool, CommError> {
        if self.done {
            return Ok(true);
        }
        let (rc, status) = {
            let _serial = self.caller.runtime.lock();
            test_request(&mut self.request)
        };
        self.caller.check("irecv", rc)?;
        let Some(status) = status else {
            return Ok(false);
        };
        self.done = true;
        let expected = self.data.as_ref().map_or(0, OwnedBuf::len);
        let dtype = self.data.as_ref().map_or(Dtype::F32, OwnedBuf::dtype);
        let mut count: c_int = 0;
        // SAFETY: status is the completed receive's; count is written by MPI.
        let rc = unsafe { ffi::MPI_Get_count(&status, datatype(dtype), &mut count) };
        self.caller.check("irecv", rc)?;
        if count as usize != expected {
            return Err(CommError::invalid(
                "irecv",
                self.caller.group,
                format!(
                    "expected {expected} elements from rank {} but received {count}",
                    self.src
                ),
            ));
        }
        Ok(true)
    }

    fn wait(&mut self) -> Result<OwnedBuf, CommError> {
        let caller = self.caller;
        caller.poll("recv", || self.test())?;
        self.data.take().ok_or_else(|| {
            CommError::invalid("irecv", caller.group, "the message was already taken")
        })
    }
}

impl Drop for MpiRecv<'_> {
    fn drop(&mut self) {
        if !self.done {
            let _serial = self.caller.runtime.lock();
            // SAFETY: cancelling and completing a live receive; MPI stops writing the buffer
            // before MPI_Wait returns, and only then is the buffer dropped.
            unsafe {
                ffi::MPI_Cancel(&mut self.request);
                ffi::MPI_Wait(&mut self.request, ffi::RSMPI_STATUS_IGNORE);
            }
        }
    }
}
