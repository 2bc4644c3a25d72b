//! Whether a schedule's lists also run over *grouped, tagless, rendezvous* point-to-point: the
//! semantics of NCCL's ncclSend / ncclRecv, which the executor's grouped mode
//! (`run_step_grouped`) uses for device buffers.
//!
//! The executor's host mode relies on three properties MPI and the TCP backend have and NCCL
//! lacks: sends never wait for the receiver, receives can be posted ahead, and tags keep a
//! pair's activations and gradients apart. Under NCCL:
//! - a send completes only when the peer has posted the matching receive (rendezvous), and a
//!   group of calls inside ncclGroupStart/End completes when every one of its calls has met its
//!   peer's; groups on one rank run one after another (one stream);
//! - matching has no tags: between a sender and a receiver, the k-th send meets the k-th receive.
//!
//! The grouped mode therefore posts each *run* of consecutive communication actions of a list
//! (the send after one compute action and the receive before the next: Megatron's
//! send_forward_recv_backward) as one group, and these checks prove the lists safe for it:
//! - tagless order: for every (sender, receiver) pair, the sender's k-th send is the message the
//!   receiver's k-th receive names;
//! - no deadlock: every rank runs its items in order; a compute action always proceeds, a group
//!   completes once every peer it talks to has reached (posted) the group holding the partner
//!   call. If no rank can move before all lists end, the step would hang.
//!
//! Where a schedule's own lists fail these checks (interleaved), `Schedule::grouped_actions`
//! gives the grouped mode the same computes with their messages placed in lock-step rounds
//! (rounds.rs), which pass them.
//!
//! On a GPU the host never waits: the NCCL stream runs the groups in list order, and a kernel
//! waits only for the buffers it reads (a send for the kernel that wrote its buffer). Those
//! dependencies are a subset of this serial model's, so lists safe here are safe there.

use std::collections::HashMap;
use std::ops::Range;

use super::action::{Action, Direction, Message};
use super::schedule::Schedule;
use super::sim::SimError;

