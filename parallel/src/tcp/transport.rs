//! Point-to-point transport of the TCP backend: one TCP connection per pair of world ranks.
//!
//! Frame = header (comm id u64, tag u64, payload length u64, little-endian) + payload.
//! Each connection has two threads, so neither direction ever waits for the program:
//! - a writer thread sends queued frames in queue order; `enqueue` returns at once with a
//!   `Completion` that the blocking `send` (and a non-blocking send's wait) waits on. A write
//!   that fails (or stalls past the collective timeout) fails its frame and every later one.
//! - a reader thread moves every arriving frame into the peer's `Mailbox` (mailbox.rs), where
//!   a receive names (peer, comm id, tag); groups and tags never steal each other's messages and
//!   frames with the same (comm, tag) from one peer are received in the order receives were
//!   posted.
//!
//! Waits time out after the collective timeout; a timeout or a closed connection becomes a
//! `CommError` naming the operation, the group and the peer. Dropping the transport closes the
//! queues, lets the writers finish what was queued, then shuts the sockets down.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::comm::error::CommError;
use crate::comm::p2p::OwnedBuf;
use crate::store::StoreClient;
use crate::watchdog::secs_text;

use super::mailbox::{Mailbox, TakeError, Ticket};

/// What a frame carries: bytes of a blocking send, or a non-blocking send's owned buffer.
pub(crate) enum Payload {
    Bytes(Vec<u8>),
    Owned(OwnedBuf),
}

impl Payload {
    fn bytes(&self) -> &[u8] {
        match self {
            Payload::Bytes(b) => b,
            Payload::Owned(o) => o.as_buf().as_bytes(),
        }
    }
}

/// The outcome of one queued frame, once the writer thread has handled it.
#[derive(Default)]
pub(crate) struct Completion {
    outcome: Mutex<Option<Result<(), (io::ErrorKind, String)>>>,
    done: Condvar,
}

impl Completion {
    fn finish(&self, outcome: Result<(), (io::ErrorKind, String)>) {
        *self.outcome.lock().unwrap_or_else(|p| p.into_inner()) = Some(outcome);
        self.done.notify_all();
    }

    /// None while queued or being written.
    pub(crate) fn outcome(&self) -> Option<io::Result<()>> {
        let outcome = self.outcome.lock().unwrap_or_else(|p| p.into_inner());
        outcome
            .as_ref()
            .map(|r| r.clone().map_err(|(k, t)| io::Error::new(k, t)))
    }

    /// Waits up to `timeout` for the outcome.
    fn wait(&self, timeout: Duration) -> io::Result<()> {
        let deadline = Instant::now() + timeout;
        let mut outcome = self.outcome.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(r) = outcome.as_ref() {
                return r.clone().map_err(|(k, t)| io::Error::new(k, t));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(io::Error::from(io::ErrorKind::TimedOut));
            }
            outcome = self
                .done
                .wait_timeout(outcome, deadline - now)
                .map(|(s, _)| s)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }
}

struct Outgoing {
    header: [u8; 24],
    payload: Payload,
    completion: Arc<Completion>,
}

pub(crate) struct Peer {
    mailbox: Arc<Mailbox>,
    outbox: Option<Sender<Outgoing>>,
    stream: TcpStream,
    writer: Option<JoinHandle<()>>,
    reader: Option<JoinHandle<()>>,
}

