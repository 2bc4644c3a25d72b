//! How a backend's device buffers cross a process group: the bridge between the kernels'
//! `Backend` buffers and the `Comm` trait (collectives.rs; the CUDA backend's NCCL and
//! host-staged paths in collectives_cuda.rs; pipeline point-to-point groups in p2p.rs). ZeRO
//! engines, the tensor-parallel regions and pipeline boundaries move buffers through it.

pub mod collectives;
mod collectives_cuda;
mod p2p;

pub use collectives::Collectives;

/// A communication failure as a kernels error (backend operations return kernels results).
pub(crate) fn comm_err(e: crate::CommError) -> ferrotron_kernels::Error {
    ferrotron_kernels::Error::Unsupported(format!("communication failed: {e}"))
}

/// A reduce-scatter's input must hold the group size times its output's elements.
pub(crate) fn check_scatter(
    comm: &dyn crate::Comm,
    input: usize,
    out: usize,
) -> ferrotron_kernels::Result<()> {
    if input == out * comm.size() {
        return Ok(());
    }
    Err(ferrotron_kernels::Error::Unsupported(format!(
        "reduce_scatter on group {}: input of {input} elements is not group size {} x output {out}",
        comm.name(),
        comm.size()
    )))
}

/// An all-gather's output must hold the group size times its input's elements.
pub(crate) fn check_gather(
    comm: &dyn crate::Comm,
    input: usize,
    out: usize,
) -> ferrotron_kernels::Result<()> {
    if out == input * comm.size() {
        return Ok(());
    }
    Err(ferrotron_kernels::Error::Unsupported(format!(
        "all_gather on group {}: output of {out} elements is not group size {} x input {input}",
        comm.name(),
        comm.size()
    )))
}
