//! Decoupled AdamW (see backend::AdamWStep for the exact update), torch.optim.AdamW semantics
//! (foreach = False, amsgrad = False, maximize = False). For each element, with t = h.step:
//!   p ← p·(1 − lr·wd)
//!   m ← m + (1 − β1)·(g − m)           (torch: exp_avg.lerp_(grad, 1 − β1))
//!   v ← β2·v + (1 − β2)·g²
//!   p ← p − (lr / (1 − β1^t)) · m / (sqrt(v) / sqrt(1 − β2^t) + eps)
//! g is read as g·T(grad_scale) in T when a clipping factor is given (what `elementwise::scale`,
//! scaling the gradient in place first, would store). Scalars in f64; each element updated in f64 and stored back as T.
//! Parallel over chunks (the GEMM team, team.rs), each at the machine's vector width (simd.rs; the f64 math vectorizes
//! as it is, so every width gives the same bits).

use super::team::{self, Pieces};
use super::CpuFloat;
use crate::backend::AdamWStep;

/// Elements per parallel work item.
const CHUNK: usize = 1 << 13;

pub fn step<T: CpuFloat>(
    param: &mut [T],
    grad: &[T],
    m: &mut [T],
    v: &mut [T],
    h: &AdamWStep,
    grad_scale: f64,
) {
    let n = param.len();
    assert!(
        grad.len() == n && m.len() == n && v.len() == n,
        "adamw_step: param, grad, m, v lengths differ"
    );
    assert!(h.step >= 1, "adamw_step: step counts from 1");
    let t = i32::try_from(h.step).unwrap_or(i32::MAX);
    let k = Coefs {
        decay: 1.0 - h.lr * h.weight_decay,
        step_size: h.lr / (1.0 - h.beta1.powi(t)),
        bias2_sqrt: (1.0 - h.beta2.powi(t)).sqrt(),
        b1c: 1.0 - h.beta1,
        b2: h.beta2,
        b2c: 1.0 - h.beta2,
        eps: h.eps,
        grad_scale,
    };
    let (pp, mp, vp) = (Pieces::new(param), Pieces::new(m), Pieces::new(v));
    team::for_ranges(n, CHUNK, &|r| {
        // SAFETY: for_ranges's ranges are disjoint
        let (p, m, v) = unsafe { (pp.get(r.clone()), mp.get(r.clone()), vp.get(r.clone())) };
        step_chunk(p, &grad[r], m, v, k)
    });
}

/// The per-step scalars of the update (see the top comment).
#[derive(Clone, Copy)]
struct Coefs {
    decay: f64,
    step_size: f64,
    bias2_sqrt: f64,
    b1c: f64,
    b2: f64,
    b2c: f64,
    eps: f64,
    grad_scale: f64,
}

crate::simd_fn! {
    fn step_chunk<T: CpuFloat>(p: &mut [T], g: &[T], m: &mut [T], v: &mut [T], k: Coefs) {
        let scale = T::from_f64c(k.grad_scale);
        let n = p.len().min(g.len()).min(m.len()).min(v.len());
        for i in 0..n {
            let g64 = if k.grad_scale == 1.0 {
                g[i].to_f64c()
            } else {
                (g[i] * scale).to_f64c()
            };
            let m64 = m[i].to_f64c() + k.b1c * (g64 - m[i].to_f64c());
            let v64 = k.b2 * v[i].to_f64c() + k.b2c * g64 * g64;
            let p64 = p[i].to_f64c() * k.decay - k.step_size * m64 / (v64.sqrt() / k.bias2_sqrt + k.eps);
            (p[i], m[i], v[i]) = (T::from_f64c(p64), T::from_f64c(m64), T::from_f64c(v64));
        }
    }
}
