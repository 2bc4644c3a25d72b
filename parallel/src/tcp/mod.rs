//! The TCP backend: CPU ranks started by `ferrotron launch` / torchrun (no MPI needed).
//! Fine for tests and small CPU jobs; large jobs use MPI or NCCL.

pub mod comm;
mod connect;
mod mailbox;
mod p2p;
mod transport;
