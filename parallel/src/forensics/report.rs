//! Asking the other ranks for their boards, and turning the answers into the sentence that
//! names who is missing from a stuck call (classification: see `forensics/mod.rs`).

use std::io::Read;
use std::net::{SocketAddr, SocketAddrV4, TcpStream};
use std::thread;
use std::time::Duration;

use super::board;
use crate::comm::flight::GroupStatus;

/// The call a rank is stuck in.
pub struct Stuck<'a> {
    pub group: &'a str,
    pub seq: u64,
    pub op: &'a str,
    pub bytes: u64,
    /// This rank's world rank.
    pub me: usize,
}

/// One rank's answer: its board, or why there is none.
pub type Reply = (usize, Result<Vec<GroupStatus>, String>);

fn ask(addr: Option<SocketAddrV4>, timeout: Duration) -> Result<Vec<GroupStatus>, String> {
    let addr = addr.ok_or("it has no status board")?;
    let secs = timeout.as_secs_f64();
    let mut s = TcpStream::connect_timeout(&SocketAddr::V4(addr), timeout).map_err(|e| {
        if e.kind() == std::io::ErrorKind::ConnectionRefused {
            "its status board refused the connection: the process is gone".to_string()
        } else {
            format!("no connection to its status board within {secs:.1} s")
        }
    })?;
    let _ = s.set_read_timeout(Some(timeout));
    let mut text = String::new();
    match s.read_to_string(&mut text) {
        Ok(_) => board::parse(&text).ok_or_else(|| "its status board sent garbage".to_string()),
        Err(_) => Err(format!(
            "no answer to the status query within {secs:.1} s: stopped (e.g. SIGSTOP) or dead"
        )),
    }
}

/// Every other rank's board, asked in parallel.
pub fn query_all(me: usize, addrs: &[Option<SocketAddrV4>], timeout: Duration) -> Vec<Reply> {
    let handles: Vec<_> = addrs
        .iter()
        .enumerate()
        .filter(|(r, _)| *r != me)
        .map(|(r, a)| {
            let a = *a;
            (r, thread::spawn(move || ask(a, timeout)))
        })
        .collect();
    handles
        .into_iter()
        .map(|(r, h)| {
            (
                r,
                h.join()
                    .unwrap_or_else(|_| Err("the status query failed".into())),
            )
        })
        .collect()
}

