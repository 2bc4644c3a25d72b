//! CUDA backend: the `Backend` trait on NVIDIA GPUs (cudarc, loaded at run time).

pub mod flash_attn;
