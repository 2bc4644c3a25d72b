//! The norm of the configured family, forward and backward:
//!   Llama: RMSNorm   y = x·rstd·w,              rstd = 1/sqrt(mean x² + eps)      (mean unused)
//!   GPT-2: LayerNorm y = (x − mean)·rstd·w + b,  rstd = 1/sqrt(var x + eps)
//! Statistics are saved per token ([N], accumulation precision) for the backward, which ADDS
//! dx into the residual stream's gradient and dw (db) into the unit's gradient.

use super::super::config::Arch;
use super::super::layout::{Role, UnitSpec};
use super::{dst, src, t, tm, weight_grads, Transformer};
use ferrotron_kernels::{Backend, Result};

impl Transformer {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn norm_forward<B: Backend>(
        &self,
        b: &B,
        w: &B::Act,
        unit: &UnitSpec,
        weight: Role,
        bias: Role,
        x: &B::Act,
        y: &mut B::Act,
        mean: &mut B::Acc,
        rstd: &mut B::Acc,
        n: usize,
    ) -> Result<()> {
        let (d, eps) = (self.cfg.hidden, self.cfg.norm_eps);
        match self.cfg.arch {
            Arch::Llama => {
                b.rmsnorm_forward(src(x), t(w, unit, weight), dst(y), dst(rstd), n, d, eps)
            }
            Arch::Gpt2 => b.layernorm_forward(
                src(x),
                t(w, unit, weight),
                t(w, unit, bias),
                dst(y),
                dst(mean),
                dst(rstd),
                n,
                d,
                eps,
            ),
        }
    }

    /// dx += ∂/∂x of the norm; weight (and bias) gradients added into `g`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn norm_backward<B: Backend>(
        &self,
        b: &B,
        w: &B::Act,
        g: &mut B::Acc,
        unit: &UnitSpec,
        (weight, bias): (Role, Role),
        x: &B::Act,
        (mean, rstd): (&B::Acc, &B::Acc),
        dy: &B::Act,
        dx: &mut B::Act,
        n: usize,
    ) -> Result<()> {
        let d = self.cfg.hidden;
        match self.cfg.arch {
            Arch::Llama => b.rmsnorm_backward(
                src(x),
                t(w, unit, weight),
                src(rstd),
                src(dy),
                dst(dx),
                tm(g, unit, weight),
                n,
                d,
            ),
            Arch::Gpt2 => {
                let grads = weight_grads(g, unit, weight, bias);
                b.layernorm_backward(
                    src(x),
                    t(w, unit, weight),
                    src(mean),
                    src(rstd),
                    src(dy),
                    dst(dx),
                    grads,
                    n,
                    d,
                )
            }
        }
    }
}
