//! In-process simulator: runs every rank's action list against a time model, without any
//! communicator, and checks the lists.
//!
//! Semantics (what the executor does with real point-to-point):
//! - each rank runs its actions in order; compute actions take their `TimeModel` duration;
//! - sends never block: the message enters the (sender, receiver, tag) channel stamped with the
//!   sender's clock + latency;
//! - a receive waits for the head of its channel (channels are FIFO, as MPI and the TCP backend
//!   deliver one tag between two ranks in order) and completes at max(own clock, stamp).
//!
//! Checks, each failing with a sentence naming rank and action:
//! - structure: every action names a chunk its rank owns, a micro-batch < m and, for messages,
//!   the peer that owns the neighbouring chunk;
//! - data dependencies: a forward of chunk c > 0 only after its input arrived (received, or the
//!   same rank's forward of chunk c − 1), a backward only after the same rank's forward and the
//!   gradient of its output (received, or the same rank's backward of chunk c + 1, or for the last
//!   chunk its own loss), a send only of a message the rank has produced and not sent yet,
//!   backward-weight only after backward-input;
//! - every receive gets the message it names (FIFO order of its channel);
//! - no deadlock (ranks blocked in receives that no pending send can satisfy);
//! - at the end: every (micro-batch, chunk) forwarded once and backwarded once (full, or input
//!   and weight halves), no message left unreceived, nothing produced and never sent.
//!
//! Reported: makespan, per-rank busy and idle time, and the peak of (micro-batch, chunk)
//! activations held per rank (forwarded, not yet fully backwarded), the activation memory.

use std::collections::{HashMap, HashSet, VecDeque};

use super::action::{Action, Direction, Message, MessageKind};
use super::schedule::Schedule;
use super::time_model::TimeModel;

/// A broken action list, in one sentence.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SimError(pub String);

/// What one simulated step measured.
#[derive(Clone, Debug, PartialEq)]
pub struct SimReport {
    /// Time at which the last rank finishes.
    pub makespan: f64,
    /// Compute time of each rank.
    pub busy: Vec<f64>,
    /// makespan − busy: time each rank waits (or has finished early).
    pub idle: Vec<f64>,
    /// Most (micro-batch, chunk) activations each rank held at once.
    pub peak_in_flight: Vec<usize>,
    /// Point-to-point messages each rank sent.
    pub messages_sent: Vec<usize>,
}

impl SimReport {
    /// Idle time of `rank` relative to its compute time (the "bubble fraction").
    pub fn idle_fraction(&self, rank: usize) -> f64 {
        self.idle[rank] / self.busy[rank]
    }
}

/// Simulates one step of `schedule`.
pub fn simulate(schedule: &Schedule, time: &TimeModel) -> Result<SimReport, SimError> {
    simulate_actions(
        schedule.stages(),
        schedule.microbatches(),
        schedule.virtual_stages(),
        schedule.all_actions(),
        time,
    )
}

#[derive(Default)]
struct RankState {
    pc: usize,
    clock: f64,
    busy: f64,
    in_flight: usize,
    peak: usize,
    sent: usize,
    /// (mb, chunk) whose input activation is here.
    inputs: HashSet<(usize, usize)>,
    /// (mb, chunk) whose output gradient is here.
    grads: HashSet<(usize, usize)>,
    forwarded: HashSet<(usize, usize)>,
    input_grad_done: HashSet<(usize, usize)>,
    /// Produced, to be sent.
    outbox: HashSet<Message>,
}

struct World<'a> {
    p: usize,
    m: usize,
    chunks: usize,
    time: &'a TimeModel,
    v: f64,
    /// (sender, receiver, tag) -> messages with their arrival stamps.
    channels: HashMap<(usize, usize, u32), VecDeque<(Message, f64)>>,
    forwards: HashMap<(usize, usize), usize>,
    backwards: HashMap<(usize, usize), usize>,
    weights: HashMap<(usize, usize), usize>,
}

fn fail<T>(rank: usize, action: &Action, why: impl std::fmt::Display) -> Result<T, SimError> {
    Err(SimError(format!("rank {rank}, {action}: {why}")))
}

