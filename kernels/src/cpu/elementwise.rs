//! Elementwise helpers over flat slices of n elements:
//!   add: x += y;  scale: x *= s;  sum: Σx;  sum_squares: Σx²  (both accumulated in f64);
//!   copy_columns: dst[r, dst_col0 + c] (= | +=) src[r, src_col0 + c], r < rows, c < width,
//!   for row-major src [rows, src_cols] and dst [rows, dst_cols] (split/merge of fused QKV).
//! Reductions sum fixed-size chunks in parallel, then the chunk partials in order, so the result
//! does not depend on the thread count or on scheduling.
//! Row helpers (single-threaded): max_lanes, sum_lanes, sum_lanes_f64 keep LANES independent
//! accumulators so the compiler can use SIMD lanes (a plain fold is one serial dependency chain);
//! they are inlined into their callers, so they run at the vector width the caller runs at.
//!   softcap: x ← c·tanh(x / c);  softcap_backward: dy *= 1 − (y / c)² for y the capped values.
//! add, scale and the softcaps run their chunks at the machine's vector width (simd.rs).

use super::team::{self, Pieces};
use super::CpuFloat;

/// Elements per parallel work item.
const CHUNK: usize = 1 << 14;

crate::simd_fn! {
    /// x += y, element by element (one chunk).
    pub fn add_chunk<T: CpuFloat>(x: &mut [T], y: &[T]) {
        for (a, &b) in x.iter_mut().zip(y) {
            *a = *a + b;
        }
    }
}

crate::simd_fn! {
    fn scale_chunk<T: CpuFloat>(x: &mut [T], s: T) {
        x.iter_mut().for_each(|a| *a = *a * s);
    }
}

crate::simd_fn! {
    /// x ← c·tanh(x / c), in the order transformers computes Gemma 2's softcaps (one chunk).
    pub(crate) fn softcap_chunk<T: CpuFloat>(x: &mut [T], c: T) {
        for v in x.iter_mut() {
            *v = (*v / c).tanh_elem() * c;
        }
    }
}

crate::simd_fn! {
    fn softcap_backward_chunk<T: CpuFloat>(dy: &mut [T], y: &[T], c: T) {
        for (g, &y) in dy.iter_mut().zip(y) {
            let t = y / c;
            *g = *g * (T::one() - t * t);
        }
    }
}

pub fn softcap<T: CpuFloat>(x: &mut [T], c: f64) {
    let c = T::from_f64c(c);
    let len = x.len();
    let xp = Pieces::new(x);
    team::for_ranges(len, CHUNK, &|r| {
        // SAFETY: for_ranges's ranges are disjoint
        softcap_chunk(unsafe { xp.get(r) }, c)
    });
}

pub fn softcap_backward<T: CpuFloat>(dy: &mut [T], y: &[T], c: f64) {
    assert_eq!(dy.len(), y.len(), "softcap_backward: lengths differ");
    let c = T::from_f64c(c);
    let dp = Pieces::new(dy);
    team::for_ranges(y.len(), CHUNK, &|r| {
        // SAFETY: for_ranges's ranges are disjoint
        softcap_backward_chunk(unsafe { dp.get(r.clone()) }, &y[r], c)
    });
}

pub fn add<T: CpuFloat>(x: &mut [T], y: &[T]) {
    assert_eq!(x.len(), y.len(), "add: lengths differ");
    let xp = Pieces::new(x);
    team::for_ranges(y.len(), CHUNK, &|r| {
        // SAFETY: for_ranges's ranges are disjoint
        add_chunk(unsafe { xp.get(r.clone()) }, &y[r])
    });
}

pub fn scale<T: CpuFloat>(x: &mut [T], s: f64) {
    let s = T::from_f64c(s);
    let len = x.len();
    let xp = Pieces::new(x);
    team::for_ranges(len, CHUNK, &|r| {
        // SAFETY: for_ranges's ranges are disjoint
        scale_chunk(unsafe { xp.get(r) }, s)
    });
}

