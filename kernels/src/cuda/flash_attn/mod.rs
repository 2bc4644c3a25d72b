//! FlashAttention-2 forward and backward kernels (bf16, mma.sync), NVRTC-compiled.
//!
//! Layout: `params.rs` (the kernel parameter struct, tile traits and tunable tile shapes), `launch.rs` (module load,
//! argument checks, grid shapes), the kernel bodies in `kernels/cuda/flash_attn.cu`.
//! The backward writes no scratch memory: the row sums D = rowsum(dO ∘ O) live in the dq
//! buffer until the dQ pass overwrites them, so the op allocates nothing beyond O, lse and the
//! gradients.

mod bench;
mod launch;
pub mod params;

pub use bench::{
    bench_attention, bench_attention_cli, bench_attention_with, parse_sdpa_json, BenchRow, SdpaRow,
    BENCH_SHAPES,
};
pub use launch::{FlashAttention, FLASH_ATTN_SRC};
pub use params::{SoftcapParams, TileConfig, Tuning};
