//! Attention backward (FlashAttention-2 math, recomputing P = exp(S − lse) per tile):
//!   S (BLOCK_Q, BLOCK_K); P = exp(S − lse); dV += Pᵀ dO; dP = dO Vᵀ; dS = P ∘ (dP − D);
//!   dK += scale · dSᵀ Q;  dQ += scale · dS K,   with D_i = Σ_d dO_id O_id ([N, H]) computed first.
//!   With a softcap c, S is the capped score c·tanh(S₀/c) and dS is multiplied by its derivative
//!   1 − (S / c)² (0 where masked).
//! Two race-free, deterministic schemes; which one runs depends only on the problem (not on the
//! thread count), so results are bitwise reproducible:
//!   ByKvHead (when there are ≥ MIN_KV_TASKS (segment, kv head) pairs, see by_kv_head.rs): one
//!     task per pair owns its dk, dv and the dq of its query-head group: 5 GEMMs per tile pair.
//!   TwoPass (otherwise: few long sequences, MQA): tasks own disjoint row blocks of the outputs
//!     pass 1, per (segment, key tile), for each kv head and each query head of its group, over
//!       query tiles at or after the key tile (causal; with a sliding window w, only those
//!       before its last key + w) or all (full): dV, dK tiles (BLOCK_K, Dh);
//!     pass 2, per (segment, query tile), for each query head, over visible key tiles (those
//!       wholly outside the window skipped):
//!       recompute S, P, dP, dS; dQ tile (BLOCK_Q, Dh).
//!     The price is recomputing S and dP in pass 2 (7 tile GEMMs per tile pair instead of 5).
//! dq, dk, dv are OVERWRITTEN.

use super::tiles::{
    head_rows, head_rows_mut, key_tiles, query_rows, row_tiles, scores, segments, split_rows, Tile,
    BLOCK_K, BLOCK_Q,
};
use crate::backend::AttnDims;
use crate::cpu::gemm::{gemm, View, ViewMut};
use crate::cpu::workspace::{self, Work};
use crate::cpu::{team, CpuFloat};

/// Read-only inputs of the backward, with the derived D = rowsum(dO ∘ O) and lse.
pub(super) struct Inputs<'a, T> {
    pub q: &'a [T],
    pub k: &'a [T],
    pub v: &'a [T],
    pub dout: &'a [T],
    pub lse: &'a [T],   // [H, N]
    pub delta: Work<T>, // [N, H]
    pub dims: AttnDims,
}

/// How the backward splits its work (see the top comment).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackwardScheme {
    TwoPass,
    ByKvHead,
}

/// ByKvHead runs when the batch has at least this many non-empty (segment, kv head) pairs:
/// enough tasks to balance unequal segment lengths over a few cores.
pub const MIN_KV_TASKS: usize = 8;

/// The scheme `backward` picks for these segment bounds.
pub fn scheme_for(cu_seqlens: &[i32], dims: &AttnDims) -> BackwardScheme {
    let pairs = segments(cu_seqlens, dims)
        .iter()
        .filter(|s| s.1 > 0)
        .count()
        * dims.kv_heads;
    if pairs >= MIN_KV_TASKS {
        BackwardScheme::ByKvHead
    } else {
        BackwardScheme::TwoPass
    }
}

#[allow(clippy::too_many_arguments)]
pub fn backward<T: CpuFloat>(
    q: &[T],
    k: &[T],
    v: &[T],
    o: &[T],
    dout: &[T],
    lse: &[T],
    dq: &mut [T],
    dk: &mut [T],
    dv: &mut [T],
    cu_seqlens: &[i32],
    dims: &AttnDims,
) {
    let scheme = scheme_for(cu_seqlens, dims);
    backward_with(q, k, v, o, dout, lse, dq, dk, dv, cu_seqlens, dims, scheme);
}

