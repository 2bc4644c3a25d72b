//! 1F1B, PipeDream-flush (Narayanan et al. 2021): one forward, one backward. One chunk per rank.
//!
//! Rank r first runs w_r = min(p − r − 1, m) warm-up forwards, then m − w_r steady pairs
//! F(w_r + i), B(i), then the w_r remaining backwards (cool-down).
//! Bubble: as GPipe, every rank idles (p − 1)(t_f + t_b) per step:
//!   idle / ideal = (p − 1)/m, exact for any m ≥ 1 and any t_f, t_b.
//! Memory: rank r holds at most w_r + 1 micro-batches before it frees one:
//!   peak in-flight on rank r = min(m, p − r); p on stage 0 (GPipe: m).

use super::action::Action;
use super::time_model::TimeModel;

/// Compute actions of each rank (messages are added by `Schedule`).
pub(super) fn compute_order(p: usize, m: usize) -> Vec<Vec<Action>> {
    (0..p)
        .map(|r| {
            let warmup = (p - r - 1).min(m);
            let f = |mb| Action::Forward { mb, chunk: r };
            let b = |mb| Action::Backward { mb, chunk: r };
            let mut order: Vec<Action> = (0..warmup).map(f).collect();
            for i in 0..m - warmup {
                order.push(f(warmup + i));
                order.push(b(i));
            }
            order.extend((m - warmup..m).map(b));
            order
        })
        .collect()
}

/// Exact idle time of every rank in one step (free communication).
pub(super) fn bubble(p: usize, t: &TimeModel) -> f64 {
    (p - 1) as f64 * (t.forward + t.backward)
}

/// Peak number of micro-batch activations held at once by rank `r`.
pub(super) fn peak_in_flight(p: usize, m: usize, r: usize) -> usize {
    m.min(p - r)
}
