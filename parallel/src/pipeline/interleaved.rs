//! Interleaved 1F1B (Narayanan et al. 2021, Megatron-LM): v ≥ 2 model chunks per rank, chunk c
//! on rank c mod p, so a micro-batch goes round the ranks v times.
//!
//! Order. Micro-batches are processed in groups: one group of all m when m ≤ p; otherwise a
//! first group of g₀ = p + (m mod p) and then groups of p. Within a group a rank forwards every
//! micro-batch through its chunk j before moving on to chunk j + 1 (and backwards them through
//! its chunks in reverse order), so when a group has ≥ p micro-batches, the first one has come
//! round the ring by the time the rank needs it for the next chunk. This is Megatron's order
//! (groups of p) with the remainder folded into the first group instead of left as a short last
//! group, which stalls (see below). Rank r runs w_r = min(m·v, (p − r − 1) + (v − 1)·g₀)
//! warm-up forwards, then steady pairs (next forward, next backward), then the remaining
//! backwards. (Megatron warms up 2(p − r − 1) + (v − 1)p to overlap its blocking send/recv
//! pairs; with non-blocking point-to-point the smaller count loses nothing and holds less.)
//!
//! Bubble, exact for any m ≥ 1 and any t_f, t_b (free communication; checked by the simulator):
//!   idle per rank = [(p − 1) + (v − 1)·max(0, p − m)] · (t_f + t_b)/v
//!   idle / ideal  = (p − 1)/(v·m)                 for m ≥ p (the textbook figure, also when
//!                                                  p does not divide m, thanks to the grouping)
//!                 = ((p − 1) + (v − 1)(p − m))/(v·m)  for m < p.
//! Fill and drain take p − 1 chunk steps each, and a chunk step costs 1/v of a stage step, hence
//! 1/v of 1F1B's bubble. With m < p a group is shorter than the ring: each of the v − 1 moves to
//! the next chunk waits p − m chunk steps for the first micro-batch to come round, forward and
//! backward. (Megatron's short last group, m = qp + s, costs more: p = 4, v = 2, m = 5 idles
//! 8/15 of the ideal time instead of 3/10.)
//! Memory, in (micro-batch, chunk) activations, each 1/v of a stage's micro-batch:
//!   peak in-flight on rank r = min(m·v, (v − 1)·g₀ + p − r)
//! = v·p on rank 0 when p divides m, i.e. p micro-batches' worth, the same as 1F1B; a remainder
//! adds (v − 1)(m mod p) chunk activations.

use super::action::Action;
use super::time_model::TimeModel;

/// The micro-batch groups (see the module comment).
pub(super) fn groups(p: usize, m: usize) -> Vec<std::ops::Range<usize>> {
    let first = if m <= p { m } else { p + m % p };
    std::iter::once(0..first)
        .chain((first..m).step_by(p).map(|s| s..s + p))
        .collect()
}

/// (micro-batch, local chunk index) in forward order; backward order mirrors the chunks.
fn order(p: usize, m: usize, v: usize, backward: bool) -> Vec<(usize, usize)> {
    let mut out = Vec::with_capacity(m * v);
    for group in groups(p, m) {
        for j in 0..v {
            let local = if backward { v - 1 - j } else { j };
            out.extend(group.clone().map(|mb| (mb, local)));
        }
    }
    out
}

fn warmup(p: usize, m: usize, v: usize, r: usize) -> usize {
    let g0 = groups(p, m)[0].len();
    (m * v).min((p - r - 1) + (v - 1) * g0)
}

/// Compute actions of each rank (messages are added by `Schedule`).
pub(super) fn compute_order(p: usize, m: usize, v: usize) -> Vec<Vec<Action>> {
    let fwd = order(p, m, v, false);
    let bwd = order(p, m, v, true);
    (0..p)
        .map(|r| {
            let f = |&(mb, j): &(usize, usize)| Action::Forward {
                mb,
                chunk: j * p + r,
            };
            let b = |&(mb, j): &(usize, usize)| Action::Backward {
                mb,
                chunk: j * p + r,
            };
            let w = warmup(p, m, v, r);
            let mut out: Vec<Action> = fwd[..w].iter().map(f).collect();
            for (next_f, next_b) in fwd[w..].iter().zip(&bwd) {
                out.push(f(next_f));
                out.push(b(next_b));
            }
            out.extend(bwd[fwd.len() - w..].iter().map(b));
            out
        })
        .collect()
}

/// Exact idle time of every rank in one step (free communication).
pub(super) fn bubble(p: usize, m: usize, v: usize, t: &TimeModel) -> f64 {
    let steps = (p - 1) + (v - 1) * p.saturating_sub(m);
    steps as f64 * (t.forward + t.backward) / v as f64
}

/// Peak number of (micro-batch, chunk) activations held at once by rank `r`.
pub(super) fn peak_in_flight(p: usize, m: usize, v: usize, r: usize) -> usize {
    let g0 = groups(p, m)[0].len();
    (m * v).min((v - 1) * g0 + p - r)
}
