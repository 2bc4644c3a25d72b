//! ferrotron-parallel: process groups. The `Comm` trait and its backends (local; MPI and TCP for
//! host buffers; NCCL for device buffers, `NcclComm`), the pp x dp x tp mesh and its groups,
//! environment detection (torchrun, Open MPI, PMI, Slurm), the rendezvous store, and the
//! watchdog that times out blocking collectives.

pub mod comm;
pub mod device;
pub mod env;
pub mod forensics;
pub mod mesh;
pub mod mesh_comms;
pub mod mpi;
pub mod nccl;
pub mod pipeline;
pub mod selftest;
pub mod selftest_p2p;
pub mod store;
pub mod tcp;
pub mod tensor_parallel;
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
pub use nccl::{DeviceDtype, DeviceP2p, NcclComm};
pub use tcp::comm::TcpComm;
pub use tensor_parallel::{NoTp, TpComm, TpGroup};
pub use world::{init_world, WorldOptions};
