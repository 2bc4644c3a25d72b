//! A watchdog for blocking collectives that cannot time out by themselves (MPI, later NCCL).
//!
//! Contract: `arm(op, group, rank)` before a blocking call, drop the returned guard after it.
//! A background thread checks every 100 ms; when a call has been armed longer than the timeout
//! it calls the expiry action once with the message
//!   "collective <op> on group <group> timed out after <N> s (rank <R>)".
//! The MPI backend's action adds which ranks never reached the call (`forensics`, from the other
//! ranks' status boards, no MPI involved), prints the message to stderr and ends the process with
//! `WATCHDOG_EXIT_CODE` (no MPI call: the runtime may be stuck); mpirun then tears the job down.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Exit code of a process ended by the watchdog (as `timeout(1)`).
pub const WATCHDOG_EXIT_CODE: i32 = 124;

type ExpiryAction = Box<dyn Fn(String) + Send + Sync>;

struct Armed {
    since: Instant,
    op: &'static str,
    group: String,
    rank: usize,
}

struct State {
    next_id: u64,
    armed: HashMap<u64, Armed>,
    shutdown: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    timeout: Duration,
}

/// Watches armed calls from a background thread.
pub struct Watchdog {
    shared: Arc<Shared>,
    thread: Option<thread::JoinHandle<()>>,
}

/// Disarms its call when dropped.
pub struct WatchGuard<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Watchdog {
    /// Starts the watchdog thread with a custom expiry action (tests; other backends).
    pub fn start(timeout: Duration, on_expiry: ExpiryAction) -> Watchdog {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                next_id: 0,
                armed: HashMap::new(),
                shutdown: false,
            }),
            wake: Condvar::new(),
            timeout,
        });
        let worker = Arc::clone(&shared);
        let thread = thread::Builder::new()
            .name("ferrotron-watchdog".into())
            .spawn(move || watch(&worker, on_expiry))
            .ok();
        Watchdog { shared, thread }
    }

    /// Starts a watchdog that prints the message and exits the process.
    pub fn aborting(timeout: Duration) -> Watchdog {
        Watchdog::start(
            timeout,
            Box::new(|message| {
                // Which ranks never reached the call: asked from their status boards.
                let why = crate::forensics::explain_stuck().unwrap_or_default();
                // Not eprintln!: a closed stderr must not panic this thread before the exit.
                use std::io::Write as _;
                let line = format!("{message}{why}; aborting\n");
                let _ = std::io::stderr().lock().write_all(line.as_bytes());
                // SAFETY: _exit ends the process without running handlers that could block on
                // the stuck communication runtime.
                unsafe { libc::_exit(WATCHDOG_EXIT_CODE) }
            }),
        )
    }

    pub fn timeout(&self) -> Duration {
        self.shared.timeout
    }

    pub fn arm(&self, op: &'static str, group: &str, rank: usize) -> WatchGuard<'_> {
        let mut state = lock(&self.shared.state);
        let id = state.next_id;
        state.next_id += 1;
        state.armed.insert(
            id,
            Armed {
                since: Instant::now(),
                op,
                group: group.to_string(),
                rank,
            },
        );
        WatchGuard {
            shared: &self.shared,
            id,
        }
    }
}

impl Drop for WatchGuard<'_> {
    fn drop(&mut self) {
        lock(&self.shared.state).armed.remove(&self.id);
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        lock(&self.shared.state).shutdown = true;
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// "5" for whole seconds, "0.3" otherwise.
pub fn secs_text(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        d.as_secs().to_string()
    } else {
        format!("{:.1}", d.as_secs_f64())
    }
}

fn watch(shared: &Shared, on_expiry: ExpiryAction) {
    let mut state = lock(&shared.state);
    loop {
        if state.shutdown {
            return;
        }
        let expired: Vec<u64> = state
            .armed
            .iter()
            .filter(|(_, a)| a.since.elapsed() >= shared.timeout)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(a) = state.armed.remove(&id) {
                let message = format!(
                    "collective {} on group {} timed out after {} s (rank {})",
                    a.op,
                    a.group,
                    secs_text(shared.timeout),
                    a.rank
                );
                on_expiry(message);
            }
        }
        state = shared
            .wake
            .wait_timeout(state, Duration::from_millis(100))
            .map(|(s, _)| s)
            .unwrap_or_else(|poisoned| poisoned.into_inner().0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_once_for_a_call_held_past_the_timeout_and_never_for_a_quick_one() {
        let fired = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&fired);
        let dog = Watchdog::start(
            Duration::from_millis(300),
            Box::new(move |m| sink.lock().unwrap().push(m)),
        );
        {
            let _quick = dog.arm("barrier", "world", 0);
        }
        {
            let _slow = dog.arm("all_reduce", "dp(pp=0,tp=0)", 3);
            thread::sleep(Duration::from_millis(700));
        }
        thread::sleep(Duration::from_millis(200));
        let fired = fired.lock().unwrap();
        assert_eq!(
            *fired,
            vec!["collective all_reduce on group dp(pp=0,tp=0) timed out after 0.3 s (rank 3)"]
        );
    }
}
