//! Rendezvous key-value store over TCP, served by rank 0 at MASTER_ADDR:MASTER_PORT.
//!
//! Contract: `set(key, value)`; `get(key, timeout)` waits until the key exists; `add(key, n)`
//! adds to a decimal counter and returns the new value; `barrier(name, world, timeout)` returns
//! once `world` clients have entered the barrier of that name. Every wait has a timeout and
//! fails with an error naming the key. Clients retry connecting until their timeout (rank 0 may
//! start last). Used for the TCP backend's address exchange and, later, NCCL's unique id.
//! Wire format: request = op u8, key (u32 length + bytes), value (u32 length + bytes);
//! response = status u8 (0 ok, 1 timed out), value (u32 length + bytes).

pub mod client;
pub mod server;

pub use client::StoreClient;
pub use server::StoreServer;

use std::io::{self, Read, Write};

pub(crate) const OP_SET: u8 = 1;
pub(crate) const OP_GET: u8 = 2;
pub(crate) const OP_ADD: u8 = 3;
pub(crate) const STATUS_OK: u8 = 0;
pub(crate) const STATUS_TIMEOUT: u8 = 1;

pub(crate) fn write_chunk(w: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    w.write_all(&(bytes.len() as u32).to_le_bytes())?;
    w.write_all(bytes)
}

pub(crate) fn read_chunk(r: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let mut bytes = vec![0u8; u32::from_le_bytes(len) as usize];
    r.read_exact(&mut bytes)?;
    Ok(bytes)
}

pub(crate) fn read_u8(r: &mut impl Read) -> io::Result<u8> {
    let mut b = [0u8; 1];
    r.read_exact(&mut b)?;
    Ok(b[0])
}

#[cfg(test)]
mod tests;
