//! `MpiComm`: a `Comm` over an MPI communicator, for host buffers.
//!
//! Mapping: all_reduce -> MPI_Allreduce (into a copy of the input; Avg = sum, then divide),
//! reduce_scatter -> MPI_Reduce_scatter_block (input length = size x output length; callers
//! pad), all_gather -> MPI_Allgather, broadcast -> MPI_Bcast, send/recv -> MPI_Send/MPI_Recv
//! with the user tag (must be <= 32767, the smallest MPI_TAG_UB the standard allows),
//! split -> MPI_Comm_split, isend/irecv -> MPI_Isend/MPI_Irecv (p2p.rs). Every call is armed
//! on the runtime's watchdog.

use std::sync::Arc;

use mpi::collective::SystemOperation;
use mpi::topology::{Color, SimpleCommunicator};
use mpi::traits::*;

use crate::comm::buffer::{Buf, BufMut, ReduceOp};
use crate::comm::counters::CommCounters;
use crate::comm::error::CommError;
use crate::comm::p2p::{OwnedBuf, PendingRecv, PendingSend};
use crate::comm::Comm;
use crate::Dtype;

use super::p2p::{Caller, MpiRecv, MpiSend};
use super::runtime::MpiRuntime;

/// Largest tag accepted by `send`/`recv`.
pub const MAX_TAG: u32 = 32767;

struct Handle(SimpleCommunicator);

// SAFETY: every use of the handle holds the runtime's call lock, so MPI sees the calls one at a
// time (the runtime requires MPI_THREAD_SERIALIZED or better).
unsafe impl Send for Handle {}
unsafe impl Sync for Handle {}

/// A process group backed by an MPI communicator.
pub struct MpiComm {
    // Dropped before `runtime`, so MPI_Comm_free runs before MPI_Finalize.
    handle: Handle,
    rank: usize,
    size: usize,
    name: String,
    counters: CommCounters,
    runtime: Arc<MpiRuntime>,
}

impl MpiComm {
    pub(crate) fn world(runtime: Arc<MpiRuntime>) -> MpiComm {
        Self::wrap(runtime, SimpleCommunicator::world(), "world")
    }

    fn wrap(runtime: Arc<MpiRuntime>, comm: SimpleCommunicator, name: &str) -> MpiComm {
        MpiComm {
            rank: comm.rank() as usize,
            size: comm.size() as usize,
            handle: Handle(comm),
            name: name.to_string(),
            counters: CommCounters::new(),
            runtime,
        }
    }

    /// Runs one MPI call under the call lock and the watchdog.
    fn call<T>(&self, op: &'static str, f: impl FnOnce(&SimpleCommunicator) -> T) -> T {
        let _serial = self.runtime.lock();
        let _watch = self.runtime.watchdog().arm(op, &self.name, self.rank);
        f(&self.handle.0)
    }
}

fn system_op(op: ReduceOp) -> SystemOperation {
    match op {
        ReduceOp::Sum | ReduceOp::Avg => SystemOperation::sum(),
        ReduceOp::Max => SystemOperation::max(),
        ReduceOp::Min => SystemOperation::min(),
    }
}

fn check_tag(op: &'static str, group: &str, tag: u32) -> Result<(), CommError> {
    if tag > MAX_TAG {
        return Err(CommError::invalid(
            op,
            group,
            format!("tag {tag} is above the MPI limit {MAX_TAG}"),
        ));
    }
    Ok(())
}

/// MPI counts are C ints: refuse buffers that would overflow them instead of truncating.
fn check_count(op: &'static str, group: &str, len: usize) -> Result<(), CommError> {
    if len > i32::MAX as usize {
        return Err(CommError::invalid(
            op,
            group,
            format!(
                "a buffer of {len} elements exceeds MPI's limit of {} elements per call; split it",
                i32::MAX
            ),
        ));
    }
    Ok(())
}

fn mismatch(op: &'static str, group: &str) -> CommError {
    CommError::invalid(op, group, "input and output element types differ")
}

impl Comm for MpiComm {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.size
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn counters(&self) -> &CommCounters {
        &self.counters
    }
    /// MPI_Abort on the world, without the call lock: another thread may be blocked in a call
    /// holding it, and nothing runs after this.
    fn abort(&self, code: i32) -> ! {
        SimpleCommunicator::world().abort(code)
    }

    fn backend_all_reduce(&self, mut buf: BufMut<'_>, op: ReduceOp) -> Result<(), CommError> {
        check_count("all_reduce", &self.name, buf.len())?;
        let mpi_op = system_op(op);
        self.call("all_reduce", |c| match buf.reborrow() {
            BufMut::F32(s) => c.all_reduce_into(&s.to_vec()[..], s, mpi_op),
            BufMut::F64(s) => c.all_reduce_into(&s.to_vec()[..], s, mpi_op),
            BufMut::I32(s) => c.all_reduce_into(&s.to_vec()[..], s, mpi_op),
        });
        if op == ReduceOp::Avg {
            buf.divide_by(self.size);
        }
        Ok(())
    }

