//! Tile shapes, the split of a packed batch into per-segment row tiles, the score tile
//!   S[i, j] = scale · q[r0 + i] · k[c0 + j]   (−∞ where causal and c0 + j > r0 + i, or, with a
//!                                              sliding window w, c0 + j ≤ r0 + i − w;
//!                                              with a softcap c, c · tanh(S / c) before the mask)
//! and the ranges of tiles a query tile or a key tile meets, shared by forward and backward.
//! Rows are local positions inside one segment.

use crate::backend::AttnDims;
use crate::cpu::elementwise::softcap_chunk;
use crate::cpu::gemm::{gemm, View, ViewMut};
use crate::cpu::CpuFloat;

/// Query rows per tile: (BLOCK_Q, Dh) query / output / dq tiles.
pub const BLOCK_Q: usize = 64;
/// Key rows per tile: (BLOCK_K, Dh) key / value / dk / dv tiles; scores are (BLOCK_Q, BLOCK_K).
pub const BLOCK_K: usize = 64;

/// Rows [r0, r1) of the segment that starts at token `start`.
#[derive(Clone, Copy, Debug)]
pub struct Tile {
    pub start: usize,
    pub len: usize,
    pub r0: usize,
    pub r1: usize,
}

impl Tile {
    pub fn rows(&self) -> usize {
        self.r1 - self.r0
    }
    /// First token of the tile in the packed batch.
    pub fn token(&self) -> usize {
        self.start + self.r0
    }
}

/// Checks the layout contract and returns the segment bounds (start, len).
pub fn segments(cu_seqlens: &[i32], dims: &AttnDims) -> Vec<(usize, usize)> {
    let AttnDims {
        tokens,
        heads,
        kv_heads,
        head_dim,
        segments,
        max_seqlen,
        ..
    } = *dims;
    assert!(
        kv_heads > 0 && heads % kv_heads == 0,
        "attention: heads {heads} not a multiple of kv_heads {kv_heads}"
    );
    assert!(head_dim > 0, "attention: head_dim is 0");
    if let Err(e) = dims.check_window() {
        panic!("{e}");
    }
    assert!(
        cu_seqlens.len() > segments,
        "attention: cu_seqlens holds {} < segments + 1 = {}",
        cu_seqlens.len(),
        segments + 1
    );
    let cu: Vec<usize> = cu_seqlens[..=segments]
        .iter()
        .map(|&c| {
            usize::try_from(c)
                .unwrap_or_else(|_| panic!("attention: negative cu_seqlens entry {c}"))
        })
        .collect();
    assert!(
        cu[0] == 0 && cu[segments] == tokens,
        "attention: cu_seqlens must run from 0 to tokens = {tokens}, got {cu:?}"
    );
    cu.windows(2)
        .map(|w| {
            assert!(
                w[0] <= w[1],
                "attention: cu_seqlens not non-decreasing: {cu:?}"
            );
            assert!(
                w[1] - w[0] <= max_seqlen,
                "attention: segment of {} tokens exceeds max_seqlen {max_seqlen}",
                w[1] - w[0]
            );
            (w[0], w[1] - w[0])
        })
        .collect()
}

/// All tiles of `block` rows, segment by segment, in token order (so they cover 0..N in order).
pub fn row_tiles(segs: &[(usize, usize)], block: usize) -> Vec<Tile> {
    segs.iter()
        .flat_map(|&(start, len)| {
            (0..len).step_by(block).map(move |r0| Tile {
                start,
                len,
                r0,
                r1: (r0 + block).min(len),
            })
        })
        .collect()
}

/// Splits a [N, row] buffer into the disjoint row blocks of `tiles` (which cover it in order).
pub fn split_rows<'a, T>(mut buf: &'a mut [T], tiles: &[Tile], row: usize) -> Vec<&'a mut [T]> {
    tiles
        .iter()
        .map(|t| {
            let (head, rest) = std::mem::take(&mut buf).split_at_mut(t.rows() * row);
            buf = rest;
            head
        })
        .collect()
}

/// One head's rows [row0, row0 + rows) of a [N, heads, Dh] tensor as a (rows, Dh) view.
pub fn head_rows<T>(
    x: &[T],
    row0: usize,
    rows: usize,
    heads: usize,
    head: usize,
    dh: usize,
) -> View<'_, T> {
    View::strided_rows(&x[(row0 * heads + head) * dh..], rows, dh, heads * dh)
}

/// The same for a tile-local output block (rows start at the block's first element).
pub fn head_rows_mut<T>(
    x: &mut [T],
    rows: usize,
    heads: usize,
    head: usize,
    dh: usize,
) -> ViewMut<'_, T> {
    ViewMut::strided_rows(&mut x[head * dh..], rows, dh, heads * dh)
}

/// s[i·cols + j] = scale · q_i · k_j for the local rows r0.. (q) and c0.. (k), with the causal
/// (and sliding-window) mask applied as −∞: key c0 + j is visible to query r0 + i only inside
/// `dims.key_range(r0 + i)`. `s` is (q.rows, k.rows) row-major.
pub fn scores<T: CpuFloat>(
    s: &mut [T],
    q: View<'_, T>,
    k: View<'_, T>,
    scale: T,
    dims: &AttnDims,
    r0: usize,
    c0: usize,
) {
    let (rows, cols) = (q.rows, k.rows);
    gemm(
        scale,
        q,
        k.t(),
        T::zero(),
        ViewMut::row_major(&mut s[..rows * cols], rows, cols),
    );
    if let Some(c) = dims.softcap {
        softcap_chunk(&mut s[..rows * cols], T::from_f64c(c));
    }
    if !dims.causal {
        return;
    }
    for i in 0..rows {
        let (lo, hi) = dims.key_range(r0 + i, usize::MAX);
        let row = &mut s[i * cols..(i + 1) * cols];
        row[..lo.saturating_sub(c0).min(cols)].fill(T::neg_infinity());
        row[hi.saturating_sub(c0).min(cols)..].fill(T::neg_infinity());
    }
}

/// The key tiles query rows [r0, r1) of a segment of `len` see: tile starts from the tile of
/// the first visible key (a multiple of BLOCK_K) to `end`, the last visible key + 1. Tiles
/// wholly outside the causal limit or the sliding window are skipped.
pub fn key_tiles(dims: &AttnDims, r0: usize, r1: usize, len: usize) -> (usize, usize) {
    let lo = dims.key_range(r0, len).0;
    let hi = dims.key_range(r1 - 1, len).1;
    (lo - lo % BLOCK_K, hi)
}

/// The query rows that see any key of [c0, c1) in a segment of `len`: [lo, hi), lo = c0 when
/// causal (a multiple of BLOCK_Q when c0 is one of BLOCK_K, as BLOCK_Q = BLOCK_K).
pub fn query_rows(dims: &AttnDims, c0: usize, c1: usize, len: usize) -> (usize, usize) {
    (dims.query_range(c0, len).0, dims.query_range(c1 - 1, len).1)
}
