//! Point-to-point transport of the TCP backend: one TCP connection per pair of world ranks.
//!
//! Frame = header (comm id u64, tag u64, payload length u64, little-endian) + payload.
//! A receive names (peer, comm id, tag); frames from that peer that do not match are stashed
//! and handed to a later receive, so groups and tags never steal each other's messages, and
//! frames with the same (comm, tag) from one peer arrive in order. Reads and writes time out
//! after the collective timeout; a timeout or a closed connection becomes a `CommError`
//! naming the operation, the group and the peer.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Mutex;
use std::time::Duration;

use crate::comm::error::CommError;
use crate::store::StoreClient;
use crate::watchdog::secs_text;

struct Frame {
    comm: u64,
    tag: u64,
    payload: Vec<u8>,
}

struct Inbox {
    stream: TcpStream,
    stash: Vec<Frame>,
}

pub(crate) struct Peer {
    inbox: Mutex<Inbox>,
    outbox: Mutex<TcpStream>,
}

impl Peer {
    pub(crate) fn new(stream: TcpStream, timeout: Duration) -> io::Result<Peer> {
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(Peer {
            outbox: Mutex::new(stream.try_clone()?),
            inbox: Mutex::new(Inbox {
                stream,
                stash: Vec::new(),
            }),
        })
    }
}

/// What an operation is, for error messages.
pub(crate) struct OpContext<'a> {
    pub op: &'static str,
    pub group: &'a str,
    pub group_rank: usize,
}

/// All connections of this process, shared by the world and every group split from it.
pub(crate) struct Transport {
    pub timeout: Duration,
    pub peers: Vec<Option<Peer>>,
    /// Keeps the rendezvous store (and on rank 0 its server) alive for the job.
    pub _store: StoreClient,
    pub _server: Option<crate::store::StoreServer>,
}

impl Transport {
    fn peer(&self, world_peer: usize, ctx: &OpContext<'_>) -> Result<&Peer, CommError> {
        self.peers
            .get(world_peer)
            .and_then(Option::as_ref)
            .ok_or_else(|| CommError::Transport {
                op: ctx.op,
                group: ctx.group.to_string(),
                rank: ctx.group_rank,
                reason: format!("no connection to world rank {world_peer}"),
            })
    }

    fn fail(&self, e: io::Error, world_peer: usize, ctx: &OpContext<'_>) -> CommError {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => CommError::Timeout {
                op: ctx.op,
                group: ctx.group.to_string(),
                secs: secs_text(self.timeout),
                rank: ctx.group_rank,
                detail: format!(" waiting for world rank {world_peer}"),
            },
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => CommError::Transport {
                op: ctx.op,
                group: ctx.group.to_string(),
                rank: ctx.group_rank,
                reason: format!(
                    "world rank {world_peer} closed its connection (it has probably exited)"
                ),
            },
            _ => CommError::Transport {
                op: ctx.op,
                group: ctx.group.to_string(),
                rank: ctx.group_rank,
                reason: format!("connection to world rank {world_peer}: {e}"),
            },
        }
    }

    pub(crate) fn send(
        &self,
        world_peer: usize,
        comm: u64,
        tag: u64,
        payload: &[u8],
        ctx: &OpContext<'_>,
    ) -> Result<(), CommError> {
        let peer = self.peer(world_peer, ctx)?;
        let mut stream = peer.outbox.lock().unwrap_or_else(|p| p.into_inner());
        let mut header = [0u8; 24];
        header[..8].copy_from_slice(&comm.to_le_bytes());
        header[8..16].copy_from_slice(&tag.to_le_bytes());
        header[16..].copy_from_slice(&(payload.len() as u64).to_le_bytes());
        stream
            .write_all(&header)
            .and_then(|_| stream.write_all(payload))
            .map_err(|e| self.fail(e, world_peer, ctx))
    }

    /// Receives the next (comm, tag) frame from `world_peer` into `out` (exact length).
    pub(crate) fn recv(
        &self,
        world_peer: usize,
        comm: u64,
        tag: u64,
        out: &mut [u8],
        ctx: &OpContext<'_>,
    ) -> Result<(), CommError> {
        let peer = self.peer(world_peer, ctx)?;
        let mut inbox = peer.inbox.lock().unwrap_or_else(|p| p.into_inner());
        let payload = if let Some(i) = inbox
            .stash
            .iter()
            .position(|f| f.comm == comm && f.tag == tag)
        {
            inbox.stash.remove(i).payload
        } else {
            loop {
                let frame =
                    read_frame(&mut inbox.stream).map_err(|e| self.fail(e, world_peer, ctx))?;
                if frame.comm == comm && frame.tag == tag {
                    break frame.payload;
                }
                inbox.stash.push(frame);
            }
        };
        if payload.len() != out.len() {
            return Err(CommError::invalid(
                ctx.op,
                ctx.group,
                format!(
                    "expected {} bytes from world rank {world_peer} but the message has {}",
                    out.len(),
                    payload.len()
                ),
            ));
        }
        out.copy_from_slice(&payload);
        Ok(())
    }
}

fn read_frame(stream: &mut TcpStream) -> io::Result<Frame> {
    let mut header = [0u8; 24];
    stream.read_exact(&mut header)?;
    let word = |i: usize| u64::from_le_bytes(header[i..i + 8].try_into().unwrap_or([0; 8]));
    let mut payload = vec![0u8; word(16) as usize];
    stream.read_exact(&mut payload)?;
    Ok(Frame {
        comm: word(0),
        tag: word(8),
        payload,
    })
}
