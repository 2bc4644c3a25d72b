//! The `Comm` trait: one process group, the only way ferrotron code communicates.
//!
//! Contract:
//! - Used as `Arc<dyn Comm>`. Ranks are `0..size()` within the group; `name()` names the group in
//!   errors ("world", "dp(pp=0,tp=1)", ...).
//! - Callers use the provided methods (`all_reduce`, `reduce_scatter`, ...). They check the
//!   arguments, short-circuit groups of one (a no-op, or a copy where input and output differ),
//!   call the backend hook, and count the bytes on success (convention: `counters.rs`). Backends
//!   implement only the `backend_*` hooks, which always see validated arguments and size >= 2.
//! - Collectives must be called by every member of the group in the same order. The calls block.
//! - `reduce_scatter`: input holds `size * k` elements, output `k`; rank r receives block r of the
//!   reduction. Callers pad to a multiple of the group size (ZeRO does). `all_gather`: input `k`,
//!   output `size * k`, block r from rank r.
//! - `send`/`recv` may block until the peer posts the matching call (like MPI_Ssend); messages
//!   between two ranks on one group with one tag arrive in order.
//! - `isend`/`isend_owned`/`irecv` never block; their requests are waited for or tested, and
//!   follow the same ordering (contract: p2p.rs).
//! - `split(color, key, name)`: collective over this group; ranks with the same color form a new
//!   group, ordered by (key, old rank).
//! - Failures (timeout, dead peer, transport) are `CommError`s naming the group and operation;
//!   the MPI backend cannot return from a hung collective and aborts the job instead (watchdog).
//! - Every backend call made here is numbered per group in the group's flight recorder
//!   (`flight.rs`, held in `counters()`); a timeout is explained from every rank's status board
//!   (`crate::forensics`): which ranks never reached the call the others wait in.

pub mod buffer;
pub mod counters;
pub mod error;
pub mod flight;
pub mod local;
pub mod p2p;

use std::sync::Arc;

use buffer::Dtype;
use buffer::{check_reduce_op, Buf, BufMut, ReduceOp};
use counters::{all_reduce_ring_bytes, scatter_gather_ring_bytes, CommCounters, OpKind};
use error::CommError;
use p2p::{OwnedBuf, PendingRecv, PendingSend, RecvRequest, SendRequest};

