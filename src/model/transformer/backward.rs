//! Backward: every block in reverse, then the embedding, given dx = ∂loss/∂x_L from the head.
//!
//! dx is the gradient of the residual stream and flows through each block in place:
//!   x_{ℓ+1} = m + mlp(norm₂(m)):  the identity path leaves dx as ∂/∂m's direct part; the MLP
//!             path runs W_down, SwiGLU/GELU, W_gate/W_up backward into dh₂, and norm₂ backward
//!             ADDS its dx into dx (now ∂/∂m).
//!   m = x_ℓ + attn(...)·Woᵀ:  Wo backward gives do; attention backward (recomputing P from
//!             lse) gives dq, dk, dv; rope backward (Llama); the per-head q/k norm backward
//!             (Qwen3); Wq/Wk/Wv (GPT-2: the fused c_attn) backward into dh₁; norm₁ backward
//!             ADDS into dx (now ∂/∂x_ℓ).
//! A block whose activations forward did not keep (activation checkpointing) first runs its
//! forward again from its saved input x_ℓ, with the unit's weights still in hand.
//! Every weight gradient is ADDED into the unit's accumulator (micro-batches accumulate).
//! Key bias: GPT-2's (no RoPE) adds the same q_i·b_k to every score of row i, which softmax
//! ignores, so its gradient is exactly 0 and is kept exactly 0. After RoPE (Qwen2) the bias is
//! rotated differently at each key position, so it is no shift: its gradient is Σ_tokens dk
//! (after the rope backward), computed like every other bias.

use super::super::batch::DeviceBatch;
use super::super::config::Arch;
use super::super::layout::{Role, UnitSpec};
use super::norm::NormIn;
use super::{dst, src, t, tm, weight_grads, BlockActs, Forward, Transformer};
use ferrotron_kernels::{Backend, Dst, LinearDims, Result};
use ferrotron_zero::ParamStore;

impl Transformer {
    /// Runs every block's and the embedding's backward, given dx = ∂loss/∂x_L.
    pub fn backward<B: Backend, S: ParamStore<B> + ?Sized>(
        &self,
        b: &B,
        store: &mut S,
        batch: &DeviceBatch<B>,
        fwd: &Forward<B>,
        mut dx: B::Act,
    ) -> Result<()> {
        let (n, d) = (batch.tokens, self.cfg.hidden);
        for l in (0..self.cfg.layers).rev() {
            let u = self.layout.block_unit(l);
            store.before_use(b, u)?;
            store.before_grad(b, u)?;
            let (w, g) = store.parts();
            let unit = &self.layout.units[u];
            let x = &fwd.xs[l];
            // Activation checkpointing: the block's forward again, from its saved input.
            let recomputed;
            let acts = match &fwd.blocks[l] {
                Some(saved) => saved,
                None => {
                    let norm1 = self.attn_norm_forward(b, &w[u], unit, NormIn::Plain(x), n)?;
                    recomputed = self
                        .block_forward(b, &w[u], unit, x, norm1, batch, false)?
                        .0;
                    &recomputed
                }
            };
            self.block_backward(b, &w[u], &mut g[u], unit, x, acts, batch, &mut dx)?;
            store.after_grad(b, u)?;
            store.after_use(b, u)?;
        }
        let eu = self.embedding_unit();
        store.before_grad(b, eu)?;
        {
            let (_, g) = store.parts();
            let unit = &self.layout.units[eu];
            b.embedding_backward(
                src(&batch.input_ids),
                src(&dx),
                tm(&mut g[eu], unit, Role::TokenEmbedding),
                n,
                d,
            )?;
            if self.cfg.arch == Arch::Gpt2 {
                b.embedding_backward(
                    src(&batch.positions),
                    src(&dx),
                    tm(&mut g[eu], unit, Role::PositionEmbedding),
                    n,
                    d,
                )?;
            }
        }
        store.after_grad(b, eu)
    }

