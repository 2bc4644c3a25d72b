//! LayerNorm. x, y [N, D], w, b [D], mean, rstd [N].
//! forward: mean = Σx/D; rstd = 1/sqrt(Σ(x − mean)²/D + eps) (biased variance, as torch);
//!          x̂ = (x − mean)·rstd; y = x̂·w + b.
//! backward: dw += Σ dy·x̂; db += Σ dy; dx += rstd·(g − mean(g) − x̂·mean(g·x̂)), g = dy·w.
//! residual_forward: h += y, then forward(h) (forward only, as in rmsnorm.rs).
//!
//! Row statistics in f64 (two-pass variance). dw, db reduced over fixed row blocks as in rmsnorm,
//! and the per-row loops dispatched to the machine's vector level as there (same bits).

use super::rmsnorm::{add_partials, backward_blocks, for_row_blocks};
use super::team::Pieces;
use super::CpuFloat;

#[allow(clippy::too_many_arguments)]
pub fn forward<T: CpuFloat>(
    x: &[T],
    w: &[T],
    b: &[T],
    y: &mut [T],
    mean: &mut [T],
    rstd: &mut [T],
    n: usize,
    d: usize,
    eps: f64,
) {
    assert!(
        d > 0
            && x.len() >= n * d
            && y.len() >= n * d
            && w.len() >= d
            && b.len() >= d
            && mean.len() >= n
            && rstd.len() >= n,
        "layernorm_forward: buffers too small for [{n} x {d}]"
    );
    let rp = Pieces::new(&mut rstd[..n]);
    for_row_blocks(y, &mut mean[..n], d, &|r, y, mean| {
        // SAFETY: for_row_blocks's ranges are disjoint
        let rstd = unsafe { rp.get(r.clone()) };
        let x = x[r.start * d..r.end * d].chunks(d);
        for ((y, x), (mu, rs)) in y.chunks_mut(d).zip(x).zip(mean.iter_mut().zip(rstd)) {
            (*mu, *rs) = row(x, w, b, y, eps);
        }
    });
}

crate::simd_fn! {
    /// One row of the forward: y = (x − mean)·rstd·w + b; returns (mean, rstd).
    fn row<T: CpuFloat>(x: &[T], w: &[T], b: &[T], y: &mut [T], eps: f64) -> (T, T) {
        row_inline(x, w, b, y, eps)
    }
}

crate::simd_fn! {
    /// One row of the residual forward: h += y, then out = layernorm(h); returns (mean, rstd).
    fn residual_row<T: CpuFloat>(h: &mut [T], y: &[T], w: &[T], b: &[T], out: &mut [T], eps: f64) -> (T, T) {
        for (h, &y) in h.iter_mut().zip(y) {
            *h = *h + y;
        }
        row_inline(h, w, b, out, eps)
    }
}

#[inline(always)]
fn row_inline<T: CpuFloat>(x: &[T], w: &[T], b: &[T], y: &mut [T], eps: f64) -> (T, T) {
    let d = x.len();
    let mu = x.iter().map(|v| v.to_f64c()).sum::<f64>() / d as f64;
    let var = x.iter().map(|v| (v.to_f64c() - mu).powi(2)).sum::<f64>() / d as f64;
    let r = 1.0 / (var + eps).sqrt();
    for j in 0..d {
        y[j] = T::from_f64c((x[j].to_f64c() - mu) * r) * w[j] + b[j];
    }
    (T::from_f64c(mu), T::from_f64c(r))
}

