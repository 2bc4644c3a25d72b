//! Starting and supervising the ranks of this node.
//!
//! Contract of `run`:
//! - starts `nproc_per_node` copies of the program (default: the current executable) with
//!   `args`, each in its own process group, with the variables of `child_env.rs`;
//! - prefixes every output line with `[rank R]` (stdout to stdout, stderr to stderr);
//! - when a rank exits non-zero or is killed, sends SIGTERM to the other ranks, SIGKILL after
//!   `TERM_GRACE`, prints "ferrotron launch: rank R exited with <status>; stopped the other
//!   ranks" and returns that rank's exit code (128 + signal for a signal);
//! - forwards SIGINT/SIGTERM received by the launcher to every rank (SIGKILL after
//!   `TERM_GRACE` if they do not stop) and returns 128 + signal;
//! - returns Ok(0) when every rank exits 0. `Err` only when the ranks could not be started.

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::args::{LaunchArgs, LaunchError};
use crate::child_env::rank_env;
use crate::output::{pump, Sink};
use crate::signals;

/// One stderr line that never panics: a launcher whose stderr reader has gone must still stop
/// and reap its ranks (`eprintln!` would panic and orphan them).
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = std::io::stderr().lock().write_all(format!("{}\n", format_args!($($t)*)).as_bytes());
    }};
}

/// Time between SIGTERM and SIGKILL when stopping ranks.
pub const TERM_GRACE: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(20);

struct Rank {
    rank: usize,
    child: Child,
    status: Option<ExitStatus>,
}

/// Launches and supervises the ranks of this node; returns the launcher's exit code.
pub fn run(args: LaunchArgs) -> Result<i32, LaunchError> {
    args.validate()?;
    let program = match &args.program {
        Some(p) => p.clone(),
        None => std::env::current_exe().map_err(LaunchError::CurrentExe)?,
    };
    signals::install();
    let mut ranks = Vec::new();
    let mut pumps = Vec::new();
    for local_rank in 0..args.nproc_per_node {
        let global = args.node_rank * args.nproc_per_node + local_rank;
        let spawned = Command::new(&program)
            .args(&args.args)
            .envs(rank_env(&args, local_rank))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(source) => {
                stop(&mut ranks, libc::SIGTERM);
                return Err(LaunchError::Spawn {
                    rank: global,
                    program: program.display().to_string(),
                    source,
                });
            }
        };
        if let Some(out) = child.stdout.take() {
            pumps.push(pump(global, out, Sink::Stdout));
        }
        if let Some(err) = child.stderr.take() {
            pumps.push(pump(global, err, Sink::Stderr));
        }
        ranks.push(Rank {
            rank: global,
            child,
            status: None,
        });
    }
    let code = supervise(&mut ranks)?;
    for p in pumps {
        let _ = p.join();
    }
    Ok(code)
}

fn supervise(ranks: &mut [Rank]) -> Result<i32, LaunchError> {
    let mut outcome: Option<i32> = None;
    let mut kill_at: Option<Instant> = None;
    loop {
        if let Some(signal) = signals::take() {
            say!(
                "ferrotron launch: received {}; forwarding it to all ranks",
                signals::name(signal)
            );
            stop(ranks, signal);
            outcome.get_or_insert(128 + signal);
            kill_at.get_or_insert(Instant::now() + TERM_GRACE);
        }
        let mut failed_now = Vec::new();
        for r in ranks.iter_mut().filter(|r| r.status.is_none()) {
            if let Some(status) = r.child.try_wait().map_err(LaunchError::Wait)? {
                r.status = Some(status);
                if !status.success() {
                    failed_now.push((r.rank, status));
                }
            }
        }
        if outcome.is_none() {
            // Prefer a rank killed by a signal: the others usually fail because of it.
            failed_now.sort_by_key(|(rank, s)| (s.signal().is_none(), *rank));
            if let Some(&(rank, status)) = failed_now.first() {
                say!(
                    "ferrotron launch: rank {rank} exited with {}; stopping the other ranks",
                    describe(status)
                );
                stop(ranks, libc::SIGTERM);
                outcome = Some(exit_code(status));
                kill_at = Some(Instant::now() + TERM_GRACE);
            }
        }
        if ranks.iter().all(|r| r.status.is_some()) {
            break;
        }
        if kill_at.is_some_and(|t| Instant::now() >= t) {
            stop(ranks, libc::SIGKILL);
            kill_at = None;
        }
        thread::sleep(POLL);
    }
    if let Some(code) = outcome {
        let summary: Vec<String> = ranks
            .iter()
            .filter_map(|r| {
                r.status
                    .map(|s| format!("rank {}: {}", r.rank, describe(s)))
            })
            .collect();
        say!("ferrotron launch: job failed ({})", summary.join(", "));
        return Ok(code);
    }
    Ok(0)
}

/// Signals every rank still running. A stopped rank (SIGSTOP, SIGTSTP) would hold SIGTERM until
/// continued, so SIGCONT follows it and the stop takes effect at once.
fn stop(ranks: &mut [Rank], signal: i32) {
    for r in ranks.iter_mut().filter(|r| r.status.is_none()) {
        signals::send_to_group(r.child.id(), signal);
        if signal != libc::SIGKILL {
            signals::send_to_group(r.child.id(), libc::SIGCONT);
        }
    }
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => signals::name(sig),
        _ => "an unknown status".into(),
    }
}

fn exit_code(status: ExitStatus) -> i32 {
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(sig)) => 128 + sig,
        _ => 1,
    }
}
