//! RMSNorm. x, y [N, D], w [D], rstd [N]; the scale is s = w + w_offset (w_offset 0, or 1 for
//! Gemma, whose stored weight is the scale minus one), formed in T as transformers' `1.0 + w`.
//! forward: rstd = 1/sqrt(mean(x²) + eps); y = x · rstd · s.
//! backward: dw += Σ_n dy·x·rstd;  dx += rstd·(dy·s − x̂·mean(dy·s·x̂)), x̂ = x·rstd.
//! residual_forward: h += y, then forward(h) (forward only: the add's backward is the identity,
//! and `backward` already ADDS dx into the residual gradient).
//!
//! Row statistics are accumulated in f64. dw is reduced over fixed blocks of rows (one f64
//! partial per block, summed in block order): race-free and independent of the thread count.
//! The per-row loops run compiled for the machine's vector level (`simd_fn!`): the elementwise
//! parts vectorize, the f64 sums keep their sequential order, so every level gives the same bits.

use super::workspace::{self, Work};
use super::CpuFloat;
use rayon::prelude::*;

/// Rows per parallel task (and per dw partial sum).
pub(crate) const ROWS_PER_TASK: usize = 32;

/// The forward's constants: eps under the square root, and the offset added to the weight.
#[derive(Clone, Copy, Debug)]
pub struct Params {
    pub eps: f64,
    pub w_offset: f64,
}

pub fn forward<T: CpuFloat>(
    x: &[T],
    w: &[T],
    y: &mut [T],
    rstd: &mut [T],
    n: usize,
    d: usize,
    p: Params,
) {
    assert!(
        d > 0 && x.len() >= n * d && y.len() >= n * d && w.len() >= d && rstd.len() >= n,
        "rmsnorm_forward: buffers too small for [{n} x {d}]"
    );
    y[..n * d]
        .par_chunks_mut(d)
        .zip(x[..n * d].par_chunks(d))
        .zip(&mut rstd[..n])
        .for_each(|((y, x), rs)| *rs = row(x, w, y, p.eps, p.w_offset));
}

crate::simd_fn! {
    /// One row of the forward: y = x·rstd·(w + w_offset); returns rstd.
    fn row<T: CpuFloat>(x: &[T], w: &[T], y: &mut [T], eps: f64, w_offset: f64) -> T {
        row_inline(x, w, y, eps, w_offset)
    }
}

#[inline(always)]
fn row_inline<T: CpuFloat>(x: &[T], w: &[T], y: &mut [T], eps: f64, w_offset: f64) -> T {
    let ms = x.iter().map(|v| v.to_f64c().powi(2)).sum::<f64>() / x.len() as f64;
    let r = 1.0 / (ms + eps).sqrt();
    if w_offset == 0.0 {
        for ((y, &x), &w) in y.iter_mut().zip(x).zip(w) {
            *y = T::from_f64c(x.to_f64c() * r) * w;
        }
    } else {
        let off = T::from_f64c(w_offset);
        for ((y, &x), &w) in y.iter_mut().zip(x).zip(w) {
            *y = T::from_f64c(x.to_f64c() * r) * (w + off);
        }
    }
    T::from_f64c(r)
}

crate::simd_fn! {
    /// One row of the residual forward: h += y, then out = rmsnorm(h); returns rstd.
    fn residual_row<T: CpuFloat>(h: &mut [T], y: &[T], w: &[T], out: &mut [T], eps: f64, w_offset: f64) -> T {
        for (h, &y) in h.iter_mut().zip(y) {
            *h = *h + y;
        }
        row_inline(h, w, out, eps, w_offset)
    }
}

/// Residual add fused with the forward: h += y, then y_out = rmsnorm(h) row by row (one pass
/// over memory instead of two; same numbers as `elementwise::add` then `forward`).
#[allow(clippy::too_many_arguments)]
pub fn residual_forward<T: CpuFloat>(
    h: &mut [T],
    y: &[T],
    w: &[T],
    out: &mut [T],
    rstd: &mut [T],
    n: usize,
    d: usize,
    p: Params,
) {
    assert!(
        d > 0
            && h.len() >= n * d
            && y.len() >= n * d
            && out.len() >= n * d
            && w.len() >= d
            && rstd.len() >= n,
        "residual_rmsnorm_forward: buffers too small for [{n} x {d}]"
    );
    h[..n * d]
        .par_chunks_mut(d)
        .zip(y[..n * d].par_chunks(d))
        .zip(out[..n * d].par_chunks_mut(d))
        .zip(&mut rstd[..n])
        .for_each(|(((h, y), out), rs)| *rs = residual_row(h, y, w, out, p.eps, p.w_offset));
}

#[allow(clippy::too_many_arguments)]
pub fn backward<T: CpuFloat>(
    x: &[T],
    w: &[T],
    rstd: &[T],
    dy: &[T],
    dx: &mut [T],
    dw: &mut [T],
    n: usize,
    d: usize,
    w_offset: f64,
) {
    assert!(
        d > 0
            && x.len() >= n * d
            && dy.len() >= n * d
            && dx.len() >= n * d
            && w.len() >= d
            && dw.len() >= d
            && rstd.len() >= n,
        "rmsnorm_backward: buffers too small for [{n} x {d}]"
    );
    let blk = ROWS_PER_TASK * d;
    let partials: Vec<Work<f64>> = dx[..n * d]
        .par_chunks_mut(blk)
        .enumerate()
        .map(|(b, dxb)| {
            let mut dw_part = workspace::zeroed::<f64>(d);
            for (i, dxr) in dxb.chunks_mut(d).enumerate() {
                let row = b * ROWS_PER_TASK + i;
                let (xr, dyr) = (&x[row * d..(row + 1) * d], &dy[row * d..(row + 1) * d]);
                backward_row(xr, dyr, w, w_offset, rstd[row].to_f64c(), dxr, &mut dw_part);
            }
            dw_part
        })
        .collect();
    add_partials(&mut dw[..d], &partials);
}

crate::simd_fn! {
    /// One row of the backward: dx += rstd·(g − x̂·mean(g·x̂)), g = dy·(w + w_offset);
    /// dw_part += dy·x̂.
    fn backward_row<T: CpuFloat>(x: &[T], dy: &[T], w: &[T], w_offset: f64, r: f64, dx: &mut [T], dw_part: &mut [f64]) {
        let d = dx.len();
        let (x, dy, w, dw_part) = (&x[..d], &dy[..d], &w[..d], &mut dw_part[..d]);
        let off = T::from_f64c(w_offset);
        // mean over d of (dy·w)·x̂
        let mut dot = 0f64;
        for j in 0..d {
            let xh = x[j].to_f64c() * r;
            let g = dy[j].to_f64c() * (w[j] + off).to_f64c();
            dot += g * xh;
            dw_part[j] += dy[j].to_f64c() * xh;
        }
        let mean_gx = dot / d as f64;
        for j in 0..d {
            let xh = x[j].to_f64c() * r;
            let g = dy[j].to_f64c() * (w[j] + off).to_f64c();
            dx[j] = dx[j] + T::from_f64c(r * (g - xh * mean_gx));
        }
    }
}

/// dst[j] += Σ_p partials[p][j], summed in order.
pub(crate) fn add_partials<T: CpuFloat>(dst: &mut [T], partials: &[Work<f64>]) {
    for (j, v) in dst.iter_mut().enumerate() {
        let s: f64 = partials.iter().map(|p| p[j]).sum();
        *v = *v + T::from_f64c(s);
    }
}
