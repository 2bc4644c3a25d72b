//! Causal / full attention with grouped-query heads over packed segments, tiled the
//! FlashAttention way: online softmax over key tiles, logsumexp saved, backward recomputes P.
//! See backend::AttnDims for layouts. No S×S buffer beyond one tile.

use super::CpuFloat;
use crate::backend::AttnDims;

#[allow(clippy::too_many_arguments)]
pub fn forward<T: CpuFloat>(q: &[T], k: &[T], v: &[T], o: &mut [T], lse: &mut [T], cu_seqlens: &[i32], dims: &AttnDims) {
    todo!()
}

#[allow(clippy::too_many_arguments)]
pub fn backward<T: CpuFloat>(
    q: &[T], k: &[T], v: &[T], o: &[T], dout: &[T], lse: &[T],
    dq: &mut [T], dk: &mut [T], dv: &mut [T], cu_seqlens: &[i32], dims: &AttnDims,
) {
    todo!()
}