/// "1.5 MiB".
fn size(b: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

fn describe(g: &GroupStatus) -> String {
    if g.seq == 0 {
        return format!("{} no call yet", g.group);
    }
    let state = if g.in_flight {
        format!("in flight for {:.1} s", g.age.as_secs_f64())
    } else {
        format!("done {:.1} s ago", g.age.as_secs_f64())
    };
    format!("{} #{} {} {} {state}", g.group, g.seq, g.op, size(g.bytes))
}

/// What a rank that has `stuck.group` on its board is doing relative to the stuck call.
enum Verdict {
    Waiting,
    NotArrived(String),
    Ahead(String),
    Mismatch(String),
}

fn judge(stuck: &Stuck<'_>, g: &GroupStatus, all: &[GroupStatus]) -> Verdict {
    let state = |g: &GroupStatus| {
        if g.in_flight {
            format!("in flight for {:.1} s", g.age.as_secs_f64())
        } else {
            format!("done {:.1} s ago", g.age.as_secs_f64())
        }
    };
    if g.seq == stuck.seq && g.in_flight {
        if g.op == stuck.op {
            return Verdict::Waiting;
        }
        return Verdict::Mismatch(format!(
            "is in {} #{} instead (the ranks disagree on the order of collectives)",
            g.op, g.seq
        ));
    }
    if g.seq >= stuck.seq {
        return Verdict::Ahead(format!(
            "is at #{} {} ({}): it finished #{} without this rank",
            g.seq,
            g.op,
            state(g),
            stuck.seq
        ));
    }
    if g.seq == 0 {
        return Verdict::NotArrived("it has made no call on that group yet".into());
    }
    if g.in_flight {
        return Verdict::NotArrived(format!(
            "it is still in the earlier call #{} {} on that group, {}, waiting itself",
            g.seq,
            g.op,
            state(g)
        ));
    }
    let elsewhere = all
        .iter()
        .filter(|o| o.in_flight && o.group != stuck.group)
        .map(describe)
        .next()
        .map(|d| format!("now in {d}"))
        .unwrap_or_else(|| "now outside any collective (computing, or hung there)".into());
    Verdict::NotArrived(format!(
        "its last call on that group is #{} {}, {}; {elsewhere}",
        g.seq,
        g.op,
        state(g)
    ))
}

/// What a board shows about the stuck call: its entry for the group and any call in flight.
fn relevant(stuck: &Stuck<'_>, groups: &[GroupStatus]) -> String {
    let shown: Vec<String> = groups
        .iter()
        .filter(|g| g.group == stuck.group || g.in_flight)
        .map(describe)
        .collect();
    if shown.is_empty() {
        "not a member, nothing in flight".into()
    } else {
        shown.join(", ")
    }
}

/// The explanation appended to the timeout message.
pub fn compose(stuck: &Stuck<'_>, mine: &[GroupStatus], replies: &[Reply]) -> String {
    let mut waiting = vec![stuck.me];
    let (mut missing, mut ahead, mut mismatched) = (Vec::new(), Vec::new(), Vec::new());
    let mut boards = vec![(stuck.me, Ok(mine.to_vec()))];
    for (rank, reply) in replies {
        boards.push((*rank, reply.clone()));
        match reply {
            Err(why) => missing.push(format!("world rank {rank} ({why})")),
            Ok(groups) => match groups.iter().find(|g| g.group == stuck.group) {
                None => {} // not a member of the group
                Some(g) => match judge(stuck, g, groups) {
                    Verdict::Waiting => waiting.push(*rank),
                    Verdict::NotArrived(why) => missing.push(format!("world rank {rank} ({why})")),
                    Verdict::Ahead(why) => ahead.push(format!("world rank {rank} {why}")),
                    Verdict::Mismatch(why) => mismatched.push(format!("world rank {rank} {why}")),
                },
            },
        }
    }
    waiting.sort_unstable();
    boards.sort_by_key(|(r, _)| *r);
    let mut out = format!(
        "; it is call #{} on that group ({}); not arrived: {}",
        stuck.seq,
        size(stuck.bytes),
        if missing.is_empty() {
            "none".to_string()
        } else {
            missing.join(", ")
        }
    );
    for (what, v) in [("mismatched", &mismatched), ("ahead", &ahead)] {
        if !v.is_empty() {
            out += &format!("; {what}: {}", v.join(", "));
        }
    }
    let waiting: Vec<String> = waiting.iter().map(|r| r.to_string()).collect();
    out += &format!("; waiting in it: world ranks {}", waiting.join(", "));
    let all: Vec<String> = boards
        .iter()
        .map(|(r, b)| match b {
            Ok(groups) => format!("rank {r}: {}", relevant(stuck, groups)),
            Err(_) => format!("rank {r}: no answer"),
        })
        .collect();
    out + &format!("; status boards: {}", all.join(" | "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(group: &str, seq: u64, op: &str, in_flight: bool) -> GroupStatus {
        GroupStatus {
            group: group.into(),
            seq,
            op: op.into(),
            bytes: 3 << 20,
            in_flight,
            age: Duration::from_millis(5000),
        }
    }

    #[test]
    fn names_the_silent_rank_the_late_rank_and_the_mismatched_one() {
        let stuck = Stuck {
            group: "dp",
            seq: 57,
            op: "all_gather",
            bytes: 3 << 20,
            me: 0,
        };
        let mine = vec![
            g("dp", 57, "all_gather", true),
            g("world", 3, "all_gather", false),
        ];
        let replies: Vec<Reply> = vec![
            (1, Ok(vec![g("dp", 57, "all_gather", true)])),
            (
                2,
                Err(
                    "no answer to the status query within 2 s: stopped (e.g. SIGSTOP) or dead"
                        .into(),
                ),
            ),
            (
                3,
                Ok(vec![
                    g("dp", 56, "all_gather", false),
                    g("world", 4, "barrier", true),
                ]),
            ),
            (4, Ok(vec![g("dp", 57, "all_reduce", true)])),
            (5, Ok(vec![g("other", 9, "all_reduce", true)])),
        ];
        let m = compose(&stuck, &mine, &replies);
        assert!(
            m.starts_with(
                "; it is call #57 on that group (3.0 MiB); not arrived: world rank 2 (no answer"
            ),
            "{m}"
        );
        assert!(m.contains("world rank 3 (its last call on that group is #56 all_gather, done 5.0 s ago; now in world #4 barrier 3.0 MiB in flight for 5.0 s)"), "{m}");
        assert!(
            m.contains("mismatched: world rank 4 is in all_reduce #57 instead"),
            "{m}"
        );
        assert!(m.contains("waiting in it: world ranks 0, 1;"), "{m}");
        assert!(m.contains("rank 2: no answer | rank 3: dp #56 all_gather 3.0 MiB done 5.0 s ago, world #4 barrier"), "{m}");
        assert!(
            m.ends_with("rank 5: other #9 all_reduce 3.0 MiB in flight for 5.0 s"),
            "{m}"
        );
        // A rank behind, still in the previous call, and ranks already past the stuck one.
        let behind = Stuck { seq: 56, ..stuck };
        let replies: Vec<Reply> = vec![
            (1, Ok(vec![g("dp", 55, "all_gather", true)])),
            (2, Ok(vec![g("dp", 57, "all_gather", true)])),
        ];
        let m = compose(&behind, &[g("dp", 56, "all_gather", true)], &replies);
        assert!(m.contains("not arrived: world rank 1 (it is still in the earlier call #55 all_gather on that group, in flight for 5.0 s, waiting itself)"), "{m}");
        assert!(m.contains("ahead: world rank 2 is at #57 all_gather (in flight for 5.0 s): it finished #56 without this rank"), "{m}");
    }
}
