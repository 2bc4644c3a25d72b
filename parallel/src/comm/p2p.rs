//! Non-blocking point-to-point: the request handles of `Comm::isend` / `Comm::irecv`.
//!
//! Contract:
//! - `isend` (a copy of the caller's buffer) and `isend_owned` (the caller's vector, moved)
//!   return at once and never wait for the receiver: the message travels while the caller
//!   computes, so neighbours that both send before they receive (1F1B's steady state) cannot
//!   deadlock. `irecv(dtype, len, src, tag)` posts a receive of exactly `len` elements.
//! - One (group, sender, tag) delivers in order: the k-th receive a rank posts for it gets the
//!   sender's k-th message on it (MPI's non-overtaking rule), whether sent or received with the
//!   blocking or the non-blocking calls.
//! - `wait` blocks until the request completes, bounded like a collective: the TCP backend
//!   returns `CommError::Timeout` after the group's collective timeout, the MPI backend's
//!   watchdog ends the process. `test` completes it if it can, without blocking.
//! - The bytes are counted when a request completes (a `wait`, or a `test` returning true) on
//!   the group's `send` / `recv` counters, like the blocking calls: message bytes sent resp.
//!   received.
//! - Dropping an unfinished request is for error paths: a send still goes out (the backend owns
//!   its data), a receive is cancelled and a message already matched to it is discarded.
//! - Groups of one have no peer: the provided methods reject every destination, as `send` does.

use super::buffer::{Buf, BufMut, Dtype};
use super::counters::{CommCounters, OpKind};
use super::error::CommError;

/// A host buffer owned by a request (what travels, or what arrived).
#[derive(Clone, Debug, PartialEq)]
pub enum OwnedBuf {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I32(Vec<i32>),
}

impl OwnedBuf {
    /// `len` zeros of `dtype` (a receive buffer).
    pub fn zeros(dtype: Dtype, len: usize) -> OwnedBuf {
        match dtype {
            Dtype::F32 => OwnedBuf::F32(vec![0.0; len]),
            Dtype::F64 => OwnedBuf::F64(vec![0.0; len]),
            Dtype::I32 => OwnedBuf::I32(vec![0; len]),
        }
    }

    pub fn copy_of(buf: Buf<'_>) -> OwnedBuf {
        match buf {
            Buf::F32(s) => OwnedBuf::F32(s.to_vec()),
            Buf::F64(s) => OwnedBuf::F64(s.to_vec()),
            Buf::I32(s) => OwnedBuf::I32(s.to_vec()),
        }
    }

    pub fn as_buf(&self) -> Buf<'_> {
        match self {
            OwnedBuf::F32(v) => Buf::F32(v),
            OwnedBuf::F64(v) => Buf::F64(v),
            OwnedBuf::I32(v) => Buf::I32(v),
        }
    }

    pub fn as_buf_mut(&mut self) -> BufMut<'_> {
        match self {
            OwnedBuf::F32(v) => BufMut::F32(v),
            OwnedBuf::F64(v) => BufMut::F64(v),
            OwnedBuf::I32(v) => BufMut::I32(v),
        }
    }

    pub fn dtype(&self) -> Dtype {
        self.as_buf().dtype()
    }

    pub fn len(&self) -> usize {
        self.as_buf().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The f32 vector, or None for another element type.
    pub fn into_f32(self) -> Option<Vec<f32>> {
        match self {
            OwnedBuf::F32(v) => Some(v),
            _ => None,
        }
    }
}

impl From<Vec<f32>> for OwnedBuf {
    fn from(v: Vec<f32>) -> Self {
        OwnedBuf::F32(v)
    }
}

/// Backend side of a pending send (implemented by the MPI and TCP backends).
#[doc(hidden)]
pub trait PendingSend {
    /// True once the send has completed; never blocks.
    fn test(&mut self) -> Result<bool, CommError>;
    /// Blocks until the send completes (bounded by the group's timeout).
    fn wait(&mut self) -> Result<(), CommError>;
}

/// Backend side of a pending receive.
#[doc(hidden)]
pub trait PendingRecv {
    /// True once the message is here (kept until `wait`); never blocks.
    fn test(&mut self) -> Result<bool, CommError>;
    /// Blocks until the message is here (bounded by the group's timeout) and hands it over.
    fn wait(&mut self) -> Result<OwnedBuf, CommError>;
}

/// A posted `isend`.
#[must_use = "a send request should be waited for (or tested until done)"]
pub struct SendRequest<'c> {
    pending: Box<dyn PendingSend + 'c>,
    counters: &'c CommCounters,
    bytes: u64,
    done: bool,
}