    fn backend_reduce_scatter(
        &self,
        input: Buf<'_>,
        mut output: BufMut<'_>,
        op: ReduceOp,
    ) -> Result<(), CommError> {
        let mpi_op = system_op(op);
        let name = "reduce_scatter";
        check_count(name, &self.name, input.len())?;
        self.call(name, |c| {
            match (input, output.reborrow()) {
                (Buf::F32(i), BufMut::F32(o)) => c.reduce_scatter_block_into(i, o, mpi_op),
                (Buf::F64(i), BufMut::F64(o)) => c.reduce_scatter_block_into(i, o, mpi_op),
                (Buf::I32(i), BufMut::I32(o)) => c.reduce_scatter_block_into(i, o, mpi_op),
                _ => return Err(mismatch(name, &self.name)),
            }
            Ok(())
        })?;
        if op == ReduceOp::Avg {
            output.divide_by(self.size);
        }
        Ok(())
    }

    fn backend_all_gather(&self, input: Buf<'_>, output: BufMut<'_>) -> Result<(), CommError> {
        let name = "all_gather";
        check_count(name, &self.name, output.len())?;
        self.call(name, |c| {
            match (input, output) {
                (Buf::F32(i), BufMut::F32(o)) => c.all_gather_into(i, o),
                (Buf::F64(i), BufMut::F64(o)) => c.all_gather_into(i, o),
                (Buf::I32(i), BufMut::I32(o)) => c.all_gather_into(i, o),
                _ => return Err(mismatch(name, &self.name)),
            }
            Ok(())
        })
    }

    fn backend_broadcast(&self, buf: BufMut<'_>, root: usize) -> Result<(), CommError> {
        check_count("broadcast", &self.name, buf.len())?;
        self.call("broadcast", |c| {
            let root = c.process_at_rank(root as i32);
            match buf {
                BufMut::F32(s) => root.broadcast_into(s),
                BufMut::F64(s) => root.broadcast_into(s),
                BufMut::I32(s) => root.broadcast_into(s),
            }
        });
        Ok(())
    }

    fn backend_send(&self, buf: Buf<'_>, dest: usize, tag: u32) -> Result<(), CommError> {
        check_tag("send", &self.name, tag)?;
        check_count("send", &self.name, buf.len())?;
        self.call("send", |c| {
            let to = c.process_at_rank(dest as i32);
            match buf {
                Buf::F32(s) => to.send_with_tag(s, tag as i32),
                Buf::F64(s) => to.send_with_tag(s, tag as i32),
                Buf::I32(s) => to.send_with_tag(s, tag as i32),
            }
        });
        Ok(())
    }

    fn backend_recv(&self, buf: BufMut<'_>, src: usize, tag: u32) -> Result<(), CommError> {
        check_tag("recv", &self.name, tag)?;
        check_count("recv", &self.name, buf.len())?;
        let expected = buf.len();
        let received = self.call("recv", |c| {
            let from = c.process_at_rank(src as i32);
            match buf {
                BufMut::F32(s) => from
                    .receive_into_with_tag(s, tag as i32)
                    .count(f32::equivalent_datatype()),
                BufMut::F64(s) => from
                    .receive_into_with_tag(s, tag as i32)
                    .count(f64::equivalent_datatype()),
                BufMut::I32(s) => from
                    .receive_into_with_tag(s, tag as i32)
                    .count(i32::equivalent_datatype()),
            }
        });
        if received as usize != expected {
            return Err(CommError::invalid(
                "recv",
                &self.name,
                format!("expected {expected} elements from rank {src} but received {received}"),
            ));
        }
        Ok(())
    }

    fn backend_barrier(&self) -> Result<(), CommError> {
        self.call("barrier", |c| c.barrier());
        Ok(())
    }

    fn backend_split(&self, color: u32, key: u32, name: &str) -> Result<Arc<dyn Comm>, CommError> {
        let color_value = i32::try_from(color).map_err(|_| {
            CommError::invalid("split", &self.name, format!("color {color} is too large"))
        })?;
        let key_value = i32::try_from(key).map_err(|_| {
            CommError::invalid("split", &self.name, format!("key {key} is too large"))
        })?;
        let child = self
            .call("split", |c| {
                c.split_by_color_with_key(Color::with_value(color_value), key_value)
            })
            .ok_or_else(|| {
                CommError::invalid("split", &self.name, "MPI returned no communicator")
            })?;
        Ok(Arc::new(MpiComm::wrap(
            Arc::clone(&self.runtime),
            child,
            name,
        )))
    }

    fn backend_isend(
        &self,
        data: OwnedBuf,
        dest: usize,
        tag: u32,
    ) -> Result<Box<dyn PendingSend + '_>, CommError> {
        check_tag("isend", &self.name, tag)?;
        check_count("isend", &self.name, data.len())?;
        Ok(Box::new(MpiSend::start(self.caller(), data, dest, tag)?))
    }

    fn backend_irecv(
        &self,
        dtype: Dtype,
        len: usize,
        src: usize,
        tag: u32,
    ) -> Result<Box<dyn PendingRecv + '_>, CommError> {
        check_tag("irecv", &self.name, tag)?;
        check_count("irecv", &self.name, len)?;
        Ok(Box::new(MpiRecv::start(
            self.caller(),
            dtype,
            len,
            src,
            tag,
        )?))
    }
}

impl MpiComm {
    fn caller(&self) -> Caller<'_> {
        Caller {
            runtime: &self.runtime,
            comm: &self.handle.0,
            group: &self.name,
            rank: self.rank,
        }
    }
}
