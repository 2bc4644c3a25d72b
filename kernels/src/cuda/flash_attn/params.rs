//! Kernel parameters: the `AttnParams` struct of kernels/cuda/flash_attn.cu, field for field,
//! and the tunable tile shapes / CTA order (`TileConfig`, `Tuning`) the launch side compiles
//! (as NVRTC defines) and launches with.

use cudarc::driver::DeviceRepr;

use crate::{Error, Result};

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
    pub segments: i32,
    /// CTA order: groups (head, segment) per chunk, >= 1 (`sched_tile` in the kernel source).
    pub sched_chunk: i32,
    /// Sliding window (causal only; `AttnDims::window`), 0 = none.
    pub window: i32,
}

// SAFETY: plain-old-data, layout identical to the C struct (8-byte pointers, then 4-byte fields).
unsafe impl DeviceRepr for AttnParams {}

/// Mirrors `struct SoftcapParams` in flash_attn.cu: the second parameter of the `*_softcap`
/// kernels. With c = `AttnDims::softcap`, t = tanh(q·k · scale_in) and the capped score in
/// log2 units is t · log2_c.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SoftcapParams {
    /// scale / c.
    pub scale_in: f32,
    /// c · log2(e).
    pub log2_c: f32,
}

impl SoftcapParams {
    /// The parameters for a cap `c` at softmax scale `scale` (both rounded once, from f64).
    pub fn new(scale: f64, c: f64) -> Self {
        SoftcapParams {
            scale_in: (scale / c) as f32,
            log2_c: (c * std::f64::consts::LOG2_E) as f32,
        }
    }
}

// SAFETY: plain-old-data, two f32 fields, layout identical to the C struct.
unsafe impl DeviceRepr for SoftcapParams {}

/// Fixed tile traits of the kernels (must match the constants in flash_attn.cu).
pub mod tiles {
    /// forward: (FWD_BLOCK_M, Dh) query tile, 4 warps x 32 rows, K/V tiles double-buffered.
    pub const FWD_BLOCK_M: usize = 128;
    pub const FWD_THREADS: u32 = 128;
}

/// The tunable tile shapes of one compiled module (one head dim), passed to NVRTC as defines
/// (`FA_FWD_BN`, `FA_KV_WARPS`, ...). Tile shapes, for head dim D:
///   forward  CTA (128 queries, D), 4 warps x 32 rows; K/V tiles (fwd_bn, D), double-buffered.
///   dK/dV    CTA (16·kv_warps keys, D), warps x 16 rows; Q/dO tiles (kv_bm, D), double-buffered.
///   dQ       CTA (16·dq_warps queries, D), warps x 16 rows; K/V tiles (dq_bn, D), double-buffered.
/// Backward CTAs of 4 warps are compiled for 2 CTAs per SM (<= 255 registers, <= 113 KB smem).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TileConfig {
    pub fwd_bn: usize,
    pub kv_warps: usize,
    pub kv_bm: usize,
    pub dq_warps: usize,
    pub dq_bn: usize,
    /// Forward online softmax: the running max is raised only when a tile's max exceeds it by
    /// more than this many log2 units (0: on every increase, as FlashAttention-2 does).
    pub fwd_rescale: usize,
}

