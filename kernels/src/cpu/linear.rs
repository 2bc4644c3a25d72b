//! Linear layer. x [N, I], W [O, I] (OutIn) or [I, O] (InOut), b [O], y [N, O].
//! forward: y = x Wᵀ + b.  backward: dx += dy W; dW += dyᵀ x (in W's layout); db += Σ_n dy.

use super::CpuFloat;
use crate::backend::LinearDims;

pub fn forward<T: CpuFloat>(x: &[T], w: &[T], b: Option<&[T]>, y: &mut [T], dims: LinearDims) {
    todo!()
}

pub fn backward<T: CpuFloat>(x: &[T], w: &[T], dy: &[T], dx: Option<&mut [T]>, dw: &mut [T], db: Option<&mut [T]>, dims: LinearDims) {
    todo!()
}
