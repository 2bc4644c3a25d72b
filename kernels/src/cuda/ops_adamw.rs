//! Multi-tensor AdamW (kernels/cuda/adamw.cu): every piece of every [`AdamWGroup`] becomes one
//! (param, grad, m, v, n, wd) entry; up to 32 entries per launch, passed by value, so a whole
//! model's step is a handful of launches. The clipping factor is folded into the kernel's read
//! of g. Bias corrections are computed on the host in f64: step_size = lr / (1 − b1^t),
//! sqrt_bc2 = sqrt(1 − b2^t).

use super::backend::{CudaBackend, KArg::*, BLOCK};
use super::buffer::Bound;
use super::dtype::CudaAct;
use crate::backend::{AdamWGroup, AdamWStep};
use crate::{Error, Result};
use cudarc::driver::{CudaSlice, DeviceRepr, LaunchConfig};

pub const ADAMW_MAX_TENSORS: usize = 32;

/// Mirrors `struct AdamWTensors` in adamw.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct AdamWTensors {
    pub p: [u64; ADAMW_MAX_TENSORS],
    pub g: [u64; ADAMW_MAX_TENSORS],
    pub m: [u64; ADAMW_MAX_TENSORS],
    pub v: [u64; ADAMW_MAX_TENSORS],
    pub n: [i64; ADAMW_MAX_TENSORS],
    pub wd: [f32; ADAMW_MAX_TENSORS],
}

impl Default for AdamWTensors {
    fn default() -> Self {
        AdamWTensors {
            p: [0; ADAMW_MAX_TENSORS],
            g: [0; ADAMW_MAX_TENSORS],
            m: [0; ADAMW_MAX_TENSORS],
            v: [0; ADAMW_MAX_TENSORS],
            n: [0; ADAMW_MAX_TENSORS],
            wd: [0.0; ADAMW_MAX_TENSORS],
        }
    }
}
const _: () = assert!(std::mem::size_of::<AdamWTensors>() == ADAMW_MAX_TENSORS * (5 * 8 + 4));
const _: () = assert!(std::mem::offset_of!(AdamWTensors, wd) == ADAMW_MAX_TENSORS * 5 * 8);
// SAFETY: plain-old-data with the C layout of the kernel's struct.
unsafe impl DeviceRepr for AdamWTensors {}

impl<A: CudaAct> CudaBackend<A> {
    /// One AdamW step over every piece of every group, 32 pieces per launch.
    pub fn adamw_multi(
        &self,
        mut groups: Vec<AdamWGroup<'_, CudaSlice<f32>>>,
        h: &AdamWStep,
        grad_scale: f64,
    ) -> Result<()> {
        if h.step == 0 {
            return Err(Error::Unsupported("AdamW step must start at 1".into()));
        }
        for grp in &groups {
            grp.check()?;
        }
        let mut bind = Bound::new(&self.stream);
        // (p, g, m, v, n, wd) per piece, addresses offset to the piece's start.
        let mut table: Vec<(u64, u64, u64, u64, usize, f32)> = Vec::new();
        for grp in groups.iter_mut() {
            let at = |base: u64, start: usize| base + (start * 4) as u64;
            let (p, g) = (bind.w(&mut grp.param), bind.r(&grp.grad));
            let (m, v) = (bind.w(&mut grp.m), bind.w(&mut grp.v));
            for &(s, n, decay) in grp.pieces.iter().filter(|piece| piece.1 > 0) {
                let wd = if decay { h.weight_decay as f32 } else { 0.0 };
                table.push((at(p, s), at(g, s), at(m, s), at(v, s), n, wd));
            }
        }
        let t = i32::try_from(h.step).unwrap_or(i32::MAX);
        let step_size = (h.lr / (1.0 - h.beta1.powi(t))) as f32;
        let sqrt_bc2 = (1.0 - h.beta2.powi(t)).sqrt() as f32;
        for chunk in table.chunks(ADAMW_MAX_TENSORS) {
            let mut ts = AdamWTensors::default();
            let mut longest = 0;
            for (i, &(p, g, m, v, n, wd)) in chunk.iter().enumerate() {
                (ts.p[i], ts.g[i], ts.m[i], ts.v[i]) = (p, g, m, v);
                (ts.n[i], ts.wd[i]) = (n as i64, wd);
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
                F64(grad_scale),
                F32(step_size),
                F32(sqrt_bc2),
            ];
            self.launch("adamw", "adamw_multi", cfg, &args)?;
        }
        Ok(())
    }
}
