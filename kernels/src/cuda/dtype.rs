//! The compute element types of the CUDA backend: `CudaBackend<f32>` (exact, the f32 twin of the
//! CPU reference) and `CudaBackend<half::bf16>` (mixed precision). Kernels come in `_f32` and
//! `_bf16` variants (FT_EXPORT in kernels/cuda/ferrotron_common.cuh); cuBLASLt takes CUDA_R_32F or
//! CUDA_R_16BF operands with fp32 accumulation either way.

use cudarc::cublaslt::sys::cudaDataType_t;
use cudarc::driver::{DeviceRepr, ValidAsZeroBits};

pub trait CudaAct:
    DeviceRepr + ValidAsZeroBits + Copy + Default + Send + Sync + Unpin + std::fmt::Debug + 'static
{
    /// Kernel-name suffix and the name in "cuda:0-bf16".
    const NAME: &'static str;
    const BLAS_TYPE: cudaDataType_t;
    fn from_f32(x: f32) -> Self;
    fn to_f32(self) -> f32;
}

impl CudaAct for f32 {
    const NAME: &'static str = "f32";
    const BLAS_TYPE: cudaDataType_t = cudaDataType_t::CUDA_R_32F;
    fn from_f32(x: f32) -> Self {
        x
    }
    fn to_f32(self) -> f32 {
        self
    }
}

impl CudaAct for half::bf16 {
    const NAME: &'static str = "bf16";
    const BLAS_TYPE: cudaDataType_t = cudaDataType_t::CUDA_R_16BF;
    fn from_f32(x: f32) -> Self {
        half::bf16::from_f32(x)
    }
    fn to_f32(self) -> f32 {
        half::bf16::to_f32(self)
    }
}