/// Residual add fused with the forward: h += y, then out = layernorm(h) row by row (same
/// numbers as `elementwise::add` then `forward`).
#[allow(clippy::too_many_arguments)]
pub fn residual_forward<T: CpuFloat>(
    h: &mut [T],
    y: &[T],
    w: &[T],
    b: &[T],
    out: &mut [T],
    mean: &mut [T],
    rstd: &mut [T],
    n: usize,
    d: usize,
    eps: f64,
) {
    assert!(
        d > 0
            && h.len() >= n * d
            && y.len() >= n * d
            && out.len() >= n * d
            && w.len() >= d
            && b.len() >= d
            && mean.len() >= n
            && rstd.len() >= n,
        "residual_layernorm_forward: buffers too small for [{n} x {d}]"
    );
    let (hp, rp) = (Pieces::new(&mut h[..n * d]), Pieces::new(&mut rstd[..n]));
    for_row_blocks(out, &mut mean[..n], d, &|r, out, mean| {
        // SAFETY: for_row_blocks's ranges are disjoint
        let (h, rstd) = unsafe { (hp.get(r.start * d..r.end * d), rp.get(r.clone())) };
        let y = y[r.start * d..r.end * d].chunks(d);
        let rows = h.chunks_mut(d).zip(y).zip(out.chunks_mut(d));
        for ((((h, y), out), mu), rs) in rows.zip(mean.iter_mut()).zip(rstd) {
            (*mu, *rs) = residual_row(h, y, w, b, out, eps);
        }
    });
}

#[allow(clippy::too_many_arguments)]
pub fn backward<T: CpuFloat>(
    x: &[T],
    w: &[T],
    mean: &[T],
    rstd: &[T],
    dy: &[T],
    dx: &mut [T],
    dw: &mut [T],
    db: &mut [T],
    n: usize,
    d: usize,
) {
    assert!(
        d > 0
            && x.len() >= n * d
            && dy.len() >= n * d
            && dx.len() >= n * d
            && w.len() >= d
            && dw.len() >= d
            && db.len() >= d
            && mean.len() >= n
            && rstd.len() >= n,
        "layernorm_backward: buffers too small for [{n} x {d}]"
    );
    let partials = backward_blocks(dx, n, d, 2, &|rows, dxb, parts| {
        let (dw_part, db_part) = parts.split_at_mut(d);
        for (row, dxr) in rows.zip(dxb.chunks_mut(d)) {
            let (xr, dyr) = (&x[row * d..(row + 1) * d], &dy[row * d..(row + 1) * d]);
            let stats = (mean[row].to_f64c(), rstd[row].to_f64c());
            backward_row(xr, dyr, w, stats, dxr, dw_part, db_part);
        }
    });
    add_partials(&mut dw[..d], &partials, 0, 2);
    add_partials(&mut db[..d], &partials, 1, 2);
}

crate::simd_fn! {
    /// One row of the backward: dx += rstd·(g − mean(g) − x̂·mean(g·x̂)), g = dy·w;
    /// dw_part += dy·x̂, db_part += dy. `stats` = (mean, rstd) of the row.
    fn backward_row<T: CpuFloat>(
        x: &[T],
        dy: &[T],
        w: &[T],
        stats: (f64, f64),
        dx: &mut [T],
        dw_part: &mut [f64],
        db_part: &mut [f64],
    ) {
        let (mu, r) = stats;
        let d = dx.len();
        let (x, dy, w) = (&x[..d], &dy[..d], &w[..d]);
        let (dw_part, db_part) = (&mut dw_part[..d], &mut db_part[..d]);
        let (mut sum_g, mut sum_gx) = (0f64, 0f64);
        for j in 0..d {
            let xh = (x[j].to_f64c() - mu) * r;
            let g = dy[j].to_f64c() * w[j].to_f64c();
            sum_g += g;
            sum_gx += g * xh;
            dw_part[j] += dy[j].to_f64c() * xh;
            db_part[j] += dy[j].to_f64c();
        }
        let (mean_g, mean_gx) = (sum_g / d as f64, sum_gx / d as f64);
        for j in 0..d {
            let xh = (x[j].to_f64c() - mu) * r;
            let g = dy[j].to_f64c() * w[j].to_f64c();
            dx[j] = dx[j] + T::from_f64c(r * (g - mean_g - xh * mean_gx));
        }
    }
}
