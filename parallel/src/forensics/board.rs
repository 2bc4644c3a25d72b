//! This process's status board: the flight recorders of every group it belongs to, and their
//! text form as served to other ranks.
//!
//! Wire format (UTF-8 lines, tab-separated fields; group names hold no tabs):
//!   ferrotron-status 1
//!   rank <world rank> pid <pid> host <hostname>
//!   <group> <seq> <op> <bytes> in|done <age in ms>      (one line per group; seq 0: no call yet)

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::comm::flight::{FlightState, GroupStatus};

static BOARD: Mutex<Vec<Weak<FlightState>>> = Mutex::new(Vec::new());

const MAGIC: &str = "ferrotron-status 1";

/// Adds a group's recorder (dropped recorders are forgotten).
pub(crate) fn register(state: &Arc<FlightState>) {
    let mut b = BOARD.lock().unwrap_or_else(|p| p.into_inner());
    b.retain(|w| w.strong_count() > 0);
    b.push(Arc::downgrade(state));
}

/// Every live group's status (groups that made no call yet have seq 0).
pub fn snapshot() -> Vec<GroupStatus> {
    let b = BOARD.lock().unwrap_or_else(|p| p.into_inner());
    b.iter()
        .filter_map(Weak::upgrade)
        .filter_map(|s| s.status())
        .collect()
}

/// The board as served: header, identity, one line per group.
pub fn render(world_rank: usize, host: &str, groups: &[GroupStatus]) -> String {
    let mut out = format!(
        "{MAGIC}\nrank {world_rank} pid {} host {host}\n",
        std::process::id()
    );
    for g in groups {
        out += &format!(
            "{}\t{}\t{}\t{}\t{}\t{}\n",
            g.group,
            g.seq,
            g.op,
            g.bytes,
            if g.in_flight { "in" } else { "done" },
            g.age.as_millis()
        );
    }
    out
}

/// Parses `render`'s output; None when it is not a status board.
pub fn parse(text: &str) -> Option<Vec<GroupStatus>> {
    let mut lines = text.lines();
    if lines.next()? != MAGIC {
        return None;
    }
    lines.next()?; // identity: the caller knows whom it asked
    lines
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            if f.len() != 6 {
                return None;
            }
            Some(GroupStatus {
                group: f[0].to_string(),
                seq: f[1].parse().ok()?,
                op: f[2].to_string(),
                bytes: f[3].parse().ok()?,
                in_flight: f[4] == "in",
                age: Duration::from_millis(f[5].parse().ok()?),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_and_parse_round_trip() {
        let g = vec![
            GroupStatus {
                group: "dp(pp=0,tp=0)".into(),
                seq: 57,
                op: "all_gather".into(),
                bytes: 1 << 20,
                in_flight: true,
                age: Duration::from_millis(3000),
            },
            GroupStatus {
                group: "world".into(),
                seq: 0,
                op: "-".into(),
                bytes: 0,
                in_flight: false,
                age: Duration::ZERO,
            },
        ];
        assert_eq!(parse(&render(2, "node", &g)), Some(g));
        assert_eq!(parse("HTTP/1.1 400"), None);
    }
}