/// `backward` with an explicit scheme (tests run both on the same inputs).
#[allow(clippy::too_many_arguments)]
pub fn backward_with<T: CpuFloat>(
    q: &[T],
    k: &[T],
    v: &[T],
    o: &[T],
    dout: &[T],
    lse: &[T],
    dq: &mut [T],
    dk: &mut [T],
    dv: &mut [T],
    cu_seqlens: &[i32],
    dims: &AttnDims,
    scheme: BackwardScheme,
) {
    let AttnDims {
        tokens: n,
        heads,
        kv_heads,
        head_dim: dh,
        ..
    } = *dims;
    let segs = segments(cu_seqlens, dims);
    let (q_row, kv_row) = (heads * dh, kv_heads * dh);
    for (name, len) in [
        ("q", q.len()),
        ("o", o.len()),
        ("dout", dout.len()),
        ("dq", dq.len()),
    ] {
        assert!(
            len >= n * q_row,
            "attention_backward: {name} smaller than [{n}, {heads}, {dh}]"
        );
    }
    for (name, len) in [
        ("k", k.len()),
        ("v", v.len()),
        ("dk", dk.len()),
        ("dv", dv.len()),
    ] {
        assert!(
            len >= n * kv_row,
            "attention_backward: {name} smaller than [{n}, {kv_heads}, {dh}]"
        );
    }
    assert!(
        lse.len() >= heads * n,
        "attention_backward: lse smaller than [{heads}, {n}]"
    );

    let mut delta = workspace::zeroed(n * heads);
    team::for_chunks_mut(&mut delta, heads, 64, &|t, d_t| {
        for (h, d) in d_t.iter_mut().enumerate() {
            let at = (t * heads + h) * dh;
            let s: f64 = (0..dh)
                .map(|i| dout[at + i].to_f64c() * o[at + i].to_f64c())
                .sum();
            *d = T::from_f64c(s);
        }
    });
    let inp = Inputs {
        q,
        k,
        v,
        dout,
        lse,
        delta,
        dims: *dims,
    };

    if scheme == BackwardScheme::ByKvHead {
        let (dq, dk, dv) = (
            &mut dq[..n * q_row],
            &mut dk[..n * kv_row],
            &mut dv[..n * kv_row],
        );
        super::by_kv_head::backward(&inp, &segs, dq, dk, dv);
        return;
    }
    // pass 1: dk, dv by key tiles
    let k_tiles = row_tiles(&segs, BLOCK_K);
    let dk_blocks = split_rows(&mut dk[..n * kv_row], &k_tiles, kv_row);
    let dv_blocks = split_rows(&mut dv[..n * kv_row], &k_tiles, kv_row);
    let mut jobs: Vec<_> = k_tiles.iter().zip(dk_blocks).zip(dv_blocks).collect();
    team::for_each_mut(&mut jobs, &|((tile, dk_blk), dv_blk)| {
        key_tile(&inp, tile, dk_blk, dv_blk)
    });

    // pass 2: dq by query tiles
    let q_tiles = row_tiles(&segs, BLOCK_Q);
    let dq_blocks = split_rows(&mut dq[..n * q_row], &q_tiles, q_row);
    let mut jobs: Vec<_> = q_tiles.iter().zip(dq_blocks).collect();
    team::for_each_mut(&mut jobs, &|(tile, dq_blk)| query_tile(&inp, tile, dq_blk));
}

/// Score-tile scratch: P, dP/dS and the softcap's derivative, each (BLOCK_Q, BLOCK_K).
pub(super) struct Scratch<T> {
    pub p: Work<T>,
    pub ds: Work<T>,
    pub cap_grad: Work<T>,
}

impl<T: CpuFloat> Scratch<T> {
    pub fn new() -> Self {
        Scratch {
            p: workspace::zeroed(BLOCK_Q * BLOCK_K),
            ds: workspace::zeroed(BLOCK_Q * BLOCK_K),
            cap_grad: workspace::zeroed(BLOCK_Q * BLOCK_K),
        }
    }
}

