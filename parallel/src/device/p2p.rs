//! One group of pipeline point-to-point transfers of activation buffers (`Collectives::
//! p2p_group_act`), the device side of the executor's grouped mode (pipeline/links.rs):
//!
//!   sends: (buffer, peer) …   recvs: (len, peer) …   → one received buffer per recv, in order
//!
//! Between two ranks messages meet in the order they are posted (NCCL has no tags); the
//! schedule's lists are proven safe for that by pipeline::check_grouped before a step runs.
//! - NCCL group (CUDA): ncclSend / ncclRecv of the device buffers inside one
//!   ncclGroupStart/End on the communicator's stream (`NcclComm::device_send_recv`), in the
//!   compute precision (bf16: 2 bytes per element). cudarc's per-buffer events order it: the
//!   sends wait for the kernels that wrote them, whatever reads a received buffer waits for the
//!   receive, and a dropped send buffer is freed only after the send has read it. The host does
//!   not wait.
//! - Any other group (CPU backends, CUDA host-staged): the buffers as f32 host vectors through
//!   `HostExchange` (every receive and send posted, then all waited for).

use crate::pipeline::{GroupExchange, HostExchange};
use ferrotron_kernels::{Backend, Error, Result, Src};

/// The host-staged group: download, exchange f32 vectors, upload.
pub(crate) fn host_staged<B: Backend>(
    b: &B,
    comm: &dyn crate::Comm,
    sends: Vec<(B::Act, usize)>,
    recvs: &[(usize, usize)],
) -> Result<Vec<B::Act>> {
    let host = sends
        .into_iter()
        .map(|(buf, peer)| Ok((b.download_act(Src::all(&buf))?, peer)))
        .collect::<Result<Vec<_>>>()?;
    let got = HostExchange { pp: comm }
        .exchange(host, recvs)
        .map_err(|e| Error::Unsupported(format!("point-to-point on group {}: {e}", comm.name())))?;
    got.iter().map(|h| b.upload_act(h)).collect()
}
