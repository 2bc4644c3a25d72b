//! FlashAttention-2 forward and backward kernels (bf16, mma.sync), NVRTC-compiled.
