//! GPipe: all forwards, then all backwards (Huang et al. 2019). One chunk per rank (v = 1).
//!
//! Rank r runs F(0) … F(m−1), then B(0) … B(m−1) of its stage r.
//! Bubble: the forward wave needs (m + p − 1)·t_f to leave the last stage and the backward wave
//! (m + p − 1)·t_b to reach the first, so every rank idles (p − 1)(t_f + t_b) per step:
//!   idle / ideal = (p − 1)/m, exact for any m ≥ 1 and any t_f, t_b (ideal = m(t_f + t_b)).
//! Memory: every rank holds all m micro-batches' activations before its first backward:
//!   peak in-flight = m on every rank.

use super::action::Action;
use super::time_model::TimeModel;

/// Compute actions of each rank (messages are added by `Schedule`).
pub(super) fn compute_order(p: usize, m: usize) -> Vec<Vec<Action>> {
    (0..p)
        .map(|r| {
            let forwards = (0..m).map(|mb| Action::Forward { mb, chunk: r });
            let backwards = (0..m).map(|mb| Action::Backward { mb, chunk: r });
            forwards.chain(backwards).collect()
        })
        .collect()
}

/// Exact idle time of every rank in one step (free communication).
pub(super) fn bubble(p: usize, t: &TimeModel) -> f64 {
    (p - 1) as f64 * (t.forward + t.backward)
}

/// Peak number of (micro-batch, chunk) activations held at once by any rank.
pub(super) fn peak_in_flight(m: usize) -> usize {
    m
}
