//! Loading the FlashAttention module and launching its kernels.
//!
//! One NVRTC module per head dim and variant (compiled with `-DHEAD_DIM=..`, `-DFA_SOFTCAP=0|1`
//! and the tile defines of [`Tuning`] on first use, for the device's architecture) through the
//! shared loader (`cuda::nvrtc::load_module_with`), so its PTX is cached on disk like every other
//! kernel's. The softcap variant (`AttnDims::softcap`: the `*_softcap` kernels) is a module of
//! its own, compiled only when a call has a cap, so uncapped attention compiles, loads and runs
//! exactly the plain kernels. NVRTC needs no CUDA headers for this source.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cudarc::driver::sys::CUfunction_attribute;
use cudarc::driver::{
    CudaFunction, CudaStream, CudaView, CudaViewMut, DevicePtr, DevicePtrMut, LaunchConfig,
    PushKernelArg,
};
use cudarc::nvrtc::Ptx;
use half::bf16;

use super::params::{tiles, AttnParams, SoftcapParams, Tuning};
use crate::cuda::nvrtc::{self, ModuleOpts};
use crate::{AttnDims, Error, Result};

/// The kernel source, embedded so a binary carries it to any machine.
pub const FLASH_ATTN_SRC: &str = include_str!("../../../cuda/flash_attn.cu");

const LOG2E: f32 = std::f32::consts::LOG2_E;

fn cuda_err(what: &str, e: impl std::fmt::Debug) -> Error {
    Error::Cuda(format!("flash attention {what}: {e:?}"))
}

struct Kernels {
    fwd: CudaFunction,
    dot_do_o: CudaFunction,
    dkdv: CudaFunction,
    dq: CudaFunction,
}

/// FlashAttention-2 forward/backward on one stream (bf16 in and out, fp32 lse).
pub struct FlashAttention {
    stream: Arc<CudaStream>,
    tuning: Tuning,
    /// Per (head dim, softcap variant).
    kernels: Mutex<HashMap<(usize, bool), Arc<Kernels>>>,
}

/// NVRTC options for one head dim under `tuning`, the plain or the softcap kernels.
fn nvrtc_options(head_dim: usize, tuning: &Tuning, softcap: bool) -> Result<Vec<String>> {
    if head_dim != 64 && head_dim != 128 {
        return Err(Error::Unsupported(format!(
            "flash attention: head_dim {head_dim} (supported: 64, 128)"
        )));
    }
    let tiles = tuning.tiles(head_dim);
    tiles.validate(head_dim)?;
    let mut o = vec![format!("-DHEAD_DIM={head_dim}"), "--use_fast_math".into()];
    o.extend(tiles.defines());
    o.push(format!("-DFA_SOFTCAP={}", softcap as u8));
    Ok(o)
}

/// The module name of one head dim and variant (the NVRTC program and disk-cache name).
fn module_name(head_dim: usize, softcap: bool) -> String {
    if softcap {
        format!("flash_attn_d{head_dim}_softcap")
    } else {
        format!("flash_attn_d{head_dim}")
    }
}

impl FlashAttention {
    /// Compile the source for one head dim (64 or 128) and architecture (`"sm_90"`) with the
    /// default tuning, without a GPU or the disk cache (NVRTC alone suffices): the CI check.
    /// The plain kernels (flash_fwd, flash_bwd_dot_do_o, flash_bwd_dkdv, flash_bwd_dq).
    pub fn compile_ptx(head_dim: usize, arch: &str) -> Result<Ptx> {
        Self::compile_ptx_with(head_dim, arch, &Tuning::default())
    }

    /// As [`Self::compile_ptx`], the softcap variant (flash_fwd_softcap, flash_bwd_dot_do_o,
    /// flash_bwd_dkdv_softcap, flash_bwd_dq_softcap).
    pub fn compile_ptx_softcap(head_dim: usize, arch: &str) -> Result<Ptx> {
        Self::compile_ptx_variant(head_dim, arch, &Tuning::default(), true)
    }

    /// As [`Self::compile_ptx`] for a given tuning.
    pub fn compile_ptx_with(head_dim: usize, arch: &str, tuning: &Tuning) -> Result<Ptx> {
        Self::compile_ptx_variant(head_dim, arch, tuning, false)
    }

