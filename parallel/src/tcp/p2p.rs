//! Non-blocking point-to-point of `TcpComm` (user contract: comm/p2p.rs).
//!
//! A send queues its owned buffer on the connection's writer thread and completes when the
//! frame has been written; dropping it unfinished still sends it. A receive takes a mailbox
//! ticket when posted (so posted receives match in order) and completes when its frame has been
//! read off the socket by the reader thread; dropping it unfinished cancels the ticket. Waits
//! are bounded by the collective timeout.

use std::sync::Arc;

use crate::comm::buffer::Dtype;
use crate::comm::error::CommError;
use crate::comm::p2p::{OwnedBuf, PendingRecv, PendingSend};

use super::mailbox::{Mailbox, Ticket};
use super::transport::{check_length, Completion, OpContext, Transport};

/// Who is communicating with whom, for waits and errors.
pub(crate) struct Link<'c> {
    pub transport: &'c Transport,
    pub world_peer: usize,
    pub group: &'c str,
    pub group_rank: usize,
}

impl Link<'_> {
    fn ctx(&self, op: &'static str) -> OpContext<'_> {
        OpContext {
            op,
            group: self.group,
            group_rank: self.group_rank,
        }
    }
}

pub(crate) struct TcpSend<'c> {
    pub link: Link<'c>,
    pub completion: Arc<Completion>,
}

impl PendingSend for TcpSend<'_> {
    fn test(&mut self) -> Result<bool, CommError> {
        match self.completion.outcome() {
            None => Ok(false),
            Some(Ok(())) => Ok(true),
            Some(Err(e)) => {
                let l = &self.link;
                Err(l.transport.fail(e, l.world_peer, &l.ctx("isend")))
            }
        }
    }

    fn wait(&mut self) -> Result<(), CommError> {
        let l = &self.link;
        l.transport
            .wait_sent(&self.completion, l.world_peer, &l.ctx("isend"))
    }
}

pub(crate) struct TcpRecv<'c> {
    link: Link<'c>,
    mailbox: &'c Mailbox,
    ticket: Option<Ticket>,
    dtype: Dtype,
    len: usize,
    data: Option<OwnedBuf>,
}

impl<'c> TcpRecv<'c> {
    pub(crate) fn post(
        link: Link<'c>,
        comm: u64,
        tag: u64,
        dtype: Dtype,
        len: usize,
    ) -> Result<Self, CommError> {
        let (mailbox, ticket) =
            link.transport
                .post(link.world_peer, comm, tag, &link.ctx("irecv"))?;
        Ok(TcpRecv {
            link,
            mailbox,
            ticket: Some(ticket),
            dtype,
            len,
            data: None,
        })
    }

    fn accept(&mut self, bytes: Vec<u8>) -> Result<(), CommError> {
        self.ticket = None;
        let mut data = OwnedBuf::zeros(self.dtype, self.len);
        let mut view = data.as_buf_mut();
        let out = view.as_bytes_mut();
        let l = &self.link;
        check_length(bytes.len(), out.len(), l.world_peer, &l.ctx("irecv"))?;
        out.copy_from_slice(&bytes);
        self.data = Some(data);
        Ok(())
    }
}

impl PendingRecv for TcpRecv<'_> {
    fn test(&mut self) -> Result<bool, CommError> {
        if let Some(ticket) = self.ticket {
            let l = &self.link;
            let got = self
                .mailbox
                .try_take(ticket)
                .map_err(|e| l.transport.take_failed(e, l.world_peer, &l.ctx("irecv")))?;
            if let Some(bytes) = got {
                self.accept(bytes)?;
            }
        }
        Ok(self.data.is_some())
    }

    fn wait(&mut self) -> Result<OwnedBuf, CommError> {
        if let Some(ticket) = self.ticket {
            let l = &self.link;
            let bytes = self
                .mailbox
                .take(ticket, l.transport.timeout)
                .map_err(|e| l.transport.take_failed(e, l.world_peer, &l.ctx("irecv")))?;
            self.accept(bytes)?;
        }
        self.data.take().ok_or_else(|| {
            CommError::invalid("irecv", self.link.group, "the message was already taken")
        })
    }
}

impl Drop for TcpRecv<'_> {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            self.mailbox.cancel(ticket);
        }
    }
}
