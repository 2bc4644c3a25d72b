//! ZB-H1, zero bubble at 1F1B's memory (Qi et al. 2024, "Zero Bubble Pipeline Parallelism"):
//! the backward is split into B (gradient w.r.t. the input, on the critical path) and W (weight
//! gradient, free to move). One chunk per rank (v = 1).
//!
//! Order on rank r: w_r = min(p − r − 1, m) warm-up forwards as in 1F1B; then for each further
//! micro-batch F, B and a W, where rank r keeps the W's of its last r backwards pending (so the
//! steady state runs F B W with W lagging r micro-batches behind); in the cool-down every B but
//! the last is followed by one pending W, and the remaining W's close the step.
//! Bubble, with t_B = t_b − t_w the input-gradient time (free communication):
//!   idle per rank = (p − 1)(t_f + t_B) − (min(m, p) − 1)·min(t_f, t_B, t_w)
//! which for m ≥ p and t_w ≤ min(t_f, t_B) is the paper's (p − 1)(t_f + t_B − t_w); at
//! t_f = t_B = t_w it is a third of 1F1B's (p − 1)(t_f + t_B + t_w). Without the deferred W's
//! this order would idle (p − 1)(t_f + t_B): the gradient wave now moves one t_B per stage
//! instead of t_B + t_w. Each of the min(m, p) − 1 deferred W's on the critical path hides in a
//! wait for the next forward input or output gradient, which is at most min(t_f, t_B) long;
//! with m < p only m − 1 such waits exist. (Derived from the critical path of this order; the
//! simulator checks it exactly, in rational arithmetic during development and in f64 in
//! tests/pipeline_schedules.rs, for p ∈ {2, 3, 4, 8}, m from 1 to 2p + 1 and 300 random
//! (t_f, t_b, t_w).)
//! Memory, counting a micro-batch until its W (W needs the stored activations):
//!   peak in-flight = min(m, p) on every rank: 1F1B's peak of stage 0, reached on every stage.

use super::action::Action;
use super::time_model::TimeModel;

/// Compute actions of each rank (messages are added by `Schedule`).
pub(super) fn compute_order(p: usize, m: usize) -> Vec<Vec<Action>> {
    (0..p)
        .map(|r| {
            let warmup = (p - r - 1).min(m);
            let f = |mb| Action::Forward { mb, chunk: r };
            let b = |mb| Action::BackwardInput { mb, chunk: r };
            let w = |mb| Action::BackwardWeight { mb, chunk: r };
            let mut out: Vec<Action> = (0..warmup).map(f).collect();
            let mut pending = std::collections::VecDeque::new();
            for i in 0..m - warmup {
                out.push(f(warmup + i));
                out.push(b(i));
                pending.push_back(i);
                if pending.len() > r {
                    out.extend(pending.pop_front().map(w));
                }
            }
            for i in m - warmup..m {
                out.push(b(i));
                pending.push_back(i);
                if i + 1 < m {
                    out.extend(pending.pop_front().map(w));
                }
            }
            out.extend(pending.into_iter().map(w));
            out
        })
        .collect()
}

/// Exact idle time of every rank in one step (free communication).
pub(super) fn bubble(p: usize, m: usize, t: &TimeModel) -> f64 {
    let fill = (p - 1) as f64 * (t.forward + t.backward_input());
    let hidden = t.forward.min(t.backward_input()).min(t.backward_weight);
    fill - (m.min(p) - 1) as f64 * hidden
}

/// Peak number of micro-batches held at once (until their W) by any rank.
pub(super) fn peak_in_flight(p: usize, m: usize) -> usize {
    m.min(p)
}
