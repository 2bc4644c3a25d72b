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
//! forward again from its saved input x_ℓ, with the unit's weights still in hand. Every block
//! recomputes what forward never keeps (forward.rs): a from gate and up before W_down's backward,
//! h₂ = norm₂(m) before the MLP's, h₁ = norm₁(x_ℓ) before the attention projections' — the same
//! values forward computed (on the CPU bit for bit: the fused residual norm equals add-then-norm).
//! Gemma 2/3's sandwich norms: a branch normed before its residual add gets the norm's backward
//! of dx (on its saved input) instead of dx itself.
//! Every weight gradient is ADDED into the unit's accumulator (micro-batches accumulate).
//! Tensor parallelism: a row-parallel layer's backward needs ∂y for all N tokens (g's backward is
//! the identity; with sequence parallelism the scatter's backward all-gathers it), and gives
//! this rank's part of ∂x; a column-parallel layer's ∂x (∂h₁, ∂h₂) is a partial sum over the
//! group: summed (f: all-reduce), or with sequence parallelism reduce-scattered to N/tp tokens,
//! before the norm backward. The replicated biases get their gradient on rank 0 only (they were
//! added there) and are summed over the group at the step.
//! Key bias: GPT-2's (no RoPE), and a NoPE layer's (SmolLM3) without q/k norms, adds the same
//! q_i·b_k to every score of row i, which softmax ignores, so its gradient is exactly 0 and is
//! kept exactly 0. After RoPE (Qwen2) the bias is
//! rotated differently at each key position, so it is no shift: its gradient is Σ_tokens dk
//! (after the rope backward), computed like every other bias.

use super::super::batch::DeviceBatch;
use super::super::config::Arch;
use super::super::layout::{Role, UnitSpec};
use super::norm::NormIn;
use super::{dst, scaled_copy, src, t, tm, weight_grads, BlockActs, Forward, Transformer};
use ferrotron_kernels::{Backend, Buffer, Dst, LinearDims, Result};
use ferrotron_parallel::{NoTp, TpComm};
use ferrotron_zero::ParamStore;

impl Transformer {
    /// Runs every block's and the embedding's backward, given dx = ∂loss/∂x_L (one rank).
    pub fn backward<B: Backend, S: ParamStore<B> + ?Sized>(
        &self,
        b: &B,
        store: &mut S,
        batch: &DeviceBatch<B>,
        fwd: &Forward<B>,
        dx: B::Act,
    ) -> Result<()> {
        self.backward_tp(b, store, batch, fwd, dx, &NoTp)
    }

    /// `backward` as this rank of the tensor-parallel group `tp` (dx on this rank's residual
    /// tokens).
    pub fn backward_tp<B: Backend, S: ParamStore<B> + ?Sized>(
        &self,
        b: &B,
        store: &mut S,
        batch: &DeviceBatch<B>,
        fwd: &Forward<B>,
        dx: B::Act,
        tp: &dyn TpComm<B>,
    ) -> Result<()> {
        // the whole model is the chunk that starts at the embedding
        self.chunk_backward(b, store, batch, fwd, dx, true, tp)
            .map(|_| ())
    }

    /// The backward of the blocks `fwd` ran, given dx = ∂loss/∂(their output) on this rank's
    /// residual tokens; returns ∂loss/∂(their input).
    pub(super) fn blocks_backward<B: Backend, S: ParamStore<B> + ?Sized>(
        &self,
        b: &B,
        store: &mut S,
        batch: &DeviceBatch<B>,
        fwd: &Forward<B>,
        mut dx: B::Act,
        tp: &dyn TpComm<B>,
    ) -> Result<B::Act> {
        let n = self.residual_tokens(batch.tokens);
        for (i, l) in fwd.layers().enumerate().rev() {
            let u = self.layout.block_unit(l);
            store.before_use(b, u)?;
            store.before_grad(b, u)?;
            let (w, g) = store.parts();
            let unit = &self.layout.units[u];
            let x = &fwd.xs[i];
            // Activation checkpointing: the block's forward again, from its saved input.
            let recomputed;
            let acts = match &fwd.blocks[i] {
                Some(saved) => saved,
                None => {
                    let norm1 = self.attn_norm_forward(b, &w[u], unit, NormIn::Plain(x), n)?;
                    recomputed = self
                        .block_forward(b, &w[u], unit, x, norm1, batch, tp, false)?
                        .0;
                    &recomputed
                }
            };
            self.block_backward(b, &w[u], &mut g[u], unit, x, acts, batch, tp, &mut dx)?;
            store.after_grad(b, u)?;
            store.after_use(b, u)?;
        }
        Ok(dx)
    }

