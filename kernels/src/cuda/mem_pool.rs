//! Device memory reuse. cudarc allocates stream-ordered (cuMemAllocAsync) from the device's
//! memory pool where the driver supports it; by default that pool returns freed memory to the
//! driver at every synchronisation (release threshold 0), so the next step allocates afresh.
//! `keep_freed_memory` sets the threshold to "never", so a step's activations, gradients and
//! gathered units are served from memory the previous step freed (as PyTorch's caching
//! allocator does). Without stream-ordered allocation there is no pool, and nothing to set.

use super::backend::cuda_err;
use crate::Result;
use cudarc::driver::{result, sys, CudaContext};

/// Makes the device's memory pool keep freed memory for reuse.
pub(crate) fn keep_freed_memory(ctx: &CudaContext) -> Result<()> {
    if !ctx.has_async_alloc() {
        return Ok(());
    }
    ctx.bind_to_thread()
        .map_err(|e| cuda_err("bind context", e))?;
    let mut threshold = u64::MAX;
    // SAFETY: the device comes from a live context; the release threshold attribute takes a
    // u64 (cuMemPoolSetAttribute), which `threshold` is.
    unsafe {
        let pool = result::device::get_mem_pool(ctx.cu_device())
            .map_err(|e| cuda_err("cuDeviceGetMemPool", e))?;
        result::mem_pool::set_attribute(
            pool,
            sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
            (&mut threshold as *mut u64).cast(),
        )
        .map_err(|e| cuda_err("cuMemPoolSetAttribute(release threshold)", e))
    }
}
