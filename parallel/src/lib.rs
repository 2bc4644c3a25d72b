//! ferrotron-parallel: process groups. The `Comm` trait and its backends (local, MPI, TCP; NCCL
//! later), the pp x dp x tp mesh and its groups, environment detection, the rendezvous store.
//! Tensor-parallel layers and pipeline schedules will live here too.

pub mod comm;
pub mod data_parallel;
pub mod env;
pub mod forensics;
pub mod mesh;
pub mod mesh_comms;
pub mod mpi;
pub mod nccl;
pub mod selftest;
pub mod store;
pub mod tcp;
pub mod watchdog;
pub mod world;

pub use comm::buffer::{Buf, BufMut, Dtype, ReduceOp};
pub use comm::counters::{CommCounters, OpKind, OpTraffic, TrafficSnapshot};
pub use comm::error::CommError;
pub use comm::local::LocalComm;
pub use comm::Comm;
pub use env::{BackendKind, DistEnv, Launcher};
pub use mesh::{Axis, Coords, Mesh, MeshError};
pub use mesh_comms::MeshComms;
pub use mpi::runtime::{MpiRuntime, DEFAULT_COLLECTIVE_TIMEOUT};
pub use nccl::{DeviceDtype, NcclComm};
pub use tcp::comm::TcpComm;
pub use world::{init_world, WorldOptions};
