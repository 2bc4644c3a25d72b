//! The norm of the configured family, forward and backward:
//!   Llama: RMSNorm   y = x·rstd·w,              rstd = 1/sqrt(mean x² + eps)      (mean unused)
//!   GPT-2: LayerNorm y = (x − mean)·rstd·w + b,  rstd = 1/sqrt(var x + eps)
//!   OLMo-2: no input norms (norm₁, norm₂ are the identity: y = x, dx += dy; `pre_norms`).
//! Statistics are saved per token ([N], accumulation precision) for the backward, which ADDS
//! dx into the residual stream's gradient and dw (db) into the unit's gradient.
//!
//! norm_forward_in with a residual input: h += y, then norm(h), in one pass (the residual add fused with the norm
//! after it). It needs no backward of its own: the add's backward is the identity, so the
//! residual gradient dx, with the norm backward (on the saved h) added into it, is the gradient
//! of both h and y — which is how backward.rs already flows dx.

use super::super::config::Arch;
use super::super::layout::{Role, UnitSpec};
use super::{dst, src, t, tm, weight_grads, NormOut, Transformer};
use ferrotron_kernels::{Backend, Result};

/// The input of a norm forward: x as it is, or the residual stream h with y still to add into it.
pub(super) enum NormIn<'a, B: Backend> {
    Plain(&'a B::Act),
    Residual { h: &'a mut B::Act, y: &'a B::Act },
}

impl<'a, B: Backend> NormIn<'a, B> {
    /// `Residual` when there is something to add into h, else `Plain(h)`.
    pub(super) fn adding(h: &'a mut B::Act, y: Option<&'a B::Act>) -> Self {
        match y {
            Some(y) => NormIn::Residual { h, y },
            None => NormIn::Plain(h),
        }
    }
}

impl Transformer {
    /// Whether the norm of `weight` is the identity: a block's input norms under OLMo-2.
    fn is_identity(&self, weight: Role) -> bool {
        !self.cfg.pre_norms && matches!(weight, Role::AttnNorm | Role::MlpNorm)
    }

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
        if self.is_identity(weight) {
            return b.copy_columns(src(x), d, 0, dst(y), d, 0, n, d, false);
        }
        match self.cfg.arch {
            Arch::Llama => b.rmsnorm_forward(
                src(x),
                t(w, unit, weight),
                dst(y),
                dst(rstd),
                n,
                d,
                eps,
                self.cfg.norm_weight_offset,
            ),
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

    /// norm(x) → `out` (output and statistics), where x is `input` as it is, or the residual
    /// stream h after h += y: the residual add fused with the norm after it.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn norm_forward_in<B: Backend>(
        &self,
        b: &B,
        w: &B::Act,
        unit: &UnitSpec,
        (weight, bias): (Role, Role),
        input: NormIn<'_, B>,
        out: &mut NormOut<B>,
        n: usize,
    ) -> Result<()> {
        let NormOut { y: o, mean, rstd } = out;
        let (h, y) = match input {
            NormIn::Plain(x) => {
                return self.norm_forward(b, w, unit, weight, bias, x, o, mean, rstd, n)
            }
            NormIn::Residual { h, y } => (h, y),
        };
        let (d, eps) = (self.cfg.hidden, self.cfg.norm_eps);
        if self.is_identity(weight) {
            b.add_inplace(dst(h), src(y))?;
            return b.copy_columns(src(h), d, 0, dst(o), d, 0, n, d, false);
        }
        match self.cfg.arch {
            Arch::Llama => b.residual_rmsnorm_forward(
                dst(h),
                src(y),
                t(w, unit, weight),
                dst(o),
                dst(rstd),
                n,
                d,
                eps,
                self.cfg.norm_weight_offset,
            ),
            Arch::Gpt2 => b.residual_layernorm_forward(
                dst(h),
                src(y),
                t(w, unit, weight),
                t(w, unit, bias),
                dst(o),
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
        if self.is_identity(weight) {
            return b.add_inplace(dst(dx), src(dy));
        }
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
                self.cfg.norm_weight_offset,
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
