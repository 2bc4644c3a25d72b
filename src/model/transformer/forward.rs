//! Forward: the embedding and every block, keeping what backward needs, or with
//! `recompute_blocks` only each block's input (backward.rs runs the block again from it).
//!
//!   x₀ = E[ids] (+ P[pos] for GPT-2)
//!   block ℓ:  h₁ = norm₁(x_ℓ);  q, k, v = h₁·W{q,k,v}ᵀ (+ b);
//!             q, k ← rmsnorm over each head (Qwen3: q_norm, k_norm);  q, k ← rope(q, k) (Llama)
//!             o = attn(q, k, v) (causal, per segment, the layer's sliding window; lse saved)
//!             m = x_ℓ + o·Woᵀ (+ b)
//!             h₂ = norm₂(m);  a = act(h₂·W_gateᵀ) ⊙ h₂·W_upᵀ (Llama: SwiGLU, Gemma: GeGLU)
//!                             | gelu(h₂·W_fc) (GPT-2)
//!             x_{ℓ+1} = m + a·W_downᵀ (+ b)
//! Gemma 2/3 (sandwich norms): m = x_ℓ + norm_ao(o·Woᵀ) and x_{ℓ+1} = m + norm_mo(a·W_downᵀ),
//! whose inputs are saved (`attn_out`, `mlp_out`; W_down's output is computed even when a
//! recomputation needs no block output).
//! Saved per block (`BlockActs`, none with `recompute_blocks`): q, k, v (and Qwen3's q, k before
//! the head norms with their rstd), o, lse, m, gate, up. Not saved, because backward recomputes
//! them in one elementwise pass each (no matmul): h₁ = norm₁(x_ℓ), h₂ = norm₂(m) with their
//! statistics, and a — 2·D + F of the 7·D + 3·F elements per token (kv heads = heads) a block
//! would otherwise keep.
//! `Forward::xs[ℓ]` holds x_ℓ, the input of block ℓ (and x_L the final state), always.
//! Each unit is gathered (`before_use`) only while its block runs.
//!
//! Tensor parallelism (model/tensor_parallel.rs; the regions are ferrotron-parallel's
//! tensor_parallel): each rank computes its heads and MLP columns from the whole normed input
//! (f: identity forward), and the row-parallel outputs o·Woᵀ and a·W_downᵀ are partial sums,
//! summed over the group (g: all-reduce) before the residual add, with the replicated bias added
//! by rank 0 only. With sequence parallelism the residual stream, norms and their outputs hold
//! this rank's N/tp tokens: h₁ and h₂ are all-gathered before the column-parallel layers, and the
//! partial outputs reduce-scattered instead of all-reduced. Saved: the local h₁, h₂ (backward
//! gathers them again), the local heads' q, k, v, o, lse and the local MLP columns.
//!
//! Residual adds are fused with the norm that follows them (`Backend::residual_*norm_forward`,
//! h += y then norm(h), one pass over memory): m = x_ℓ + o·Woᵀ with norm₂ inside block ℓ, and
//! x_{ℓ+1} = m + a·W_downᵀ (and GPT-2's x₀ = E[ids] + P[pos]) with norm₁ at the start of the
//! next block, whose unit holds that norm's weights. Only x_L's add stays separate (norm_f
//! runs in the head). The values are those of add-then-norm, bit for bit on the CPU.

use super::super::batch::DeviceBatch;
use super::super::config::Arch;
use super::super::layout::{Role, UnitSpec};
use super::norm::NormIn;
use super::{dst, opt, scale_unless_one, src, t, BlockActs, Forward, NormOut, Transformer};
use ferrotron_kernels::{Backend, Result};
use ferrotron_parallel::{NoTp, TpComm};
use ferrotron_zero::ParamStore;

impl Transformer {
    /// The embedding and every block, on one rank (no tensor parallelism).
    pub fn forward<B: Backend, S: ParamStore<B> + ?Sized>(
        &self,
        b: &B,
        store: &mut S,
        batch: &DeviceBatch<B>,
    ) -> Result<Forward<B>> {
        self.forward_tp(b, store, batch, &NoTp)
    }

