//! The MPI backend (CPU buffers), over the `mpi` crate.

pub mod comm;
pub mod runtime;
