//! Device point-to-point of `NcclComm` for pipeline stages: grouped ncclSend / ncclRecv.
//!
//! Contract: `device_send_recv(ops)` queues every send and receive of `ops` on the
//! communicator's stream inside one ncclGroupStart / ncclGroupEnd, and returns without waiting
//! (NCCL work is asynchronous to the host; ordering against compute streams is the caller's, as
//! for the device collectives). Grouping is what makes a pipeline step safe: NCCL point-to-point
//! calls block the stream until the peer posts the matching call, so a stage that sends its
//! activation to the next stage and receives a gradient from it in the same step must post both
//! in one group, or two neighbours that both send first would deadlock. Peers are ranks of this
//! group (the pp group), this rank included (NCCL moves a group's send to self into its receive
//! from self, as its all-to-all does; the pipeline never needs it, a one-GPU test does). Bytes are counted like the host
//! send/recv: message bytes on `send` (sent) and `recv` (received).
//! Used by the pipeline's grouped mode on a GPU (device/p2p.rs). Compile-checked only: NCCL
//! refuses two ranks on one GPU, so it needs two GPUs to run, which no check here has had.

use cudarc::nccl::result as nccl;

use crate::comm::counters::OpKind;
use crate::comm::error::CommError;
use crate::comm::Comm;

use super::{DeviceDtype, NcclComm};

/// One device send or receive of a grouped exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceP2p {
    /// Send `count` elements at device address `buf` to group rank `peer`.
    Send {
        buf: u64,
        count: usize,
        dtype: DeviceDtype,
        peer: usize,
    },
    /// Receive `count` elements from group rank `peer` into device address `buf`.
    Recv {
        buf: u64,
        count: usize,
        dtype: DeviceDtype,
        peer: usize,
    },
}

impl NcclComm {
    /// Queues `ops` as one NCCL group on this communicator's stream (see the module comment).
    ///
    /// # Safety
    /// Every `buf` must address `count` live elements of `dtype` on this communicator's GPU,
    /// untouched by other work until the stream has passed the group; receive buffers must not
    /// overlap any other buffer of `ops`.
    pub unsafe fn device_send_recv(&self, ops: &[DeviceP2p]) -> Result<(), CommError> {
        for op in ops {
            let (DeviceP2p::Send { peer, .. } | DeviceP2p::Recv { peer, .. }) = *op;
            if peer >= self.size() {
                return Err(CommError::invalid(
                    "device_send_recv",
                    &self.name,
                    format!("peer {peer} is not a rank of this group of {}", self.size()),
                ));
            }
        }
        let stream = self.stream.cu_stream() as _;
        nccl::group_start().map_err(|e| self.dev_err("ncclGroupStart", e))?;
        let mut queued = Ok(());
        for op in ops {
            let result = match *op {
                DeviceP2p::Send {
                    buf,
                    count,
                    dtype,
                    peer,
                } => nccl::send(
                    buf as *const _,
                    count,
                    dtype.nccl(),
                    peer as i32,
                    self.comm,
                    stream,
                ),
                DeviceP2p::Recv {
                    buf,
                    count,
                    dtype,
                    peer,
                } => nccl::recv(
                    buf as *mut _,
                    count,
                    dtype.nccl(),
                    peer as i32,
                    self.comm,
                    stream,
                ),
            };
            if let Err(e) = result {
                queued = Err(self.dev_err("ncclSend/ncclRecv", e));
                break;
            }
        }
        // The group must be closed even when a call failed inside it.
        let ended = nccl::group_end().map_err(|e| self.dev_err("ncclGroupEnd", e));
        queued?;
        ended?;
        for op in ops {
            match *op {
                DeviceP2p::Send { count, dtype, .. } => {
                    let bytes = (count * dtype.size_bytes()) as u64;
                    self.counters.record(OpKind::Send, bytes, 0);
                }
                DeviceP2p::Recv { count, dtype, .. } => {
                    let bytes = (count * dtype.size_bytes()) as u64;
                    self.counters.record(OpKind::Recv, 0, bytes);
                }
            }
        }
        Ok(())
    }
}
