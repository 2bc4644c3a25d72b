//! Building the TCP world: rank 0 serves the store; every rank listens on an ephemeral port,
//! publishes "tcp/addr/<rank>" = "<ip>:<port>" (ip = its address on the interface that reaches
//! the store), connects to every lower rank (sending its rank as a 4-byte hello) and accepts one
//! connection from every higher rank. Ends with a store barrier, so a returned world is complete.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use crate::comm::error::CommError;
use crate::store::{StoreClient, StoreServer};
use crate::watchdog::secs_text;

use super::transport::{Peer, Transport};

pub(crate) fn connect_world(
    master_addr: &str,
    master_port: u16,
    rank: usize,
    world: usize,
    rendezvous_timeout: Duration,
    collective_timeout: Duration,
) -> Result<Transport, CommError> {
    let setup = |what: &str, e: std::io::Error| {
        CommError::Setup(format!("rank {rank} could not {what}: {e}"))
    };
    let server = if rank == 0 {
        Some(StoreServer::bind("0.0.0.0", master_port).map_err(|e| {
            setup(
                &format!("serve the rendezvous store on port {master_port}"),
                e,
            )
        })?)
    } else {
        None
    };
    let store_host = if rank == 0 { "127.0.0.1" } else { master_addr };
    let store = StoreClient::connect(store_host, master_port, rendezvous_timeout)?;
    // Rank 0 reached the store over loopback; peers need its address as they see master.
    let my_ip = if rank == 0 {
        master_addr.to_string()
    } else {
        store.local_ip().to_string()
    };
    let listener =
        TcpListener::bind("0.0.0.0:0").map_err(|e| setup("open a listening socket", e))?;
    let my_port = listener
        .local_addr()
        .map_err(|e| setup("read its socket address", e))?
        .port();
    store.set(
        &format!("tcp/addr/{rank}"),
        format!("{my_ip}:{my_port}").as_bytes(),
    )?;

    let mut peers: Vec<Option<Peer>> = (0..world).map(|_| None).collect();
    for (lower, slot) in peers.iter_mut().enumerate().take(rank) {
        let addr = store.get(&format!("tcp/addr/{lower}"), rendezvous_timeout)?;
        let addr = String::from_utf8_lossy(&addr).into_owned();
        let mut stream = TcpStream::connect(&addr)
            .map_err(|e| setup(&format!("connect to rank {lower} at {addr}"), e))?;
        stream
            .write_all(&(rank as u32).to_le_bytes())
            .map_err(|e| setup(&format!("greet rank {lower}"), e))?;
        *slot = Some(
            Peer::new(stream, collective_timeout).map_err(|e| setup("configure a socket", e))?,
        );
    }
    accept_higher(
        &listener,
        rank,
        world,
        rendezvous_timeout,
        collective_timeout,
        &mut peers,
    )?;
    store.barrier("tcp-world", world, rendezvous_timeout)?;
    Ok(Transport {
        timeout: collective_timeout,
        peers,
        _store: store,
        _server: server,
    })
}

fn accept_higher(
    listener: &TcpListener,
    rank: usize,
    world: usize,
    timeout: Duration,
    collective_timeout: Duration,
    peers: &mut [Option<Peer>],
) -> Result<(), CommError> {
    let expected = world - 1 - rank;
    let deadline = Instant::now() + timeout;
    listener
        .set_nonblocking(true)
        .map_err(|e| CommError::Setup(format!("rank {rank} could not poll its socket: {e}")))?;
    let mut accepted = 0;
    while accepted < expected {
        match listener.accept() {
            Ok((mut stream, _)) => {
                let hello = stream
                    .set_nonblocking(false)
                    .and_then(|_| stream.set_read_timeout(Some(timeout)))
                    .and_then(|_| {
                        let mut b = [0u8; 4];
                        stream
                            .read_exact(&mut b)
                            .map(|_| u32::from_le_bytes(b) as usize)
                    });
                match hello {
                    Ok(peer) if peer > rank && peer < world && peers[peer].is_none() => {
                        peers[peer] = Some(Peer::new(stream, collective_timeout).map_err(|e| {
                            CommError::Setup(format!(
                                "rank {rank} could not configure a socket: {e}"
                            ))
                        })?);
                        accepted += 1;
                    }
                    _ => continue,
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    return Err(CommError::Setup(format!(
                        "rank {rank} heard from only {accepted} of the {expected} higher ranks within {} s",
                        secs_text(timeout)
                    )));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => {
                return Err(CommError::Setup(format!(
                    "rank {rank} could not accept a connection: {e}"
                )))
            }
        }
    }
    Ok(())
}