impl<'c> SendRequest<'c> {
    pub(crate) fn new(
        pending: Box<dyn PendingSend + 'c>,
        counters: &'c CommCounters,
        bytes: u64,
    ) -> Self {
        SendRequest {
            pending,
            counters,
            bytes,
            done: false,
        }
    }

    /// Message bytes.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// True once the send has completed (its bytes are then counted); never blocks.
    pub fn test(&mut self) -> Result<bool, CommError> {
        if !self.done && self.pending.test()? {
            self.finish();
        }
        Ok(self.done)
    }

    /// Blocks until the send has completed.
    pub fn wait(mut self) -> Result<(), CommError> {
        if !self.done {
            self.pending.wait()?;
            self.finish();
        }
        Ok(())
    }

    fn finish(&mut self) {
        self.done = true;
        self.counters.record(OpKind::Send, self.bytes, 0);
    }
}

/// A posted `irecv`.
#[must_use = "a receive request should be waited for"]
pub struct RecvRequest<'c> {
    pending: Box<dyn PendingRecv + 'c>,
    group: &'c str,
    counters: &'c CommCounters,
    bytes: u64,
    counted: bool,
}

impl<'c> RecvRequest<'c> {
    pub(crate) fn new(
        pending: Box<dyn PendingRecv + 'c>,
        group: &'c str,
        counters: &'c CommCounters,
        bytes: u64,
    ) -> Self {
        RecvRequest {
            pending,
            group,
            counters,
            bytes,
            counted: false,
        }
    }

    /// Message bytes.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// True once the message has arrived (its bytes are then counted); never blocks.
    pub fn test(&mut self) -> Result<bool, CommError> {
        if !self.counted && self.pending.test()? {
            self.count();
        }
        Ok(self.counted)
    }

    /// Blocks until the message has arrived and returns it.
    pub fn wait(mut self) -> Result<OwnedBuf, CommError> {
        let data = self.pending.wait()?;
        if !self.counted {
            self.count();
        }
        Ok(data)
    }

    /// `wait`, then copies the message into `out` (same type and length as posted).
    pub fn wait_into(self, mut out: BufMut<'_>) -> Result<(), CommError> {
        let group = self.group;
        let data = self.wait()?;
        if data.dtype() != out.dtype() || data.len() != out.len() {
            return Err(CommError::invalid(
                "irecv",
                group,
                format!(
                    "the message holds {} {} but the buffer {} {}",
                    data.len(),
                    data.dtype().name(),
                    out.len(),
                    out.dtype().name()
                ),
            ));
        }
        out.copy_from(data.as_buf());
        Ok(())
    }

    fn count(&mut self) {
        self.counted = true;
        self.counters.record(OpKind::Recv, 0, self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Ready(Option<OwnedBuf>);
    impl PendingRecv for Ready {
        fn test(&mut self) -> Result<bool, CommError> {
            Ok(true)
        }
        fn wait(&mut self) -> Result<OwnedBuf, CommError> {
            Ok(self.0.take().unwrap())
        }
    }
    struct Sent;
    impl PendingSend for Sent {
        fn test(&mut self) -> Result<bool, CommError> {
            Ok(true)
        }
        fn wait(&mut self) -> Result<(), CommError> {
            Ok(())
        }
    }

    #[test]
    fn completed_requests_are_counted_once() {
        let counters = CommCounters::new();
        let mut send = SendRequest::new(Box::new(Sent), &counters, 12);
        assert!(send.test().unwrap());
        assert!(send.test().unwrap());
        send.wait().unwrap();
        let mut recv = RecvRequest::new(
            Box::new(Ready(Some(OwnedBuf::F32(vec![1.0, 2.0])))),
            "pp",
            &counters,
            8,
        );
        assert!(recv.test().unwrap());
        let mut out = [0.0f32; 2];
        recv.wait_into((&mut out[..]).into()).unwrap();
        assert_eq!(out, [1.0, 2.0]);
        let snap = counters.snapshot();
        assert_eq!(
            (
                snap.op(OpKind::Send).calls,
                snap.op(OpKind::Send).bytes_sent
            ),
            (1, 12)
        );
        assert_eq!(
            (
                snap.op(OpKind::Recv).calls,
                snap.op(OpKind::Recv).bytes_received
            ),
            (1, 8)
        );
    }

    #[test]
    fn a_message_of_another_shape_is_an_error() {
        let counters = CommCounters::new();
        let recv = RecvRequest::new(
            Box::new(Ready(Some(OwnedBuf::I32(vec![1])))),
            "pp",
            &counters,
            4,
        );
        let mut out = [0.0f32; 1];
        let err = recv.wait_into((&mut out[..]).into()).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("irecv on group pp: the message holds 1 i32"),
            "{err}"
        );
    }
}
