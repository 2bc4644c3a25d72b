//! LayerNorm. x, y [N, D], w, b [D], mean, rstd [N].
//! forward: x̂ = (x − mean)·rstd; y = x̂·w + b.
//! backward: dw += Σ dy·x̂; db += Σ dy; dx += rstd·(g − mean(g) − x̂·mean(g·x̂)), g = dy·w.

use super::CpuFloat;

#[allow(clippy::too_many_arguments)]
pub fn forward<T: CpuFloat>(x: &[T], w: &[T], b: &[T], y: &mut [T], mean: &mut [T], rstd: &mut [T], n: usize, d: usize, eps: f64) {
    todo!()
}

#[allow(clippy::too_many_arguments)]
pub fn backward<T: CpuFloat>(x: &[T], w: &[T], mean: &[T], rstd: &[T], dy: &[T], dx: &mut [T], dw: &mut [T], db: &mut [T], n: usize, d: usize) {
    todo!()
}