impl Peer {
    pub(crate) fn new(stream: TcpStream, timeout: Duration) -> io::Result<Peer> {
        stream.set_nodelay(true)?;
        stream.set_read_timeout(None)?;
        stream.set_write_timeout(Some(timeout))?;
        let mailbox = Arc::new(Mailbox::default());
        let (outbox, queue) = channel::<Outgoing>();
        let mut write_half = stream.try_clone()?;
        let writer = std::thread::Builder::new()
            .name("ferrotron-tcp-write".into())
            .spawn(move || {
                let mut failed: Option<(io::ErrorKind, String)> = None;
                for out in queue {
                    if failed.is_none() {
                        let written = write_half
                            .write_all(&out.header)
                            .and_then(|_| write_half.write_all(out.payload.bytes()));
                        failed = written.err().map(|e| (e.kind(), e.to_string()));
                    }
                    out.completion.finish(failed.clone().map_or(Ok(()), Err));
                }
            })?;
        let mut read_half = stream.try_clone()?;
        let inbox = Arc::clone(&mailbox);
        let reader = std::thread::Builder::new()
            .name("ferrotron-tcp-read".into())
            .spawn(move || loop {
                match read_frame(&mut read_half) {
                    Ok((comm, tag, payload)) => inbox.deliver(comm, tag, payload),
                    Err(e) => return inbox.close(e),
                }
            })?;
        Ok(Peer {
            mailbox,
            outbox: Some(outbox),
            stream,
            writer: Some(writer),
            reader: Some(reader),
        })
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        drop(self.outbox.take()); // the writer ends once the queue is drained
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
        let _ = self.stream.shutdown(Shutdown::Both); // ends the reader's blocking read
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
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

    pub(crate) fn fail(&self, e: io::Error, world_peer: usize, ctx: &OpContext<'_>) -> CommError {
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

    /// Queues a frame for `world_peer` and returns at once.
    pub(crate) fn enqueue(
        &self,
        world_peer: usize,
        comm: u64,
        tag: u64,
        payload: Payload,
        ctx: &OpContext<'_>,
    ) -> Result<Arc<Completion>, CommError> {
        let peer = self.peer(world_peer, ctx)?;
        let mut header = [0u8; 24];
        header[..8].copy_from_slice(&comm.to_le_bytes());
        header[8..16].copy_from_slice(&tag.to_le_bytes());
        header[16..].copy_from_slice(&(payload.bytes().len() as u64).to_le_bytes());
        let completion = Arc::new(Completion::default());
        let out = Outgoing {
            header,
            payload,
            completion: Arc::clone(&completion),
        };
        let queued = peer.outbox.as_ref().map(|q| q.send(out).is_ok());
        if queued != Some(true) {
            let closed = io::Error::from(io::ErrorKind::BrokenPipe);
            return Err(self.fail(closed, world_peer, ctx));
        }
        Ok(completion)
    }

    /// Waits (up to the collective timeout) until a queued frame has been written.
    pub(crate) fn wait_sent(
        &self,
        completion: &Completion,
        world_peer: usize,
        ctx: &OpContext<'_>,
    ) -> Result<(), CommError> {
        completion
            .wait(self.timeout)
            .map_err(|e| self.fail(e, world_peer, ctx))
    }

    /// Sends one frame and waits until it has been written.
    pub(crate) fn send(
        &self,
        world_peer: usize,
        comm: u64,
        tag: u64,
        payload: &[u8],
        ctx: &OpContext<'_>,
    ) -> Result<(), CommError> {
        let bytes = Payload::Bytes(payload.to_vec());
        let completion = self.enqueue(world_peer, comm, tag, bytes, ctx)?;
        self.wait_sent(&completion, world_peer, ctx)
    }

    /// The mailbox of `world_peer` and a ticket for its next (comm, tag) frame.
    pub(crate) fn post(
        &self,
        world_peer: usize,
        comm: u64,
        tag: u64,
        ctx: &OpContext<'_>,
    ) -> Result<(&Mailbox, Ticket), CommError> {
        let mailbox = &self.peer(world_peer, ctx)?.mailbox;
        Ok((mailbox, mailbox.post(comm, tag)))
    }

    /// Turns a mailbox failure into the error of `ctx`.
    pub(crate) fn take_failed(
        &self,
        e: TakeError,
        world_peer: usize,
        ctx: &OpContext<'_>,
    ) -> CommError {
        match e {
            TakeError::TimedOut => self.fail(io::ErrorKind::TimedOut.into(), world_peer, ctx),
            TakeError::Closed(e) => self.fail(e, world_peer, ctx),
        }
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
        let (mailbox, ticket) = self.post(world_peer, comm, tag, ctx)?;
        let payload = mailbox
            .take(ticket, self.timeout)
            .map_err(|e| self.take_failed(e, world_peer, ctx))?;
        check_length(payload.len(), out.len(), world_peer, ctx)?;
        out.copy_from_slice(&payload);
        Ok(())
    }
}

/// A received frame must have exactly the bytes the receive expects.
pub(crate) fn check_length(
    got: usize,
    expected: usize,
    world_peer: usize,
    ctx: &OpContext<'_>,
) -> Result<(), CommError> {
    if got != expected {
        return Err(CommError::invalid(
            ctx.op,
            ctx.group,
            format!(
                "expected {expected} bytes from world rank {world_peer} but the message has {got}"
            ),
        ));
    }
    Ok(())
}

fn read_frame(stream: &mut TcpStream) -> io::Result<(u64, u64, Vec<u8>)> {
    let mut header = [0u8; 24];
    stream.read_exact(&mut header)?;
    let word = |i: usize| u64::from_le_bytes(header[i..i + 8].try_into().unwrap_or([0; 8]));
    let mut payload = vec![0u8; word(16) as usize];
    stream.read_exact(&mut payload)?;
    Ok((word(0), word(8), payload))
}
