//! Message placement in lock-step rounds, for grouped, tagless, rendezvous point-to-point
//! (grouped.rs) where `Schedule`'s own placement is not safe for it: the interleaved lists. The
//! compute order of every rank stays as it is; only where the sends and receives sit changes.
//!
//! `Schedule` puts a receive right before the compute that needs it and a send right after the
//! compute that produced it. Under rendezvous groups that can wait around the ring: a rank's
//! group needs its peer's partner group, which comes after a compute the peer cannot start yet.
//! Here instead every compute gets a round (unit times, as early as its dependencies allow):
//!   round(r, k) = max(round(r, k − 1), round(producer of its input)) + 1
//! with round(r, −1) = −1 and no producer for chunk 0's forward or the last chunk's backward.
//! Every message is posted in its producer's round by both of its ends: the sender right after
//! the compute that made it, the receiver in its own group of that round, ahead of the compute
//! that reads it (which runs in a later round). Rank r's list is, round by round: its compute
//! of the round, if any, then one group with every send and receive of the round, in one order
//! both ends of a pair share (kind, micro-batch, boundary).
//!
//! Why it cannot hang: by induction on rounds. When every rank has completed its groups of
//! rounds before t, every compute of round t has its input (received in the group of the
//! producer's round, an earlier one), so every rank reaches its group of round t; that group
//! talks only to partners' groups of round t (or, where a rank has no compute between rounds,
//! to groups merged with them), all reached, so it completes. Messages of one pair are posted
//! in round order and within a round in the shared order, so the k-th send meets the k-th
//! receive. `grouped::check_grouped_actions` checks both for every list used.
//!
//! Cost: a received tensor may wait a few rounds before its compute (one boundary activation or
//! gradient per message, small beside a chunk's kept activations); the compute order and so the
//! activations held for backward are the schedule's.

use std::collections::{BTreeMap, HashMap};

use super::action::{Action, MessageKind};

/// The compute actions of `ranks` (lists for p ranks, chunks `c` on rank c mod p, `chunks` in
/// all) with their messages placed in rounds (module comment).
pub(super) fn with_round_messages(
    p: usize,
    chunks: usize,
    ranks: &[Vec<Action>],
) -> Vec<Vec<Action>> {
    let compute: Vec<Vec<Action>> = ranks
        .iter()
        .map(|l| l.iter().copied().filter(Action::is_compute).collect())
        .collect();
    let rounds = compute_rounds(&compute, chunks);
    let owner = |c: usize| c % p;
    // per rank: round → the sends and receives posted in it
    let mut groups: Vec<BTreeMap<usize, Vec<Action>>> = vec![BTreeMap::new(); p];
    for (r, list) in compute.iter().enumerate() {
        for (k, action) in list.iter().enumerate() {
            let t = rounds[r][k];
            let (send, recv, peer) = match *action {
                Action::Forward { mb, chunk } if chunk + 1 < chunks => {
                    let peer = owner(chunk + 1);
                    (
                        Action::SendActivation { mb, chunk, peer },
                        Action::RecvActivation {
                            mb,
                            chunk: chunk + 1,
                            peer: r,
                        },
                        peer,
                    )
                }
                Action::Backward { mb, chunk } | Action::BackwardInput { mb, chunk }
                    if chunk > 0 =>
                {
                    let peer = owner(chunk - 1);
                    (
                        Action::SendGrad { mb, chunk, peer },
                        Action::RecvGrad {
                            mb,
                            chunk: chunk - 1,
                            peer: r,
                        },
                        peer,
                    )
                }
                _ => continue,
            };
            if peer == r {
                continue;
            }
            groups[r].entry(t).or_default().push(send);
            groups[peer].entry(t).or_default().push(recv);
        }
    }
    let key = |a: &Action| {
        let (msg, _, _) = a.message().expect("a group holds messages only");
        (msg.kind == MessageKind::Grad, msg.mb, msg.boundary)
    };
    compute
        .iter()
        .enumerate()
        .map(|(r, list)| {
            let mut at_round: HashMap<usize, Action> = HashMap::new();
            for (k, a) in list.iter().enumerate() {
                at_round.insert(rounds[r][k], *a);
            }
            let last = rounds[r]
                .iter()
                .chain(groups[r].keys())
                .copied()
                .max()
                .unwrap_or(0);
            let mut out = Vec::with_capacity(3 * list.len());
            for t in 0..=last {
                if let Some(a) = at_round.get(&t) {
                    out.push(*a);
                }
                if let Some(group) = groups[r].get_mut(&t) {
                    group.sort_by_key(key);
                    out.extend(group.iter().copied());
                }
            }
            out
        })
        .collect()
}

/// The round of every compute action (module comment), by repeated passes over the ranks: a
/// rank advances while the producers of its next compute's input have their rounds.
fn compute_rounds(compute: &[Vec<Action>], chunks: usize) -> Vec<Vec<usize>> {
    // round of the compute that produced (kind, mb, boundary)'s tensor
    let mut produced: HashMap<(bool, usize, usize), usize> = HashMap::new();
    let mut rounds: Vec<Vec<usize>> = compute
        .iter()
        .map(|l| Vec::with_capacity(l.len()))
        .collect();
    loop {
        let mut progress = false;
        for (r, list) in compute.iter().enumerate() {
            while let Some(action) = list.get(rounds[r].len()) {
                // the tensor this compute reads from another compute, if any
                let needs = match *action {
                    Action::Forward { mb, chunk } if chunk > 0 => Some((false, mb, chunk - 1)),
                    Action::Backward { mb, chunk } | Action::BackwardInput { mb, chunk }
                        if chunk + 1 < chunks =>
                    {
                        Some((true, mb, chunk))
                    }
                    _ => None,
                };
                let after_input = match needs {
                    None => None,
                    Some(key) => match produced.get(&key) {
                        Some(&t) => Some(t),
                        None => break,
                    },
                };
                let after_own = rounds[r].last().copied();
                let t = match (after_own, after_input) {
                    (None, None) => 0,
                    (a, b) => a.max(b).map_or(0, |t| t + 1),
                };
                rounds[r].push(t);
                match *action {
                    Action::Forward { mb, chunk } => {
                        produced.insert((false, mb, chunk), t);
                    }
                    Action::Backward { mb, chunk } | Action::BackwardInput { mb, chunk }
                        if chunk > 0 =>
                    {
                        produced.insert((true, mb, chunk - 1), t);
                    }
                    _ => {}
                }
                progress = true;
            }
        }
        if rounds.iter().zip(compute).all(|(t, l)| t.len() == l.len()) {
            return rounds;
        }
        assert!(
            progress,
            "pipeline lists whose computes wait on each other: no round order exists"
        );
    }
}
