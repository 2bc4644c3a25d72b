//! The decoder-only transformer, forward and backward written out by hand over `Backend` ops.
//!
//! Shapes: N tokens (flattened batch), D hidden, H/Hkv heads, Dh head dim, F MLP width, V vocab.
//!
//!   x₀ = E[ids] (+ P[pos] for GPT-2)
//!   block ℓ (pre-norm):  h = norm₁(x);  q, k, v = h·Wqᵀ, h·Wkᵀ, h·Wvᵀ (GPT-2: one fused Conv1D)
//!                        q, k ← rmsnorm per head (Qwen3's q_norm, k_norm, weights [Dh])
//!                        q, k ← rope(q, k)  (Llama family; frequency table from the config,
//!                                            llama3 / linear scaled)
//!                        m = x + attn(q, k, v)·Woᵀ  (causal; sliding window in windowed layers)
//!                        x' = m + mlp(norm₂(m)),  mlp = W_down·(silu(W_gate·) ⊙ W_up·)  (Llama)
//!                                                 or  W_proj·gelu(W_fc·)                    (GPT-2)
//!   logits = norm_f(x_L)·W_headᵀ (W_head = E when tied);  loss = Σ CE(logits, targets)
//!
//! Files, one job each:
//!   forward.rs   embedding and blocks forward, saving what backward needs (`BlockActs`), or
//!                only each block's input when blocks are recomputed (activation checkpointing);
//!   head.rs      final norm, output projection and cross-entropy in row chunks (+ their backward);
//!   backward.rs  blocks and embedding backward, from ∂loss/∂x_L;
//!   chunk.rs     a pipeline chunk: a range of blocks from the embedding or a received hidden
//!                state, backward from a received gradient (the trainer's pipeline drives it);
//!   flops.rs     model FLOPs per token (the MFU convention);
//!   norm.rs      RMSNorm (Llama) / LayerNorm (GPT-2) dispatch, the residual add fused with the
//!                norm after it, and the norm backward.
//! This file: the model struct, what forward saves, and region helpers.
//!
//! Units are reached only through a `ParamStore`, so ZeRO can gather/release/reduce around them.
//! Buffers an op overwrites whole come from `empty_*` (no zero fill); those a backward op adds
//! into, from `zeros_*`.

mod backward;
mod chunk;
mod embedding;
mod flops;
mod forward;
mod head;
mod norm;

pub use head::{logits_row_width, HEAD_PREPARED_MAX_ELEMS};

use super::batch::DeviceBatch;
use super::config::{Arch, ModelConfig};
use super::layout::{ParamLayout, Role, UnitKind, UnitSpec};
use super::tensor_parallel::TpShape;
use ferrotron_kernels::{AttnDims, Backend, Dst, LinearDims, Src, WeightGrads, WeightLayout};

pub struct Transformer {
    pub cfg: ModelConfig,
    /// This rank's slices of the parameters (all of them without tensor parallelism).
    pub layout: ParamLayout,
    /// This rank's place in the tensor-parallel group: which heads, MLP columns and vocabulary
    /// rows it computes (model/tensor_parallel.rs); the group itself is passed to each call.
    pub tp: TpShape,
    /// The rotary inverse-frequency table [rotary_dim/2] (`ModelConfig::rope_inv_freq`).
    pub rope_inv_freq: Vec<f64>,
    /// Longrope: batches whose largest position + 1 exceeds `.0` use the table `.1`.
    pub rope_long: Option<(usize, Vec<f64>)>,
    /// The factor on rotary cos and sin (yarn's and longrope's attention factor; 1 otherwise).
    pub rope_scale: f64,
    /// Gemma 3: the sliding-window layers' own table and factor (`ModelConfig::local_rope`).
    pub rope_local: Option<(Vec<f64>, f64)>,
    /// Full activation checkpointing: forward keeps only each block's input x_ℓ, and backward
    /// recomputes the block's forward from it (one more forward of every block but W_down).
    pub recompute_blocks: bool,
}