pub trait Comm: Send + Sync {
    fn rank(&self) -> usize;
    fn size(&self) -> usize;
    fn name(&self) -> &str;
    fn counters(&self) -> &CommCounters;
    /// The NCCL communicator behind this group, when device buffers can move through NCCL
    /// (None: host buffers only; GPU callers stage through the host).
    fn nccl(&self) -> Option<&crate::nccl::NcclComm> {
        None
    }
    /// Ends every process of the job with exit code `code`, now: a rank that fails alone must
    /// not leave the others waiting in a collective until the timeout. MPI: MPI_Abort on the
    /// world (mpirun then ends every rank and exits with `code`). Elsewhere the process exits;
    /// its peers' sockets close and their pending operations fail.
    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }

    #[doc(hidden)]
    fn backend_all_reduce(&self, buf: BufMut<'_>, op: ReduceOp) -> Result<(), CommError>;
    #[doc(hidden)]
    fn backend_reduce_scatter(
        &self,
        input: Buf<'_>,
        output: BufMut<'_>,
        op: ReduceOp,
    ) -> Result<(), CommError>;
    #[doc(hidden)]
    fn backend_all_gather(&self, input: Buf<'_>, output: BufMut<'_>) -> Result<(), CommError>;
    #[doc(hidden)]
    fn backend_broadcast(&self, buf: BufMut<'_>, root: usize) -> Result<(), CommError>;
    #[doc(hidden)]
    fn backend_send(&self, buf: Buf<'_>, dest: usize, tag: u32) -> Result<(), CommError>;
    #[doc(hidden)]
    fn backend_recv(&self, buf: BufMut<'_>, src: usize, tag: u32) -> Result<(), CommError>;
    #[doc(hidden)]
    fn backend_barrier(&self) -> Result<(), CommError>;
    #[doc(hidden)]
    fn backend_split(&self, color: u32, key: u32, name: &str) -> Result<Arc<dyn Comm>, CommError>;

    /// Reduces `buf` across the group in place; every rank ends with the result.
    fn all_reduce(&self, mut buf: BufMut<'_>, op: ReduceOp) -> Result<(), CommError> {
        check_reduce_op(buf.dtype(), op)
            .map_err(|e| CommError::invalid("all_reduce", self.name(), e))?;
        let bytes = buf.byte_len() as u64;
        if self.size() > 1 {
            recorded(self, "all_reduce", bytes, || {
                self.backend_all_reduce(buf.reborrow(), op)
            })?;
        }
        let moved = all_reduce_ring_bytes(bytes, self.size() as u64);
        self.counters().record(OpKind::AllReduce, moved, moved);
        Ok(())
    }

    /// Reduces `input` (size * k elements) across the group; this rank gets block `rank()` in
    /// `output` (k elements).
    fn reduce_scatter(
        &self,
        input: Buf<'_>,
        mut output: BufMut<'_>,
        op: ReduceOp,
    ) -> Result<(), CommError> {
        let name = "reduce_scatter";
        check_reduce_op(input.dtype(), op).map_err(|e| CommError::invalid(name, self.name(), e))?;
        check_same_dtype(name, self.name(), input, &output)?;
        if input.len() != output.len() * self.size() {
            return Err(CommError::invalid(
                name,
                self.name(),
                format!(
                    "input has {} elements but must hold group size {} x output length {} (pad the input to a multiple of the group size)",
                    input.len(),
                    self.size(),
                    output.len()
                ),
            ));
        }
        if self.size() > 1 {
            recorded(self, name, input.byte_len() as u64, || {
                self.backend_reduce_scatter(input, output.reborrow(), op)
            })?;
        } else {
            output.copy_from(input);
        }
        let moved = scatter_gather_ring_bytes(input.byte_len() as u64, self.size() as u64);
        self.counters().record(OpKind::ReduceScatter, moved, moved);
        Ok(())
    }

    /// Concatenates every rank's `input` (k elements) into `output` (size * k), in rank order.
    fn all_gather(&self, input: Buf<'_>, mut output: BufMut<'_>) -> Result<(), CommError> {
        let name = "all_gather";
        check_same_dtype(name, self.name(), input, &output)?;
        if output.len() != input.len() * self.size() {
            return Err(CommError::invalid(
                name,
                self.name(),
                format!(
                    "output has {} elements but must hold group size {} x input length {}",
                    output.len(),
                    self.size(),
                    input.len()
                ),
            ));
        }
        if self.size() > 1 {
            recorded(self, name, output.byte_len() as u64, || {
                self.backend_all_gather(input, output.reborrow())
            })?;
        } else {
            output.copy_from(input);
        }
        let moved = scatter_gather_ring_bytes(output.byte_len() as u64, self.size() as u64);
        self.counters().record(OpKind::AllGather, moved, moved);
        Ok(())
    }

    /// `all_gather` where this rank's contribution already sits in block `rank()` of `buf`
    /// (size * k elements): afterwards `buf` holds every rank's block (ZeRO's parameter gather).
    fn all_gather_in_place(&self, buf: BufMut<'_>) -> Result<(), CommError> {
        let (n, r) = (self.size(), self.rank());
        if !buf.len().is_multiple_of(n) {
            return Err(CommError::invalid(
                "all_gather",
                self.name(),
                format!(
                    "buffer of {} elements is not a multiple of the group size {n}",
                    buf.len()
                ),
            ));
        }
        let k = buf.len() / n;
        match buf {
            BufMut::F32(s) => {
                let mine = s[r * k..(r + 1) * k].to_vec();
                self.all_gather(Buf::F32(&mine), BufMut::F32(s))
            }
            BufMut::F64(s) => {
                let mine = s[r * k..(r + 1) * k].to_vec();
                self.all_gather(Buf::F64(&mine), BufMut::F64(s))
            }
            BufMut::I32(s) => {
                let mine = s[r * k..(r + 1) * k].to_vec();
                self.all_gather(Buf::I32(&mine), BufMut::I32(s))
            }
        }
    }

    /// Copies `buf` of rank `root` into `buf` of every rank.
    fn broadcast(&self, mut buf: BufMut<'_>, root: usize) -> Result<(), CommError> {
        check_rank("broadcast", self.name(), "root", root, self.size())?;
        let bytes = buf.byte_len() as u64;
        if self.size() > 1 {
            recorded(self, "broadcast", bytes, || {
                self.backend_broadcast(buf.reborrow(), root)
            })?;
        }
        let n = self.size();
        let me = self.rank();
        let sent = if me != (root + n - 1) % n { bytes } else { 0 };
        let received = if me != root { bytes } else { 0 };
        self.counters().record(OpKind::Broadcast, sent, received);
        Ok(())
    }

    /// Sends `buf` to rank `dest` of this group with a user tag.
    fn send(&self, buf: Buf<'_>, dest: usize, tag: u32) -> Result<(), CommError> {
        check_peer("send", self.name(), dest, self.rank(), self.size())?;
        recorded(self, "send", buf.byte_len() as u64, || {
            self.backend_send(buf, dest, tag)
        })?;
        self.counters()
            .record(OpKind::Send, buf.byte_len() as u64, 0);
        Ok(())
    }

    /// Receives into `buf` from rank `src`; the message must have exactly `buf`'s type and length.
    fn recv(&self, mut buf: BufMut<'_>, src: usize, tag: u32) -> Result<(), CommError> {
        check_peer("recv", self.name(), src, self.rank(), self.size())?;
        let bytes = buf.byte_len() as u64;
        recorded(self, "recv", bytes, || {
            self.backend_recv(buf.reborrow(), src, tag)
        })?;
        self.counters()
            .record(OpKind::Recv, 0, buf.byte_len() as u64);
        Ok(())
    }

    /// Returns once every rank of the group has entered the barrier.
    fn barrier(&self) -> Result<(), CommError> {
        if self.size() > 1 {
            recorded(self, "barrier", 0, || self.backend_barrier())?;
        }
        self.counters().record(OpKind::Barrier, 0, 0);
        Ok(())
    }

    /// Splits the group: ranks passing the same `color` form one new group named `name`, ordered
    /// by (`key`, old rank).
    fn split(&self, color: u32, key: u32, name: &str) -> Result<Arc<dyn Comm>, CommError> {
        let child = if self.size() > 1 {
            recorded(self, "split", 0, || self.backend_split(color, key, name))?
        } else {
            Arc::new(local::LocalComm::named(name))
        };
        self.counters().record(OpKind::Split, 0, 0);
        child.counters().flight.name(child.name());
        Ok(child)
    }

    // Non-blocking point-to-point (contract: p2p.rs).

    /// Backend hook of `isend_owned`: validated peer; the backend owns `data` until it is sent.
    #[doc(hidden)]
    fn backend_isend(
        &self,
        data: OwnedBuf,
        dest: usize,
        tag: u32,
    ) -> Result<Box<dyn PendingSend + '_>, CommError> {
        let _ = (data, dest, tag);
        Err(no_p2p("isend", self.name()))
    }

    /// Backend hook of `irecv`: validated peer.
    #[doc(hidden)]
    fn backend_irecv(
        &self,
        dtype: Dtype,
        len: usize,
        src: usize,
        tag: u32,
    ) -> Result<Box<dyn PendingRecv + '_>, CommError> {
        let _ = (dtype, len, src, tag);
        Err(no_p2p("irecv", self.name()))
    }

    /// Starts sending a copy of `buf` to rank `dest`; returns at once (see p2p.rs).
    fn isend(&self, buf: Buf<'_>, dest: usize, tag: u32) -> Result<SendRequest<'_>, CommError> {
        self.isend_owned(OwnedBuf::copy_of(buf), dest, tag)
    }

    /// Starts sending `data` (moved, not copied) to rank `dest`; returns at once.
    fn isend_owned(
        &self,
        data: OwnedBuf,
        dest: usize,
        tag: u32,
    ) -> Result<SendRequest<'_>, CommError> {
        check_peer("isend", self.name(), dest, self.rank(), self.size())?;
        let bytes = data.as_buf().byte_len() as u64;
        let pending = self.backend_isend(data, dest, tag)?;
        Ok(SendRequest::new(pending, self.counters(), bytes))
    }

    /// Posts a receive of exactly `len` elements of `dtype` from rank `src`; returns at once.
    fn irecv(
        &self,
        dtype: Dtype,
        len: usize,
        src: usize,
        tag: u32,
    ) -> Result<RecvRequest<'_>, CommError> {
        check_peer("irecv", self.name(), src, self.rank(), self.size())?;
        let pending = self.backend_irecv(dtype, len, src, tag)?;
        let bytes = (len * dtype.size_bytes()) as u64;
        Ok(RecvRequest::new(
            pending,
            self.name(),
            self.counters(),
            bytes,
        ))
    }
}

