//! SIGINT/SIGTERM to the launcher are recorded by an async-signal-safe handler (one atomic
//! store) and forwarded to the ranks by the supervision loop.

use std::sync::atomic::{AtomicI32, Ordering};

static RECEIVED: AtomicI32 = AtomicI32::new(0);

extern "C" fn record(signal: libc::c_int) {
    RECEIVED.store(signal, Ordering::SeqCst);
}

/// Installs the handlers for SIGINT and SIGTERM.
pub(crate) fn install() {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = record as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

/// The signal received since the last call, if any.
pub(crate) fn take() -> Option<i32> {
    match RECEIVED.swap(0, Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

pub(crate) fn name(signal: i32) -> String {
    match signal {
        libc::SIGINT => "SIGINT".into(),
        libc::SIGTERM => "SIGTERM".into(),
        libc::SIGKILL => "SIGKILL".into(),
        libc::SIGSEGV => "SIGSEGV".into(),
        libc::SIGABRT => "SIGABRT".into(),
        libc::SIGBUS => "SIGBUS".into(),
        other => format!("signal {other}"),
    }
}

/// Sends `signal` to the process group led by `pid` (each rank runs in its own group, so
/// the processes it started are signalled too).
pub(crate) fn send_to_group(pid: u32, signal: i32) {
    // SAFETY: kill(2) with a negative pid addresses a process group; errors (already gone)
    // are harmless.
    unsafe {
        libc::kill(-(pid as libc::pid_t), signal);
    }
}