    /// As [`Self::compile_ptx`] for a given tuning and variant (`softcap`: the `*_softcap`
    /// kernels).
    pub fn compile_ptx_variant(
        head_dim: usize,
        arch: &str,
        tuning: &Tuning,
        softcap: bool,
    ) -> Result<Ptx> {
        let opts = nvrtc_options(head_dim, tuning, softcap)?;
        nvrtc::compile_ptx(&module_name(head_dim, softcap), FLASH_ATTN_SRC, arch, &opts)
            .map(Ptx::from_src)
    }

    /// Kernels are compiled lazily, per head dim and variant (plain, softcap), on first use,
    /// with the default tuning.
    pub fn new(stream: Arc<CudaStream>) -> Result<Self> {
        Self::with_tuning(stream, Tuning::default())
    }

    /// As [`Self::new`] with explicit tile shapes and CTA order (benchmark sweeps).
    pub fn with_tuning(stream: Arc<CudaStream>, tuning: Tuning) -> Result<Self> {
        let cc = stream
            .context()
            .compute_capability()
            .map_err(|e| cuda_err("device query", e))?;
        if cc.0 < 8 {
            return Err(Error::Unsupported(format!(
                "flash attention needs compute capability 8.0 or newer (bf16 mma.sync), device has {}.{}",
                cc.0, cc.1
            )));
        }
        tuning.d64.validate(64)?;
        tuning.d128.validate(128)?;
        Ok(FlashAttention {
            stream,
            tuning,
            kernels: Mutex::new(HashMap::new()),
        })
    }

    pub fn tuning(&self) -> &Tuning {
        &self.tuning
    }

    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// The kernels of one head dim, plain or with the softcap (`*_softcap`), compiled and
    /// loaded on first use.
    fn kernels(&self, head_dim: usize, softcap: bool) -> Result<Arc<Kernels>> {
        let mut map = self.kernels.lock().unwrap();
        if let Some(k) = map.get(&(head_dim, softcap)) {
            return Ok(k.clone());
        }
        let extra = nvrtc_options(head_dim, &self.tuning, softcap)?;
        let module = nvrtc::load_module_with(
            self.stream.context(),
            &module_name(head_dim, softcap),
            FLASH_ATTN_SRC,
            &ModuleOpts {
                extra: &extra,
                ..Default::default()
            },
        )?;
        let t = self.tuning.tiles(head_dim);
        let load = |name: &str, smem: usize| -> Result<CudaFunction> {
            let f = module.load_function(name).map_err(|e| cuda_err(name, e))?;
            f.set_attribute(
                CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                smem as i32,
            )
            .map_err(|e| cuda_err(name, e))?;
            Ok(f)
        };
        let suffix = if softcap { "_softcap" } else { "" };
        let k = Arc::new(Kernels {
            fwd: load(&format!("flash_fwd{suffix}"), t.fwd_smem(head_dim))?,
            dot_do_o: load("flash_bwd_dot_do_o", 0)?,
            dkdv: load(&format!("flash_bwd_dkdv{suffix}"), t.dkdv_smem(head_dim))?,
            dq: load(&format!("flash_bwd_dq{suffix}"), t.dq_smem(head_dim))?,
        });
        map.insert((head_dim, softcap), k.clone());
        Ok(k)
    }

    fn check(
        dims: &AttnDims,
        q_len: usize,
        kv_len: usize,
        lse_len: usize,
        cu_len: usize,
    ) -> Result<()> {
        let bad = |m: String| Err(Error::Unsupported(format!("flash attention: {m}")));
        dims.check_window()?;
        crate::cuda::ops_attention::softcap_arg(dims)?;
        if let Some(c) = dims.softcap {
            let cap = SoftcapParams::new(dims.scale, c);
            if !cap.scale_in.is_finite() || !cap.log2_c.is_finite() {
                return bad(format!("softcap {c} out of range for scale {}", dims.scale));
            }
        }
        if dims.head_dim != 64 && dims.head_dim != 128 {
            return bad(format!("head_dim {} (supported: 64, 128)", dims.head_dim));
        }
        if dims.kv_heads == 0 || !dims.heads.is_multiple_of(dims.kv_heads) {
            return bad(format!(
                "heads {} not a multiple of kv_heads {}",
                dims.heads, dims.kv_heads
            ));
        }
        if q_len != dims.tokens * dims.heads * dims.head_dim {
            return bad(format!("q/o length {q_len} != tokens*heads*head_dim"));
        }
        if kv_len != dims.tokens * dims.kv_heads * dims.head_dim {
            return bad(format!("k/v length {kv_len} != tokens*kv_heads*head_dim"));
        }
        if lse_len != dims.tokens * dims.heads {
            return bad(format!("lse length {lse_len} != heads*tokens"));
        }
        if cu_len != dims.segments + 1 || dims.segments == 0 || dims.segments > 65535 {
            return bad(format!(
                "cu_seqlens length {cu_len} for {} segments",
                dims.segments
            ));
        }
        if dims.heads > 65535 || dims.tokens * dims.heads * dims.head_dim > i32::MAX as usize * 8 {
            return bad("problem too large".into());
        }
        Ok(())
    }