    /// Gemma 2/3: ∂/∂y of a branch output y normed before its residual add, given dz = ∂/∂norm(y)
    /// (the residual stream's gradient); the norm's weight gradient added into `g`. None
    /// without sandwich norms (the branch gets dz itself).
    #[allow(clippy::too_many_arguments)]
    fn sandwich_norm_backward<B: Backend>(
        &self,
        b: &B,
        w: &B::Act,
        g: &mut B::Acc,
        unit: &UnitSpec,
        role: Role,
        y: &B::Act,
        dz: &B::Act,
    ) -> Result<Option<B::Act>> {
        if !self.cfg.sandwich_norms {
            return Ok(None);
        }
        let n = y.len() / self.cfg.hidden;
        let stats = self.normed(b, w, unit, (role, role), NormIn::Plain(y), n)?;
        let mut dy = b.zeros_act(y.len())?;
        let roles = (role, role);
        let stats = (&stats.mean, &stats.rstd);
        self.norm_backward(b, w, g, unit, roles, y, stats, dz, &mut dy, n)?;
        Ok(Some(dy))
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
        tp: &dyn TpComm<B>,
        dx: &mut B::Act,
    ) -> Result<()> {
        let c = &self.cfg;
        let (n, d) = (batch.tokens, c.hidden);
        let nr = self.residual_tokens(n);
        let (heads, kv_heads, f) = self.local_dims();
        let (qd, kvd) = (heads * c.head_dim, kv_heads * c.head_dim);
        let gpt2 = c.arch == Arch::Gpt2;

        // MLP: out = mid + r·down(act) (r: Granite's residual_multiplier, else 1);  dx currently
        // holds ∂/∂out, which is also ∂/∂mid's direct path; the branch gets r·dx.
        let mut act = b.empty_act(n * f)?;
        self.mlp_activation(b, &a.gate, &a.up, &mut act)?;
        let mut dact = b.zeros_act(n * f)?;
        // Gemma 2/3: the branch is norm_mo(r·down(act)); its gradient passes that norm first
        let d_normed =
            self.sandwich_norm_backward(b, w, g, unit, Role::MlpOutNorm, &a.mlp_out, dx)?;
        let d_branch = d_normed.as_ref().unwrap_or(dx);
        let d_down = scaled_copy(b, d_branch, c.residual_multiplier)?;
        self.row_parallel_bwd(
            b,
            w,
            g,
            unit,
            (Role::Down, Role::DownBias),
            &act,
            d_down.as_ref().unwrap_or(d_branch),
            &mut dact,
            f,
            n,
            tp,
        )?;
        drop(act);
        let roles = (Role::MlpNorm, Role::MlpNormBias);
        let norm2 = self.normed(b, w, unit, roles, NormIn::Plain(&a.mid), nr)?;
        let h2_all = self.gather_tokens(b, tp, &norm2.y, n)?;
        let h2 = h2_all.as_ref().unwrap_or(&norm2.y);
        let mut dup = b.zeros_act(n * f)?;
        let mut dh2 = b.zeros_act(n * d)?;
        if gpt2 {
            b.gelu_backward(self.cfg.gelu, src(&a.up), src(&dact), dst(&mut dup))?;
        } else {
            let mut dgate = b.zeros_act(n * f)?;
            b.glu_backward(
                self.cfg.glu,
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
                h2,
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
            h2,
            &dup,
            Some(&mut dh2),
            self.lin(n, d, f),
        )?;
        let dh2 = self.column_input_grad(b, tp, dh2, n)?;
        self.norm_backward(
            b,
            w,
            g,
            unit,
            roles,
            &a.mid,
            (&norm2.mean, &norm2.rstd),
            &dh2,
            dx,
            nr,
        )?;
        drop((norm2, h2_all));

        // attention: mid = x + r·o·Woᵀ;  dx now holds ∂/∂mid; the branch gets r·dx.
        let mut d_o = b.zeros_act(n * qd)?;
        let d_normed =
            self.sandwich_norm_backward(b, w, g, unit, Role::AttnOutNorm, &a.attn_out, dx)?;
        let d_branch = d_normed.as_ref().unwrap_or(dx);
        let d_attn = scaled_copy(b, d_branch, c.residual_multiplier)?;
        self.row_parallel_bwd(
            b,
            w,
            g,
            unit,
            (Role::O, Role::OBias),
            &a.o,
            d_attn.as_ref().unwrap_or(d_branch),
            &mut d_o,
            qd,
            n,
            tp,
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
        let norm1 = self.attn_norm_forward(b, w, unit, NormIn::Plain(x), nr)?;
        let h1_all = self.gather_tokens(b, tp, &norm1.y, n)?;
        let h1 = h1_all.as_ref().unwrap_or(&norm1.y);
        let mut dh1 = b.zeros_act(n * d)?;
        if gpt2 {
            let mut dqkv = b.empty_act(n * 3 * qd)?;
            for (i, part) in [&dq, &dk, &dv].into_iter().enumerate() {
                b.copy_columns(
                    src(part),
                    qd,
                    0,
                    dst(&mut dqkv),
                    3 * qd,
                    i * qd,
                    n,
                    qd,
                    false,
                )?;
            }
            self.linear_bwd(
                b,
                w,
                g,
                unit,
                (Role::Qkv, Role::QkvBias),
                h1,
                &dqkv,
                Some(&mut dh1),
                self.lin(n, d, 3 * qd),
            )?;
            // The key bias adds q_i·b_k to every score of row i, which softmax ignores: its exact
            // gradient is 0. Keep it exactly 0 rather than f32 round-off, which Adam's g/(|g|+eps)
            // would turn into lr-sized steps. (This rank's k block of the bias: qd elements.)
            let kb = unit.tensor(Role::QkvBias);
            b.fill_zero_acc(Dst::range(g, kb.offset + qd, qd))?;
        } else {
            let rotary = if self.rotates(unit) {
                vec![(&mut dq, heads), (&mut dk, kv_heads)]
            } else {
                Vec::new()
            };
            let (table, scale) = self.rope_for(batch, unit);
            for (dx_, heads) in rotary {
                b.rope_backward(
                    dst(dx_),
                    src(&batch.positions),
                    n,
                    heads,
                    c.head_dim,
                    table,
                    scale,
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
                h1,
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
                h1,
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
                h1,
                &dv,
                Some(&mut dh1),
                self.lin(n, d, kvd),
            )?;
            // Without a rotation or a norm after it (SmolLM3's NoPE layers), the key bias is a
            // per-row shift of the scores again, as in GPT-2: its exact gradient is 0; keep it.
            if !self.rotates(unit) && !c.qk_norm {
                if let Some((offset, numel)) = unit.region(Role::KBias) {
                    b.fill_zero_acc(Dst::range(g, offset, numel))?;
                }
            }
        }
        let dh1 = self.column_input_grad(b, tp, dh1, n)?;
        let roles = (Role::AttnNorm, Role::AttnNormBias);
        let stats = (&norm1.mean, &norm1.rstd);
        self.norm_backward(b, w, g, unit, roles, x, stats, &dh1, dx, nr)
    }

    /// A row-parallel layer's backward: ∂y on this rank's residual tokens (all-gathered to N
    /// with sequence parallelism) gives the weight gradient (and the replicated bias's, on rank
    /// 0) and this rank's columns of ∂x.
    #[allow(clippy::too_many_arguments)]
    fn row_parallel_bwd<B: Backend>(
        &self,
        b: &B,
        w: &B::Act,
        g: &mut B::Acc,
        unit: &UnitSpec,
        (weight, bias): (Role, Role),
        x: &B::Act,
        dy: &B::Act,
        dx: &mut B::Act,
        inp: usize,
        n: usize,
        tp: &dyn TpComm<B>,
    ) -> Result<()> {
        let bias = if self.tp.adds_replicated_bias() {
            bias
        } else {
            weight
        };
        let dy_all = self.gather_tokens(b, tp, dy, n)?;
        let dy = dy_all.as_ref().unwrap_or(dy);
        let dims = self.lin(n, inp, self.cfg.hidden);
        self.linear_bwd(b, w, g, unit, (weight, bias), x, dy, Some(dx), dims)
    }

    /// The gradient of a column-parallel layer's input, summed over the group (f's backward:
    /// all-reduce; with sequence parallelism reduce-scattered to this rank's N/tp tokens).
    fn column_input_grad<B: Backend>(
        &self,
        b: &B,
        tp: &dyn TpComm<B>,
        mut partial: B::Act,
        n: usize,
    ) -> Result<B::Act> {
        if !self.tp.is_parallel() {
            return Ok(partial);
        }
        if self.tp.sequence_parallel {
            let mut local = b.zeros_act(self.residual_tokens(n) * self.cfg.hidden)?;
            tp.sp_scatter(b, src(&partial), dst(&mut local))?;
            return Ok(local);
        }
        tp.f_backward(b, dst(&mut partial))?;
        Ok(partial)
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
        let dh = raw.len() / rstd.len();
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
            self.cfg.norm_weight_offset,
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