/// A norm's output and the per-token statistics its backward needs (mean: LayerNorm only).
pub(super) struct NormOut<B: Backend> {
    y: B::Act,
    mean: B::Acc,
    rstd: B::Acc,
}

impl<B: Backend> NormOut<B> {
    fn new(b: &B, arch: Arch, n: usize, d: usize) -> ferrotron_kernels::Result<Self> {
        let mean_len = if arch == Arch::Gpt2 { n } else { 0 };
        Ok(NormOut {
            y: b.empty_act(n * d)?,
            mean: b.empty_acc(mean_len)?,
            rstd: b.empty_acc(n)?,
        })
    }
}

/// What one block keeps from forward for its backward.
/// What one block's forward keeps for its backward. Its input (the residual stream entering it)
/// is `Forward::xs[ℓ]`; h₁ = norm₁(x_ℓ), h₂ = norm₂(m), their statistics and the MLP hidden a are
/// recomputed by the backward (elementwise passes) rather than kept.
pub struct BlockActs<B: Backend> {
    q: B::Act,
    k: B::Act,
    v: B::Act,
    /// Qwen3: q and k before their per-head RMSNorm, and its rstd [N·H], [N·Hkv] (else empty).
    q_raw: B::Act,
    k_raw: B::Act,
    q_rstd: B::Acc,
    k_rstd: B::Acc,
    o: B::Act,
    lse: B::Acc,
    /// Residual stream after attention.
    mid: B::Act,
    /// Llama: gate and up projections; GPT-2: `up` is c_fc's output, `gate` unused.
    gate: B::Act,
    up: B::Act,
    /// Gemma 2/3 (sandwich norms): the attention and MLP outputs before their norms, on the
    /// residual tokens (empty otherwise).
    attn_out: B::Act,
    mlp_out: B::Act,
}

pub struct Forward<B: Backend> {
    /// xs[i] is the input of block `first_block + i`; the last one the output of the blocks run
    /// (x_L for the whole model, a pipeline chunk's output for a chunk).
    pub xs: Vec<B::Act>,
    /// Block `first_block + i`'s saved activations; None when it is recomputed in backward.
    blocks: Vec<Option<BlockActs<B>>>,
    first_block: usize,
}

impl<B: Backend> Forward<B> {
    /// The blocks this forward ran.
    pub fn layers(&self) -> std::ops::Range<usize> {
        self.first_block..self.first_block + self.blocks.len()
    }

    /// Elements this forward keeps for backward, (activation precision, accumulation precision):
    /// the block inputs and the final state, and every saved block's activations.
    pub fn saved_elements(&self) -> (usize, usize) {
        use ferrotron_kernels::Buffer;
        let mut act: usize = self.xs.iter().map(Buffer::len).sum();
        let mut acc = 0;
        for a in self.blocks.iter().flatten() {
            act += [
                &a.q, &a.k, &a.v, &a.q_raw, &a.k_raw, &a.o, &a.mid, &a.gate, &a.up,
            ]
            .iter()
            .map(|x| x.len())
            .sum::<usize>();
            acc += [&a.q_rstd, &a.k_rstd, &a.lse]
                .iter()
                .map(|x| x.len())
                .sum::<usize>();
        }
        (act, acc)
    }
}

fn src<T: ferrotron_kernels::Buffer>(b: &T) -> Src<'_, T> {
    Src::all(b)
}
fn dst<T: ferrotron_kernels::Buffer>(b: &mut T) -> Dst<'_, T> {
    Dst::all(b)
}

/// s·x in a new buffer, or None when s = 1 (Granite's multipliers in backward: the scaled
/// gradient goes to one branch while x itself flows on).
fn scaled_copy<B: Backend>(b: &B, x: &B::Act, s: f64) -> ferrotron_kernels::Result<Option<B::Act>> {
    use ferrotron_kernels::Buffer;
    if s == 1.0 {
        return Ok(None);
    }
    let mut y = b.zeros_act(x.len())?;
    b.add_inplace(dst(&mut y), src(x))?;
    b.scale_inplace(dst(&mut y), s)?;
    Ok(Some(y))
}

