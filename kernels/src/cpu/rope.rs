//! Rotary position embedding, HF rotate-half convention, in place on x [N, heads, Dh].
//! The table `inv_freq` has R/2 entries for a rotary dim R ≤ Dh (R = Dh: the whole head;
//! R < Dh: partial rotary, as Phi-4-mini's partial_rotary_factor, dims R.. pass through).
//! For i < R/2: a = pos[n]·inv_freq[i]; (x_i, x_{i+R/2}) ← (x_i cos a − x_{i+R/2} sin a,
//! x_{i+R/2} cos a + x_i sin a), times `scale` m (an attention factor on cos and sin: yarn,
//! longrope; 1 otherwise). backward applies the transpose m·R(−a) to dx.
//! `inv_freq` is the frequency table: theta^(−2i/R) for the default embedding, scaled for
//! llama3 / linear / yarn / longrope (the model computes it; `crate::rope_inv_freq` is the
//! default).
//!
//! Angles, cos and sin are computed in f64, then cast to T. (HF computes the angles in f32, so
//! at position p the two differ by about p·2^-24 radians.) When the positions span no more values
//! than there are tokens, cos and sin are tabulated once per position; the same numbers either way.
//! Parallel over tokens.

use super::rmsnorm::rows_per_part;
use super::team;
use super::workspace;
use super::CpuFloat;

/// x rotated in place with cos and sin times (cos_factor, sin_factor): (m, m) forward, (m, −m)
/// backward (the transpose).
fn rotate<T: CpuFloat>(
    x: &mut [T],
    pos: &[i32],
    n: usize,
    heads: usize,
    head_dim: usize,
    inv_freq: &[f64],
    (cos_factor, sin_factor): (f64, f64),
) {
    assert!(
        !inv_freq.is_empty() && 2 * inv_freq.len() <= head_dim,
        "rope: the frequency table has {} entries for head_dim {head_dim}",
        inv_freq.len()
    );
    assert!(
        x.len() >= n * heads * head_dim && pos.len() >= n,
        "rope: buffers too small for [{n} x {heads} x {head_dim}]"
    );
    let half = inv_freq.len();
    let row = heads * head_dim;
    let (x, pos) = (&mut x[..n * row], &pos[..n]);
    let angle = |p: i32, i: usize| p as f64 * inv_freq[i];
    let Some((lo, hi)) = pos.iter().fold(None, |r: Option<(i32, i32)>, &p| {
        Some(r.map_or((p, p), |(lo, hi)| (lo.min(p), hi.max(p))))
    }) else {
        return;
    };
    let span = (hi as i64 - lo as i64 + 1) as usize;
    if span <= n {
        // cos and sin once per position (a batch repeats the same positions in every row)
        let mut table = workspace::zeroed::<T>(2 * span * half);
        let per_part = rows_per_part(2 * half);
        team::for_chunks_mut(&mut table, 2 * half, per_part, &|k, t| {
            let (cos, sin) = t.split_at_mut(half);
            for i in 0..half {
                let a = angle(lo + k as i32, i);
                (cos[i], sin[i]) = (
                    T::from_f64c(cos_factor * a.cos()),
                    T::from_f64c(sin_factor * a.sin()),
                );
            }
        });
        team::for_chunks_mut(x, row, rows_per_part(row), &|i, tok| {
            let k = (pos[i] as i64 - lo as i64) as usize;
            let (cos, sin) = table[2 * k * half..2 * (k + 1) * half].split_at(half);
            rotate_token(tok, head_dim, cos, sin);
        });
        return;
    }
    team::for_chunks_mut(x, row, rows_per_part(row), &|i, tok| {
        let (mut cos, mut sin) = (workspace::zeroed::<T>(half), workspace::zeroed::<T>(half));
        for j in 0..half {
            let a = angle(pos[i], j);
            (cos[j], sin[j]) = (
                T::from_f64c(cos_factor * a.cos()),
                T::from_f64c(sin_factor * a.sin()),
            );
        }
        rotate_token(tok, head_dim, &cos, &sin);
    });
}

/// Every head of one token rotated by the angles whose cos and sin are given (the first
/// 2·cos.len() dims of each head; the rest pass through).
fn rotate_token<T: CpuFloat>(tok: &mut [T], head_dim: usize, cos: &[T], sin: &[T]) {
    let half = cos.len();
    for head in tok.chunks_mut(head_dim) {
        let (lo, hi) = head[..2 * half].split_at_mut(half);
        for i in 0..half {
            let (a, b) = (lo[i], hi[i]);
            lo[i] = a * cos[i] - b * sin[i];
            hi[i] = b * cos[i] + a * sin[i];
        }
    }
}

pub fn forward<T: CpuFloat>(
    x: &mut [T],
    pos: &[i32],
    n: usize,
    heads: usize,
    head_dim: usize,
    inv_freq: &[f64],
    scale: f64,
) {
    rotate(x, pos, n, heads, head_dim, inv_freq, (scale, scale));
}

pub fn backward<T: CpuFloat>(
    dx: &mut [T],
    pos: &[i32],
    n: usize,
    heads: usize,
    head_dim: usize,
    inv_freq: &[f64],
    scale: f64,
) {
    rotate(dx, pos, n, heads, head_dim, inv_freq, (scale, -scale));
}
