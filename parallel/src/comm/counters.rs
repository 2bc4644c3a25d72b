//! Per-communicator traffic counters.
//!
//! Convention (what ZeRO and planner tests assert against): bytes are counted per rank, for the
//! payload only, as the bandwidth-optimal ring algorithms move them, whatever the backend really
//! does. With N the group size and B the byte size of the *full* buffer:
//! - all_reduce:      sent = received = floor(2 (N-1) B / N)
//! - reduce_scatter:  sent = received = (N-1) B / N   (B = input, N * output; exact since N | len)
//! - all_gather:      sent = received = (N-1) B / N   (B = output, N * input; exact)
//! - broadcast:       a chain from the root: every rank but the root receives B; every rank but
//!   the last of the chain, (root + N - 1) mod N, sends B
//! - send / recv:     the message bytes, as sent resp. received
//! - barrier, split:  no bytes; only the call is counted
//!
//! On a group of one every formula gives zero bytes; the call is still counted. Counters are only
//! bumped after a call succeeds. `snapshot` reads them, `reset` zeroes them.

use std::sync::atomic::{AtomicU64, Ordering};

/// The operation kinds that counters are kept for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpKind {
    AllReduce,
    ReduceScatter,
    AllGather,
    Broadcast,
    Send,
    Recv,
    Barrier,
    Split,
}

impl OpKind {
    pub const ALL: [OpKind; 8] = [
        OpKind::AllReduce,
        OpKind::ReduceScatter,
        OpKind::AllGather,
        OpKind::Broadcast,
        OpKind::Send,
        OpKind::Recv,
        OpKind::Barrier,
        OpKind::Split,
    ];

    pub fn name(self) -> &'static str {
        match self {
            OpKind::AllReduce => "all_reduce",
            OpKind::ReduceScatter => "reduce_scatter",
            OpKind::AllGather => "all_gather",
            OpKind::Broadcast => "broadcast",
            OpKind::Send => "send",
            OpKind::Recv => "recv",
            OpKind::Barrier => "barrier",
            OpKind::Split => "split",
        }
    }

    fn index(self) -> usize {
        OpKind::ALL.iter().position(|k| *k == self).unwrap_or(0)
    }
}

/// Calls and bytes of one operation kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpTraffic {
    pub calls: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

/// A copy of all counters of a communicator at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrafficSnapshot {
    per_op: [OpTraffic; 8],
}

impl TrafficSnapshot {
    pub fn op(&self, kind: OpKind) -> OpTraffic {
        self.per_op[kind.index()]
    }

    /// The traffic between `earlier` and this snapshot (e.g. one training step).
    pub fn since(&self, earlier: &TrafficSnapshot) -> TrafficSnapshot {
        let mut diff = *self;
        for (d, e) in diff.per_op.iter_mut().zip(&earlier.per_op) {
            d.calls = d.calls.saturating_sub(e.calls);
            d.bytes_sent = d.bytes_sent.saturating_sub(e.bytes_sent);
            d.bytes_received = d.bytes_received.saturating_sub(e.bytes_received);
        }
        diff
    }

    pub fn total_sent(&self) -> u64 {
        self.per_op.iter().map(|t| t.bytes_sent).sum()
    }

    pub fn total_received(&self) -> u64 {
        self.per_op.iter().map(|t| t.bytes_received).sum()
    }
}

#[derive(Default)]
struct AtomicTraffic {
    calls: AtomicU64,
    sent: AtomicU64,
    received: AtomicU64,
}

/// Live counters, owned by one communicator and shared by reference; also the group's flight
/// recorder (numbered calls, `flight.rs`).
#[derive(Default)]
pub struct CommCounters {
    per_op: [AtomicTraffic; 8],
    pub flight: super::flight::Flight,
}

impl CommCounters {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn record(&self, kind: OpKind, sent: u64, received: u64) {
        let t = &self.per_op[kind.index()];
        t.calls.fetch_add(1, Ordering::Relaxed);
        t.sent.fetch_add(sent, Ordering::Relaxed);
        t.received.fetch_add(received, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> TrafficSnapshot {
        let mut snap = TrafficSnapshot::default();
        for (out, t) in snap.per_op.iter_mut().zip(&self.per_op) {
            *out = OpTraffic {
                calls: t.calls.load(Ordering::Relaxed),
                bytes_sent: t.sent.load(Ordering::Relaxed),
                bytes_received: t.received.load(Ordering::Relaxed),
            };
        }
        snap
    }

    pub fn reset(&self) {
        for t in &self.per_op {
            t.calls.store(0, Ordering::Relaxed);
            t.sent.store(0, Ordering::Relaxed);
            t.received.store(0, Ordering::Relaxed);
        }
    }
}

/// Ring-algorithm bytes per rank for `all_reduce` of `bytes` over `n` ranks.
pub fn all_reduce_ring_bytes(bytes: u64, n: u64) -> u64 {
    2 * (n - 1) * bytes / n
}

/// Ring-algorithm bytes per rank for `reduce_scatter` / `all_gather` of a full buffer of `bytes`.
pub fn scatter_gather_ring_bytes(bytes: u64, n: u64) -> u64 {
    (n - 1) * bytes / n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_snapshot_and_reset() {
        let c = CommCounters::new();
        c.record(OpKind::AllReduce, 10, 12);
        c.record(OpKind::AllReduce, 1, 1);
        c.record(OpKind::Barrier, 0, 0);
        let s = c.snapshot();
        assert_eq!(
            s.op(OpKind::AllReduce),
            OpTraffic {
                calls: 2,
                bytes_sent: 11,
                bytes_received: 13
            }
        );
        assert_eq!(s.op(OpKind::Barrier).calls, 1);
        assert_eq!(s.total_sent(), 11);
        c.record(OpKind::AllGather, 5, 6);
        let step = c.snapshot().since(&s);
        assert_eq!(step.op(OpKind::AllReduce), OpTraffic::default());
        assert_eq!(step.op(OpKind::AllGather).bytes_received, 6);
        assert_eq!(step.total_sent(), 5);
        c.reset();
        assert_eq!(c.snapshot(), TrafficSnapshot::default());
    }

    #[test]
    fn ring_formulas() {
        assert_eq!(all_reduce_ring_bytes(400, 4), 600);
        assert_eq!(all_reduce_ring_bytes(400, 1), 0);
        assert_eq!(scatter_gather_ring_bytes(400, 4), 300);
        assert_eq!(scatter_gather_ring_bytes(400, 2), 200);
    }
}
