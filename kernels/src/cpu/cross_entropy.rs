//! Fused softmax cross-entropy (see Backend::cross_entropy). logits [N, V], targets [N].
//!   lse[n] = m + ln Σ_v exp(logits[n, v] − m),  m = max_v logits[n, v]   (stable);
//!   losses[n] = lse[n] − logits[n, t[n]];   dlogits[n, v] = s · (exp(logits[n, v] − lse[n]) − [v = t[n]]);
//! both 0 for rows whose target is IGNORE_INDEX. s = grad_scale. Sums in f64, parallel over rows
//! (the GEMM team, team.rs).
//! With dlogits, exp is evaluated once: stored in dlogits, then scaled in place. `in_place` does
//! the same with dlogits written over the logits (the same numbers, one buffer).

use super::elementwise::max_lanes;
use super::team::{self, Pieces};
use super::CpuFloat;
use rayon::prelude::*;

/// Targets equal to this are ignored (PyTorch / HF convention).
pub const IGNORE_INDEX: i32 = -100;

/// The target's column, or None for an ignored row.
fn target_col(t: i32, v: usize) -> Option<usize> {
    if t == IGNORE_INDEX {
        return None;
    }
    match usize::try_from(t) {
        Ok(c) if c < v => Some(c),
        _ => panic!(
            "cross_entropy: target {t} is neither {IGNORE_INDEX} nor inside the vocabulary of {v}"
        ),
    }
}

/// Fills e = exp(row − max(row)) and returns (max, Σe).
fn exp_row<T: CpuFloat>(row: &[T], e: &mut [T]) -> (T, f64) {
    let m = max_lanes(row);
    e.copy_from_slice(row);
    (m, T::exp_shifted_sum(e, m))
}

crate::simd_fn! {
    /// max and Σ exp(row − max) with the exponentials written over the row (one row, at the
    /// machine's vector width).
    fn exp_row_in_place<T: CpuFloat>(row: &mut [T]) -> (T, f64) {
        let m = max_lanes(row);
        (m, T::exp_shifted_sum(row, m))
    }
}

crate::simd_fn! {
    fn scale_row<T: CpuFloat>(row: &mut [T], k: T) {
        row.iter_mut().for_each(|d| *d = *d * k);
    }
}

/// One row in place: returns the loss; the row becomes s·(softmax − onehot) with a scale, or
/// exp(row − max) without one. `c` is the target's column.
fn row_in_place<T: CpuFloat>(row: &mut [T], c: usize, grad_scale: Option<f64>) -> T {
    let target_logit = row[c].to_f64c();
    let (m, sum) = exp_row_in_place(row);
    let loss = T::from_f64c(m.to_f64c() + sum.ln() - target_logit);
    if let Some(s) = grad_scale {
        scale_row(row, T::from_f64c(s / sum));
        row[c] = row[c] - T::from_f64c(s);
    }
    loss
}

/// `forward_backward` with dlogits written over `logits` (see the top comment); without a
/// scale the rows are left holding exp(logits − max).
pub fn in_place<T: CpuFloat>(
    logits: &mut [T],
    targets: &[i32],
    losses: &mut [T],
    n: usize,
    v: usize,
    grad_scale: Option<f64>,
) {
    assert!(
        v > 0 && logits.len() >= n * v && targets.len() >= n && losses.len() >= n,
        "cross_entropy: buffers too small for [{n} x {v}]"
    );
    let (rows, lp) = (
        Pieces::new(&mut logits[..n * v]),
        Pieces::new(&mut losses[..n]),
    );
    team::for_ranges(n, 1, &|r| {
        // SAFETY: for_ranges's ranges are disjoint, and so are the rows they scale to
        let (rows, ls) = unsafe { (rows.get(r.start * v..r.end * v), lp.get(r.clone())) };
        for ((row, loss), &t) in rows.chunks_mut(v).zip(ls).zip(&targets[r]) {
            *loss = match target_col(t, v) {
                Some(c) => row_in_place(row, c, grad_scale),
                None => {
                    if grad_scale.is_some() {
                        row.fill(T::zero());
                    }
                    T::zero()
                }
            };
        }
    });
}

#[allow(clippy::too_many_arguments)]
pub fn forward_backward<T: CpuFloat>(
    logits: &[T],
    targets: &[i32],
    losses: &mut [T],
    dlogits: Option<&mut [T]>,
    n: usize,
    v: usize,
    grad_scale: f64,
) {
    assert!(
        v > 0 && logits.len() >= n * v && targets.len() >= n && losses.len() >= n,
        "cross_entropy: buffers too small for [{n} x {v}]"
    );
    let (logits, targets, losses) = (&logits[..n * v], &targets[..n], &mut losses[..n]);
    match dlogits {
        None => losses
            .par_iter_mut()
            .zip(logits.par_chunks(v))
            .zip(targets)
            .for_each_init(
                || vec![T::zero(); v],
                |e, ((loss, row), &t)| {
                    *loss = match target_col(t, v) {
                        None => T::zero(),
                        Some(c) => {
                            let (m, sum) = exp_row(row, e);
                            T::from_f64c(m.to_f64c() + sum.ln() - row[c].to_f64c())
                        }
                    };
                },
            ),
        Some(dl) => {
            assert!(
                dl.len() >= n * v,
                "cross_entropy: dlogits holds {} < {n} x {v}",
                dl.len()
            );
            let (drows, lp) = (Pieces::new(&mut dl[..n * v]), Pieces::new(losses));
            team::for_ranges(n, 1, &|r| {
                // SAFETY: for_ranges's ranges are disjoint, and so are the rows they scale to
                let (drows, ls) = unsafe { (drows.get(r.start * v..r.end * v), lp.get(r.clone())) };
                let rows = logits[r.start * v..r.end * v].chunks(v);
                for (((drow, row), loss), &t) in
                    drows.chunks_mut(v).zip(rows).zip(ls).zip(&targets[r])
                {
                    let Some(c) = target_col(t, v) else {
                        drow.fill(T::zero());
                        *loss = T::zero();
                        continue;
                    };
                    let (m, sum) = exp_row(row, drow);
                    *loss = T::from_f64c(m.to_f64c() + sum.ln() - row[c].to_f64c());
                    let k = T::from_f64c(grad_scale / sum); // s · softmax = s · e / Σe
                    drow.iter_mut().for_each(|d| *d = *d * k);
                    drow[c] = drow[c] - T::from_f64c(grad_scale);
                }
            });
        }
    }
}
