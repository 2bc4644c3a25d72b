//! `CudaBackend<A>`: the `Backend` contract on one NVIDIA GPU. Act = CudaSlice<A> (A = f32 or
//! bf16), Acc = CudaSlice<f32>, Idx = CudaSlice<i32>. All work is queued on the backend's one
//! stream; `synchronize` waits for it. This file holds construction and the launch plumbing;
//! the ops live in ops_*.rs, the trait mapping in trait_impl.rs. Attention on `CudaBackend<bf16>`
//! goes through one lazily created [`FlashAttention`] on the same stream where the shape allows
//! (ops_attention.rs decides), the fallback kernels otherwise.

use super::device::{cublaslt_present, open_context};
use super::dtype::CudaAct;
use super::flash_attn::FlashAttention;
use super::gemm::{Blas, Gemm};
use super::nvrtc;
use super::profile::Profiler;
use super::sources::MODULES;
use crate::{Error, Result};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, LaunchConfig, PushKernelArg,
};
use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, OnceLock};

pub struct CudaBackend<A: CudaAct> {
    pub(crate) ctx: Arc<CudaContext>,
    pub(crate) stream: Arc<CudaStream>,
    pub(crate) blas: Blas,
    funcs: Mutex<HashMap<String, CudaFunction>>,
    /// FlashAttention on `stream`, created on first bf16 attention call; `None` inside when the
    /// device cannot run it (compute capability < 8.0).
    pub(crate) flash: OnceLock<Option<FlashAttention>>,
    /// Whether attention may use FlashAttention at all (on by default; tests and benchmarks
    /// turn it off to reach the fallback kernels). See `set_flash_attention`.
    pub(crate) flash_enabled: AtomicBool,
    /// Rotary frequency tables on the device, keyed by their bits (ops_pointwise.rs `rope`).
    pub(crate) rope_tables: Mutex<Vec<RopeTable>>,
    /// Per-kernel device timing (off unless `set_profiling` turned it on).
    pub(crate) profiler: Profiler,
    _act: PhantomData<A>,
}

/// A rotary frequency table on the device, with its host values' bits (the cache key).
pub(crate) type RopeTable = (Vec<u64>, Arc<CudaSlice<f64>>);

/// A kernel argument (kernels take device addresses as u64 and sizes as long long / int).
pub(crate) enum KArg {
    P(u64),
    I64(i64),
    I32(i32),
    F32(f32),
    F64(f64),
    Attn(super::ops_attention::AttnShape),
    AdamW(Box<super::ops_adamw::AdamWTensors>),
}

pub(crate) const BLOCK: u32 = 256;

/// A 1-D grid for a grid-stride loop over `n` elements.
pub(crate) fn grid_for(n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(BLOCK as usize).clamp(1, 65536) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

pub(crate) fn cuda_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Cuda(format!("{what}: {e}"))
}

impl<A: CudaAct> CudaBackend<A> {
    /// Opens device `ordinal`. Errors (never panics) when the driver, NVRTC or cuBLASLt is
    /// missing. Kernels are compiled lazily, on first use of their module.
    pub fn new(ordinal: usize) -> Result<Self> {
        let ctx = open_context(ordinal)?;
        if !nvrtc::nvrtc_available() {
            return Err(Error::Cuda("CUDA requested but libnvrtc was not found (add the CUDA toolkit's lib64 to LD_LIBRARY_PATH)".into()));
        }
        if !cublaslt_present() {
            return Err(Error::Cuda("CUDA requested but libcublasLt was not found (add the CUDA toolkit's lib64 to LD_LIBRARY_PATH)".into()));
        }
        super::mem_pool::keep_freed_memory(&ctx)?;
        let stream = ctx.default_stream();
        let blas = Blas::new(stream.clone())?;
        Ok(CudaBackend {
            ctx,
            stream,
            blas,
            funcs: Mutex::new(HashMap::new()),
            flash: OnceLock::new(),
            flash_enabled: AtomicBool::new(true),
            rope_tables: Mutex::new(Vec::new()),
            profiler: Profiler::default(),
            _act: PhantomData,
        })
    }

    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Compiles and loads every kernel module now (instead of on first use).
    pub fn warm_up(&self) -> Result<()> {
        for (name, src) in MODULES {
            nvrtc::load_module(&self.ctx, name, src)?;
        }
        Ok(())
    }

    /// "<base>_f32" or "<base>_bf16".
    pub(crate) fn kname(base: &str) -> String {
        format!("{base}_{}", A::NAME)
    }

    fn func(&self, module: &str, name: &str) -> Result<CudaFunction> {
        let mut funcs = self
            .funcs
            .lock()
            .map_err(|_| Error::Cuda("kernel cache poisoned".into()))?;
        if let Some(f) = funcs.get(name) {
            return Ok(f.clone());
        }
        let src = MODULES
            .iter()
            .find(|(m, _)| *m == module)
            .map(|(_, s)| *s)
            .ok_or_else(|| Error::Cuda(format!("no kernel module {module}")))?;
        let m = nvrtc::load_module(&self.ctx, module, src)?;
        let f = m
            .load_function(name)
            .map_err(|e| cuda_err(&format!("kernel {name} in {module}.cu"), e))?;
        funcs.insert(name.to_string(), f.clone());
        Ok(f)
    }

    /// Queues kernel `name` of `module` on the stream.
    pub(crate) fn launch(
        &self,
        module: &str,
        name: &str,
        cfg: LaunchConfig,
        args: &[KArg],
    ) -> Result<()> {
        let f = self.func(module, name)?;
        self.profiler.time(
            &self.stream,
            || name.to_string(),
            0.0,
            || self.launch_now(&f, name, cfg, args),
        )
    }

    fn launch_now(
        &self,
        f: &CudaFunction,
        name: &str,
        cfg: LaunchConfig,
        args: &[KArg],
    ) -> Result<()> {
        let mut b = self.stream.launch_builder(f);
        for a in args {
            match a {
                KArg::P(v) => b.arg(v),
                KArg::I64(v) => b.arg(v),
                KArg::I32(v) => b.arg(v),
                KArg::F32(v) => b.arg(v),
                KArg::F64(v) => b.arg(v),
                KArg::Attn(v) => b.arg(v),
                KArg::AdamW(v) => b.arg(&**v),
            };
        }
        // SAFETY: each kernel's parameter list matches `args` (see the .cu file it names) and
        // every address points into a live region sized by the caller's checks.
        unsafe { b.launch(cfg) }
            .map(|_| ())
            .map_err(|e| cuda_err(&format!("launching {name}"), e))
    }

    /// One cuBLASLt matmul on the stream, timed in profiling mode under `what` and its shape.
    pub(crate) fn gemm(&self, what: &str, g: &Gemm) -> Result<()> {
        let flops = 2.0 * g.m as f64 * g.n as f64 * g.k as f64;
        let name = || {
            let t = |x: bool| if x { 'T' } else { 'N' };
            format!(
                "gemm {what} {}{} {}x{}x{}",
                t(g.transa),
                t(g.transb),
                g.m,
                g.n,
                g.k
            )
        };
        self.profiler
            .time(&self.stream, name, flops, || self.blas.matmul(g))
    }
}
