//! The receive side of one peer connection of the TCP backend.
//!
//! Contract: a reader thread (transport.rs) moves every frame off the socket as it arrives and
//! `deliver`s it here, so a peer's sends never wait for this rank to call a receive. Frames are
//! kept per channel (comm id, tag) and numbered in arrival order; every receive takes a ticket
//! when it is posted (`post`), and ticket k gets frame k of its channel, so receives match
//! messages in the order they were posted, whatever order they are waited in. `take` waits for
//! the ticket's frame up to a timeout; when the connection has ended (`close`) and the frame is
//! not here, it fails at once. `cancel` gives a ticket up (its frame, now or later, is dropped).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A posted receive: the channel and its place in the channel's order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ticket {
    comm: u64,
    tag: u64,
    seq: u64,
}

/// Why a `take` did not return the frame.
#[derive(Debug)]
pub(crate) enum TakeError {
    TimedOut,
    /// The connection ended (the reader's error) before the frame came.
    Closed(io::Error),
}

#[derive(Default)]
struct Channel {
    /// Frames that arrived so far (the next one gets this number).
    arrived: u64,
    /// Tickets handed out so far.
    posted: u64,
    /// Arrived, not yet taken.
    frames: BTreeMap<u64, Vec<u8>>,
    /// Given-up tickets whose frame has not arrived yet.
    cancelled: BTreeSet<u64>,
}

impl Channel {
    fn is_idle(&self) -> bool {
        self.frames.is_empty() && self.cancelled.is_empty() && self.arrived == self.posted
    }
}

#[derive(Default)]
struct State {
    channels: HashMap<(u64, u64), Channel>,
    closed: Option<(io::ErrorKind, String)>,
}

#[derive(Default)]
pub(crate) struct Mailbox {
    state: Mutex<State>,
    changed: Condvar,
}

impl Mailbox {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reader thread: a frame arrived.
    pub(crate) fn deliver(&self, comm: u64, tag: u64, payload: Vec<u8>) {
        let mut state = self.lock();
        let channel = state.channels.entry((comm, tag)).or_default();
        let seq = channel.arrived;
        channel.arrived += 1;
        if !channel.cancelled.remove(&seq) {
            channel.frames.insert(seq, payload);
        }
        if channel.is_idle() {
            state.channels.remove(&(comm, tag));
        }
        drop(state);
        self.changed.notify_all();
    }

    /// Reader thread: the connection ended with `error` (EOF included).
    pub(crate) fn close(&self, error: io::Error) {
        self.lock().closed = Some((error.kind(), error.to_string()));
        self.changed.notify_all();
    }

    /// Posts a receive on (comm, tag).
    pub(crate) fn post(&self, comm: u64, tag: u64) -> Ticket {
        let mut state = self.lock();
        let channel = state.channels.entry((comm, tag)).or_default();
        let seq = channel.posted;
        channel.posted += 1;
        Ticket { comm, tag, seq }
    }

    fn try_take_locked(state: &mut State, ticket: Ticket) -> Option<Vec<u8>> {
        let key = (ticket.comm, ticket.tag);
        let channel = state.channels.get_mut(&key)?;
        let frame = channel.frames.remove(&ticket.seq)?;
        if channel.is_idle() {
            state.channels.remove(&key);
        }
        Some(frame)
    }

    /// The ticket's frame if it has arrived; an error if it cannot arrive any more.
    pub(crate) fn try_take(&self, ticket: Ticket) -> Result<Option<Vec<u8>>, TakeError> {
        let mut state = self.lock();
        match Self::try_take_locked(&mut state, ticket) {
            Some(frame) => Ok(Some(frame)),
            None => match &state.closed {
                Some((kind, text)) => Err(TakeError::Closed(io::Error::new(*kind, text.clone()))),
                None => Ok(None),
            },
        }
    }

    /// Waits up to `timeout` for the ticket's frame.
    pub(crate) fn take(&self, ticket: Ticket, timeout: Duration) -> Result<Vec<u8>, TakeError> {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        loop {
            if let Some(frame) = Self::try_take_locked(&mut state, ticket) {
                return Ok(frame);
            }
            if let Some((kind, text)) = &state.closed {
                return Err(TakeError::Closed(io::Error::new(*kind, text.clone())));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(TakeError::TimedOut);
            }
            state = self
                .changed
                .wait_timeout(state, deadline - now)
                .map(|(s, _)| s)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    /// Gives the ticket up: its frame is dropped whether it is here or comes later.
    pub(crate) fn cancel(&self, ticket: Ticket) {
        let mut state = self.lock();
        if Self::try_take_locked(&mut state, ticket).is_some() {
            return;
        }
        let key = (ticket.comm, ticket.tag);
        if let Some(channel) = state.channels.get_mut(&key) {
            if ticket.seq >= channel.arrived {
                channel.cancelled.insert(ticket.seq);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_get_frames_in_posting_order_whatever_the_waiting_order() {
        let mb = Mailbox::default();
        let first = mb.post(1, 7);
        let second = mb.post(1, 7);
        let other_tag = mb.post(1, 8);
        mb.deliver(1, 8, vec![80]);
        mb.deliver(1, 7, vec![70]);
        mb.deliver(1, 7, vec![71]);
        let short = Duration::from_millis(10);
        assert_eq!(mb.take(second, short).unwrap(), vec![71]);
        assert_eq!(mb.take(first, short).unwrap(), vec![70]);
        assert_eq!(mb.try_take(other_tag).unwrap(), Some(vec![80]));
        assert!(mb.lock().channels.is_empty());
    }

    #[test]
    fn a_cancelled_ticket_drops_its_frame_and_later_tickets_are_unaffected() {
        let mb = Mailbox::default();
        let gone = mb.post(2, 0);
        let kept = mb.post(2, 0);
        mb.cancel(gone);
        mb.deliver(2, 0, vec![1]);
        mb.deliver(2, 0, vec![2]);
        assert_eq!(mb.take(kept, Duration::ZERO).unwrap(), vec![2]);
        assert!(mb.lock().channels.is_empty());
    }

    #[test]
    fn waiting_times_out_and_a_closed_connection_fails_at_once() {
        let mb = Mailbox::default();
        let t = mb.post(1, 1);
        let start = Instant::now();
        assert!(matches!(
            mb.take(t, Duration::from_millis(50)),
            Err(TakeError::TimedOut)
        ));
        assert!(start.elapsed() >= Duration::from_millis(50));
        mb.deliver(1, 1, vec![9]);
        mb.close(io::Error::from(io::ErrorKind::UnexpectedEof));
        assert_eq!(mb.take(t, Duration::from_secs(5)).unwrap(), vec![9]);
        let t2 = mb.post(1, 1);
        assert!(matches!(
            mb.take(t2, Duration::from_secs(5)),
            Err(TakeError::Closed(e)) if e.kind() == io::ErrorKind::UnexpectedEof
        ));
    }
}
