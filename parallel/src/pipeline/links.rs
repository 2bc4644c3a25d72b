//! How the executor's messages travel: the two point-to-point modes of a pipeline step.
//!
//! - `HostLinks` (MPI, TCP; f32 host vectors): sends never wait (`isend_owned`, the vector
//!   moved), receives are posted ahead of the action that waits for them (`recv_ahead`, in list
//!   order, so each tagged channel keeps the simulator's FIFO), sends are waited for at the end
//!   of the step. Any schedule runs.
//! - `GroupedLinks` (NCCL's semantics: rendezvous, no tags, grouped calls): every run of
//!   consecutive communication actions is handed to a `GroupExchange` as one group when the
//!   next compute action (or the end of the list) needs it; the group's receives come back in
//!   order. Safe for the lists `grouped::check_grouped` accepts (the executor checks first).
//!   Device buffers never leave the GPU; on the host (`HostExchange`, the same calls over a
//!   `Comm`) it is the CPU test of this mode.
//!
//! Bytes are message bytes: f32 host vectors count 4 per element; a `GroupExchange` says its own
//! (bf16 activations on a GPU: 2).

use std::collections::VecDeque;

use crate::comm::error::CommError;
use crate::comm::p2p::{OwnedBuf, RecvRequest, SendRequest};
use crate::comm::Comm;
use crate::Dtype;

use super::action::{Action, Direction, Message};
use super::executor::ComputeError;

/// A failure of the transport, for the executor to name with rank and action.
pub type LinkError = Box<dyn std::error::Error + Send + Sync>;

/// A message that arrived: the receive action it answers, its buffer and its bytes.
pub type Arrival<B> = (Action, B, u64);

/// The executor's transport (see the module comment).
pub trait Links {
    type Buf;
    /// Whether runs of communication actions travel as groups (the lists must pass
    /// `check_grouped`).
    const GROUPED: bool;
    /// Elements of a buffer (checked against `StageCompute::boundary_len`).
    fn len(buf: &Self::Buf) -> usize;
    /// Before action `i` of `actions` runs; `boundary_len(mb, boundary)` sizes receives.
    fn before(
        &mut self,
        i: usize,
        actions: &[Action],
        boundary_len: &dyn Fn(usize, usize) -> usize,
    ) -> Result<(), (Action, LinkError)>;
    /// A send action; returns the message bytes.
    fn send(
        &mut self,
        action: &Action,
        msg: Message,
        peer: usize,
        data: Self::Buf,
    ) -> Result<u64, LinkError>;
    /// A receive action (index `i`) of `len` elements: the buffer now, or None when it comes
    /// with the next `flush`. Returns the message bytes with it.
    fn recv(
        &mut self,
        i: usize,
        action: &Action,
        msg: Message,
        peer: usize,
        len: usize,
    ) -> Result<Option<(Self::Buf, u64)>, LinkError>;
    /// Before a compute action and at the end of the list: completes what is pending and hands
    /// over what arrived.
    fn flush(&mut self) -> Result<Vec<Arrival<Self::Buf>>, LinkError>;
    /// The end of the step: waits for sends; the number of receives never completed.
    fn finish(&mut self) -> Result<usize, LinkError>;
}

fn boxed(e: CommError) -> LinkError {
    Box::new(e)
}

/// Non-blocking, tagged point-to-point over a host `Comm` (see the module comment).
pub struct HostLinks<'a> {
    pp: &'a dyn Comm,
    recv_ahead: usize,
    /// Posted receives, in list order: (action index, request).
    posted: VecDeque<(usize, RecvRequest<'a>)>,
    /// Index into the list of the next receive action to post.
    scan: usize,
    sends: Vec<SendRequest<'a>>,
}

impl<'a> HostLinks<'a> {
    pub fn new(pp: &'a dyn Comm, recv_ahead: usize) -> Self {
        HostLinks {
            pp,
            recv_ahead,
            posted: VecDeque::new(),
            scan: 0,
            sends: Vec::new(),
        }
    }