/// Simulates arbitrary action lists for p ranks, m micro-batches and v chunks per rank.
pub fn simulate_actions(
    p: usize,
    m: usize,
    v: usize,
    ranks: &[Vec<Action>],
    time: &TimeModel,
) -> Result<SimReport, SimError> {
    time.check().map_err(SimError)?;
    if ranks.len() != p {
        return Err(SimError(format!(
            "{} action lists for {p} ranks",
            ranks.len()
        )));
    }
    let mut world = World {
        p,
        m,
        chunks: p * v,
        time,
        v: v as f64,
        channels: HashMap::new(),
        forwards: HashMap::new(),
        backwards: HashMap::new(),
        weights: HashMap::new(),
    };
    let mut states: Vec<RankState> = (0..p).map(|_| RankState::default()).collect();
    loop {
        let mut progressed = false;
        for (r, state) in states.iter_mut().enumerate() {
            while let Some(action) = ranks[r].get(state.pc) {
                if !world.step(r, state, action)? {
                    break; // waiting in a receive
                }
                state.pc += 1;
                progressed = true;
            }
        }
        let done = states.iter().zip(ranks).all(|(s, l)| s.pc == l.len());
        if done {
            break;
        }
        if !progressed {
            let blocked: Vec<String> = states
                .iter()
                .zip(ranks)
                .enumerate()
                .filter(|(_, (s, l))| s.pc < l.len())
                .map(|(r, (s, l))| format!("rank {r} at {}", l[s.pc]))
                .collect();
            return Err(SimError(format!(
                "deadlock: {} wait for messages nobody sends",
                blocked.join(", ")
            )));
        }
    }
    world.check_complete(&states)?;
    let makespan = states.iter().map(|s| s.clock).fold(0.0, f64::max);
    Ok(SimReport {
        makespan,
        busy: states.iter().map(|s| s.busy).collect(),
        idle: states.iter().map(|s| makespan - s.busy).collect(),
        peak_in_flight: states.iter().map(|s| s.peak).collect(),
        messages_sent: states.iter().map(|s| s.sent).collect(),
    })
}

