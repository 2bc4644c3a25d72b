//! Opening a CUDA device without panicking. cudarc panics when libcuda (or libnvrtc,
//! libcublasLt) cannot be loaded, so each library's presence is checked first and a missing one
//! is an `Error::Cuda` naming it. A panic inside cudarc during context creation is caught too.

use crate::{Error, Result};
use cudarc::driver::CudaContext;
use std::sync::Arc;

pub const NO_DRIVER: &str = "CUDA requested but no NVIDIA driver/libcuda was found";

/// Whether the NVIDIA driver library (libcuda) can be loaded.
pub fn driver_present() -> bool {
    // SAFETY: only tries to dlopen libcuda by its candidate names.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// Whether cuBLASLt can be loaded.
pub fn cublaslt_present() -> bool {
    // SAFETY: as above, for libcublasLt.
    unsafe { cudarc::cublaslt::sys::is_culib_present() }
}

/// How many CUDA devices this process sees, or an error saying what is missing.
pub fn device_count() -> Result<usize> {
    if !driver_present() {
        return Err(Error::Cuda(NO_DRIVER.into()));
    }
    let count = std::panic::catch_unwind(CudaContext::device_count)
        .map_err(|_| Error::Cuda(NO_DRIVER.into()))?
        .map_err(|e| Error::Cuda(format!("no usable CUDA device: {e}")))?;
    Ok(count.max(0) as usize)
}

/// The primary context of device `ordinal`, or an error saying what is missing.
pub fn open_context(ordinal: usize) -> Result<Arc<CudaContext>> {
    let count = device_count()?;
    if ordinal >= count {
        return Err(Error::Cuda(format!(
            "CUDA device {ordinal} requested but {count} device(s) found"
        )));
    }
    std::panic::catch_unwind(|| CudaContext::new(ordinal))
        .map_err(|_| {
            Error::Cuda(format!(
                "opening CUDA device {ordinal} panicked inside cudarc"
            ))
        })?
        .map_err(|e| Error::Cuda(format!("opening CUDA device {ordinal}: {e}")))
}
