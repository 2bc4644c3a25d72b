//! How a backend's device buffers cross a process group: the bridge between the kernels'
//! `Backend` buffers and the `Comm` trait (collectives.rs; the CUDA backend's NCCL and
//! host-staged paths in collectives_cuda.rs). ZeRO engines and the tensor-parallel regions both
//! move buffers through it.

pub mod collectives;
mod collectives_cuda;

pub use collectives::Collectives;

/// A communication failure as a kernels error (backend operations return kernels results).
pub(crate) fn comm_err(e: crate::CommError) -> ferrotron_kernels::Error {
    ferrotron_kernels::Error::Unsupported(format!("communication failed: {e}"))
}