impl World<'_> {
    fn owner(&self, chunk: usize) -> usize {
        chunk % self.p
    }

    /// Runs `action` on rank `r`; false when it is a receive whose message has not been sent.
    fn step(&mut self, r: usize, s: &mut RankState, action: &Action) -> Result<bool, SimError> {
        let (mb, chunk) = action.mb_chunk();
        if mb >= self.m {
            return fail(
                r,
                action,
                format!("there are only {} micro-batches", self.m),
            );
        }
        if chunk >= self.chunks {
            return fail(
                r,
                action,
                format!("the model has only {} chunks", self.chunks),
            );
        }
        if self.owner(chunk) != r {
            return fail(
                r,
                action,
                format!("chunk {chunk} lives on rank {}", self.owner(chunk)),
            );
        }
        if let Some((msg, dir, peer)) = action.message() {
            return self.communicate(r, s, action, msg, dir, peer);
        }
        let key = (mb, chunk);
        let last = self.chunks - 1;
        let t = self.time;
        let cost = match action {
            Action::Forward { .. } => {
                if chunk > 0 && !s.inputs.remove(&key) {
                    return fail(r, action, "its input activation has not arrived");
                }
                if bump(&mut self.forwards, key) > 1 {
                    return fail(r, action, "micro-batch forwarded twice through this chunk");
                }
                s.forwarded.insert(key);
                s.in_flight += 1;
                s.peak = s.peak.max(s.in_flight);
                if chunk == last {
                    s.grads.insert(key); // the loss gives the output gradient
                } else {
                    self.produce(r, s, MessageKind::Activation, mb, chunk);
                }
                t.forward
            }
            Action::Backward { .. } | Action::BackwardInput { .. } => {
                if !s.forwarded.contains(&key) {
                    return fail(r, action, "runs before this rank's forward of it");
                }
                if !s.grads.remove(&key) {
                    return fail(r, action, "the gradient of its output has not arrived");
                }
                if bump(&mut self.backwards, key) > 1 {
                    return fail(r, action, "micro-batch backwarded twice through this chunk");
                }
                if chunk > 0 {
                    self.produce(r, s, MessageKind::Grad, mb, chunk - 1);
                }
                if matches!(action, Action::Backward { .. }) {
                    s.in_flight -= 1;
                    t.backward
                } else {
                    s.input_grad_done.insert(key);
                    t.backward_input()
                }
            }
            Action::BackwardWeight { .. } => {
                if !s.input_grad_done.remove(&key) {
                    return fail(r, action, "runs before its backward-input");
                }
                if bump(&mut self.weights, key) > 1 {
                    return fail(r, action, "weight gradient computed twice");
                }
                s.in_flight -= 1;
                t.backward_weight
            }
            _ => unreachable!("communication actions are handled above"),
        } / self.v;
        s.clock += cost;
        s.busy += cost;
        Ok(true)
    }

    /// A compute result for the next (activation) or previous (gradient) chunk: handed over
    /// locally when that chunk is on this rank, else queued for a send action.
    fn produce(&self, r: usize, s: &mut RankState, kind: MessageKind, mb: usize, boundary: usize) {
        let consumer = match kind {
            MessageKind::Activation => boundary + 1,
            MessageKind::Grad => boundary,
        };
        if self.owner(consumer) == r {
            match kind {
                MessageKind::Activation => s.inputs.insert((mb, consumer)),
                MessageKind::Grad => s.grads.insert((mb, consumer)),
            };
        } else {
            s.outbox.insert(Message { kind, mb, boundary });
        }
    }

    fn communicate(
        &mut self,
        r: usize,
        s: &mut RankState,
        action: &Action,
        msg: Message,
        dir: Direction,
        peer: usize,
    ) -> Result<bool, SimError> {
        let sender_chunk = match msg.kind {
            MessageKind::Activation => msg.boundary,
            MessageKind::Grad => msg.boundary + 1,
        };
        let receiver_chunk = match msg.kind {
            MessageKind::Activation => msg.boundary + 1,
            MessageKind::Grad => msg.boundary,
        };
        let expected_peer = match dir {
            Direction::Send => self.owner(receiver_chunk),
            Direction::Recv => self.owner(sender_chunk),
        };
        if receiver_chunk >= self.chunks || peer != expected_peer || peer == r {
            return fail(
                r,
                action,
                format!("the other end of this message is not rank {peer}"),
            );
        }
        match dir {
            Direction::Send => {
                if !s.outbox.remove(&msg) {
                    return fail(
                        r,
                        action,
                        "sends a message this rank has not produced (or sent it already)",
                    );
                }
                self.channels
                    .entry((r, peer, msg.tag()))
                    .or_default()
                    .push_back((msg, s.clock + self.time.latency));
                s.sent += 1;
                Ok(true)
            }
            Direction::Recv => {
                let channel = self.channels.entry((peer, r, msg.tag())).or_default();
                let Some(&(head, stamp)) = channel.front() else {
                    return Ok(false);
                };
                if head != msg {
                    return fail(
                        r,
                        action,
                        format!("the next message from rank {peer} on this tag is the {head}"),
                    );
                }
                channel.pop_front();
                s.clock = s.clock.max(stamp);
                let key = (msg.mb, receiver_chunk);
                match msg.kind {
                    MessageKind::Activation => s.inputs.insert(key),
                    MessageKind::Grad => s.grads.insert(key),
                };
                Ok(true)
            }
        }
    }

    fn check_complete(&self, states: &[RankState]) -> Result<(), SimError> {
        for ((from, to, _), queue) in &self.channels {
            if let Some((msg, _)) = queue.front() {
                return Err(SimError(format!(
                    "rank {from} sent the {msg} to rank {to}, which never received it"
                )));
            }
        }
        for (r, s) in states.iter().enumerate() {
            if let Some(msg) = s.outbox.iter().next() {
                return Err(SimError(format!(
                    "rank {r} produced the {msg} but never sent it"
                )));
            }
        }
        for mb in 0..self.m {
            for chunk in 0..self.chunks {
                let key = (mb, chunk);
                let missing = if self.forwards.get(&key) != Some(&1) {
                    Some("never forwarded")
                } else if self.backwards.get(&key) != Some(&1) {
                    Some("never backwarded")
                } else if states[self.owner(chunk)].input_grad_done.contains(&key) {
                    Some("never got its weight gradient")
                } else {
                    None
                };
                if let Some(what) = missing {
                    return Err(SimError(format!(
                        "micro-batch {mb} was {what} through chunk {chunk}"
                    )));
                }
            }
        }
        Ok(())
    }
}