impl TileConfig {
    /// NVRTC options selecting this configuration.
    pub fn defines(&self) -> Vec<String> {
        vec![
            format!("-DFA_FWD_BN={}", self.fwd_bn),
            format!("-DFA_KV_WARPS={}", self.kv_warps),
            format!("-DFA_KV_BM={}", self.kv_bm),
            format!("-DFA_DQ_WARPS={}", self.dq_warps),
            format!("-DFA_DQ_BN={}", self.dq_bn),
            format!("-DFA_RESCALE={}", self.fwd_rescale),
        ]
    }
    pub fn kv_block_n(&self) -> usize {
        16 * self.kv_warps
    }
    pub fn kv_threads(&self) -> u32 {
        32 * self.kv_warps as u32
    }
    pub fn dq_block_m(&self) -> usize {
        16 * self.dq_warps
    }
    pub fn dq_threads(&self) -> u32 {
        32 * self.dq_warps as u32
    }
    /// Dynamic shared memory in bytes for head dim `d`.
    pub fn fwd_smem(&self, d: usize) -> usize {
        (tiles::FWD_BLOCK_M + 4 * self.fwd_bn) * d * 2
    }
    pub fn dkdv_smem(&self, d: usize) -> usize {
        (2 * self.kv_block_n() + 4 * self.kv_bm) * d * 2 + 4 * self.kv_bm * 4
    }
    pub fn dq_smem(&self, d: usize) -> usize {
        (2 * self.dq_block_m() + 4 * self.dq_bn) * d * 2
    }

    /// The kernels' static constraints: tiles of whole mma fragments whose cp.async copies
    /// divide evenly among the threads, within the 227 KB of shared memory a CTA may use.
    pub fn validate(&self, d: usize) -> Result<()> {
        let chunks = d / 8;
        let ok = matches!(self.kv_warps, 2 | 4 | 8)
            && matches!(self.dq_warps, 2 | 4 | 8)
            && [self.fwd_bn, self.kv_bm, self.dq_bn]
                .iter()
                .all(|&b| b >= 16 && b % 16 == 0)
            && (self.fwd_bn * chunks).is_multiple_of(tiles::FWD_THREADS as usize)
            && (self.kv_bm * chunks).is_multiple_of(self.kv_threads() as usize)
            && (self.dq_bn * chunks).is_multiple_of(self.dq_threads() as usize)
            && self.fwd_smem(d).max(self.dkdv_smem(d)).max(self.dq_smem(d)) <= 227 * 1024;
        if ok {
            Ok(())
        } else {
            Err(Error::Unsupported(format!(
                "flash attention: tile configuration {self:?} is not valid for head dim {d}"
            )))
        }
    }
}

/// Tile shapes per head dim and the CTA order. `Tuning::default()` is what the library uses;
/// other values exist for the tile sweeps of the benchmark example (`FA_TUNING`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tuning {
    pub d64: TileConfig,
    pub d128: TileConfig,
    /// CTA order: 0 = one (head, segment) group's tiles after another (longest first within
    /// it); N > 0 = chunks of as many groups as keep N MiB of streamed K/V (Q/dO for dK/dV)
    /// in L2, each chunk launching all its longest tiles first.
    pub l2_chunk_mib: usize,
}

/// The winner of the H100 sweep (docs/gpu-runs/flash-attn-tuning-2026-11-22.md): 4-warp
/// backward CTAs, two per SM, for both head dims, and L2-sized chunks of longest-first CTAs.
impl Default for Tuning {
    fn default() -> Self {
        let t = TileConfig {
            fwd_bn: 64,
            kv_warps: 4,
            kv_bm: 64,
            dq_warps: 4,
            dq_bn: 64,
            // Eager rescaling: with the lazy threshold 8, O's error on non-causal cases reached
            // 2.6x SDPA's (4 fresh seeds on the H100: 2 failed the 2x rule); eager matches SDPA's
            // error exactly, for ~3.5% of forward speed at the bar shape (304.6 -> 293.7 TFLOP/s).
            fwd_rescale: 0,
        };
        Tuning {
            d64: t,
            d128: t,
            l2_chunk_mib: 32,
        }
    }
}

impl Tuning {
    pub fn tiles(&self, head_dim: usize) -> &TileConfig {
        if head_dim == 64 {
            &self.d64
        } else {
            &self.d128
        }
    }

