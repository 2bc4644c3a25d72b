//! `TcpComm`: a `Comm` over the TCP transport, for CPU ranks without MPI.
//!
//! Algorithms are star-shaped through group rank 0 (simple, deterministic: the root reduces
//! in rank order, so every rank gets bit-identical results). The byte counters still follow the
//! ring convention of `counters.rs`, like every backend, so volume tests do not depend on the
//! backend. Timeouts and dead peers return `CommError`s naming group, operation and peer.
//! `split` gathers (color, key) at the root, which sends the table back; every rank derives the
//! same child id from (parent id, split sequence number, color), and the child reuses the
//! world's connections. isend/irecv: p2p.rs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytemuck::Pod;

use crate::comm::buffer::{Buf, BufMut, ReduceOp};
use crate::comm::counters::CommCounters;
use crate::comm::error::CommError;
use crate::comm::Comm;

use crate::comm::p2p::{OwnedBuf, PendingRecv, PendingSend};
use crate::Dtype;

use super::connect::connect_world;
use super::p2p::{Link, TcpRecv, TcpSend};
use super::transport::{OpContext, Payload, Transport};

/// Tag of collective traffic; user tags of send/recv are below 2^32.
const COLLECTIVE_TAG: u64 = 1 << 32;
const ROOT: usize = 0;

/// A process group over TCP connections.
pub struct TcpComm {
    transport: Arc<Transport>,
    id: u64,
    /// World rank of each group rank.
    members: Vec<usize>,
    rank: usize,
    name: String,
    counters: CommCounters,
    splits: AtomicU64,
}

impl TcpComm {
    /// Rendezvous at `master_addr:master_port` (rank 0 serves the store there) and connect
    /// every pair of ranks. Blocks until all `world` ranks have joined or the timeout passes.
    pub fn connect_world(
        master_addr: &str,
        master_port: u16,
        rank: usize,
        world: usize,
        rendezvous_timeout: Duration,
        collective_timeout: Duration,
    ) -> Result<TcpComm, CommError> {
        let transport = connect_world(
            master_addr,
            master_port,
            rank,
            world,
            rendezvous_timeout,
            collective_timeout,
        )?;
        Ok(TcpComm {
            transport: Arc::new(transport),
            id: 1,
            members: (0..world).collect(),
            rank,
            name: "world".to_string(),
            counters: CommCounters::new(),
            splits: AtomicU64::new(0),
        })
    }

    fn ctx(&self, op: &'static str) -> OpContext<'_> {
        OpContext {
            op,
            group: &self.name,
            group_rank: self.rank,
        }
    }

    fn send_to(
        &self,
        peer: usize,
        tag: u64,
        bytes: &[u8],
        op: &'static str,
    ) -> Result<(), CommError> {
        self.transport
            .send(self.members[peer], self.id, tag, bytes, &self.ctx(op))
    }

    fn recv_from(
        &self,
        peer: usize,
        tag: u64,
        out: &mut [u8],
        op: &'static str,
    ) -> Result<(), CommError> {
        self.transport
            .recv(self.members[peer], self.id, tag, out, &self.ctx(op))
    }

    /// Every rank's `mine` (same length everywhere), in rank order, at the root; None elsewhere.
    fn gather_at_root(
        &self,
        mine: &[u8],
        op: &'static str,
    ) -> Result<Option<Vec<Vec<u8>>>, CommError> {
        if self.rank != ROOT {
            self.send_to(ROOT, COLLECTIVE_TAG, mine, op)?;
            return Ok(None);
        }
        let mut parts = vec![mine.to_vec()];
        for peer in 1..self.members.len() {
            let mut part = vec![0u8; mine.len()];
            self.recv_from(peer, COLLECTIVE_TAG, &mut part, op)?;
            parts.push(part);
        }
        Ok(Some(parts))
    }

    /// The root sends `payload(peer)` to every other rank.
    fn send_from_root(
        &self,
        op: &'static str,
        payload: impl Fn(usize) -> Vec<u8>,
    ) -> Result<(), CommError> {
        for peer in 1..self.members.len() {
            self.send_to(peer, COLLECTIVE_TAG, &payload(peer), op)?;
        }
        Ok(())
    }
}

fn reduce_typed<T: Pod>(
    own: &[T],
    others: &[Vec<u8>],
    op: ReduceOp,
    n: usize,
    wrap: for<'a> fn(&'a mut [T]) -> BufMut<'a>,
) -> Vec<u8> {
    let mut acc = own.to_vec();
    {
        let mut view = wrap(&mut acc);
        for part in others {
            view.combine_bytes(part, op);
        }
        if op == ReduceOp::Avg {
            view.divide_by(n);
        }
    }
    bytemuck::cast_slice(&acc).to_vec()
}

/// The reduction of `own` and the other ranks' parts (raw bytes of the same type), as bytes.
fn reduce_parts(own: Buf<'_>, others: &[Vec<u8>], op: ReduceOp, n: usize) -> Vec<u8> {
    match own {
        Buf::F32(s) => reduce_typed(s, others, op, n, |v| BufMut::F32(v)),
        Buf::F64(s) => reduce_typed(s, others, op, n, |v| BufMut::F64(v)),
        Buf::I32(s) => reduce_typed(s, others, op, n, |v| BufMut::I32(v)),
    }
}