/// Σ f(x) in f64, deterministic: chunk partials in parallel, then summed in chunk order.
fn reduce<T: CpuFloat>(x: &[T], f: impl Fn(f64) -> f64 + Sync) -> f64 {
    let mut partials = super::workspace::zeroed::<f64>(x.len().div_ceil(CHUNK));
    team::for_chunks_mut(&mut partials, 1, 1, &|i, p| {
        let c = &x[i * CHUNK..((i + 1) * CHUNK).min(x.len())];
        p[0] = c.iter().map(|&a| f(a.to_f64c())).sum::<f64>();
    });
    partials.iter().sum()
}

pub fn sum<T: CpuFloat>(x: &[T]) -> f64 {
    reduce(x, |a| a)
}

pub fn sum_squares<T: CpuFloat>(x: &[T]) -> f64 {
    reduce(x, |a| a * a)
}

#[allow(clippy::too_many_arguments)]
pub fn copy_columns<T: CpuFloat>(
    src: &[T],
    src_cols: usize,
    src_col0: usize,
    dst: &mut [T],
    dst_cols: usize,
    dst_col0: usize,
    rows: usize,
    width: usize,
    accumulate: bool,
) {
    assert!(
        src_col0 + width <= src_cols,
        "copy_columns: src columns {src_col0}+{width} exceed {src_cols}"
    );
    assert!(
        dst_col0 + width <= dst_cols,
        "copy_columns: dst columns {dst_col0}+{width} exceed {dst_cols}"
    );
    assert!(
        src.len() >= rows * src_cols,
        "copy_columns: src holds {} < {rows} x {src_cols}",
        src.len()
    );
    assert!(
        dst.len() >= rows * dst_cols,
        "copy_columns: dst holds {} < {rows} x {dst_cols}",
        dst.len()
    );
    if rows == 0 || width == 0 {
        return;
    }
    let src = &src[..rows * src_cols];
    let dst = &mut dst[..rows * dst_cols];
    let per_part = (CHUNK / width).max(1);
    team::for_chunks_mut(dst, dst_cols, per_part, &|i, d| {
        let d = &mut d[dst_col0..dst_col0 + width];
        let s = &src[i * src_cols + src_col0..i * src_cols + src_col0 + width];
        if accumulate {
            add_chunk(d, s);
        } else {
            d.copy_from_slice(s);
        }
    });
}

/// Independent accumulators of the row helpers.
pub(crate) const LANES: usize = 8;

/// max of xs (−∞ for an empty slice).
#[inline(always)]
pub fn max_lanes<T: CpuFloat>(xs: &[T]) -> T {
    let mut acc = [T::neg_infinity(); LANES];
    let chunks = xs.chunks_exact(LANES);
    let tail = chunks
        .remainder()
        .iter()
        .fold(T::neg_infinity(), |m, &x| m.max(x));
    for c in chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a = a.max(x);
        }
    }
    acc.iter().fold(tail, |m, &x| m.max(x))
}

/// Σ xs in T.
#[inline(always)]
pub fn sum_lanes<T: CpuFloat>(xs: &[T]) -> T {
    let mut acc = [T::zero(); LANES];
    let chunks = xs.chunks_exact(LANES);
    let tail = chunks.remainder().iter().fold(T::zero(), |s, &x| s + x);
    for c in chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a = *a + x;
        }
    }
    acc.iter().fold(tail, |s, &x| s + x)
}

/// Σ xs accumulated in f64.
#[inline(always)]
pub fn sum_lanes_f64<T: CpuFloat>(xs: &[T]) -> f64 {
    let mut acc = [0f64; LANES];
    let chunks = xs.chunks_exact(LANES);
    let tail: f64 = chunks.remainder().iter().map(|x| x.to_f64c()).sum();
    for c in chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += x.to_f64c();
        }
    }
    acc.iter().sum::<f64>() + tail
}