/// For query rows r0..r0+rows and key rows c0..c0+cols of one segment and query head h, fills
/// sc.p = P and sc.ds = dS = P ∘ (dO Vᵀ − D), both (rows, cols) row-major.
#[allow(clippy::too_many_arguments)]
pub(super) fn p_and_ds<T: CpuFloat>(
    inp: &Inputs<'_, T>,
    sc: &mut Scratch<T>,
    start: usize,
    r0: usize,
    rows: usize,
    c0: usize,
    cols: usize,
    h: usize,
) {
    let AttnDims {
        tokens: n,
        heads,
        kv_heads,
        head_dim: dh,
        ..
    } = inp.dims;
    let kvh = h / (heads / kv_heads);
    let scale = T::from_f64c(inp.dims.scale);
    let (q_tok, kv_tok) = (start + r0, start + c0);
    scores(
        &mut sc.p,
        head_rows(inp.q, q_tok, rows, heads, h, dh),
        head_rows(inp.k, kv_tok, cols, kv_heads, kvh, dh),
        scale,
        &inp.dims,
        r0,
        c0,
    );
    if let Some(c) = inp.dims.softcap {
        let c = T::from_f64c(c);
        let s = &sc.p[..rows * cols];
        for (g, &s) in sc.cap_grad[..rows * cols].iter_mut().zip(s) {
            let t = s / c;
            *g = if s == T::neg_infinity() {
                T::zero()
            } else {
                T::one() - t * t
            };
        }
    }
    for i in 0..rows {
        let lse_i = inp.lse[h * n + q_tok + i];
        T::exp_shifted(&mut sc.p[i * cols..(i + 1) * cols], lse_i); // exp(−∞) = 0
    }
    let dov = head_rows(inp.dout, q_tok, rows, heads, h, dh);
    let vv = head_rows(inp.v, kv_tok, cols, kv_heads, kvh, dh);
    gemm(
        T::one(),
        dov,
        vv.t(),
        T::zero(),
        ViewMut::row_major(&mut sc.ds[..rows * cols], rows, cols),
    );
    for i in 0..rows {
        let d_i = inp.delta[(q_tok + i) * heads + h];
        let (p, ds) = (
            &sc.p[i * cols..(i + 1) * cols],
            &mut sc.ds[i * cols..(i + 1) * cols],
        );
        ds.iter_mut().zip(p).for_each(|(g, &p)| *g = p * (*g - d_i));
    }
    if inp.dims.softcap.is_some() {
        let f = &sc.cap_grad[..rows * cols];
        sc.ds[..rows * cols]
            .iter_mut()
            .zip(f)
            .for_each(|(g, &f)| *g = *g * f);
    }
}

/// dK, dV rows of one key tile, all kv heads.
fn key_tile<T: CpuFloat>(inp: &Inputs<'_, T>, tile: &Tile, dk_blk: &mut [T], dv_blk: &mut [T]) {
    let AttnDims {
        heads,
        kv_heads,
        head_dim: dh,
        ..
    } = inp.dims;
    let group = heads / kv_heads;
    let scale = T::from_f64c(inp.dims.scale);
    let (c0, cols) = (tile.r0, tile.rows());
    dk_blk.fill(T::zero());
    dv_blk.fill(T::zero());
    let mut sc = Scratch::new();
    // causal: only queries at or after the tile's first key see it, and with a sliding window
    // only those before its last key + window
    let (q_first, q_end) = query_rows(&inp.dims, c0, tile.r1, tile.len);
    for kvh in 0..kv_heads {
        for h in kvh * group..(kvh + 1) * group {
            for r0 in (q_first..q_end).step_by(BLOCK_Q) {
                let rows = (r0 + BLOCK_Q).min(q_end) - r0;
                p_and_ds(inp, &mut sc, tile.start, r0, rows, c0, cols, h);
                let q_tok = tile.start + r0;
                let p = View::row_major(&sc.p[..rows * cols], rows, cols);
                let ds = View::row_major(&sc.ds[..rows * cols], rows, cols);
                let dov = head_rows(inp.dout, q_tok, rows, heads, h, dh);
                gemm(
                    T::one(),
                    p.t(),
                    dov,
                    T::one(),
                    head_rows_mut(dv_blk, cols, kv_heads, kvh, dh),
                );
                let qv = head_rows(inp.q, q_tok, rows, heads, h, dh);
                gemm(
                    scale,
                    ds.t(),
                    qv,
                    T::one(),
                    head_rows_mut(dk_blk, cols, kv_heads, kvh, dh),
                );
            }
        }
    }
}

/// dQ rows of one query tile, all query heads.
fn query_tile<T: CpuFloat>(inp: &Inputs<'_, T>, tile: &Tile, dq_blk: &mut [T]) {
    let AttnDims {
        heads,
        kv_heads,
        head_dim: dh,
        ..
    } = inp.dims;
    let scale = T::from_f64c(inp.dims.scale);
    let (r0, rows) = (tile.r0, tile.rows());
    dq_blk.fill(T::zero());
    let mut sc = Scratch::new();
    let (kbegin, kend) = key_tiles(&inp.dims, tile.r0, tile.r1, tile.len);
    for h in 0..heads {
        let kvh = h / (heads / kv_heads);
        for c0 in (kbegin..kend).step_by(BLOCK_K) {
            let cols = (c0 + BLOCK_K).min(kend) - c0;
            p_and_ds(inp, &mut sc, tile.start, r0, rows, c0, cols, h);
            let ds = View::row_major(&sc.ds[..rows * cols], rows, cols);
            let kv = head_rows(inp.k, tile.start + c0, cols, kv_heads, kvh, dh);
            gemm(
                scale,
                ds,
                kv,
                T::one(),
                head_rows_mut(dq_blk, rows, heads, h, dh),
            );
        }
    }
}