    fn params(dims: &AttnDims) -> AttnParams {
        AttnParams {
            tokens: dims.tokens as i32,
            heads: dims.heads as i32,
            kv_heads: dims.kv_heads as i32,
            group: (dims.heads / dims.kv_heads) as i32,
            causal: dims.causal as i32,
            scale: dims.scale as f32,
            scale_log2: dims.scale as f32 * LOG2E,
            segments: dims.segments as i32,
            window: crate::cuda::ops_attention::window_arg(dims),
            ..Default::default()
        }
    }

    /// 1-D grid of `tiles` x `groups` CTAs (the kernels' `sched_tile` decodes it); 0 when empty.
    fn grid(tiles: usize, groups: usize) -> Result<u32> {
        let n = tiles * groups;
        if n > i32::MAX as usize {
            return Err(Error::Unsupported(
                "flash attention: problem too large (grid)".into(),
            ));
        }
        Ok(n as u32)
    }

    fn aligned(ptrs: &[u64]) -> Result<()> {
        if ptrs.iter().any(|p| !p.is_multiple_of(16)) {
            return Err(Error::Unsupported(
                "flash attention: buffers must start 16-byte aligned".into(),
            ));
        }
        Ok(())
    }

    /// o = softmax(cap(scale · q kᵀ) + mask) v, lse = logsumexp(cap(scale · q kᵀ) + mask), with
    /// cap(s) = c·tanh(s / c) for `dims.softcap` = Some(c), the identity for None (see `AttnDims`).
    /// `dims.max_seqlen` must be the longest segment. Allocates nothing.
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        q: &CudaView<'_, bf16>,
        k: &CudaView<'_, bf16>,
        v: &CudaView<'_, bf16>,
        o: &mut CudaViewMut<'_, bf16>,
        lse: &mut CudaViewMut<'_, f32>,
        cu_seqlens: &CudaView<'_, i32>,
        dims: &AttnDims,
    ) -> Result<()> {
        Self::check(dims, q.len(), k.len(), lse.len(), cu_seqlens.len())?;
        if v.len() != k.len() || o.len() != q.len() {
            return Err(Error::Unsupported(
                "flash attention: v/o lengths differ from k/q".into(),
            ));
        }
        if dims.tokens == 0 {
            return Ok(());
        }
        let kern = self.kernels(dims.head_dim, dims.softcap.is_some())?;
        let s = &self.stream;
        let (q_p, _g1) = q.device_ptr(s);
        let (k_p, _g2) = k.device_ptr(s);
        let (v_p, _g3) = v.device_ptr(s);
        let (o_p, _g4) = o.device_ptr_mut(s);
        let (lse_p, _g5) = lse.device_ptr_mut(s);
        let (cu_p, _g6) = cu_seqlens.device_ptr(s);
        Self::aligned(&[q_p, k_p, v_p, o_p])?;
        let d = dims.head_dim;
        let t = self.tuning.tiles(d);
        let groups = dims.heads * dims.segments;
        // streamed per (head, segment): K and V, shared by the `group` query heads of a kv head
        let kv_bytes = dims.max_seqlen * d * 4 / (dims.heads / dims.kv_heads);
        let p = AttnParams {
            q: q_p,
            k: k_p,
            v: v_p,
            o: o_p,
            lse: lse_p,
            cu_seqlens: cu_p,
            sched_chunk: self.tuning.sched_chunk(groups, kv_bytes),
            ..Self::params(dims)
        };
        let cfg = LaunchConfig {
            grid_dim: (
                Self::grid(dims.max_seqlen.div_ceil(tiles::FWD_BLOCK_M), groups)?,
                1,
                1,
            ),
            block_dim: (tiles::FWD_THREADS, 1, 1),
            shared_mem_bytes: t.fwd_smem(d) as u32,
        };
        if cfg.grid_dim.0 == 0 {
            return Ok(());
        }
        let cap = dims.softcap.map(|c| SoftcapParams::new(dims.scale, c));
        let mut fwd = s.launch_builder(&kern.fwd);
        fwd.arg(&p);
        if let Some(cap) = &cap {
            fwd.arg(cap); // flash_fwd_softcap's second parameter
        }
        // SAFETY: arguments checked against the kernel's structs (the softcap module's kernels
        // take SoftcapParams second: `kern` was loaded for `dims.softcap.is_some()`); buffer
        // lengths checked above.
        unsafe { fwd.launch(cfg) }.map_err(|e| cuda_err("forward launch", e))?;
        Ok(())
    }

    /// dq, dk, dv (OVERWRITTEN) from dout, recomputing P from lse. Allocates nothing: dq holds
    /// the row sums D = rowsum(dout ∘ o) between the first and the last kernel.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &self,
        q: &CudaView<'_, bf16>,
        k: &CudaView<'_, bf16>,
        v: &CudaView<'_, bf16>,
        o: &CudaView<'_, bf16>,
        dout: &CudaView<'_, bf16>,
        lse: &CudaView<'_, f32>,
        dq: &mut CudaViewMut<'_, bf16>,
        dk: &mut CudaViewMut<'_, bf16>,
        dv: &mut CudaViewMut<'_, bf16>,
        cu_seqlens: &CudaView<'_, i32>,
        dims: &AttnDims,
    ) -> Result<()> {
        Self::check(dims, q.len(), k.len(), lse.len(), cu_seqlens.len())?;
        let ql = q.len();
        let kl = k.len();
        if v.len() != kl
            || o.len() != ql
            || dout.len() != ql
            || dq.len() != ql
            || dk.len() != kl
            || dv.len() != kl
        {
            return Err(Error::Unsupported(
                "flash attention backward: buffer lengths differ".into(),
            ));
        }
        if dims.tokens == 0 {
            return Ok(());
        }
        let kern = self.kernels(dims.head_dim, dims.softcap.is_some())?;
        let s = &self.stream;
        let (q_p, _g1) = q.device_ptr(s);
        let (k_p, _g2) = k.device_ptr(s);
        let (v_p, _g3) = v.device_ptr(s);
        let (o_p, _g4) = o.device_ptr(s);
        let (do_p, _g5) = dout.device_ptr(s);
        let (lse_p, _g6) = lse.device_ptr(s);
        let (dq_p, _g7) = dq.device_ptr_mut(s);
        let (dk_p, _g8) = dk.device_ptr_mut(s);
        let (dv_p, _g9) = dv.device_ptr_mut(s);
        let (cu_p, _g10) = cu_seqlens.device_ptr(s);
        Self::aligned(&[q_p, k_p, v_p, o_p, do_p, dq_p, dk_p, dv_p])?;
        let d = dims.head_dim;
        let t = self.tuning.tiles(d);
        let group = dims.heads / dims.kv_heads;
        let p = AttnParams {
            q: q_p,
            k: k_p,
            v: v_p,
            o: o_p,
            lse: lse_p,
            dout: do_p,
            dq: dq_p,
            dk: dk_p,
            dv: dv_p,
            cu_seqlens: cu_p,
            ..Self::params(dims)
        };
        let (kv_groups, q_groups) = (dims.kv_heads * dims.segments, dims.heads * dims.segments);
        // streamed per group: Q and dO of the `group` query heads (dK/dV); K and V (dQ)
        let p_kv = AttnParams {
            sched_chunk: self
                .tuning
                .sched_chunk(kv_groups, dims.max_seqlen * d * 4 * group),
            ..p
        };
        let p_q = AttnParams {
            sched_chunk: self
                .tuning
                .sched_chunk(q_groups, dims.max_seqlen * d * 4 / group),
            ..p
        };
        let rows = dims.tokens * dims.heads;
        let rows_per_block = 256 / (d / 8);
        let dot_cfg = LaunchConfig {
            grid_dim: (rows.div_ceil(rows_per_block) as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let dkdv_cfg = LaunchConfig {
            grid_dim: (
                Self::grid(dims.max_seqlen.div_ceil(t.kv_block_n()), kv_groups)?,
                1,
                1,
            ),
            block_dim: (t.kv_threads(), 1, 1),
            shared_mem_bytes: t.dkdv_smem(d) as u32,
        };
        let dq_cfg = LaunchConfig {
            grid_dim: (
                Self::grid(dims.max_seqlen.div_ceil(t.dq_block_m()), q_groups)?,
                1,
                1,
            ),
            block_dim: (t.dq_threads(), 1, 1),
            shared_mem_bytes: t.dq_smem(d) as u32,
        };
        if dkdv_cfg.grid_dim.0 == 0 {
            return Ok(());
        }
        let cap = dims.softcap.map(|c| SoftcapParams::new(dims.scale, c));
        let mut dkdv = s.launch_builder(&kern.dkdv);
        let mut dq = s.launch_builder(&kern.dq);
        dkdv.arg(&p_kv);
        dq.arg(&p_q);
        if let Some(cap) = &cap {
            // the *_softcap kernels' second parameter
            dkdv.arg(cap);
            dq.arg(cap);
        }
        // SAFETY: arguments checked against the kernels' structs (the softcap module's dK/dV
        // and dQ kernels take SoftcapParams second: `kern` was loaded for
        // `dims.softcap.is_some()`); buffer lengths checked above.
        unsafe {
            s.launch_builder(&kern.dot_do_o)
                .arg(&p)
                .launch(dot_cfg)
                .map_err(|e| cuda_err("backward D launch", e))?;
            dkdv.launch(dkdv_cfg)
                .map_err(|e| cuda_err("backward dK/dV launch", e))?;
            dq.launch(dq_cfg)
                .map_err(|e| cuda_err("backward dQ launch", e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_variant_has_its_own_define_and_module() {
        let t = Tuning::default();
        let plain = nvrtc_options(64, &t, false).unwrap();
        let cap = nvrtc_options(64, &t, true).unwrap();
        assert!(plain.contains(&"-DFA_SOFTCAP=0".to_string()));
        assert!(cap.contains(&"-DFA_SOFTCAP=1".to_string()));
        assert_ne!(module_name(128, false), module_name(128, true));
    }

    /// The plain module holds exactly the plain kernels, the softcap module the `*_softcap`
    /// ones (and the shared D pass), for both head dims. Needs libnvrtc (scripts/setup-nvrtc.sh);
    /// skipped without it unless CI / FERROTRON_REQUIRE_NVRTC is set.
    #[test]
    fn variants_compile_with_their_kernels() {
        if !nvrtc::nvrtc_available() {
            let required = ["CI", "FERROTRON_REQUIRE_NVRTC"]
                .iter()
                .any(|v| std::env::var(v).is_ok_and(|s| !s.is_empty() && s != "0" && s != "false"));
            assert!(!required, "libnvrtc not found");
            eprintln!("skipped: libnvrtc not found");
            return;
        }
        let entries = |ptx: &Ptx| -> Vec<String> {
            ptx.to_src()
                .lines()
                .filter_map(|l| l.split(".entry ").nth(1))
                .map(|r| r.trim_end_matches('(').trim().to_string())
                .collect()
        };
        for d in [64, 128] {
            let plain = entries(&FlashAttention::compile_ptx(d, "sm_90").unwrap());
            let cap = entries(&FlashAttention::compile_ptx_softcap(d, "sm_90").unwrap());
            let sorted = |mut v: Vec<String>| {
                v.sort();
                v
            };
            assert_eq!(
                sorted(plain),
                [
                    "flash_bwd_dkdv",
                    "flash_bwd_dot_do_o",
                    "flash_bwd_dq",
                    "flash_fwd"
                ],
                "D={d}"
            );
            assert_eq!(
                sorted(cap),
                [
                    "flash_bwd_dkdv_softcap",
                    "flash_bwd_dot_do_o",
                    "flash_bwd_dq_softcap",
                    "flash_fwd_softcap"
                ],
                "D={d}"
            );
        }
    }
}
