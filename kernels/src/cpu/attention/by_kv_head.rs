//! Attention backward, one pass per (segment, kv head) task (the `ByKvHead` scheme).
//! A task owns everything its pair produces: dK, dV of kv head g over the segment, and dQ of
//! the G = H / Hkv query heads that read g, held in task-local buffers
//!   dk_loc, dv_loc (L, Dh);  dq_loc (G, L, Dh)
//! and scattered into [N, Hkv, Dh] / [N, H, Dh] once all tasks finish. Per tile pair:
//!   P, dS (BLOCK_Q, BLOCK_K) from backward::p_and_ds;  dV += Pᵀ dO;  dK += scale · dSᵀ Q;
//!   dQ += scale · dS K  — 5 GEMMs, S and dP computed once.

use super::backward::{p_and_ds, Inputs, Scratch};
use super::tiles::{head_rows, query_rows, BLOCK_K, BLOCK_Q};
use crate::backend::AttnDims;
use crate::cpu::gemm::{gemm, View, ViewMut};
use crate::cpu::workspace::{self, Work};
use crate::cpu::{team, CpuFloat};

/// Task-local gradients of one (segment, kv head) pair.
struct PairGrads<T> {
    dq: Work<T>, // (G, L, Dh)
    dk: Work<T>, // (L, Dh)
    dv: Work<T>, // (L, Dh)
}

/// Overwrites dq [N, H, Dh], dk, dv [N, Hkv, Dh] (already cut to exactly those sizes).
pub(super) fn backward<T: CpuFloat>(
    inp: &Inputs<'_, T>,
    segs: &[(usize, usize)],
    dq: &mut [T],
    dk: &mut [T],
    dv: &mut [T],
) {
    let AttnDims {
        heads,
        kv_heads,
        head_dim: dh,
        ..
    } = inp.dims;
    let group = heads / kv_heads;
    let pairs: Vec<((usize, usize), usize)> = segs
        .iter()
        .flat_map(|&seg| (0..kv_heads).map(move |g| (seg, g)))
        .collect();
    let mut jobs: Vec<(_, Option<PairGrads<T>>)> = pairs.iter().map(|&p| (p, None)).collect();
    team::for_each_mut(&mut jobs, &|((seg, g), out)| {
        *out = Some(pair(inp, *seg, *g))
    });
    for (((start, len), g), pg) in jobs {
        let pg = pg.expect("every (segment, kv head) pair ran");
        for t in 0..len {
            let tok = start + t;
            let kv_at = (tok * kv_heads + g) * dh;
            dk[kv_at..kv_at + dh].copy_from_slice(&pg.dk[t * dh..(t + 1) * dh]);
            dv[kv_at..kv_at + dh].copy_from_slice(&pg.dv[t * dh..(t + 1) * dh]);
            for j in 0..group {
                let q_at = (tok * heads + g * group + j) * dh;
                let loc = (j * len + t) * dh;
                dq[q_at..q_at + dh].copy_from_slice(&pg.dq[loc..loc + dh]);
            }
        }
    }
}

fn pair<T: CpuFloat>(inp: &Inputs<'_, T>, (start, len): (usize, usize), g: usize) -> PairGrads<T> {
    let AttnDims {
        heads,
        kv_heads,
        head_dim: dh,
        ..
    } = inp.dims;
    let group = heads / kv_heads;
    let scale = T::from_f64c(inp.dims.scale);
    let mut out = PairGrads {
        dq: workspace::zeroed(group * len * dh),
        dk: workspace::zeroed(len * dh),
        dv: workspace::zeroed(len * dh),
    };
    let mut sc = Scratch::new();
    for c0 in (0..len).step_by(BLOCK_K) {
        let cols = (c0 + BLOCK_K).min(len) - c0;
        let kv = head_rows(inp.k, start + c0, cols, kv_heads, g, dh);
        // causal: only queries at or after the tile's first key see it (and with a sliding
        // window only those before its last key + window)
        let (q_first, q_end) = query_rows(&inp.dims, c0, c0 + cols, len);
        for j in 0..group {
            let h = g * group + j;
            for r0 in (q_first..q_end).step_by(BLOCK_Q) {
                let rows = (r0 + BLOCK_Q).min(q_end) - r0;
                p_and_ds(inp, &mut sc, start, r0, rows, c0, cols, h);
                let p = View::row_major(&sc.p[..rows * cols], rows, cols);
                let ds = View::row_major(&sc.ds[..rows * cols], rows, cols);
                let dov = head_rows(inp.dout, start + r0, rows, heads, h, dh);
                let qv = head_rows(inp.q, start + r0, rows, heads, h, dh);
                let dv_tile = ViewMut::row_major(&mut out.dv[c0 * dh..(c0 + cols) * dh], cols, dh);
                gemm(T::one(), p.t(), dov, T::one(), dv_tile);
                let dk_tile = ViewMut::row_major(&mut out.dk[c0 * dh..(c0 + cols) * dh], cols, dh);
                gemm(scale, ds.t(), qv, T::one(), dk_tile);
                let q_loc = (j * len + r0) * dh;
                let dq_tile = ViewMut::row_major(&mut out.dq[q_loc..q_loc + rows * dh], rows, dh);
                gemm(scale, ds, kv, T::one(), dq_tile);
            }
        }
    }
    out
}
