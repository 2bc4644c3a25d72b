//! How a backend's buffers cross a process group: the collectives the ZeRO engines (dp group)
//! and the tensor-parallel regions (tp group) use.
//!
//!   all_reduce_sum_acc        x = Σ_ranks x                         (stage 0 gradients)
//!   reduce_scatter_sum_acc    out[k] = block rank() of Σ_ranks in[N·k]   (stages 1-3 gradients)
//!   all_gather_act            out[N·k] = in_0 ‖ in_1 ‖ … ‖ in_{N−1}       (stage 3 weights;
//!                                                                      SP token gather)
//!   all_gather_act_in_place   buf[N·k], own block at rank(), the rest filled (stages 1-2)
//!   all_reduce_sum_act        x = Σ_ranks x        (tp: row-parallel outputs, input gradients)
//!   reduce_scatter_sum_act    as reduce_scatter_sum_acc on activations (SP token scatter)
//!   all_gather_acc            as all_gather_act on fp32 (vocab-parallel cross-entropy stats)
//!
//! The CPU backend's buffers are host memory and go to the `Comm` as they are. The CUDA
//! backend (collectives_cuda.rs) hands device addresses to NCCL when the group is an NCCL
//! communicator, and otherwise stages through host memory (download, host collective, upload):
//! the "MPI host-staged" path that lets several ranks share one GPU. Either way the `Comm`
//! layer counts the bytes. `ACT_BYTES`/`ACC_BYTES` are the ZeRO paper's P and G per element.

use super::comm_err;
use crate::{Comm, ReduceOp};
use ferrotron_kernels::backend::{AccDst, AccSrc, ActDst, ActSrc};
use ferrotron_kernels::cpu::{CpuBackend, HostMemory};
use ferrotron_kernels::{Backend, Error, Result};
use std::sync::Arc;

pub trait Collectives: Backend {
    /// Bytes per element of `Act` and `Acc` (memory accounting).
    const ACT_BYTES: u64;
    const ACC_BYTES: u64;
    fn all_reduce_sum_acc(&self, comm: &dyn Comm, x: AccDst<'_, Self>) -> Result<()>;
    fn reduce_scatter_sum_acc(
        &self,
        comm: &dyn Comm,
        input: AccSrc<'_, Self>,
        out: AccDst<'_, Self>,
    ) -> Result<()>;
    fn all_gather_act(
        &self,
        comm: &dyn Comm,
        input: ActSrc<'_, Self>,
        out: ActDst<'_, Self>,
    ) -> Result<()>;
    fn all_gather_act_in_place(&self, comm: &dyn Comm, buf: &mut Self::Act) -> Result<()>;
    fn all_reduce_sum_act(&self, comm: &dyn Comm, x: ActDst<'_, Self>) -> Result<()>;
    fn reduce_scatter_sum_act(
        &self,
        comm: &dyn Comm,
        input: ActSrc<'_, Self>,
        out: ActDst<'_, Self>,
    ) -> Result<()>;
    fn all_gather_acc(
        &self,
        comm: &dyn Comm,
        input: AccSrc<'_, Self>,
        out: AccDst<'_, Self>,
    ) -> Result<()>;
    /// An NCCL communicator over the ranks of `host` (collective over `host`), for backends
    /// whose buffers live on a GPU; an error elsewhere.
    fn nccl_group(&self, host: Arc<dyn Comm>) -> Result<Arc<dyn Comm>>;
    /// One group of pipeline point-to-point transfers on `comm`: sends each (buffer, peer) and
    /// returns a buffer of `len` elements from `peer` for each (len, peer) of `recvs`, in order
    /// (p2p.rs: NCCL's grouped calls on a GPU, host-staged elsewhere).
    fn p2p_group_act(
        &self,
        comm: &dyn Comm,
        sends: Vec<(Self::Act, usize)>,
        recvs: &[(usize, usize)],
    ) -> Result<Vec<Self::Act>>;
}

fn range<T>(s: &[T], start: usize, len: usize) -> &[T] {
    &s[start..start + len]
}

impl<M: HostMemory> Collectives for CpuBackend<f32, M> {
    const ACT_BYTES: u64 = 4;
    const ACC_BYTES: u64 = 4;
    fn all_reduce_sum_acc(&self, comm: &dyn Comm, x: AccDst<'_, Self>) -> Result<()> {
        let s = &mut x.buf[x.start..x.start + x.len];
        comm.all_reduce(s.into(), ReduceOp::Sum).map_err(comm_err)
    }
    fn reduce_scatter_sum_acc(
        &self,
        comm: &dyn Comm,
        input: AccSrc<'_, Self>,
        out: AccDst<'_, Self>,
    ) -> Result<()> {
        let i = range(&input.buf[..], input.start, input.len);
        let o = &mut out.buf[out.start..out.start + out.len];
        comm.reduce_scatter(i.into(), o.into(), ReduceOp::Sum)
            .map_err(comm_err)
    }
    fn all_gather_act(
        &self,
        comm: &dyn Comm,
        input: ActSrc<'_, Self>,
        out: ActDst<'_, Self>,
    ) -> Result<()> {
        let i = range(&input.buf[..], input.start, input.len);
        let o = &mut out.buf[out.start..out.start + out.len];
        comm.all_gather(i.into(), o.into()).map_err(comm_err)
    }
    fn all_gather_act_in_place(&self, comm: &dyn Comm, buf: &mut Self::Act) -> Result<()> {
        comm.all_gather_in_place((&mut buf[..]).into())
            .map_err(comm_err)
    }
    fn all_reduce_sum_act(&self, comm: &dyn Comm, x: ActDst<'_, Self>) -> Result<()> {
        self.all_reduce_sum_acc(comm, x)
    }
    fn reduce_scatter_sum_act(
        &self,
        comm: &dyn Comm,
        input: ActSrc<'_, Self>,
        out: ActDst<'_, Self>,
    ) -> Result<()> {
        self.reduce_scatter_sum_acc(comm, input, out)
    }
    fn all_gather_acc(
        &self,
        comm: &dyn Comm,
        input: AccSrc<'_, Self>,
        out: AccDst<'_, Self>,
    ) -> Result<()> {
        self.all_gather_act(comm, input, out)
    }
    fn nccl_group(&self, host: Arc<dyn Comm>) -> Result<Arc<dyn Comm>> {
        Err(Error::Unsupported(format!(
            "group {}: NCCL moves GPU buffers; the CPU backend uses the host group",
            host.name()
        )))
    }
    fn p2p_group_act(
        &self,
        comm: &dyn Comm,
        sends: Vec<(Self::Act, usize)>,
        recvs: &[(usize, usize)],
    ) -> Result<Vec<Self::Act>> {
        super::p2p::host_staged(self, comm, sends, recvs)
    }
}
