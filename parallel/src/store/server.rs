//! The store server: one thread accepting connections, one thread per client. Keys live in a
//! map guarded by a mutex; `get` waits on a condition variable until the key appears or the
//! client's timeout passes. Dropping the server stops accepting; open connections end when
//! their clients close.

use std::collections::HashMap;
use std::io::{self, BufReader, BufWriter, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::{read_chunk, read_u8, write_chunk, OP_ADD, OP_GET, OP_SET, STATUS_OK, STATUS_TIMEOUT};

#[derive(Default)]
struct Table {
    map: Mutex<HashMap<String, Vec<u8>>>,
    changed: Condvar,
}

/// A running store server.
pub struct StoreServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl StoreServer {
    /// Serves on `bind_addr:port` (port 0 picks a free port; see `port()`).
    pub fn bind(bind_addr: &str, port: u16) -> io::Result<StoreServer> {
        let listener = TcpListener::bind((bind_addr, port))?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let table = Arc::new(Table::default());
        let stop_flag = Arc::clone(&stop);
        thread::Builder::new()
            .name("ferrotron-store".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    if stop_flag.load(Ordering::SeqCst) {
                        return;
                    }
                    if let Ok(stream) = stream {
                        let table = Arc::clone(&table);
                        let _ = thread::Builder::new()
                            .name("ferrotron-store-conn".into())
                            .spawn(move || serve(stream, &table));
                    }
                }
            })?;
        Ok(StoreServer { addr, stop })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl Drop for StoreServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(
            &SocketAddr::from(([127, 0, 0, 1], self.addr.port())),
            Duration::from_secs(1),
        );
    }
}

fn serve(stream: TcpStream, table: &Table) {
    let _ = stream.set_nodelay(true);
    let Ok(write_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    let mut writer = BufWriter::new(write_half);
    while let Ok(op) = read_u8(&mut reader) {
        let (Ok(key), Ok(value)) = (read_chunk(&mut reader), read_chunk(&mut reader)) else {
            return;
        };
        let key = String::from_utf8_lossy(&key).into_owned();
        let (status, reply) = match op {
            OP_SET => {
                lock(&table.map).insert(key, value);
                table.changed.notify_all();
                (STATUS_OK, Vec::new())
            }
            OP_GET => {
                let millis = u64::from_le_bytes(value.try_into().unwrap_or([0; 8]));
                wait_for(table, &key, Duration::from_millis(millis))
            }
            OP_ADD => {
                let delta = i64::from_le_bytes(value.try_into().unwrap_or([0; 8]));
                let mut map = lock(&table.map);
                let current = map
                    .get(&key)
                    .and_then(|v| std::str::from_utf8(v).ok()?.parse::<i64>().ok())
                    .unwrap_or(0);
                let next = current + delta;
                map.insert(key, next.to_string().into_bytes());
                drop(map);
                table.changed.notify_all();
                (STATUS_OK, next.to_string().into_bytes())
            }
            _ => return,
        };
        let sent = writer
            .write_all(&[status])
            .and_then(|_| write_chunk(&mut writer, &reply))
            .and_then(|_| writer.flush());
        if sent.is_err() {
            return;
        }
    }
}

fn wait_for(table: &Table, key: &str, timeout: Duration) -> (u8, Vec<u8>) {
    let deadline = Instant::now() + timeout;
    let mut map = lock(&table.map);
    loop {
        if let Some(v) = map.get(key) {
            return (STATUS_OK, v.clone());
        }
        let now = Instant::now();
        if now >= deadline {
            return (STATUS_TIMEOUT, Vec::new());
        }
        map = table
            .changed
            .wait_timeout(map, deadline - now)
            .map(|(m, _)| m)
            .unwrap_or_else(|p| p.into_inner().0);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