    /// Lets finished sends go (and the transport progress).
    fn reap_sends(&mut self) -> Result<(), CommError> {
        let mut i = 0;
        while i < self.sends.len() {
            if self.sends[i].test()? {
                drop(self.sends.swap_remove(i));
            } else {
                i += 1;
            }
        }
        Ok(())
    }
}

impl Links for HostLinks<'_> {
    type Buf = Vec<f32>;
    const GROUPED: bool = false;

    fn len(buf: &Vec<f32>) -> usize {
        buf.len()
    }

    /// Posts every receive up to action `i`, and more until `recv_ahead` are posted.
    fn before(
        &mut self,
        i: usize,
        actions: &[Action],
        boundary_len: &dyn Fn(usize, usize) -> usize,
    ) -> Result<(), (Action, LinkError)> {
        while let Some(action) = actions.get(self.scan) {
            let j = self.scan;
            let Some((msg, Direction::Recv, peer)) = action.message() else {
                self.scan += 1;
                continue;
            };
            if j > i && self.posted.len() >= self.recv_ahead {
                break;
            }
            let len = boundary_len(msg.mb, msg.boundary);
            let request = self
                .pp
                .irecv(Dtype::F32, len, peer, msg.tag())
                .map_err(|e| (*action, boxed(e)))?;
            self.posted.push_back((j, request));
            self.scan += 1;
        }
        Ok(())
    }

    fn send(
        &mut self,
        _action: &Action,
        msg: Message,
        peer: usize,
        data: Vec<f32>,
    ) -> Result<u64, LinkError> {
        let bytes = 4 * data.len() as u64;
        let request = self
            .pp
            .isend_owned(OwnedBuf::F32(data), peer, msg.tag())
            .map_err(boxed)?;
        self.sends.push(request);
        Ok(bytes)
    }

    fn recv(
        &mut self,
        i: usize,
        _action: &Action,
        _msg: Message,
        _peer: usize,
        _len: usize,
    ) -> Result<Option<(Vec<f32>, u64)>, LinkError> {
        let Some((j, request)) = self.posted.pop_front() else {
            return Err("no receive was posted".into());
        };
        if j != i {
            return Err(format!("the oldest posted receive is action {j}").into());
        }
        let bytes = request.bytes();
        let data = request.wait().map_err(boxed)?;
        let data = data.into_f32().ok_or("the message is not f32")?;
        Ok(Some((data, bytes)))
    }

    fn flush(&mut self) -> Result<Vec<Arrival<Vec<f32>>>, LinkError> {
        self.reap_sends().map_err(boxed)?;
        Ok(Vec::new())
    }

    fn finish(&mut self) -> Result<usize, LinkError> {
        for request in self.sends.drain(..) {
            request.wait().map_err(boxed)?;
        }
        Ok(self.posted.len())
    }
}

/// One group of NCCL-like point-to-point calls (see the module comment).
pub trait GroupExchange {
    type Buf;
    fn len(buf: &Self::Buf) -> usize;
    /// Message bytes of `len` elements.
    fn bytes(&self, len: usize) -> u64;
    /// Sends every (buffer, peer) of `sends` and receives `len` elements from `peer` for every
    /// (len, peer) of `recvs`, as one group; returns the received buffers in `recvs`' order.
    /// Between two ranks, messages meet in the order they are posted (no tags).
    fn exchange(
        &mut self,
        sends: Vec<(Self::Buf, usize)>,
        recvs: &[(usize, usize)],
    ) -> Result<Vec<Self::Buf>, ComputeError>;
}

/// Runs of communication actions as groups of a `GroupExchange`.
pub struct GroupedLinks<X: GroupExchange> {
    exchange: X,
    sends: Vec<(X::Buf, usize)>,
    recvs: Vec<(Action, usize, usize)>,
}

