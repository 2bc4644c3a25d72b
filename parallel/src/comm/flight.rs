//! The flight recorder of one group (live, unlike PyTorch's Flight Recorder dumps).
//!
//! Contract: every call through the `Comm` trait's provided methods on a group of two or more
//! takes the group's next sequence number (1, 2, 3, ...: the same number on every member for the
//! same collective, since members call collectives in the same order) with `begin`, and `end`s it
//! when the backend returns. The recorder keeps the call in flight and the last one finished
//! (op, payload bytes, when), and is registered with this process's status board
//! (`crate::forensics`), which answers other ranks' questions while this one is stuck.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// One recorded call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    pub seq: u64,
    pub op: &'static str,
    /// Payload bytes of the call (the full buffer, as `counters.rs` calls it B).
    pub bytes: u64,
    pub at: Instant,
}

#[derive(Default)]
struct Calls {
    group: String,
    current: Option<Call>,
    last: Option<Call>,
}

/// What a group is doing now, as published on the status board.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupStatus {
    pub group: String,
    pub seq: u64,
    pub op: String,
    pub bytes: u64,
    /// true: call `seq` is in flight (for `age`); false: it finished `age` ago.
    pub in_flight: bool,
    pub age: Duration,
}

/// Shared state of one group's recorder.
#[derive(Default)]
pub struct FlightState {
    seq: AtomicU64,
    calls: Mutex<Calls>,
}

impl FlightState {
    fn lock(&self) -> MutexGuard<'_, Calls> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// None until the group is named (`Flight::name`) or makes its first call; seq 0 before the
    /// first call.
    pub fn status(&self) -> Option<GroupStatus> {
        let c = self.lock();
        let (call, in_flight) = match (&c.current, &c.last) {
            (Some(cur), _) => (cur, true),
            (None, Some(last)) => (last, false),
            (None, None) if c.group.is_empty() => return None,
            (None, None) => {
                return Some(GroupStatus {
                    group: c.group.clone(),
                    seq: 0,
                    op: "-".into(),
                    bytes: 0,
                    in_flight: false,
                    age: Duration::ZERO,
                })
            }
        };
        Some(GroupStatus {
            group: c.group.clone(),
            seq: call.seq,
            op: call.op.to_string(),
            bytes: call.bytes,
            in_flight,
            age: call.at.elapsed(),
        })
    }
}

/// A group's recorder; lives in its `CommCounters`.
pub struct Flight {
    state: Arc<FlightState>,
}

impl Default for Flight {
    fn default() -> Self {
        let state = Arc::new(FlightState::default());
        crate::forensics::board::register(&state);
        Flight { state }
    }
}

impl Flight {
    /// Names the group before its first call (a member that has not called anything yet still
    /// shows up on the board, with seq 0).
    pub fn name(&self, group: &str) {
        let mut c = self.state.lock();
        if c.group.is_empty() {
            c.group = group.to_string();
        }
    }

    /// Starts call `op` of `bytes` on group `group`: returns it with its sequence number.
    pub fn begin(&self, group: &str, op: &'static str, bytes: u64) -> Call {
        let seq = self.state.seq.fetch_add(1, Ordering::SeqCst) + 1;
        let call = Call {
            seq,
            op,
            bytes,
            at: Instant::now(),
        };
        let mut c = self.state.lock();
        if c.group != group {
            c.group = group.to_string();
        }
        c.current = Some(call.clone());
        call
    }

    /// Ends `call` (successfully or not).
    pub fn end(&self, call: &Call) {
        let mut c = self.state.lock();
        if c.current.as_ref().is_some_and(|cur| cur.seq == call.seq) {
            c.current = None;
        }
        c.last = Some(Call {
            at: Instant::now(),
            ..call.clone()
        });
    }

    /// Calls started on this group so far.
    pub fn calls(&self) -> u64 {
        self.state.seq.load(Ordering::SeqCst)
    }

    pub fn status(&self) -> Option<GroupStatus> {
        self.state.status()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_numbered_and_the_one_in_flight_is_shown() {
        let f = Flight::default();
        assert_eq!(f.status(), None);
        f.name("dp");
        assert_eq!(f.status().map(|s| s.seq), Some(0));
        let a = f.begin("dp", "all_reduce", 8);
        let s = f.status().unwrap();
        assert_eq!(
            (s.group.as_str(), s.seq, s.op.as_str(), s.bytes, s.in_flight),
            ("dp", 1, "all_reduce", 8, true)
        );
        f.end(&a);
        let b = f.begin("dp", "all_gather", 64);
        assert_eq!(b.seq, 2);
        f.end(&b);
        let s = f.status().unwrap();
        assert_eq!(
            (s.seq, s.op.as_str(), s.in_flight),
            (2, "all_gather", false)
        );
        assert_eq!(f.calls(), 2);
    }
}