    #[allow(clippy::too_many_arguments)]
    fn block_backward<B: Backend>(
        &self,
        b: &B,
        w: &B::Act,
        g: &mut B::Acc,
        unit: &UnitSpec,
        x: &B::Act,
        a: &BlockActs<B>,
        batch: &DeviceBatch<B>,
        dx: &mut B::Act,
    ) -> Result<()> {
        let c = &self.cfg;
        let (n, d, f) = (batch.tokens, c.hidden, c.ffn);
        let (qd, kvd) = (c.heads * c.head_dim, c.kv_heads * c.head_dim);
        let gpt2 = c.arch == Arch::Gpt2;

        // MLP: out = mid + down(act);  dx currently holds ∂/∂out, which is also ∂/∂mid's direct path.
        let mut dact = b.zeros_act(n * f)?;
        self.linear_bwd(
            b,
            w,
            g,
            unit,
            (Role::Down, Role::DownBias),
            &a.act,
            dx,
            Some(&mut dact),
            self.lin(n, f, d),
        )?;
        let mut dup = b.zeros_act(n * f)?;
        let mut dh2 = b.zeros_act(n * d)?;
        if gpt2 {
            b.gelu_backward(src(&a.up), src(&dact), dst(&mut dup))?;
        } else {
            let mut dgate = b.zeros_act(n * f)?;
            b.swiglu_backward(
                src(&a.gate),
                src(&a.up),
                src(&dact),
                dst(&mut dgate),
                dst(&mut dup),
            )?;
            self.linear_bwd(
                b,
                w,
                g,
                unit,
                (Role::Gate, Role::GateBias),
                &a.h2,
                &dgate,
                Some(&mut dh2),
                self.lin(n, d, f),
            )?;
        }
        self.linear_bwd(
            b,
            w,
            g,
            unit,
            (Role::Up, Role::UpBias),
            &a.h2,
            &dup,
            Some(&mut dh2),
            self.lin(n, d, f),
        )?;
        let roles = (Role::MlpNorm, Role::MlpNormBias);
        self.norm_backward(
            b,
            w,
            g,
            unit,
            roles,
            &a.mid,
            (&a.mean2, &a.rstd2),
            &dh2,
            dx,
            n,
        )?;

        // attention: mid = x + o·Woᵀ;  dx now holds ∂/∂mid.
        let mut d_o = b.zeros_act(n * qd)?;
        self.linear_bwd(
            b,
            w,
            g,
            unit,
            (Role::O, Role::OBias),
            &a.o,
            dx,
            Some(&mut d_o),
            self.lin(n, qd, d),
        )?;
        let mut dq = b.empty_act(n * qd)?;
        let mut dk = b.empty_act(n * kvd)?;
        let mut dv = b.empty_act(n * kvd)?;
        let dims = self.attn_dims(batch, unit);
        b.attention_backward(
            src(&a.q),
            src(&a.k),
            src(&a.v),
            src(&a.o),
            src(&d_o),
            src(&a.lse),
            dst(&mut dq),
            dst(&mut dk),
            dst(&mut dv),
            src(&batch.cu_seqlens),
            &dims,
        )?;
        let mut dh1 = b.zeros_act(n * d)?;
        if gpt2 {
            let mut dqkv = b.empty_act(n * 3 * d)?;
            for (i, part) in [&dq, &dk, &dv].into_iter().enumerate() {
                b.copy_columns(src(part), d, 0, dst(&mut dqkv), 3 * d, i * d, n, d, false)?;
            }
            self.linear_bwd(
                b,
                w,
                g,
                unit,
                (Role::Qkv, Role::QkvBias),
                &a.h1,
                &dqkv,
                Some(&mut dh1),
                self.lin(n, d, 3 * d),
            )?;
            // The key bias adds q_i·b_k to every score of row i, which softmax ignores: its exact
            // gradient is 0. Keep it exactly 0 rather than f32 round-off, which Adam's g/(|g|+eps)
            // would turn into lr-sized steps.
            let kb = unit.tensor(Role::QkvBias);
            b.fill_zero_acc(Dst::range(g, kb.offset + d, d))?;
        } else {
            for (dx_, heads) in [(&mut dq, c.heads), (&mut dk, c.kv_heads)] {
                b.rope_backward(
                    dst(dx_),
                    src(&batch.positions),
                    n,
                    heads,
                    c.head_dim,
                    &self.rope_inv_freq,
                )?;
            }
            if c.qk_norm {
                let roles = (Role::QNorm, Role::KNorm);
                dq = self.head_norm_bwd(b, w, g, unit, roles.0, &a.q_raw, &a.q_rstd, &dq)?;
                dk = self.head_norm_bwd(b, w, g, unit, roles.1, &a.k_raw, &a.k_rstd, &dk)?;
            }
            self.linear_bwd(
                b,
                w,
                g,
                unit,
                (Role::Q, Role::QBias),
                &a.h1,
                &dq,
                Some(&mut dh1),
                self.lin(n, d, qd),
            )?;
            // The key bias (Qwen2) gets Σ_tokens dk: after RoPE it is no per-row shift.
            self.linear_bwd(
                b,
                w,
                g,
                unit,
                (Role::K, Role::KBias),
                &a.h1,
                &dk,
                Some(&mut dh1),
                self.lin(n, d, kvd),
            )?;
            self.linear_bwd(
                b,
                w,
                g,
                unit,
                (Role::V, Role::VBias),
                &a.h1,
                &dv,
                Some(&mut dh1),
                self.lin(n, d, kvd),
            )?;
        }
        let roles = (Role::AttnNorm, Role::AttnNormBias);
        self.norm_backward(b, w, g, unit, roles, x, (&a.mean1, &a.rstd1), &dh1, dx, n)
    }

    /// Backward of the per-head RMSNorm (Qwen3's q_norm / k_norm) over rows of Dh: returns the
    /// gradient of the input `raw` and ADDS the weight gradient into the unit's region of `role`.
    #[allow(clippy::too_many_arguments)]
    fn head_norm_bwd<B: Backend>(
        &self,
        b: &B,
        w: &B::Act,
        g: &mut B::Acc,
        unit: &UnitSpec,
        role: Role,
        raw: &B::Act,
        rstd: &B::Acc,
        dy: &B::Act,
    ) -> Result<B::Act> {
        use ferrotron_kernels::Buffer;
        let dh = self.cfg.head_dim;
        let mut dx = b.zeros_act(raw.len())?;
        b.rmsnorm_backward(
            src(raw),
            t(w, unit, role),
            src(rstd),
            src(dy),
            dst(&mut dx),
            tm(g, unit, role),
            rstd.len(),
            dh,
        )?;
        Ok(dx)
    }

    /// Linear backward for the weight of `roles.0` (and its bias `roles.1`, if the unit has one).
    #[allow(clippy::too_many_arguments)]
    fn linear_bwd<B: Backend>(
        &self,
        b: &B,
        w: &B::Act,
        g: &mut B::Acc,
        unit: &UnitSpec,
        (weight, bias): (Role, Role),
        x: &B::Act,
        dy: &B::Act,
        dx: Option<&mut B::Act>,
        dims: LinearDims,
    ) -> Result<()> {
        let grads = weight_grads(g, unit, weight, bias);
        b.linear_backward(
            src(x),
            t(w, unit, weight),
            src(dy),
            dx.map(dst),
            grads,
            dims,
        )
    }
}
