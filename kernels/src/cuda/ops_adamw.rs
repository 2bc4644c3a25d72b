//! Multi-tensor AdamW (kernels/cuda/adamw.cu): up to 16 (param, grad, m, v) fp32 regions per
//! launch, passed by value; `adamw_multi` splits longer lists. Bias corrections are computed on
//! the host in f64: step_size = lr / (1 − b1^t), sqrt_bc2 = sqrt(1 − b2^t).

use super::backend::{CudaBackend, KArg::*, BLOCK};
use super::buffer::{check_len, Bound};
use super::dtype::CudaAct;
use crate::backend::{AdamWStep, Dst, Src};
use crate::{Error, Result};
use cudarc::driver::{CudaSlice, DeviceRepr, LaunchConfig};

pub const ADAMW_MAX_TENSORS: usize = 16;

/// Mirrors `struct AdamWTensors` in adamw.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct AdamWTensors {
    pub p: [u64; ADAMW_MAX_TENSORS],
    pub g: [u64; ADAMW_MAX_TENSORS],
    pub m: [u64; ADAMW_MAX_TENSORS],
    pub v: [u64; ADAMW_MAX_TENSORS],
    pub n: [i64; ADAMW_MAX_TENSORS],
}
// SAFETY: plain-old-data with the C layout of the kernel's struct.
unsafe impl DeviceRepr for AdamWTensors {}

/// One tensor's AdamW regions: (param, grad, m, v), all the same length.
pub type AdamWRegions<'a> = (
    Dst<'a, CudaSlice<f32>>,
    Src<'a, CudaSlice<f32>>,
    Dst<'a, CudaSlice<f32>>,
    Dst<'a, CudaSlice<f32>>,
);

impl<A: CudaAct> CudaBackend<A> {
    /// One AdamW step over many tensors, 16 per launch.
    pub fn adamw_multi(&self, tensors: Vec<AdamWRegions<'_>>, h: &AdamWStep) -> Result<()> {
        if h.step == 0 {
            return Err(Error::Unsupported("AdamW step must start at 1".into()));
        }
        let mut tensors = tensors;
        for (p, g, m, v) in &tensors {
            check_len("adamw grad", g.len, p.len)?;
            check_len("adamw m", m.len, p.len)?;
            check_len("adamw v", v.len, p.len)?;
        }
        let mut bind = Bound::new(&self.stream);
        let mut table: Vec<(u64, u64, u64, u64, usize)> = Vec::with_capacity(tensors.len());
        for (p, g, m, v) in tensors.iter_mut().filter(|t| t.0.len > 0) {
            let n = p.len;
            table.push((bind.w(p), bind.r(g), bind.w(m), bind.w(v), n));
        }
        let t = h.step as i32;
        let step_size = (h.lr / (1.0 - h.beta1.powi(t))) as f32;
        let sqrt_bc2 = (1.0 - h.beta2.powi(t)).sqrt() as f32;
        for chunk in table.chunks(ADAMW_MAX_TENSORS) {
            let mut ts = AdamWTensors::default();
            let mut longest = 0;
            for (i, &(p, g, m, v, n)) in chunk.iter().enumerate() {
                (ts.p[i], ts.g[i], ts.m[i], ts.v[i], ts.n[i]) = (p, g, m, v, n as i64);
                longest = longest.max(n);
            }
            let blocks = longest.div_ceil(BLOCK as usize).clamp(1, 4096) as u32;
            let cfg = LaunchConfig {
                grid_dim: (blocks, chunk.len() as u32, 1),
                block_dim: (BLOCK, 1, 1),
                shared_mem_bytes: 0,
            };
            let args = [
                AdamW(Box::new(ts)),
                F32(h.lr as f32),
                F32(h.beta1 as f32),
                F32(h.beta2 as f32),
                F32(h.eps as f32),
                F32(h.weight_decay as f32),
                F32(step_size),
                F32(sqrt_bc2),
            ];
            self.launch("adamw", "adamw_multi", cfg, &args)?;
        }
        Ok(())
    }
}
