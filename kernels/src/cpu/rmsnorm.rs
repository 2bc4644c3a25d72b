//! RMSNorm. x, y [N, D], w [D], rstd [N].
//! forward: rstd = 1/sqrt(mean(x²) + eps); y = x · rstd · w.
//! backward: dw += Σ_n dy·x·rstd;  dx += rstd·(dy·w − x̂·mean(dy·w·x̂)), x̂ = x·rstd.

use super::CpuFloat;

#[allow(clippy::too_many_arguments)]
pub fn forward<T: CpuFloat>(x: &[T], w: &[T], y: &mut [T], rstd: &mut [T], n: usize, d: usize, eps: f64) {
    todo!()
}

#[allow(clippy::too_many_arguments)]
pub fn backward<T: CpuFloat>(x: &[T], w: &[T], rstd: &[T], dy: &[T], dx: &mut [T], dw: &mut [T], n: usize, d: usize) {
    todo!()
}
