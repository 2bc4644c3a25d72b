//! Attention forward (FlashAttention-2 loop order). Per (segment, query tile) task, for each
//! query head h (kv head h / group):
//!   m = −∞, l = 0, acc = 0                                  (BLOCK_Q,), (BLOCK_Q,), (BLOCK_Q, Dh)
//!   for each key tile (BLOCK_K, Dh) from the first the sliding window reaches (if any) up to
//!   the causal limit:
//!     S = scale · Q Kᵀ (masked)                             (BLOCK_Q, BLOCK_K)
//!     m' = max(m, rowmax S);  P = exp(S − m');  c = exp(m − m')
//!     l = c·l + rowsum P;  acc = c·acc + P V
//!   O = acc / l;  lse = m + ln l
//! Tasks own disjoint row blocks of o; their lse rows are scattered into [H, N] afterwards.

use super::tiles::{
    head_rows, key_tiles, row_tiles, scores, segments, split_rows, Tile, BLOCK_K, BLOCK_Q,
};
use crate::backend::AttnDims;
use crate::cpu::elementwise::{max_lanes, sum_lanes};
use crate::cpu::gemm::{gemm, View, ViewMut};
use crate::cpu::workspace::{self, Work};
use crate::cpu::{team, CpuFloat};

#[allow(clippy::too_many_arguments)]
pub fn forward<T: CpuFloat>(
    q: &[T],
    k: &[T],
    v: &[T],
    o: &mut [T],
    lse: &mut [T],
    cu_seqlens: &[i32],
    dims: &AttnDims,
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
    assert!(
        q.len() >= n * q_row && o.len() >= n * q_row,
        "attention_forward: q or o smaller than [{n}, {heads}, {dh}]"
    );
    assert!(
        k.len() >= n * kv_row && v.len() >= n * kv_row,
        "attention_forward: k or v smaller than [{n}, {kv_heads}, {dh}]"
    );
    assert!(
        lse.len() >= heads * n,
        "attention_forward: lse smaller than [{heads}, {n}]"
    );

    let tiles = row_tiles(&segs, BLOCK_Q);
    let o_blocks = split_rows(&mut o[..n * q_row], &tiles, q_row);
    // per query tile: its rows of o, and its lse (heads × rows) once computed
    let mut jobs: Vec<(_, _, Option<Work<T>>)> = tiles
        .iter()
        .zip(o_blocks)
        .map(|(t, o)| (t, o, None))
        .collect();
    team::for_each_mut(&mut jobs, &|(tile, o_blk, lse_out)| {
        let mut lse_blk = workspace::zeroed(heads * tile.rows());
        let mut scratch = Scratch::new(dh);
        for h in 0..heads {
            let lse_h = &mut lse_blk[h * tile.rows()..(h + 1) * tile.rows()];
            query_tile_head(q, k, v, o_blk, lse_h, tile, h, dims, &mut scratch);
        }
        *lse_out = Some(lse_blk);
    });
    for (tile, _, blk) in &jobs {
        let blk = blk.as_ref().expect("every query tile ran");
        for h in 0..heads {
            let dst = h * n + tile.token();
            lse[dst..dst + tile.rows()]
                .copy_from_slice(&blk[h * tile.rows()..(h + 1) * tile.rows()]);
        }
    }
}

/// Per-task buffers: one score tile and the running statistics.
struct Scratch<T> {
    s: Work<T>,   // (BLOCK_Q, BLOCK_K)
    acc: Work<T>, // (BLOCK_Q, Dh)
    m: Work<T>,   // (BLOCK_Q,)
    l: Work<T>,   // (BLOCK_Q,)
}

impl<T: CpuFloat> Scratch<T> {
    fn new(dh: usize) -> Self {
        Scratch {
            s: workspace::zeroed(BLOCK_Q * BLOCK_K),
            acc: workspace::zeroed(BLOCK_Q * dh),
            m: workspace::zeroed(BLOCK_Q),
            l: workspace::zeroed(BLOCK_Q),
        }
    }
}

/// O and lse of one query tile for query head h.
#[allow(clippy::too_many_arguments)]
fn query_tile_head<T: CpuFloat>(
    q: &[T],
    k: &[T],
    v: &[T],
    o_blk: &mut [T],
    lse_h: &mut [T],
    tile: &Tile,
    h: usize,
    dims: &AttnDims,
    sc: &mut Scratch<T>,
) {
    let AttnDims {
        heads,
        kv_heads,
        head_dim: dh,
        ..
    } = *dims;
    let kvh = h / (heads / kv_heads);
    let rows = tile.rows();
    let scale = T::from_f64c(dims.scale);
    let qv = head_rows(q, tile.token(), rows, heads, h, dh);
    sc.m[..rows].fill(T::neg_infinity());
    sc.l[..rows].fill(T::zero());
    sc.acc[..rows * dh].fill(T::zero());

    let (kbegin, kend) = key_tiles(dims, tile.r0, tile.r1, tile.len);
    for c0 in (kbegin..kend).step_by(BLOCK_K) {
        let cols = (c0 + BLOCK_K).min(kend) - c0;
        let kv_tok = tile.start + c0;
        scores(
            &mut sc.s,
            qv,
            head_rows(k, kv_tok, cols, kv_heads, kvh, dh),
            scale,
            dims,
            tile.r0,
            c0,
        );
        for i in 0..rows {
            let s_row = &mut sc.s[i * cols..(i + 1) * cols];
            let m_new = max_lanes(s_row).max(sc.m[i]);
            if m_new == T::neg_infinity() {
                s_row.fill(T::zero()); // every key so far masked: nothing to add
                continue;
            }
            T::exp_shifted(s_row, m_new);
            let row_sum = sum_lanes(s_row);
            let c = (sc.m[i] - m_new).exp(); // 0 when m was −∞
            sc.l[i] = c * sc.l[i] + row_sum;
            sc.acc[i * dh..(i + 1) * dh]
                .iter_mut()
                .for_each(|a| *a = *a * c);
            sc.m[i] = m_new;
        }
        let p = View::row_major(&sc.s[..rows * cols], rows, cols);
        gemm(
            T::one(),
            p,
            head_rows(v, kv_tok, cols, kv_heads, kvh, dh),
            T::one(),
            ViewMut::row_major(&mut sc.acc[..rows * dh], rows, dh),
        );
    }

    let o_row = heads * dh;
    for i in 0..rows {
        let inv_l = T::one() / sc.l[i];
        let out = &mut o_blk[i * o_row + h * dh..i * o_row + (h + 1) * dh];
        out.iter_mut()
            .zip(&sc.acc[i * dh..(i + 1) * dh])
            .for_each(|(o, &a)| *o = a * inv_l);
        lse_h[i] = sc.m[i] + sc.l[i].ln();
    }
}
