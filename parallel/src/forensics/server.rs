//! The status board's server: one thread accepting connections on an ephemeral port; each
//! connection gets the current board (board.rs) and is closed. It touches no communicator, so
//! it answers while the rank's main thread is blocked in a collective.

use std::io::Write;
use std::net::{Ipv4Addr, TcpListener};
use std::thread;
use std::time::Duration;

use super::{board, hostname};

/// Starts serving world rank `me`'s board on `ip` (the address other ranks are told; every
/// interface if it cannot be bound); returns the port (None if it cannot listen at all).
pub(super) fn serve(me: usize, ip: Ipv4Addr) -> Option<u16> {
    let listener = TcpListener::bind((ip, 0))
        .or_else(|_| TcpListener::bind("0.0.0.0:0"))
        .ok()?;
    let port = listener.local_addr().ok()?.port();
    let host = hostname();
    thread::Builder::new()
        .name("ferrotron-status".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { continue };
                let _ = s.set_write_timeout(Some(Duration::from_secs(1)));
                let text = board::render(me, &host, &board::snapshot());
                let _ = s.write_all(text.as_bytes());
            }
        })
        .ok()?;
    Some(port)
}