fn bump(counts: &mut HashMap<(usize, usize), usize>, key: (usize, usize)) -> usize {
    let n = counts.entry(key).or_insert(0);
    *n += 1;
    *n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_f_one_b(p: usize, m: usize) -> Vec<Vec<Action>> {
        Schedule::new("1f1b", p, m, 1)
            .unwrap()
            .all_actions()
            .to_vec()
    }

    fn sim_err(lists: &[Vec<Action>], p: usize, m: usize) -> String {
        simulate_actions(p, m, 1, lists, &TimeModel::default())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn a_valid_list_passes_and_reports_the_bubble() {
        let r = simulate_actions(2, 2, 1, &one_f_one_b(2, 2), &TimeModel::default()).unwrap();
        // (m + p − 1)(t_f + t_b) = 3 · 3
        assert_eq!(r.makespan, 9.0);
        assert_eq!(r.idle, vec![3.0, 3.0]);
        assert_eq!(r.peak_in_flight, vec![2, 1]);
        assert_eq!(r.messages_sent, vec![2, 2]);
    }

    #[test]
    fn receiving_before_the_peer_sends_in_both_directions_is_a_deadlock() {
        let mut lists = one_f_one_b(2, 2);
        // Rank 0 waits for the gradient of micro-batch 0 before sending any activation.
        let recv = lists[0].remove(4);
        assert!(matches!(recv, Action::RecvGrad { .. }), "{recv}");
        lists[0].insert(0, recv);
        let err = sim_err(&lists, 2, 2);
        assert!(err.starts_with("deadlock: rank 0 at recv grad mb 0 chunk 0 from rank 1, rank 1 at recv activation mb 0 chunk 1"), "{err}");
    }

    #[test]
    fn broken_lists_are_rejected_naming_rank_and_action() {
        let mut lists = one_f_one_b(2, 2);
        lists[1].retain(|a| !matches!(a, Action::SendGrad { mb: 1, .. }));
        let err = sim_err(&lists, 2, 2);
        assert!(err.contains("deadlock: rank 0 at recv grad mb 1"), "{err}");

        let mut lists = one_f_one_b(2, 2);
        lists[0].push(Action::Forward { mb: 1, chunk: 0 });
        let err = sim_err(&lists, 2, 2);
        assert!(err.contains("forwarded twice"), "{err}");

        let mut lists = one_f_one_b(2, 2);
        let i = lists[1]
            .iter()
            .position(|a| matches!(a, Action::Backward { mb: 0, .. }))
            .unwrap();
        let b = lists[1].remove(i);
        lists[1].insert(0, b);
        let err = sim_err(&lists, 2, 2);
        assert_eq!(
            err,
            "rank 1, backward mb 0 chunk 1: runs before this rank's forward of it"
        );

        let mut lists = one_f_one_b(2, 2);
        lists[1][0] = Action::RecvActivation {
            mb: 1,
            chunk: 1,
            peer: 0,
        };
        let err = sim_err(&lists, 2, 2);
        assert!(
            err.contains(
                "the next message from rank 0 on this tag is the activation of micro-batch 0"
            ),
            "{err}"
        );

        let mut lists = one_f_one_b(2, 2);
        lists[0].push(Action::Forward { mb: 0, chunk: 1 });
        assert!(sim_err(&lists, 2, 2).contains("chunk 1 lives on rank 1"));

        let mut lists = one_f_one_b(2, 2);
        lists[0].retain(|a| !matches!(a, Action::Backward { mb: 1, .. }));
        lists[0].retain(|a| !matches!(a, Action::RecvGrad { mb: 1, .. }));
        let err = sim_err(&lists, 2, 2);
        assert!(err.contains("never received it"), "{err}");
    }

    #[test]
    fn latency_delays_every_hop() {
        let t = TimeModel {
            latency: 0.5,
            ..TimeModel::default()
        };
        let r = simulate_actions(2, 1, 1, &one_f_one_b(2, 1), &t).unwrap();
        // F0 (1), hop, F1 (1), B1 (2), hop, B0 (2): 6 + 2 · 0.5
        assert_eq!(r.makespan, 7.0);
    }
}