/// x *= s unless s = 1 (Granite's multipliers in forward).
fn scale_unless_one<B: Backend>(b: &B, x: &mut B::Act, s: f64) -> ferrotron_kernels::Result<()> {
    if s == 1.0 {
        return Ok(());
    }
    b.scale_inplace(dst(x), s)
}

/// The region (offset, numel) of the weights of `role` in a unit's flat buffer (a tensor of its
/// own or a row block of a fused one). Panics if absent: the layout and the model are built from
/// the same config, so a missing role is a bug, not user input.
fn region(unit: &UnitSpec, role: Role) -> (usize, usize) {
    unit.region(role)
        .unwrap_or_else(|| panic!("unit {:?} has no weights of role {role:?}", unit.kind))
}
fn t<'a, T: ferrotron_kernels::Buffer>(buf: &'a T, unit: &UnitSpec, role: Role) -> Src<'a, T> {
    let (offset, numel) = region(unit, role);
    Src::range(buf, offset, numel)
}
fn tm<'a, T: ferrotron_kernels::Buffer>(buf: &'a mut T, unit: &UnitSpec, role: Role) -> Dst<'a, T> {
    let (offset, numel) = region(unit, role);
    Dst::range(buf, offset, numel)
}
fn opt<'a, T: ferrotron_kernels::Buffer>(
    buf: &'a T,
    unit: &UnitSpec,
    role: Role,
) -> Option<Src<'a, T>> {
    unit.region(role)
        .map(|(offset, numel)| Src::range(buf, offset, numel))
}

/// The gradient regions of `weight` and (if the unit has one, and it differs) `bias`.
fn weight_grads<'a, T: ferrotron_kernels::Buffer>(
    g: &'a mut T,
    unit: &UnitSpec,
    weight: Role,
    bias: Role,
) -> WeightGrads<'a, T> {
    let bs = if bias == weight {
        None
    } else {
        unit.region(bias)
    };
    WeightGrads::new(g, region(unit, weight), bs)
}

impl Transformer {
    pub fn new(cfg: ModelConfig) -> Self {
        Self::with_tp(cfg, TpShape::NONE).expect("one rank holds any model")
    }

    /// The model as tensor-parallel rank `tp.rank` of `tp.size` computes it: heads, kv heads,
    /// the MLP width and GPT-2's hidden size must divide by `tp.size` (the reason otherwise).
    pub fn with_tp(cfg: ModelConfig, tp: TpShape) -> Result<Self, String> {
        let p = tp.size;
        let (file, heads, kv, ffn) = match cfg.arch {
            Arch::Llama => (
                "config.json",
                "num_attention_heads",
                "num_key_value_heads",
                "intermediate_size",
            ),
            Arch::Gpt2 => ("config.json", "n_head", "n_head", "n_inner"),
        };
        if p > 1 && cfg.qk_norm_whole {
            return Err(format!(
                "parallel.tp = {p} is not supported for {}: its q_norm / k_norm run over every head's dims of a token at once, which tensor parallelism splits over the ranks (use tp = 1 with data, ZeRO or pipeline parallelism)",
                cfg.model_type
            ));
        }
        for (key, n) in [(heads, cfg.heads), (kv, cfg.kv_heads), (ffn, cfg.ffn)] {
            if n % p != 0 {
                return Err(format!(
                    "parallel.tp = {p} does not divide the model's {key} = {n} ({file}): tensor parallelism splits them evenly over the tp ranks"
                ));
            }
        }
        let layout = ParamLayout::sliced(&cfg, tp);
        let rope_inv_freq = match cfg.arch {
            Arch::Llama => cfg.rope_inv_freq(),
            Arch::Gpt2 => Vec::new(),
        };
        let rope_scale = cfg.rope_scaling.attention_factor();
        let rope_long = cfg.rope_long_inv_freq();
        let rope_local = cfg.local_rope.as_ref().map(|(theta, scaling)| {
            (
                scaling.inv_freq(*theta, cfg.rotary_dim),
                scaling.attention_factor(),
            )
        });
        Ok(Transformer {
            cfg,
            layout,
            tp,
            rope_inv_freq,
            rope_long,
            rope_scale,
            rope_local,
            recompute_blocks: false,
        })
    }