impl<X: GroupExchange> GroupedLinks<X> {
    pub fn new(exchange: X) -> Self {
        GroupedLinks {
            exchange,
            sends: Vec::new(),
            recvs: Vec::new(),
        }
    }
}

impl<X: GroupExchange> Links for GroupedLinks<X> {
    type Buf = X::Buf;
    const GROUPED: bool = true;

    fn len(buf: &X::Buf) -> usize {
        X::len(buf)
    }

    fn before(
        &mut self,
        _: usize,
        _: &[Action],
        _: &dyn Fn(usize, usize) -> usize,
    ) -> Result<(), (Action, LinkError)> {
        Ok(())
    }

    fn send(
        &mut self,
        _action: &Action,
        _msg: Message,
        peer: usize,
        data: X::Buf,
    ) -> Result<u64, LinkError> {
        let bytes = self.exchange.bytes(X::len(&data));
        self.sends.push((data, peer));
        Ok(bytes)
    }

    fn recv(
        &mut self,
        _i: usize,
        action: &Action,
        _msg: Message,
        peer: usize,
        len: usize,
    ) -> Result<Option<(X::Buf, u64)>, LinkError> {
        self.recvs.push((*action, len, peer));
        Ok(None)
    }

    fn flush(&mut self) -> Result<Vec<Arrival<X::Buf>>, LinkError> {
        if self.sends.is_empty() && self.recvs.is_empty() {
            return Ok(Vec::new());
        }
        let sends = std::mem::take(&mut self.sends);
        let recvs = std::mem::take(&mut self.recvs);
        let wanted: Vec<(usize, usize)> = recvs.iter().map(|&(_, len, peer)| (len, peer)).collect();
        let got = self.exchange.exchange(sends, &wanted)?;
        if got.len() != recvs.len() {
            return Err(format!(
                "the exchange returned {} buffers for {} receives",
                got.len(),
                recvs.len()
            )
            .into());
        }
        Ok(recvs
            .into_iter()
            .zip(got)
            .map(|((action, len, _), buf)| (action, buf, self.exchange.bytes(len)))
            .collect())
    }

    fn finish(&mut self) -> Result<usize, LinkError> {
        Ok(self.recvs.len())
    }
}

/// `GroupExchange` over a host `Comm`: a group's receives and sends are posted together and the
/// group ends when all of them have completed. Every message goes on one tag, so matching
/// between two ranks is by order alone, as with NCCL. (MPI completes small sends before their
/// receiver posts, so this is more lenient than NCCL's rendezvous; `check_grouped` is what
/// proves a list safe for that.)
pub struct HostExchange<'a> {
    pub pp: &'a dyn Comm,
}

/// The single tag of `HostExchange` (a step uses one mode, so it never meets tagged messages).
const UNTAGGED: u32 = 32767;

impl GroupExchange for HostExchange<'_> {
    type Buf = Vec<f32>;

    fn len(buf: &Vec<f32>) -> usize {
        buf.len()
    }

    fn bytes(&self, len: usize) -> u64 {
        4 * len as u64
    }

    fn exchange(
        &mut self,
        sends: Vec<(Vec<f32>, usize)>,
        recvs: &[(usize, usize)],
    ) -> Result<Vec<Vec<f32>>, ComputeError> {
        let posted = recvs
            .iter()
            .map(|&(len, peer)| self.pp.irecv(Dtype::F32, len, peer, UNTAGGED))
            .collect::<Result<Vec<_>, _>>()?;
        let sent = sends
            .into_iter()
            .map(|(data, peer)| self.pp.isend_owned(OwnedBuf::F32(data), peer, UNTAGGED))
            .collect::<Result<Vec<_>, _>>()?;
        let mut got = Vec::with_capacity(posted.len());
        for request in posted {
            got.push(request.wait()?.into_f32().ok_or("a message is not f32")?);
        }
        for request in sent {
            request.wait()?;
        }
        Ok(got)
    }
}
