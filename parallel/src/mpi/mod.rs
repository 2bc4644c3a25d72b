//! The MPI backend (CPU buffers), over the `mpi` crate.

pub mod comm;
mod p2p;
pub mod runtime;