fn no_p2p(op: &'static str, group: &str) -> CommError {
    CommError::Unsupported {
        op,
        group: group.to_string(),
        reason: "this backend has no non-blocking point-to-point".into(),
    }
}

/// Runs the backend hook `f` as call `op` of `bytes` on `comm`: numbered in the group's flight
/// recorder, and a timeout explained from every rank's status board while the call is still
/// shown in flight (so the other ranks asking this one see it waiting).
fn recorded<C: Comm + ?Sized, T>(
    comm: &C,
    op: &'static str,
    bytes: u64,
    f: impl FnOnce() -> Result<T, CommError>,
) -> Result<T, CommError> {
    let flight = &comm.counters().flight;
    let call = flight.begin(comm.name(), op, bytes);
    let result = f().map_err(|e| crate::forensics::annotate(e, comm.name(), &call));
    flight.end(&call);
    result
}

fn check_same_dtype(
    op: &'static str,
    group: &str,
    input: Buf<'_>,
    output: &BufMut<'_>,
) -> Result<(), CommError> {
    if input.dtype() != output.dtype() {
        return Err(CommError::invalid(
            op,
            group,
            format!(
                "input is {} but output is {}",
                input.dtype().name(),
                output.dtype().name()
            ),
        ));
    }
    Ok(())
}

fn check_rank(
    op: &'static str,
    group: &str,
    what: &str,
    rank: usize,
    size: usize,
) -> Result<(), CommError> {
    if rank >= size {
        return Err(CommError::invalid(
            op,
            group,
            format!("{what} {rank} is not a rank of this group of {size}"),
        ));
    }
    Ok(())
}

fn check_peer(
    op: &'static str,
    group: &str,
    peer: usize,
    me: usize,
    size: usize,
) -> Result<(), CommError> {
    check_rank(op, group, "peer", peer, size)?;
    if peer == me {
        return Err(CommError::invalid(
            op,
            group,
            format!("rank {me} cannot {op} to or from itself"),
        ));
    }
    Ok(())
}
