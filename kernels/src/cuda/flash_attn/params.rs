//! Kernel parameters: the `AttnParams` struct of kernels/cuda/flash_attn.cu, field for field.

use cudarc::driver::DeviceRepr;

/// Mirrors `struct AttnParams` in flash_attn.cu (`#[repr(C)]`, same order). Pointers are raw
/// device addresses; the forward launch leaves the backward-only ones at 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct AttnParams {
    pub q: u64,
    pub k: u64,
    pub v: u64,
    pub o: u64,
    pub lse: u64,
    pub dout: u64,
    pub dq: u64,
    pub dk: u64,
    pub dv: u64,
    pub cu_seqlens: u64,
    pub tokens: i32,
    pub heads: i32,
    pub kv_heads: i32,
    pub group: i32,
    pub causal: i32,
    pub scale: f32,
    pub scale_log2: f32,
    pub pad_: i32,
}

// SAFETY: plain-old-data, layout identical to the C struct (8-byte pointers, then 4-byte fields).
unsafe impl DeviceRepr for AttnParams {}

/// Tile traits of the kernels (must match the constants in flash_attn.cu).
pub mod tiles {
    /// forward: (FWD_BLOCK_M, Dh) query tile, 4 warps, (FWD_BLOCK_N, Dh) K/V tiles double-buffered.
    pub const FWD_BLOCK_M: usize = 128;
    pub const FWD_BLOCK_N: usize = 64;
    pub const FWD_THREADS: u32 = 128;
    /// backward dK/dV: (KV_BLOCK_N, Dh) K/V tile per CTA, (KV_BLOCK_M, Dh) Q/dO tiles.
    pub const KV_BLOCK_N: usize = 128;
    pub const KV_BLOCK_M: usize = 64;
    pub const KV_THREADS: u32 = 256;
    /// backward dQ: (Q_BLOCK_M, Dh) Q/dO tile per CTA, (Q_BLOCK_N, Dh) K/V tiles.
    pub const Q_BLOCK_M: usize = 128;
    pub const Q_BLOCK_N: usize = 64;
    pub const Q_THREADS: u32 = 256;

    /// Dynamic shared memory in bytes for head dim `d`.
    pub fn fwd_smem(d: usize) -> usize {
        (FWD_BLOCK_M + 4 * FWD_BLOCK_N) * d * 2
    }
    pub fn dkdv_smem(d: usize) -> usize {
        (2 * KV_BLOCK_N + 4 * KV_BLOCK_M) * d * 2 + 4 * KV_BLOCK_M * 4
    }
    pub fn dq_smem(d: usize) -> usize {
        (2 * Q_BLOCK_M + 4 * Q_BLOCK_N) * d * 2
    }
}
