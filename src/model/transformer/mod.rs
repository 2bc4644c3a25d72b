//! The decoder-only transformer, forward and backward written out by hand over `Backend` ops.
//!
//! Shapes: N tokens (flattened batch), D hidden, H/Hkv heads, Dh head dim, F MLP width, V vocab.
//!
//!   x₀ = E[ids] (+ P[pos] for GPT-2)
//!   block ℓ (pre-norm):  h = norm₁(x);  q, k, v = h·Wqᵀ, h·Wkᵀ, h·Wvᵀ (GPT-2: one fused Conv1D)
//!                        q, k ← rope(q, k)  (Llama family)
//!                        m = x + attn(q, k, v)·Woᵀ
//!                        x' = m + mlp(norm₂(m)),  mlp = W_down·(silu(W_gate·) ⊙ W_up·)  (Llama)
//!                                                 or  W_proj·gelu(W_fc·)                    (GPT-2)
//!   logits = norm_f(x_L)·W_headᵀ (W_head = E when tied);  loss = Σ CE(logits, targets)
//!
//! Files, one job each:
//!   forward.rs   embedding and blocks forward, saving what backward needs (`BlockActs`);
//!   head.rs      final norm, output projection and cross-entropy in row chunks (+ their backward);
//!   backward.rs  blocks and embedding backward, from ∂loss/∂x_L;
//!   norm.rs      RMSNorm (Llama) / LayerNorm (GPT-2) dispatch, the residual add fused with the
//!                norm after it, and the norm backward.
//! This file: the model struct, what forward saves, and region helpers.
//!
//! Units are reached only through a `ParamStore`, so ZeRO can gather/release/reduce around them.

mod backward;
mod forward;
mod head;
mod norm;

use super::batch::DeviceBatch;
use super::config::{Arch, ModelConfig};
use super::layout::{ParamLayout, Role, UnitKind, UnitSpec};
use ferrotron_kernels::{AttnDims, Backend, Dst, LinearDims, Src, WeightGrads, WeightLayout};

pub struct Transformer {
    pub cfg: ModelConfig,
    pub layout: ParamLayout,
}

/// What one block keeps from forward for its backward (no recomputation).
pub struct BlockActs<B: Backend> {
    /// Block input (the residual stream entering it) is `Forward::xs[ℓ]`.
    h1: B::Act,
    mean1: B::Acc,
    rstd1: B::Acc,
    q: B::Act,
    k: B::Act,
    v: B::Act,
    o: B::Act,
    lse: B::Acc,
    /// Residual stream after attention.
    mid: B::Act,
    h2: B::Act,
    mean2: B::Acc,
    rstd2: B::Acc,
    /// Llama: gate and up projections; GPT-2: `up` is c_fc's output, `gate` unused.
    gate: B::Act,
    up: B::Act,
    /// MLP hidden after the nonlinearity [N, F].
    act: B::Act,
}

pub struct Forward<B: Backend> {
    /// xs[ℓ] is the input of block ℓ; xs[L] the final hidden state.
    pub xs: Vec<B::Act>,
    blocks: Vec<BlockActs<B>>,
}

fn src<T: ferrotron_kernels::Buffer>(b: &T) -> Src<'_, T> {
    Src::all(b)
}
fn dst<T: ferrotron_kernels::Buffer>(b: &mut T) -> Dst<'_, T> {
    Dst::all(b)
}

/// The region of tensor `role` in a unit's flat buffer.
fn t<'a, T: ferrotron_kernels::Buffer>(buf: &'a T, unit: &UnitSpec, role: Role) -> Src<'a, T> {
    let s = unit.tensor(role);
    Src::range(buf, s.offset, s.numel())
}
fn tm<'a, T: ferrotron_kernels::Buffer>(buf: &'a mut T, unit: &UnitSpec, role: Role) -> Dst<'a, T> {
    let s = unit.tensor(role);
    Dst::range(buf, s.offset, s.numel())
}
fn opt<'a, T: ferrotron_kernels::Buffer>(
    buf: &'a T,
    unit: &UnitSpec,
    role: Role,
) -> Option<Src<'a, T>> {
    unit.find(role)
        .map(|s| Src::range(buf, s.offset, s.numel()))
}

/// The gradient regions of `weight` and (if the unit has one, and it differs) `bias`.
fn weight_grads<'a, T: ferrotron_kernels::Buffer>(
    g: &'a mut T,
    unit: &UnitSpec,
    weight: Role,
    bias: Role,
) -> WeightGrads<'a, T> {
    let ws = unit.tensor(weight);
    let bs = if bias == weight {
        None
    } else {
        unit.find(bias)
    };
    WeightGrads::new(
        g,
        (ws.offset, ws.numel()),
        bs.map(|s| (s.offset, s.numel())),
    )
}

impl Transformer {
    pub fn new(cfg: ModelConfig) -> Self {
        let layout = ParamLayout::new(&cfg);
        Transformer { cfg, layout }
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

    /// Causal attention over the batch's segments. `max_seqlen` is the batch's longest segment
    /// (DeviceBatch computes it from cu_seqlens), which FlashAttention sizes its grid by.
    fn attn_dims<B: Backend>(&self, batch: &DeviceBatch<B>) -> AttnDims {
        let c = &self.cfg;
        AttnDims {
            tokens: batch.tokens,
            heads: c.heads,
            kv_heads: c.kv_heads,
            head_dim: c.head_dim,
            segments: batch.segments,
            max_seqlen: batch.max_seqlen,
            causal: true,
            scale: 1.0 / (c.head_dim as f32).sqrt(),
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
