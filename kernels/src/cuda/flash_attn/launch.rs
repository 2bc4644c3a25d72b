//! Loading the FlashAttention module and launching its kernels.
//!
//! One NVRTC module per head dim (compiled with `-DHEAD_DIM=..` and the tile defines of
//! [`Tuning`] on first use, for the device's architecture) through the shared loader
//! (`cuda::nvrtc::load_module_with`), so its PTX is cached on disk like every other kernel's.
//! NVRTC needs no CUDA headers for this source.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cudarc::driver::sys::CUfunction_attribute;
use cudarc::driver::{
    CudaFunction, CudaStream, CudaView, CudaViewMut, DevicePtr, DevicePtrMut, LaunchConfig,
    PushKernelArg,
};
use cudarc::nvrtc::Ptx;
use half::bf16;

use super::params::{tiles, AttnParams, Tuning};
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
    kernels: Mutex<HashMap<usize, Arc<Kernels>>>,
}

/// NVRTC options for one head dim under `tuning`.
fn nvrtc_options(head_dim: usize, tuning: &Tuning) -> Result<Vec<String>> {
    if head_dim != 64 && head_dim != 128 {
        return Err(Error::Unsupported(format!(
            "flash attention: head_dim {head_dim} (supported: 64, 128)"
        )));
    }
    let tiles = tuning.tiles(head_dim);
    tiles.validate(head_dim)?;
    let mut o = vec![format!("-DHEAD_DIM={head_dim}"), "--use_fast_math".into()];
    o.extend(tiles.defines());
    Ok(o)
}

impl FlashAttention {
    /// Compile the source for one head dim (64 or 128) and architecture (`"sm_90"`) with the
    /// default tuning, without a GPU or the disk cache (NVRTC alone suffices): the CI check.
    pub fn compile_ptx(head_dim: usize, arch: &str) -> Result<Ptx> {
        Self::compile_ptx_with(head_dim, arch, &Tuning::default())
    }

    /// As [`Self::compile_ptx`] for a given tuning.
    pub fn compile_ptx_with(head_dim: usize, arch: &str, tuning: &Tuning) -> Result<Ptx> {
        let opts = nvrtc_options(head_dim, tuning)?;
        let name = format!("flash_attn_d{head_dim}");
        nvrtc::compile_ptx(&name, FLASH_ATTN_SRC, arch, &opts).map(Ptx::from_src)
    }

    /// Kernels are compiled lazily, per head dim, on first use, with the default tuning.
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

    fn kernels(&self, head_dim: usize) -> Result<Arc<Kernels>> {
        let mut map = self.kernels.lock().unwrap();
        if let Some(k) = map.get(&head_dim) {
            return Ok(k.clone());
        }
        let extra = nvrtc_options(head_dim, &self.tuning)?;
        let module = nvrtc::load_module_with(
            self.stream.context(),
            &format!("flash_attn_d{head_dim}"),
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
        let k = Arc::new(Kernels {
            fwd: load("flash_fwd", t.fwd_smem(head_dim))?,
            dot_do_o: load("flash_bwd_dot_do_o", 0)?,
            dkdv: load("flash_bwd_dkdv", t.dkdv_smem(head_dim))?,
            dq: load("flash_bwd_dq", t.dq_smem(head_dim))?,
        });
        map.insert(head_dim, k.clone());
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

    /// o = softmax(scale · q kᵀ + mask) v, lse = logsumexp(scale · q kᵀ + mask) (see `AttnDims`).
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
        let kern = self.kernels(dims.head_dim)?;
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
        // SAFETY: argument checked against the kernel's struct; buffer lengths checked above.
        unsafe { s.launch_builder(&kern.fwd).arg(&p).launch(cfg) }
            .map_err(|e| cuda_err("forward launch", e))?;
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
        let kern = self.kernels(dims.head_dim)?;
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
        // SAFETY: arguments checked against the kernels' struct; buffer lengths checked above.
        unsafe {
            s.launch_builder(&kern.dot_do_o)
                .arg(&p)
                .launch(dot_cfg)
                .map_err(|e| cuda_err("backward D launch", e))?;
            s.launch_builder(&kern.dkdv)
                .arg(&p_kv)
                .launch(dkdv_cfg)
                .map_err(|e| cuda_err("backward dK/dV launch", e))?;
            s.launch_builder(&kern.dq)
                .arg(&p_q)
                .launch(dq_cfg)
                .map_err(|e| cuda_err("backward dQ launch", e))?;
        }
        Ok(())
    }
}