fn child_id(parent: u64, sequence: u64, color: u32) -> u64 {
    // FNV-1a over the three numbers; 0 and 1 are avoided (1 is the world).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in parent
        .to_le_bytes()
        .iter()
        .chain(&sequence.to_le_bytes())
        .chain(&color.to_le_bytes())
    {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h.max(2)
}

impl Comm for TcpComm {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.members.len()
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn counters(&self) -> &CommCounters {
        &self.counters
    }

    fn backend_all_reduce(&self, mut buf: BufMut<'_>, op: ReduceOp) -> Result<(), CommError> {
        let name = "all_reduce";
        match self.gather_at_root(buf.as_buf().as_bytes(), name)? {
            Some(parts) => {
                let full = reduce_parts(buf.as_buf(), &parts[1..], op, self.size());
                buf.as_bytes_mut().copy_from_slice(&full);
                self.send_from_root(name, |_| full.clone())
            }
            None => self.recv_from(ROOT, COLLECTIVE_TAG, buf.as_bytes_mut(), name),
        }
    }

    fn backend_reduce_scatter(
        &self,
        input: Buf<'_>,
        mut output: BufMut<'_>,
        op: ReduceOp,
    ) -> Result<(), CommError> {
        let name = "reduce_scatter";
        match self.gather_at_root(input.as_bytes(), name)? {
            Some(parts) => {
                let full = reduce_parts(input, &parts[1..], op, self.size());
                let block = output.byte_len();
                output.as_bytes_mut().copy_from_slice(&full[..block]);
                self.send_from_root(name, |peer| full[peer * block..(peer + 1) * block].to_vec())
            }
            None => self.recv_from(ROOT, COLLECTIVE_TAG, output.as_bytes_mut(), name),
        }
    }

    fn backend_all_gather(&self, input: Buf<'_>, mut output: BufMut<'_>) -> Result<(), CommError> {
        let name = "all_gather";
        match self.gather_at_root(input.as_bytes(), name)? {
            Some(parts) => {
                let full = parts.concat();
                output.as_bytes_mut().copy_from_slice(&full);
                self.send_from_root(name, |_| full.clone())
            }
            None => self.recv_from(ROOT, COLLECTIVE_TAG, output.as_bytes_mut(), name),
        }
    }

    fn backend_broadcast(&self, mut buf: BufMut<'_>, root: usize) -> Result<(), CommError> {
        let name = "broadcast";
        if self.rank == root {
            for peer in (0..self.size()).filter(|&p| p != root) {
                self.send_to(peer, COLLECTIVE_TAG, buf.as_buf().as_bytes(), name)?;
            }
            Ok(())
        } else {
            self.recv_from(root, COLLECTIVE_TAG, buf.as_bytes_mut(), name)
        }
    }

    fn backend_send(&self, buf: Buf<'_>, dest: usize, tag: u32) -> Result<(), CommError> {
        self.send_to(dest, tag as u64, buf.as_bytes(), "send")
    }

    fn backend_recv(&self, mut buf: BufMut<'_>, src: usize, tag: u32) -> Result<(), CommError> {
        self.recv_from(src, tag as u64, buf.as_bytes_mut(), "recv")
    }

    fn backend_barrier(&self) -> Result<(), CommError> {
        let name = "barrier";
        match self.gather_at_root(&[], name)? {
            Some(_) => self.send_from_root(name, |_| Vec::new()),
            None => self.recv_from(ROOT, COLLECTIVE_TAG, &mut [], name),
        }
    }

    fn backend_split(&self, color: u32, key: u32, name: &str) -> Result<Arc<dyn Comm>, CommError> {
        let op = "split";
        let mine: Vec<u8> = color
            .to_le_bytes()
            .into_iter()
            .chain(key.to_le_bytes())
            .collect();
        let mut table = vec![0u8; 8 * self.size()];
        match self.gather_at_root(&mine, op)? {
            Some(parts) => {
                table = parts.concat();
                let shared = table.clone();
                self.send_from_root(op, |_| shared.clone())?;
            }
            None => self.recv_from(ROOT, COLLECTIVE_TAG, &mut table, op)?,
        }
        let entry = |r: usize| {
            let word = |o: usize| {
                u32::from_le_bytes(table[8 * r + o..8 * r + o + 4].try_into().unwrap_or([0; 4]))
            };
            (word(0), word(4))
        };
        let mut same: Vec<(u32, usize)> = (0..self.size())
            .filter(|&r| entry(r).0 == color)
            .map(|r| (entry(r).1, r))
            .collect();
        same.sort();
        let members: Vec<usize> = same.iter().map(|&(_, r)| self.members[r]).collect();
        let rank = same.iter().position(|&(_, r)| r == self.rank).unwrap_or(0);
        let sequence = self.splits.fetch_add(1, Ordering::SeqCst);
        Ok(Arc::new(TcpComm {
            transport: Arc::clone(&self.transport),
            id: child_id(self.id, sequence, color),
            members,
            rank,
            name: name.to_string(),
            counters: CommCounters::new(),
            splits: AtomicU64::new(0),
        }))
    }

    fn backend_isend(
        &self,
        data: OwnedBuf,
        dest: usize,
        tag: u32,
    ) -> Result<Box<dyn PendingSend + '_>, CommError> {
        let link = self.link(dest);
        let payload = Payload::Owned(data);
        let completion = self.transport.enqueue(
            link.world_peer,
            self.id,
            tag as u64,
            payload,
            &self.ctx("isend"),
        )?;
        Ok(Box::new(TcpSend { link, completion }))
    }

    fn backend_irecv(
        &self,
        dtype: Dtype,
        len: usize,
        src: usize,
        tag: u32,
    ) -> Result<Box<dyn PendingRecv + '_>, CommError> {
        let recv = TcpRecv::post(self.link(src), self.id, tag as u64, dtype, len)?;
        Ok(Box::new(recv))
    }
}

impl TcpComm {
    fn link(&self, peer: usize) -> Link<'_> {
        Link {
            transport: &self.transport,
            world_peer: self.members[peer],
            group: &self.name,
            group_rank: self.rank,
        }
    }
}

#[cfg(test)]
mod tests;
