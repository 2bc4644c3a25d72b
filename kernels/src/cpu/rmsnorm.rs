//! RMSNorm. x, y [N, D], w [D], rstd [N]; the scale is s = w + w_offset (w_offset 0, or 1 for
//! Gemma, whose stored weight is the scale minus one), formed in T as transformers' `1.0 + w`.
//! forward: rstd = 1/sqrt(mean(x²) + eps); y = x · rstd · s.
//! backward: dw += Σ_n dy·x·rstd;  dx += rstd·(dy·s − x̂·mean(dy·s·x̂)), x̂ = x·rstd.
//! residual_forward: h += y, then forward(h) (forward only: the add's backward is the identity,
//! and `backward` already ADDS dx into the residual gradient).
//!
//! Row statistics are accumulated in f64. dw is reduced over fixed blocks of rows (one f64
//! partial per block, summed in block order): race-free and independent of the thread count.
//! Rows are spread over the GEMM's thread team (team.rs), like every other per-step loop, so
//! no second pool competes with the team's spinning helpers for the cores.
//! The per-row loops run compiled for the machine's vector level (`simd_fn!`): the elementwise
//! parts vectorize, the f64 sums keep their sequential order, so every level gives the same bits.

use super::team::{self, Pieces};
use super::workspace::{self, Work};
use super::CpuFloat;

/// Rows per backward task (and per dw partial sum).
pub(crate) const ROWS_PER_TASK: usize = 32;

/// Rows per team part in the forward loops: about 8K elements, so a part outweighs its claim.
pub(crate) fn rows_per_part(d: usize) -> usize {
    (8192 / d.max(1)).max(1)
}

/// A block of rows with its rows of one output and of one per-row vector (or partials).
pub(crate) type RowBlock<'a, T, S> = dyn Fn(std::ops::Range<usize>, &mut [T], &mut [S]) + Sync + 'a;

/// Calls row_block(rows, out_rows, stat_rows) over the team for consecutive ranges of rows,
/// with the matching rows of `out` (d each) and entries of `stats`.
pub(crate) fn for_row_blocks<T: Send, S: Send>(
    out: &mut [T],
    stats: &mut [S],
    d: usize,
    row_block: &RowBlock<'_, T, S>,
) {
    let n = stats.len();
    let (op, sp) = (Pieces::new(&mut out[..n * d]), Pieces::new(stats));
    team::for_ranges(n, rows_per_part(d), &|r| {
        // SAFETY: for_ranges's ranges are disjoint, and so are the rows they scale to
        let (o, s) = unsafe { (op.get(r.start * d..r.end * d), sp.get(r.clone())) };
        row_block(r, o, s)
    });
}

/// The backward's blocks of `ROWS_PER_TASK` rows over the team: block_rows(rows, dx_rows,
/// partials) with that block's own zeroed f64 partials (`sums` vectors of d). Returns every
/// block's partials, block after block, for `add_partials`.
pub(crate) fn backward_blocks<T: CpuFloat>(
    dx: &mut [T],
    n: usize,
    d: usize,
    sums: usize,
    block_rows: &RowBlock<'_, T, f64>,
) -> Work<f64> {
    let blocks = n.div_ceil(ROWS_PER_TASK);
    let mut partials = workspace::zeroed::<f64>(blocks * sums * d);
    let (dp, pp) = (
        Pieces::new(&mut dx[..n * d]),
        Pieces::new(&mut partials[..]),
    );
    team::for_ranges(blocks, 1, &|bs| {
        for b in bs {
            let rows = b * ROWS_PER_TASK..((b + 1) * ROWS_PER_TASK).min(n);
            let part = b * sums * d..(b + 1) * sums * d;
            // SAFETY: blocks are disjoint, and so are their rows and partials
            let (dxb, pb) = unsafe { (dp.get(rows.start * d..rows.end * d), pp.get(part)) };
            block_rows(rows, dxb, pb);
        }
    });
    partials
}

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
    for_row_blocks(y, &mut rstd[..n], d, &|r, y, rstd| {
        let x = x[r.start * d..r.end * d].chunks(d);
        for ((y, x), rs) in y.chunks_mut(d).zip(x).zip(rstd) {
            *rs = row(x, w, y, p.eps, p.w_offset);
        }
    });
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
    let hp = Pieces::new(&mut h[..n * d]);
    for_row_blocks(out, &mut rstd[..n], d, &|r, out, rstd| {
        // SAFETY: for_row_blocks's ranges are disjoint
        let h = unsafe { hp.get(r.start * d..r.end * d) };
        let y = y[r.start * d..r.end * d].chunks(d);
        for (((h, y), out), rs) in h.chunks_mut(d).zip(y).zip(out.chunks_mut(d)).zip(rstd) {
            *rs = residual_row(h, y, w, out, p.eps, p.w_offset);
        }
    });
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
    let partials = backward_blocks(dx, n, d, 1, &|rows, dxb, dw_part| {
        for (row, dxr) in rows.zip(dxb.chunks_mut(d)) {
            let (xr, dyr) = (&x[row * d..(row + 1) * d], &dy[row * d..(row + 1) * d]);
            backward_row(xr, dyr, w, w_offset, rstd[row].to_f64c(), dxr, dw_part);
        }
    });
    add_partials(&mut dw[..d], &partials, 0, 1);
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

/// dst[j] += Σ_b (block b's partial vector `which` of `sums`)[j], summed in block order
/// (`backward_blocks`'s layout; d = dst.len()).
pub(crate) fn add_partials<T: CpuFloat>(
    dst: &mut [T],
    partials: &[f64],
    which: usize,
    sums: usize,
) {
    let d = dst.len();
    for (j, v) in dst.iter_mut().enumerate() {
        let s: f64 = partials[which * d + j..].iter().step_by(sums * d).sum();
        *v = *v + T::from_f64c(s);
    }
}
