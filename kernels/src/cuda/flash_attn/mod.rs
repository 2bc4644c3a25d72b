//! FlashAttention-2 forward and backward kernels (bf16, mma.sync), NVRTC-compiled.
//!
//! Layout: `params.rs` (the kernel parameter struct and tile traits), `launch.rs` (module load,
//! argument checks, grid shapes), the kernel bodies in `kernels/cuda/flash_attn.cu`.
//! The backward writes no scratch memory: the row sums D = rowsum(dO ∘ O) live in the dq
//! buffer until the dQ pass overwrites them, so the op allocates nothing beyond O, lse and the
//! gradients.

mod launch;
pub mod params;

pub use launch::{FlashAttention, FLASH_ATTN_SRC};