    /// `Tuning::default()` changed by a spec `key=value,...`; keys `fwd_bn`, `kv_warps`, `kv_bm`,
    /// `dq_warps`, `dq_bn` set both head dims, `d64.KEY` / `d128.KEY` one; `l2` sets
    /// `l2_chunk_mib`. Example: `l2=32,kv_warps=4,d64.fwd_bn=128`.
    pub fn parse(spec: &str) -> Result<Self> {
        let mut t = Tuning::default();
        let bad = |m: String| Error::Unsupported(format!("flash attention tuning: {m}"));
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (key, val) = item
                .split_once('=')
                .ok_or_else(|| bad(format!("`{item}` is not key=value")))?;
            let val: usize = val
                .trim()
                .parse()
                .map_err(|_| bad(format!("`{item}`: not a number")))?;
            if key == "l2" {
                t.l2_chunk_mib = val;
                continue;
            }
            let (dims, field): (&[usize], &str) = match key.split_once('.') {
                Some(("d64", f)) => (&[64], f),
                Some(("d128", f)) => (&[128], f),
                Some(_) => return Err(bad(format!("unknown key `{key}`"))),
                None => (&[64, 128], key),
            };
            for &d in dims {
                let c = if d == 64 { &mut t.d64 } else { &mut t.d128 };
                match field {
                    "fwd_bn" => c.fwd_bn = val,
                    "kv_warps" => c.kv_warps = val,
                    "kv_bm" => c.kv_bm = val,
                    "dq_warps" => c.dq_warps = val,
                    "dq_bn" => c.dq_bn = val,
                    "fwd_rescale" => c.fwd_rescale = val,
                    _ => return Err(bad(format!("unknown key `{key}`"))),
                }
            }
        }
        t.d64.validate(64)?;
        t.d128.validate(128)?;
        Ok(t)
    }

    /// Groups per chunk for `sched_tile`: as many (head, segment) groups as stream
    /// `bytes_per_group` each within the L2 budget, at least 1, at most `groups`.
    pub fn sched_chunk(&self, groups: usize, bytes_per_group: usize) -> i32 {
        if self.l2_chunk_mib == 0 || groups == 0 {
            return 1;
        }
        let c = (self.l2_chunk_mib << 20) / bytes_per_group.max(1);
        c.clamp(1, groups).min(i32::MAX as usize) as i32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softcap_params_match_the_kernel_struct() {
        // two floats, the C struct SoftcapParams in flash_attn.cu
        assert_eq!(std::mem::size_of::<SoftcapParams>(), 8);
        assert_eq!(std::mem::align_of::<SoftcapParams>(), 4);
        let p = SoftcapParams::new(0.125, 50.0);
        assert_eq!(p.scale_in, 0.0025f32);
        assert_eq!(p.log2_c, (50.0 * std::f64::consts::LOG2_E) as f32);
    }

    #[test]
    fn default_tuning_is_valid_and_parses() {
        let t = Tuning::default();
        t.d64.validate(64).unwrap();
        t.d128.validate(128).unwrap();
        assert_eq!(Tuning::parse("").unwrap(), t);
        let u = Tuning::parse("l2=8, kv_warps=8,d64.fwd_bn=128").unwrap();
        assert_eq!(u.l2_chunk_mib, 8);
        assert_eq!((u.d64.kv_warps, u.d128.kv_warps), (8, 8));
        assert_eq!((u.d64.fwd_bn, u.d128.fwd_bn), (128, t.d128.fwd_bn));
        assert!(Tuning::parse("fwd_bn=24").is_err());
        assert!(Tuning::parse("d32.fwd_bn=64").is_err());
        assert!(Tuning::parse("kv_bm").is_err());
    }

    #[test]
    fn sched_chunk_bounds() {
        let mut t = Tuning {
            l2_chunk_mib: 0,
            ..Tuning::default()
        };
        assert_eq!(t.sched_chunk(128, 1 << 20), 1);
        t.l2_chunk_mib = 32;
        assert_eq!(t.sched_chunk(128, 1 << 20), 32);
        assert_eq!(t.sched_chunk(16, 1 << 20), 16);
        assert_eq!(t.sched_chunk(128, 64 << 20), 1);
    }
}
