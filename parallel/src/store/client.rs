//! The store client: one TCP connection to the server, requests answered in order.

use std::io::{self, BufReader, BufWriter, Write};
use std::net::{IpAddr, TcpStream, ToSocketAddrs};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use crate::comm::error::CommError;
use crate::watchdog::secs_text;

use super::{read_chunk, read_u8, write_chunk, OP_ADD, OP_GET, OP_SET, STATUS_OK};

struct Conn {
    reader: BufReader<TcpStream>,
    writer: BufWriter<TcpStream>,
}

/// A connection to the rendezvous store.
pub struct StoreClient {
    conn: Mutex<Conn>,
    server: String,
    local_ip: IpAddr,
}

impl StoreClient {
    /// Connects to `host:port`, retrying until `timeout` (the server may not be up yet).
    pub fn connect(host: &str, port: u16, timeout: Duration) -> Result<StoreClient, CommError> {
        let server = format!("{host}:{port}");
        let deadline = Instant::now() + timeout;
        let stream = loop {
            let attempt = server
                .to_socket_addrs()
                .and_then(|mut addrs| {
                    addrs.next().ok_or_else(|| {
                        io::Error::new(io::ErrorKind::NotFound, "no address for host")
                    })
                })
                .and_then(|a| TcpStream::connect_timeout(&a, Duration::from_secs(2)));
            match attempt {
                Ok(s) => break s,
                Err(e) if Instant::now() >= deadline => {
                    return Err(CommError::Setup(format!(
                        "could not reach the rendezvous store at {server} within {} s: {e}",
                        secs_text(timeout)
                    )))
                }
                Err(_) => thread::sleep(Duration::from_millis(100)),
            }
        };
        let setup = |e: io::Error| CommError::Setup(format!("rendezvous store at {server}: {e}"));
        stream.set_nodelay(true).map_err(setup)?;
        let local_ip = stream.local_addr().map_err(setup)?.ip();
        let reader = BufReader::new(stream.try_clone().map_err(setup)?);
        Ok(StoreClient {
            conn: Mutex::new(Conn {
                reader,
                writer: BufWriter::new(stream),
            }),
            server,
            local_ip,
        })
    }

    /// The address of this host on the interface that reaches the store (what peers can use).
    pub fn local_ip(&self) -> IpAddr {
        self.local_ip
    }

    pub fn set(&self, key: &str, value: &[u8]) -> Result<(), CommError> {
        self.request(OP_SET, key, value, None).map(|_| ())
    }

    /// Waits until `key` is set and returns its value.
    pub fn get(&self, key: &str, timeout: Duration) -> Result<Vec<u8>, CommError> {
        let millis = timeout.as_millis() as u64;
        self.request(OP_GET, key, &millis.to_le_bytes(), Some(timeout))?
            .ok_or_else(|| {
                CommError::Setup(format!(
                    "rendezvous key {key} was not set within {} s (store {})",
                    secs_text(timeout),
                    self.server
                ))
            })
    }

    /// Adds `delta` to the counter `key` (0 when unset) and returns the new value.
    pub fn add(&self, key: &str, delta: i64) -> Result<i64, CommError> {
        let reply = self.request(OP_ADD, key, &delta.to_le_bytes(), None)?;
        let text = reply.unwrap_or_default();
        std::str::from_utf8(&text)
            .ok()
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| CommError::Setup(format!("rendezvous counter {key} is not a number")))
    }

    /// Returns once `world` clients have entered the barrier `name` (each name used once).
    pub fn barrier(&self, name: &str, world: usize, timeout: Duration) -> Result<(), CommError> {
        let arrived = self.add(&format!("barrier/{name}/count"), 1)?;
        let done = format!("barrier/{name}/done");
        if arrived as usize == world {
            self.set(&done, b"1")?;
        }
        self.get(&done, timeout).map(|_| ()).map_err(|_| {
            CommError::Setup(format!(
                "barrier {name} of the rendezvous store: not all {world} ranks arrived within {} s",
                secs_text(timeout)
            ))
        })
    }

    /// One request; `Ok(None)` when the server answered "timed out".
    fn request(
        &self,
        op: u8,
        key: &str,
        value: &[u8],
        wait: Option<Duration>,
    ) -> Result<Option<Vec<u8>>, CommError> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let io_err = |e: io::Error| {
            CommError::Setup(format!(
                "rendezvous store at {} failed on key {key}: {e}",
                self.server
            ))
        };
        let read_timeout = wait.unwrap_or_default() + Duration::from_secs(30);
        conn.reader
            .get_ref()
            .set_read_timeout(Some(read_timeout))
            .map_err(io_err)?;
        conn.writer.write_all(&[op]).map_err(io_err)?;
        write_chunk(&mut conn.writer, key.as_bytes()).map_err(io_err)?;
        write_chunk(&mut conn.writer, value).map_err(io_err)?;
        conn.writer.flush().map_err(io_err)?;
        let status = read_u8(&mut conn.reader).map_err(io_err)?;
        let reply = read_chunk(&mut conn.reader).map_err(io_err)?;
        Ok((status == STATUS_OK).then_some(reply))
    }
}