    /// A host batch on the device as this rank's model reads it (with vocab-parallel ids under
    /// tensor parallelism, and the padding row's lookups kept out of the gradient).
    pub fn upload_batch<B: Backend>(
        &self,
        b: &B,
        h: &super::batch::HostBatch,
    ) -> ferrotron_kernels::Result<DeviceBatch<B>> {
        let pad = self.cfg.embedding_padding_idx;
        if !self.tp.is_parallel() {
            return DeviceBatch::upload(b, h)?.without_padding_grad(b, h, pad, None);
        }
        let (start, _, rows) = self.tp.vocab_rows(self.cfg.vocab_size);
        DeviceBatch::upload_with_vocab_rows(b, h, start, rows)?.without_padding_grad(
            b,
            h,
            pad,
            Some((start, rows)),
        )
    }

    /// Tokens of the residual stream on this rank: N, or N / tp with sequence parallelism.
    /// Tokens of a micro-batch of `n` on which this rank holds the residual stream: n/tp with
    /// sequence parallelism, else n.
    pub fn residual_tokens(&self, n: usize) -> usize {
        if self.tp.sequence_parallel {
            n / self.tp.size
        } else {
            n
        }
    }
    /// (query heads, kv heads, MLP width) this rank computes.
    fn local_dims(&self) -> (usize, usize, usize) {
        let c = &self.cfg;
        (
            self.tp.local(c.heads),
            self.tp.local(c.kv_heads),
            self.tp.local(c.ffn),
        )
    }

    /// What `forward` keeps for backward on a batch of `tokens` tokens, in elements
    /// (activation precision, accumulation precision): exactly `Forward::saved_elements`.
    ///   always:             x_0 … x_L                         (L + 1)·N·D
    ///   per saved block:    q, k, v, o, m, up (+ gate: Llama; + q, k before their head
    ///                       norms: Qwen3)   and lse [H·N] (+ per-head rstd of q and k:
    ///                       Qwen3); h₁, h₂, their statistics and a are recomputed
    /// With `recompute_blocks` no block is saved.
    pub fn activation_elements(&self, tokens: usize) -> (usize, usize) {
        self.blocks_activation_elements(tokens, self.cfg.layers)
    }

    /// `activation_elements` of a forward through `layers` blocks (a pipeline chunk's
    /// `Forward`): its input, every block's output and `layers` blocks' saved activations.
    pub fn blocks_activation_elements(&self, tokens: usize, layers: usize) -> (usize, usize) {
        let c = &self.cfg;
        let n = tokens;
        // The residual stream, norm outputs and statistics hold N/tp tokens with sequence
        // parallelism; attention and MLP activations hold this rank's heads and columns.
        let nr = self.residual_tokens(n);
        let (heads, kv, ffn) = self.local_dims();
        let (qd, kvd) = (heads * c.head_dim, kv * c.head_dim);
        let xs = (layers + 1) * nr * c.hidden;
        if self.recompute_blocks {
            return (xs, 0);
        }
        let gate = if c.arch == Arch::Llama { ffn } else { 0 };
        let (qk_raw, qk_rstd) = match (c.qk_norm, c.qk_norm_whole) {
            (true, false) => (qd + kvd, heads + kv),
            (true, true) => (qd + kvd, 2),
            (false, _) => (0, 0),
        };
        // Gemma 2/3: the attention and MLP outputs before their sandwich norms
        let branch_outs = if c.sandwich_norms { 2 } else { 0 };
        let act = (1 + branch_outs) * nr * c.hidden + n * (2 * qd + 2 * kvd + ffn + gate + qk_raw);
        let acc = n * (heads + qk_rstd);
        (xs + layers * act, layers * acc)
    }

