//! Hang forensics: when a collective times out, name the ranks that never reached it.
//!
//! Every rank of a multi-rank world serves its status board (`board.rs`: for each group, the
//! sequence number, op and bytes of the call in flight or last finished) on a TCP port of its
//! own, outside the communication backend, so it answers while its main thread is stuck inside
//! MPI. `start` binds that port and exchanges the addresses with one `all_gather` over the world
//! at start-up. When a call times out (the MPI watchdog fires, or a TCP receive times out), the
//! rank asks every other rank for its board (all at once, `QUERY_TIMEOUT` each) and `report.rs`
//! classifies them against the stuck call (group G, sequence number s):
//! - waiting: in flight in call s of G, the same op;
//! - not arrived: G's last call is before s (the message says what the rank is doing instead),
//!   or the rank did not answer at all (stopped, e.g. SIGSTOP, or dead);
//! - mismatched: in call s of G with another op (the ranks disagree on the collective order).
//!   Ranks without G are not members and are left out. The explanation is appended to the timeout
//!   error, with every answering rank's (group, seq, op, bytes).
//!
//! Addresses are IPv4: toward the rendezvous address when there is one (TCP), else this host's
//! name resolved (MPI), else 127.0.0.1. Best effort throughout: a rank that cannot serve its board
//! publishes port 0 and is reported as "no status board".

pub mod board;
pub mod report;
mod server;

use std::net::{Ipv4Addr, SocketAddrV4, ToSocketAddrs, UdpSocket};
use std::sync::OnceLock;
use std::time::Duration;

use crate::comm::buffer::{Buf, BufMut};
use crate::comm::error::CommError;
use crate::comm::Comm;

/// How long a rank waits for another rank's board (connect, then read).
pub const QUERY_TIMEOUT: Duration = Duration::from_millis(1500);

struct Peers {
    me: usize,
    /// Status address of each world rank (None: it has no board).
    addrs: Vec<Option<SocketAddrV4>>,
}

static PEERS: OnceLock<Peers> = OnceLock::new();

/// This host's name (for the board's identity line).
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into the buffer we own.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown-host".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// The IPv4 address other ranks reach this host at.
fn advertised_ip(toward: Option<&str>) -> Ipv4Addr {
    let via_route = toward.and_then(|host| {
        let s = UdpSocket::bind("0.0.0.0:0").ok()?;
        s.connect((host, 9)).ok()?; // UDP connect sends nothing; it picks the route
        match s.local_addr().ok()?.ip() {
            std::net::IpAddr::V4(ip) if !ip.is_unspecified() => Some(ip),
            _ => None,
        }
    });
    via_route
        .or_else(|| {
            (hostname().as_str(), 0)
                .to_socket_addrs()
                .ok()?
                .find_map(|a| match a.ip() {
                    std::net::IpAddr::V4(ip) if !ip.is_loopback() => Some(ip),
                    _ => None,
                })
        })
        .unwrap_or(Ipv4Addr::LOCALHOST)
}

/// Serves this rank's board and learns every rank's address. Collective over `world` (one
/// all_gather); call once, right after the world is opened. `toward`: the rendezvous host, if any.
pub fn start(world: &dyn Comm, toward: Option<&str>) -> Result<(), CommError> {
    world.counters().flight.name(world.name());
    if world.size() < 2 {
        return Ok(());
    }
    let me = world.rank();
    let ip = advertised_ip(toward);
    let port = server::serve(me, ip).unwrap_or(0);
    let mine = [u32::from(ip) as i32, i32::from(port)];
    let mut all = vec![0i32; 2 * world.size()];
    world.all_gather(Buf::I32(&mine), BufMut::I32(&mut all))?;
    let addrs = all
        .chunks(2)
        .map(|c| {
            let port = u16::try_from(c[1]).unwrap_or(0);
            (port != 0).then(|| SocketAddrV4::new(Ipv4Addr::from(c[0] as u32), port))
        })
        .collect();
    let _ = PEERS.set(Peers { me, addrs });
    Ok(())
}

/// Why call `seq` (`op`, `bytes`) on `group` does not complete, from every rank's board; None
/// where no board was started (a single process, or a world not opened by `init_world`).
pub fn explain(group: &str, seq: u64, op: &str, bytes: u64) -> Option<String> {
    let peers = PEERS.get()?;
    let mine = board::snapshot();
    let replies = report::query_all(peers.me, &peers.addrs, QUERY_TIMEOUT);
    Some(report::compose(
        &report::Stuck {
            group,
            seq,
            op,
            bytes,
            me: peers.me,
        },
        &mine,
        &replies,
    ))
}

/// `explain` for the call of this process that has been in flight longest (what a watchdog
/// that only knows "something is stuck" asks).
pub fn explain_stuck() -> Option<String> {
    let stuck = board::snapshot()
        .into_iter()
        .filter(|g| g.in_flight)
        .max_by_key(|g| g.age)?;
    explain(&stuck.group, stuck.seq, &stuck.op, stuck.bytes)
}

/// Appends the explanation to a timeout error of call `call` on group `group`.
pub fn annotate(e: CommError, group: &str, call: &crate::comm::flight::Call) -> CommError {
    match e {
        CommError::Timeout {
            op,
            group: g,
            secs,
            rank,
            detail,
        } => {
            let extra = explain(group, call.seq, call.op, call.bytes).unwrap_or_default();
            CommError::Timeout {
                op,
                group: g,
                secs,
                rank,
                detail: format!("{detail}{extra}"),
            }
        }
        other => other,
    }
}
