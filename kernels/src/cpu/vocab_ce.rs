//! Vocab-parallel cross-entropy (Megatron-LM), on one rank's columns of the logits.
//! logits [N, V]: this rank's vocabulary ids start..start+valid in columns 0..valid, padding in
//! valid..V (never counted). targets [N] (−100 = ignore).
//!   stats:  m[n] = max_{c<valid} x[n,c];  s[n] = Σ_{c<valid} exp(x[n,c] − m[n]);
//!           z[n] = x[n, t−start] when start ≤ t < start+valid, else 0 (0 for ignored rows)
//!           stats = m ‖ s ‖ z  (3N values)
//!   finish, from every rank's stats in rank order (all [P·3N]):
//!           M = max_r m_r;  S = Σ_r s_r·exp(m_r − M);  Z = Σ_r z_r
//!           losses[n] = M + ln S − Z                        (0 where ignored)
//!           dlogits[n,c] = g·(exp(x[n,c] − M)/S − [c = t−start])   for c < valid; 0 for padding
//!                                                                   columns and ignored rows
//! With P = 1, valid = V, start = 0 this is the fused cross-entropy (cross_entropy.rs). Sums in
//! f64, parallel over rows.

use super::cross_entropy::IGNORE_INDEX;
use super::elementwise::{max_lanes, sum_lanes_f64};
use super::CpuFloat;
use rayon::prelude::*;

/// The target's local column, None when ignored or another rank's id.
fn local_col(t: i32, valid: usize, start: usize) -> Option<usize> {
    if t == IGNORE_INDEX {
        return None;
    }
    let t = usize::try_from(t).unwrap_or_else(|_| {
        panic!("cross_entropy: target {t} is neither {IGNORE_INDEX} nor an id")
    });
    (start..start + valid).contains(&t).then(|| t - start)
}

#[allow(clippy::too_many_arguments)]
pub fn stats<T: CpuFloat>(
    logits: &[T],
    targets: &[i32],
    stats: &mut [T],
    n: usize,
    v: usize,
    valid: usize,
    start: usize,
) {
    assert!(
        valid <= v && logits.len() >= n * v && targets.len() >= n && stats.len() >= 3 * n,
        "cross_entropy_stats: buffers too small for [{n} x {v}] (valid {valid})"
    );
    let (m, rest) = stats[..3 * n].split_at_mut(n);
    let (s, z) = rest.split_at_mut(n);
    m.par_iter_mut()
        .zip(s.par_iter_mut())
        .zip(z.par_iter_mut())
        .zip(logits[..n * v].par_chunks(v))
        .zip(&targets[..n])
        .for_each_init(
            || vec![T::zero(); valid],
            |e, ((((m, s), z), row), &t)| {
                let row = &row[..valid];
                if valid == 0 {
                    (*m, *s, *z) = (T::from_f64c(f64::NEG_INFINITY), T::zero(), T::zero());
                    return;
                }
                let mx = max_lanes(row);
                e.copy_from_slice(row);
                T::exp_shifted(e, mx);
                *m = mx;
                *s = T::from_f64c(sum_lanes_f64(e));
                *z = match (t != IGNORE_INDEX)
                    .then(|| local_col(t, valid, start))
                    .flatten()
                {
                    Some(c) => row[c],
                    None => T::zero(),
                };
            },
        );
}

#[allow(clippy::too_many_arguments)]
pub fn finish<T: CpuFloat>(
    logits: &[T],
    targets: &[i32],
    all: &[T],
    parts: usize,
    losses: &mut [T],
    dlogits: Option<&mut [T]>,
    n: usize,
    v: usize,
    valid: usize,
    start: usize,
    grad_scale: f64,
) {
    assert!(
        valid <= v
            && logits.len() >= n * v
            && targets.len() >= n
            && all.len() >= parts * 3 * n
            && losses.len() >= n,
        "cross_entropy_finish: buffers too small for [{n} x {v}] over {parts} parts"
    );
    // (M, S, Z) of row i from every part's stats.
    let combine = |i: usize| -> (f64, f64, f64) {
        let at = |r: usize, k: usize| all[r * 3 * n + k * n + i].to_f64c();
        let mx = (0..parts)
            .map(|r| at(r, 0))
            .fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = (0..parts)
            .map(|r| match at(r, 1) {
                s if s > 0.0 => s * (at(r, 0) - mx).exp(),
                _ => 0.0,
            })
            .sum();
        let z: f64 = (0..parts).map(|r| at(r, 2)).sum();
        (mx, sum, z)
    };
    let losses = &mut losses[..n];
    match dlogits {
        None => losses.par_iter_mut().enumerate().for_each(|(i, loss)| {
            *loss = if targets[i] == IGNORE_INDEX {
                T::zero()
            } else {
                let (mx, sum, z) = combine(i);
                T::from_f64c(mx + sum.ln() - z)
            };
        }),
        Some(dl) => {
            assert!(dl.len() >= n * v, "cross_entropy_finish: dlogits too small");
            dl[..n * v]
                .par_chunks_mut(v)
                .zip(logits[..n * v].par_chunks(v))
                .zip(losses.par_iter_mut())
                .enumerate()
                .for_each(|(i, ((drow, row), loss))| {
                    let t = targets[i];
                    if t == IGNORE_INDEX {
                        drow.fill(T::zero());
                        *loss = T::zero();
                        return;
                    }
                    let (mx, sum, z) = combine(i);
                    *loss = T::from_f64c(mx + sum.ln() - z);
                    drow[valid..].fill(T::zero());
                    let d = &mut drow[..valid];
                    d.copy_from_slice(&row[..valid]);
                    T::exp_shifted(d, T::from_f64c(mx));
                    let k = T::from_f64c(grad_scale / sum);
                    d.iter_mut().for_each(|x| *x = *x * k);
                    if let Some(c) = local_col(t, valid, start) {
                        d[c] = d[c] - T::from_f64c(grad_scale);
                    }
                });
        }
    }
}
