//! Fused softmax cross-entropy (see Backend::cross_entropy). logits [N, V], targets [N].
//!   lse[n] = m + ln Σ_v exp(logits[n, v] − m),  m = max_v logits[n, v]   (stable);
//!   losses[n] = lse[n] − logits[n, t[n]];   dlogits[n, v] = s · (exp(logits[n, v] − lse[n]) − [v = t[n]]);
//! both 0 for rows whose target is IGNORE_INDEX. s = grad_scale. Sums in f64, parallel over rows.
//! With dlogits, exp is evaluated once: stored in dlogits, then scaled in place.

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

fn row_max<T: CpuFloat>(row: &[T]) -> T {
    row.iter().fold(T::neg_infinity(), |m, &x| m.max(x))
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
            .for_each(|((loss, row), &t)| {
                *loss = match target_col(t, v) {
                    None => T::zero(),
                    Some(c) => {
                        let m = row_max(row);
                        let sum: f64 = row.iter().map(|&x| (x - m).exp().to_f64c()).sum();
                        T::from_f64c(m.to_f64c() + sum.ln() - row[c].to_f64c())
                    }
                };
            }),
        Some(dl) => {
            assert!(
                dl.len() >= n * v,
                "cross_entropy: dlogits holds {} < {n} x {v}",
                dl.len()
            );
            dl[..n * v]
                .par_chunks_mut(v)
                .zip(logits.par_chunks(v))
                .zip(losses.par_iter_mut().zip(targets))
                .for_each(|((drow, row), (loss, &t))| {
                    let Some(c) = target_col(t, v) else {
                        drow.fill(T::zero());
                        *loss = T::zero();
                        return;
                    };
                    let m = row_max(row);
                    let mut sum = 0f64;
                    for (d, &x) in drow.iter_mut().zip(row) {
                        let e = (x - m).exp();
                        *d = e;
                        sum += e.to_f64c();
                    }
                    *loss = T::from_f64c(m.to_f64c() + sum.ln() - row[c].to_f64c());
                    let k = T::from_f64c(grad_scale / sum); // s · softmax = s · e / Σe
                    drow.iter_mut().for_each(|d| *d = *d * k);
                    drow[c] = drow[c] - T::from_f64c(grad_scale);
                });
        }
    }
}