    /// The same model with full activation checkpointing on or off (see `recompute_blocks`).
    pub fn with_recompute(mut self, on: bool) -> Self {
        self.recompute_blocks = on;
        self
    }

    /// The same slices computed without sequence parallelism, for forwards over any number of
    /// tokens (samples): the weights are the same, only the tokens the norms run on change.
    pub fn without_sequence_parallel(&self) -> Transformer {
        Transformer {
            cfg: self.cfg.clone(),
            layout: self.layout.clone(),
            tp: TpShape {
                sequence_parallel: false,
                ..self.tp
            },
            rope_inv_freq: self.rope_inv_freq.clone(),
            rope_long: self.rope_long.clone(),
            rope_scale: self.rope_scale,
            rope_local: self.rope_local.clone(),
            recompute_blocks: self.recompute_blocks,
        }
    }

    fn lin(&self, n: usize, inp: usize, out: usize) -> LinearDims {
        let layout = match self.cfg.arch {
            Arch::Llama => WeightLayout::OutIn,
            Arch::Gpt2 => WeightLayout::InOut,
        };
        LinearDims {
            n,
            inp,
            out,
            layout,
        }
    }

    /// Causal attention over the batch's segments, in the unit's layer (its sliding window, if
    /// the layer has one). `max_seqlen` is the batch's longest segment (DeviceBatch computes it
    /// from cu_seqlens), which FlashAttention sizes its grid by.
    /// The rotary table and cos/sin factor of block `unit` on `batch`: Gemma 3's local table in
    /// its sliding-window layers; longrope's long table when the batch's largest position + 1
    /// exceeds original_max_position_embeddings (transformers' choice per forward); else the
    /// model's table.
    fn rope_for<B: Backend>(&self, batch: &DeviceBatch<B>, unit: &UnitSpec) -> (&[f64], f64) {
        let UnitKind::Block(layer) = unit.kind else {
            unreachable!("the rotary embedding runs in block units")
        };
        match (&self.rope_local, &self.rope_long) {
            (Some((table, scale)), _) if self.cfg.sliding_window.of(layer).is_some() => {
                (table, *scale)
            }
            (_, Some((limit, long))) if batch.positions_end > *limit => (long, self.rope_scale),
            _ => (&self.rope_inv_freq, self.rope_scale),
        }
    }

    /// Whether block `unit` rotates q and k (false on SmolLM3's NoPE layers).
    fn rotates(&self, unit: &UnitSpec) -> bool {
        let UnitKind::Block(layer) = unit.kind else {
            unreachable!("the rotary embedding runs in block units")
        };
        self.cfg.rope_layers.get(layer).copied().unwrap_or(true)
    }

    fn attn_dims<B: Backend>(&self, batch: &DeviceBatch<B>, unit: &UnitSpec) -> AttnDims {
        let c = &self.cfg;
        let UnitKind::Block(layer) = unit.kind else {
            unreachable!("attention runs in block units")
        };
        let (heads, kv_heads, _) = self.local_dims();
        AttnDims {
            tokens: batch.tokens,
            heads,
            kv_heads,
            head_dim: c.head_dim,
            segments: batch.segments,
            max_seqlen: batch.max_seqlen,
            causal: true,
            scale: c.attention_scale(layer),
            window: c.sliding_window.of(layer),
            softcap: c.attn_softcap,
        }
    }

    fn embedding_unit(&self) -> usize {
        0
    }
    fn final_norm_unit(&self) -> usize {
        self.layout
            .unit_of(UnitKind::FinalNorm)
            .expect("layout has a final norm")
    }
    /// The unit holding the output projection: the head, or the embedding when tied.
    fn head_unit(&self) -> (usize, Role) {
        match self.layout.unit_of(UnitKind::Head) {
            Some(u) => (u, Role::LmHead),
            None => (self.embedding_unit(), Role::TokenEmbedding),
        }
    }
}
