//! CUDA backend: the `Backend` trait on NVIDIA GPUs (cudarc, loaded at run time).
//! `CudaBackend<f32>` / `CudaBackend<half::bf16>`; kernels are NVRTC-compiled .cu sources
//! (kernels/cuda), GEMMs go through cuBLASLt.

pub mod backend;
pub mod buffer;
pub mod device;
pub mod dtype;
pub mod flash_attn;
pub mod gemm;
mod mem_pool;
pub mod nvrtc;
pub mod ops_adamw;
pub mod ops_attention;
mod ops_linear;
mod ops_loss;
mod ops_memory;
mod ops_norms;
mod ops_pointwise;
mod profile;
pub mod sources;
mod trait_impl;

pub use backend::CudaBackend;
pub use dtype::CudaAct;