    /// The embedding and every block, as this rank of the tensor-parallel group `tp` computes
    /// them (every rank of the group calls it with the same batch).
    pub fn forward_tp<B: Backend, S: ParamStore<B> + ?Sized>(
        &self,
        b: &B,
        store: &mut S,
        batch: &DeviceBatch<B>,
        tp: &dyn TpComm<B>,
    ) -> Result<Forward<B>> {
        // the whole model is the chunk of every block, from the embedding
        self.chunk_forward(b, store, batch, 0..self.cfg.layers, None, tp)
    }

    /// Blocks `layers` from their complete input `x` on this rank's residual tokens (plus
    /// `pos`, still to be added: GPT-2's positions at block 0); the last state returned is their
    /// complete output (x_L, or a pipeline chunk's output).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn blocks_forward<B: Backend, S: ParamStore<B> + ?Sized>(
        &self,
        b: &B,
        store: &mut S,
        batch: &DeviceBatch<B>,
        layers: std::ops::Range<usize>,
        mut x: B::Act,
        pos: Option<B::Act>,
        tp: &dyn TpComm<B>,
    ) -> Result<Forward<B>> {
        let n = self.residual_tokens(batch.tokens);
        let first_block = layers.start;
        let mut xs = Vec::with_capacity(layers.len() + 1);
        let mut blocks: Vec<Option<BlockActs<B>>> = Vec::with_capacity(layers.len());
        // What is still to be added into x: m of the previous block, or GPT-2's positions. With
        // recomputation only this m outlives its block (until the next block has added it).
        let mut pending = pos;
        for l in layers {
            let u = self.layout.block_unit(l);
            store.before_use(b, u)?;
            let (w, _) = store.parts();
            let unit = &self.layout.units[u];
            let residual = match blocks.last() {
                Some(Some(prev)) => Some(&prev.mid),
                _ => pending.as_ref(),
            };
            let norm1 =
                self.attn_norm_forward(b, &w[u], unit, NormIn::adding(&mut x, residual), n)?;
            let (acts, out) = self.block_forward(b, &w[u], unit, &x, norm1, batch, tp, true)?;
            store.after_use(b, u)?;
            if self.recompute_blocks {
                pending = Some(acts.mid);
                blocks.push(None);
            } else {
                pending = None;
                blocks.push(Some(acts));
            }
            xs.push(std::mem::replace(
                &mut x,
                out.expect("asked for the block output"),
            ));
        }
        // x_L = out + m of the last block: a plain add, because its norm (norm_f) runs in the
        // head, after forward has returned.
        let last = match blocks.last() {
            Some(Some(prev)) => Some(&prev.mid),
            _ => pending.as_ref(),
        };
        if let Some(y) = last {
            b.add_inplace(dst(&mut x), src(y))?;
        }
        xs.push(x);
        Ok(Forward {
            xs,
            blocks,
            first_block,
        })
    }

    /// h₁ = norm₁(x) with its statistics, x given as it is or with the residual still to add.
    pub(super) fn attn_norm_forward<B: Backend>(
        &self,
        b: &B,
        w: &B::Act,
        unit: &UnitSpec,
        x: NormIn<'_, B>,
        n: usize,
    ) -> Result<NormOut<B>> {
        self.normed(b, w, unit, (Role::AttnNorm, Role::AttnNormBias), x, n)
    }

    /// The norm of `roles` (weight, bias) over n rows of `x`, into new buffers with its
    /// statistics.
    pub(super) fn normed<B: Backend>(
        &self,
        b: &B,
        w: &B::Act,
        unit: &UnitSpec,
        roles: (Role, Role),
        x: NormIn<'_, B>,
        n: usize,
    ) -> Result<NormOut<B>> {
        let mut out = NormOut::new(b, self.cfg.arch, n, self.cfg.hidden)?;
        self.norm_forward_in(b, w, unit, roles, x, &mut out, n)?;
        Ok(out)
    }

    /// The MLP's hidden a = silu(gate) ⊙ up (Llama) or gelu(up) (GPT-2) into `act`.
    pub(super) fn mlp_activation<B: Backend>(
        &self,
        b: &B,
        gate: &B::Act,
        up: &B::Act,
        act: &mut B::Act,
    ) -> Result<()> {
        match self.cfg.arch {
            Arch::Gpt2 => b.gelu_forward(self.cfg.gelu, src(up), dst(act)),
            Arch::Llama => b.glu_forward(self.cfg.glu, src(gate), src(up), dst(act)),
        }
    }

    /// Block ℓ after norm₁, on its complete input x and h₁ = norm₁(x). Returns the saved
    /// activations and, when `with_output`, the MLP output a·W_downᵀ (+ b) WITHOUT the residual
    /// m: the caller adds `acts.mid` into it (fused with the next norm). A recomputation in
    /// backward needs no output and skips W_down's forward.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn block_forward<B: Backend>(
        &self,
        b: &B,
        w: &B::Act,
        unit: &UnitSpec,
        x: &B::Act,
        norm1: NormOut<B>,
        batch: &DeviceBatch<B>,
        tp: &dyn TpComm<B>,
        with_output: bool,
    ) -> Result<(BlockActs<B>, Option<B::Act>)> {
        let c = &self.cfg;
        let (n, d) = (batch.tokens, c.hidden);
        let nr = self.residual_tokens(n);
        let (heads, kv_heads, f) = self.local_dims();
        let (qd, kvd) = (heads * c.head_dim, kv_heads * c.head_dim);
        let gpt2 = c.arch == Arch::Gpt2;
        let h1 = norm1.y;
        let h1_all = self.gather_tokens(b, tp, &h1, n)?;
        let h1_in = h1_all.as_ref().unwrap_or(&h1);

        // attention
        let mut q = b.empty_act(n * qd)?;
        let mut k = b.empty_act(n * kvd)?;
        let mut v = b.empty_act(n * kvd)?;
        let (mut q_raw, mut k_raw) = (b.zeros_act(0)?, b.zeros_act(0)?);
        let (mut q_rstd, mut k_rstd) = (b.zeros_acc(0)?, b.zeros_acc(0)?);
        if gpt2 {
            // The fused c_attn: this rank's q | k | v columns, qd each.
            let mut qkv = b.empty_act(n * 3 * qd)?;
            b.linear_forward(
                src(h1_in),
                t(w, unit, Role::Qkv),
                opt(w, unit, Role::QkvBias),
                dst(&mut qkv),
                self.lin(n, d, 3 * qd),
            )?;
            for (i, part) in [&mut q, &mut k, &mut v].into_iter().enumerate() {
                b.copy_columns(src(&qkv), 3 * qd, i * qd, dst(part), qd, 0, n, qd, false)?;
            }
        } else {
            b.linear_forward(
                src(h1_in),
                t(w, unit, Role::Q),
                opt(w, unit, Role::QBias),
                dst(&mut q),
                self.lin(n, d, qd),
            )?;
            b.linear_forward(
                src(h1_in),
                t(w, unit, Role::K),
                opt(w, unit, Role::KBias),
                dst(&mut k),
                self.lin(n, d, kvd),
            )?;
            b.linear_forward(
                src(h1_in),
                t(w, unit, Role::V),
                opt(w, unit, Role::VBias),
                dst(&mut v),
                self.lin(n, d, kvd),
            )?;
            if c.qk_norm {
                // RMSNorm over each head: rows of Dh, N·H of them (N·Hkv for k); OLMo-2's over
                // each token's whole projection: N rows of H·Dh (KV·Dh)
                let (q_rows, k_rows) = match c.qk_norm_whole {
                    true => (n, n),
                    false => (n * heads, n * kv_heads),
                };
                (q_raw, q_rstd) = self.head_norm(b, w, unit, Role::QNorm, &mut q, q_rows)?;
                (k_raw, k_rstd) = self.head_norm(b, w, unit, Role::KNorm, &mut k, k_rows)?;
            }
            let rotary = if self.rotates(unit) {
                vec![(&mut q, heads), (&mut k, kv_heads)]
            } else {
                Vec::new()
            };
            let (table, scale) = self.rope_for(batch, unit);
            for (x, heads) in rotary {
                b.rope_forward(
                    dst(x),
                    src(&batch.positions),
                    n,
                    heads,
                    c.head_dim,
                    table,
                    scale,
                )?;
            }
        }
        let dims = self.attn_dims(batch, unit);
        let mut o = b.empty_act(n * qd)?;
        let mut lse = b.empty_acc(heads * n)?;
        b.attention_forward(
            src(&q),
            src(&k),
            src(&v),
            dst(&mut o),
            dst(&mut lse),
            src(&batch.cu_seqlens),
            &dims,
        )?;
        let mut mid =
            self.row_parallel_forward(b, w, unit, (Role::O, Role::OBias), &o, qd, n, tp)?;
        scale_unless_one(b, &mut mid, c.residual_multiplier)?;
        let attn_out = self.sandwich_norm_forward(b, w, unit, Role::AttnOutNorm, &mut mid, nr)?;

        // MLP: m = x + o·Woᵀ, fused with norm₂.
        let roles = (Role::MlpNorm, Role::MlpNormBias);
        let m = NormIn::Residual { h: &mut mid, y: x };
        let h2 = self.normed(b, w, unit, roles, m, nr)?.y;
        let h2_all = self.gather_tokens(b, tp, &h2, n)?;
        let h2_in = h2_all.as_ref().unwrap_or(&h2);
        let mut up = b.empty_act(n * f)?;
        b.linear_forward(
            src(h2_in),
            t(w, unit, Role::Up),
            opt(w, unit, Role::UpBias),
            dst(&mut up),
            self.lin(n, d, f),
        )?;
        let gate = if gpt2 {
            b.zeros_act(0)?
        } else {
            let mut gate = b.empty_act(n * f)?;
            b.linear_forward(
                src(h2_in),
                t(w, unit, Role::Gate),
                opt(w, unit, Role::GateBias),
                dst(&mut gate),
                self.lin(n, d, f),
            )?;
            gate
        };
        let (out, mlp_out) = if with_output || c.sandwich_norms {
            let mut act = b.empty_act(n * f)?;
            self.mlp_activation(b, &gate, &up, &mut act)?;
            let roles = (Role::Down, Role::DownBias);
            let mut out = self.row_parallel_forward(b, w, unit, roles, &act, f, n, tp)?;
            scale_unless_one(b, &mut out, c.residual_multiplier)?;
            let mlp_out = self.sandwich_norm_forward(b, w, unit, Role::MlpOutNorm, &mut out, nr)?;
            (with_output.then_some(out), mlp_out)
        } else {
            (None, b.zeros_act(0)?)
        };
        Ok((
            BlockActs {
                q,
                k,
                v,
                q_raw,
                k_raw,
                q_rstd,
                k_rstd,
                o,
                lse,
                mid,
                gate,
                up,
                attn_out,
                mlp_out,
            },
            out,
        ))
    }

    /// Gemma 2/3's norm on a branch output y (n residual tokens) before its residual add:
    /// y ← norm(y) with the weight of `role`; returns y as it was (what the backward needs).
    /// Without sandwich norms y is left as it is and an empty buffer returned.
    fn sandwich_norm_forward<B: Backend>(
        &self,
        b: &B,
        w: &B::Act,
        unit: &UnitSpec,
        role: Role,
        y: &mut B::Act,
        n: usize,
    ) -> Result<B::Act> {
        if !self.cfg.sandwich_norms {
            return b.zeros_act(0);
        }
        let normed = self
            .normed(b, w, unit, (role, role), NormIn::Plain(y), n)?
            .y;
        Ok(std::mem::replace(y, normed))
    }

    /// A row-parallel layer's output on this rank's residual tokens: y = x·Wᵀ over this rank's
    /// `inp` input features (+ the replicated bias, from tp rank 0 only), summed over the group
    /// (g: all-reduce, or with sequence parallelism reduce-scatter to N/tp tokens).
    #[allow(clippy::too_many_arguments)]
    fn row_parallel_forward<B: Backend>(
        &self,
        b: &B,
        w: &B::Act,
        unit: &UnitSpec,
        (weight, bias): (Role, Role),
        x: &B::Act,
        inp: usize,
        n: usize,
        tp: &dyn TpComm<B>,
    ) -> Result<B::Act> {
        let d = self.cfg.hidden;
        let bias = if self.tp.adds_replicated_bias() {
            opt(w, unit, bias)
        } else {
            None
        };
        let mut y = b.zeros_act(n * d)?;
        b.linear_forward(
            src(x),
            t(w, unit, weight),
            bias,
            dst(&mut y),
            self.lin(n, inp, d),
        )?;
        if !self.tp.is_parallel() {
            return Ok(y);
        }
        if self.tp.sequence_parallel {
            let mut local = b.zeros_act(self.residual_tokens(n) * d)?;
            tp.sp_scatter(b, src(&y), dst(&mut local))?;
            return Ok(local);
        }
        tp.g_forward(b, dst(&mut y))?;
        Ok(y)
    }

    /// With sequence parallelism, this rank's [N/tp, D] tokens gathered to all N (before a
    /// column-parallel layer); None otherwise (the input is already whole).
    pub(super) fn gather_tokens<B: Backend>(
        &self,
        b: &B,
        tp: &dyn TpComm<B>,
        local: &B::Act,
        n: usize,
    ) -> Result<Option<B::Act>> {
        if !self.tp.sequence_parallel {
            return Ok(None);
        }
        let mut all = b.zeros_act(n * self.cfg.hidden)?;
        tp.sp_gather(b, src(local), dst(&mut all))?;
        Ok(Some(all))
    }

    /// The group passed in is the one the model was sliced for, and a sequence-parallel batch
    /// splits evenly.
    pub(super) fn check_group<B: Backend>(
        &self,
        tp: &dyn TpComm<B>,
        batch: &DeviceBatch<B>,
    ) -> Result<()> {
        if tp.size() != self.tp.size || tp.rank() != self.tp.rank {
            return Err(ferrotron_kernels::Error::Unsupported(format!(
                "the model is sliced for tp rank {} of {} but called with rank {} of {}",
                self.tp.rank,
                self.tp.size,
                tp.rank(),
                tp.size()
            )));
        }
        if self.tp.sequence_parallel && batch.tokens % self.tp.size != 0 {
            return Err(ferrotron_kernels::Error::Unsupported(format!(
                "sequence parallelism splits the {} tokens of a micro-batch over {} ranks: they must divide",
                batch.tokens, self.tp.size
            )));
        }
        Ok(())
    }

    /// x ← rmsnorm(x) over `rows` equal rows (of Dh, or OLMo-2's whole projection) with the
    /// weight of `role`; returns x as it was before and the rows' rstd (what the backward needs).
    fn head_norm<B: Backend>(
        &self,
        b: &B,
        w: &B::Act,
        unit: &UnitSpec,
        role: Role,
        x: &mut B::Act,
        rows: usize,
    ) -> Result<(B::Act, B::Acc)> {
        let dh = ferrotron_kernels::Buffer::len(x) / rows;
        let raw = std::mem::replace(x, b.zeros_act(rows * dh)?);
        let mut rstd = b.zeros_acc(rows)?;
        b.rmsnorm_forward(
            src(&raw),
            t(w, unit, role),
            dst(x),
            dst(&mut rstd),
            rows,
            dh,
            self.cfg.norm_eps,
            self.cfg.norm_weight_offset,
        )?;
        Ok((raw, rstd))
    }
}
