//! Megatron-LM's tensor-parallel communication regions over a backend's buffers: what the model
//! calls, with buffers only (it never sees a communicator). For a layer pair split column- then
//! row-parallel (Y = X·A, A = [A_1 … A_p] by columns; Z = Y·B, B = [B_1; …; B_p] by rows):
//!   f (before the column-parallel layer): forward identity, backward all-reduce Σ of ∂X
//!   g (after the row-parallel layer):     forward all-reduce Σ of the partial Z_i, backward identity
//! With sequence parallelism the tokens between the pairs are split over the ranks instead:
//!   gather (before column-parallel): forward all-gather of the token blocks, backward
//!                                    reduce-scatter Σ
//!   scatter (after row-parallel):    forward reduce-scatter Σ, backward all-gather
//! and the vocab-parallel cross-entropy gathers every rank's row statistics. The sums of a
//! forward g and a backward f are the only all-reduces (2 per layer each way without SP).
//! On a group of one every region is the identity (gather/scatter copy when input and output
//! are different buffers).

use crate::comm::Comm;
use crate::device::Collectives;
use ferrotron_kernels::backend::{AccDst, AccSrc, ActDst, ActSrc};
use ferrotron_kernels::{Backend, Result};
use std::sync::Arc;

/// The tensor-parallel group as the model sees it.
pub trait TpComm<B: Backend> {
    fn size(&self) -> usize;
    fn rank(&self) -> usize;
    /// In place: x = Σ over the group.
    fn all_reduce(&self, b: &B, x: ActDst<'_, B>) -> Result<()>;
    /// out [size·k] = every rank's input [k], in rank order.
    fn all_gather(&self, b: &B, input: ActSrc<'_, B>, out: ActDst<'_, B>) -> Result<()>;
    /// out [k] = block rank() of Σ over the group of input [size·k].
    fn reduce_scatter(&self, b: &B, input: ActSrc<'_, B>, out: ActDst<'_, B>) -> Result<()>;
    /// all_gather on fp32 buffers.
    fn all_gather_acc(&self, b: &B, input: AccSrc<'_, B>, out: AccDst<'_, B>) -> Result<()>;

    /// g forward: the row-parallel layer's partial output summed over the group.
    fn g_forward(&self, b: &B, y: ActDst<'_, B>) -> Result<()> {
        self.all_reduce(b, y)
    }
    /// f backward: the column-parallel layer's partial input gradient summed over the group.
    fn f_backward(&self, b: &B, dx: ActDst<'_, B>) -> Result<()> {
        self.all_reduce(b, dx)
    }
    /// SP gather forward (or scatter backward): this rank's token block → every token.
    fn sp_gather(&self, b: &B, local: ActSrc<'_, B>, full: ActDst<'_, B>) -> Result<()> {
        self.all_gather(b, local, full)
    }
    /// SP scatter forward (or gather backward): every token's partial sum → this rank's block.
    fn sp_scatter(&self, b: &B, full: ActSrc<'_, B>, local: ActDst<'_, B>) -> Result<()> {
        self.reduce_scatter(b, full, local)
    }
}

/// A tensor-parallel group of ranks.
pub struct TpGroup {
    pub comm: Arc<dyn Comm>,
}

impl<B: Collectives> TpComm<B> for TpGroup {
    fn size(&self) -> usize {
        self.comm.size()
    }
    fn rank(&self) -> usize {
        self.comm.rank()
    }
    fn all_reduce(&self, b: &B, x: ActDst<'_, B>) -> Result<()> {
        b.all_reduce_sum_act(self.comm.as_ref(), x)
    }
    fn all_gather(&self, b: &B, input: ActSrc<'_, B>, out: ActDst<'_, B>) -> Result<()> {
        b.all_gather_act(self.comm.as_ref(), input, out)
    }
    fn reduce_scatter(&self, b: &B, input: ActSrc<'_, B>, out: ActDst<'_, B>) -> Result<()> {
        b.reduce_scatter_sum_act(self.comm.as_ref(), input, out)
    }
    fn all_gather_acc(&self, b: &B, input: AccSrc<'_, B>, out: AccDst<'_, B>) -> Result<()> {
        b.all_gather_acc(self.comm.as_ref(), input, out)
    }
}

/// No tensor parallelism: every region is the identity.
pub struct NoTp;

impl<B: Backend> TpComm<B> for NoTp {
    fn size(&self) -> usize {
        1
    }
    fn rank(&self) -> usize {
        0
    }
    fn all_reduce(&self, _b: &B, _x: ActDst<'_, B>) -> Result<()> {
        Ok(())
    }
    fn all_gather(&self, b: &B, input: ActSrc<'_, B>, out: ActDst<'_, B>) -> Result<()> {
        let n = input.len;
        b.copy_columns(input, n, 0, out, n, 0, 1, n, false)
    }
    fn reduce_scatter(&self, b: &B, input: ActSrc<'_, B>, out: ActDst<'_, B>) -> Result<()> {
        self.all_gather(b, input, out)
    }
    fn all_gather_acc(&self, b: &B, input: AccSrc<'_, B>, out: AccDst<'_, B>) -> Result<()> {
        b.copy_acc(input, out)
    }
}