/// The runs of consecutive communication actions of `actions`, as index ranges: the groups the
/// grouped executor posts.
pub fn comm_runs(actions: &[Action]) -> Vec<Range<usize>> {
    let mut runs = Vec::new();
    let mut start = None;
    for (i, a) in actions.iter().enumerate() {
        match (a.is_compute(), start) {
            (false, None) => start = Some(i),
            (true, Some(s)) => {
                runs.push(s..i);
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        runs.push(s..actions.len());
    }
    runs
}

/// Checks `schedule` for grouped, tagless, rendezvous point-to-point (module comment): its own
/// lists, else its lists with the messages placed in rounds; the schedule keeps the verdict.
pub fn check_grouped(schedule: &Schedule) -> Result<(), SimError> {
    schedule.grouped_safety()
}

/// One rank's list as the grouped executor walks it.
enum Item {
    Compute,
    /// Indices of the group's actions in the rank's list.
    Group(Range<usize>),
}

fn items(actions: &[Action]) -> Vec<Item> {
    let runs = comm_runs(actions);
    let mut out = Vec::new();
    let mut next_run = runs.iter().peekable();
    let mut i = 0;
    while i < actions.len() {
        match next_run.peek() {
            Some(run) if run.start == i => {
                i = run.end;
                out.push(Item::Group((*run).clone()));
                next_run.next();
            }
            _ => {
                out.push(Item::Compute);
                i += 1;
            }
        }
    }
    out
}

/// `check_grouped` for arbitrary lists, one per rank of the pp group.
pub fn check_grouped_actions(ranks: &[Vec<Action>]) -> Result<(), SimError> {
    let p = ranks.len();
    let items: Vec<Vec<Item>> = ranks.iter().map(|l| items(l)).collect();
    // The item index of every action that is part of a group.
    let item_of: Vec<HashMap<usize, usize>> = items
        .iter()
        .map(|its| {
            its.iter()
                .enumerate()
                .flat_map(|(k, it)| match it {
                    Item::Group(range) => range.clone().map(|i| (i, k)).collect(),
                    Item::Compute => Vec::new(),
                })
                .collect()
        })
        .collect();
    // Per (sender, receiver): the sends and receives in list order, with the item holding each.
    type Calls = Vec<(Message, usize, Action)>;
    let mut sends: HashMap<(usize, usize), Calls> = HashMap::new();
    let mut recvs: HashMap<(usize, usize), Calls> = HashMap::new();
    for (r, list) in ranks.iter().enumerate() {
        for (i, a) in list.iter().enumerate() {
            let Some((msg, dir, peer)) = a.message() else {
                continue;
            };
            if peer >= p || peer == r {
                return Err(SimError(format!(
                    "rank {r}, {a}: the other end of this message is not another rank of {p}"
                )));
            }
            let item = item_of[r][&i];
            match dir {
                Direction::Send => sends.entry((r, peer)).or_default().push((msg, item, *a)),
                Direction::Recv => recvs.entry((peer, r)).or_default().push((msg, item, *a)),
            }
        }
    }
    // For each group call: the rank and item of its partner call.
    let mut partner: HashMap<(usize, usize), Vec<(usize, usize)>> = HashMap::new();
    let mut pairs: Vec<_> = sends.keys().chain(recvs.keys()).copied().collect();
    pairs.sort_unstable();
    pairs.dedup();
    for (from, to) in pairs {
        let (s, r) = (
            sends.remove(&(from, to)).unwrap_or_default(),
            recvs.remove(&(from, to)).unwrap_or_default(),
        );
        for k in 0..s.len().max(r.len()) {
            match (s.get(k), r.get(k)) {
                (Some(&(sm, si, sa)), Some(&(rm, ri, ra))) => {
                    if sm != rm {
                        return Err(SimError(format!(
                            "rank {from}'s send number {k} to rank {to} ({sa}) carries the {sm}, but rank {to}'s receive number {k} from rank {from} ({ra}) expects the {rm}: tagless point-to-point matches them by order"
                        )));
                    }
                    partner.entry((from, si)).or_default().push((to, ri));
                    partner.entry((to, ri)).or_default().push((from, si));
                }
                (Some(&(sm, _, sa)), None) => {
                    return Err(SimError(format!(
                        "rank {from}, {sa}: rank {to} never receives the {sm}"
                    )))
                }
                (None, Some(&(rm, _, ra))) => {
                    return Err(SimError(format!(
                        "rank {to}, {ra}: rank {from} never sends the {rm}"
                    )))
                }
                (None, None) => unreachable!(),
            }
        }
    }
    // Rendezvous: run every rank's items in order.
    let mut pos = vec![0usize; p];
    loop {
        let mut progressed = false;
        for r in 0..p {
            while let Some(item) = items[r].get(pos[r]) {
                let ready = match item {
                    Item::Compute => true,
                    Item::Group(_) => partner
                        .get(&(r, pos[r]))
                        .into_iter()
                        .flatten()
                        .all(|&(q, k)| pos[q] >= k),
                };
                if !ready {
                    break;
                }
                pos[r] += 1;
                progressed = true;
            }
        }
        if (0..p).all(|r| pos[r] == items[r].len()) {
            return Ok(());
        }
        if !progressed {
            let blocked: Vec<String> = (0..p)
                .filter(|&r| pos[r] < items[r].len())
                .map(|r| match &items[r][pos[r]] {
                    Item::Group(range) => format!("rank {r} at {}", ranks[r][range.start]),
                    Item::Compute => format!("rank {r} computing"),
                })
                .collect();
            return Err(SimError(format!(
                "deadlock with grouped rendezvous point-to-point: {} wait for peers that never post the other end",
                blocked.join(", ")
            )));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_the_maximal_stretches_of_communication() {
        let s = Schedule::new("1f1b", 2, 3, 1).unwrap();
        for r in 0..2 {
            let list = s.actions(r);
            let runs = comm_runs(list);
            let covered: usize = runs.iter().map(|r| r.len()).sum();
            assert_eq!(covered, list.iter().filter(|a| !a.is_compute()).count());
            for run in &runs {
                assert!(run.clone().all(|i| !list[i].is_compute()));
                assert!(run.start == 0 || list[run.start - 1].is_compute());
                assert!(run.end == list.len() || list[run.end].is_compute());
            }
        }
    }

    #[test]
    fn receiving_first_on_both_sides_deadlocks_and_out_of_order_messages_are_named() {
        let s = Schedule::new("1f1b", 2, 2, 1).unwrap();
        let mut lists = s.all_actions().to_vec();
        assert!(check_grouped_actions(&lists).is_ok());
        // Rank 0 waits for micro-batch 0's gradient before sending any activation.
        let i = lists[0]
            .iter()
            .position(|a| matches!(a, Action::RecvGrad { .. }))
            .unwrap();
        let recv = lists[0].remove(i);
        lists[0].insert(0, recv);
        let err = check_grouped_actions(&lists).unwrap_err().to_string();
        assert!(err.starts_with("deadlock with grouped rendezvous"), "{err}");

        // Rank 1 receives micro-batch 1's activation before micro-batch 0's: a tag would sort
        // them, order does not.
        let mut lists = s.all_actions().to_vec();
        let recvs: Vec<usize> = (0..lists[1].len())
            .filter(|&i| matches!(lists[1][i], Action::RecvActivation { .. }))
            .collect();
        lists[1].swap(recvs[0], recvs[1]);
        let err = check_grouped_actions(&lists).unwrap_err().to_string();
        assert!(err.contains("matches them by order"), "{err}");
    }
}
