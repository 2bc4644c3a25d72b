//! Parameters as flat units.
//!
//! Every parameter lives in one flat buffer per unit: the embedding unit (token table, and
//! GPT-2's position table), one unit per transformer block, the final norm, and the LM head
//! (absent when tied to the token table). A logical tensor — HF name, HF shape — is a view
//! `[offset, offset + numel)` into its unit, stored in exactly the HF layout (GPT-2 Conv1D weights
//! stay [in, out]). ZeRO shards units, pipeline stages own whole units, checkpoints store logical
//! tensors: everything parallel is a statement about this layout.

use super::config::{Arch, ModelConfig};
use super::slicing::TensorSlice;
use super::tensor_parallel::TpShape;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    /// The HF parameter name, e.g. `model.layers.3.self_attn.q_proj.weight`.
    pub name: String,
    /// The shape this rank holds (the HF shape, or this rank's slice of it).
    pub shape: Vec<usize>,
    /// How the local tensor sits in the logical one (`slice.global_shape` is the HF shape).
    pub slice: TensorSlice,
    /// Offset into the unit's flat buffer, in elements.
    pub offset: usize,
    /// What the tensor does; the model picks its weights by role, and weight-decay defaults
    /// follow it (norms and biases are not decayed).
    pub role: Role,
}

impl TensorSpec {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    /// The logical (HF) shape.
    pub fn global_shape(&self) -> &[usize] {
        &self.slice.global_shape
    }
}

/// Parameter roles. Each unit holds at most one tensor of each role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    TokenEmbedding,
    PositionEmbedding,
    AttnNorm,
    AttnNormBias,
    /// GPT-2's fused [D, 3D] Conv1D.
    Qkv,
    /// Phi-3's fused `qkv_proj` [(H + 2·KV)·Dh, D] (nn.Linear): row blocks q | k | v, which the
    /// model reads through the unit's views of roles Q, K and V.
    QkvRows,
    /// Phi-3's fused `gate_up_proj` [2F, D]: row blocks gate | up (views Gate and Up).
    GateUp,
    QkvBias,
    Q,
    QBias,
    K,
    KBias,
    V,
    VBias,
    O,
    OBias,
    /// Qwen3: RMSNorm weight [head_dim] applied to every query head before RoPE.
    QNorm,
    /// Qwen3: RMSNorm weight [head_dim] applied to every key head before RoPE.
    KNorm,
    MlpNorm,
    MlpNormBias,
    /// Gemma 2/3: the RMSNorm weight on the attention output before its residual add (HF
    /// `post_attention_layernorm`; there AttnNorm is `input_layernorm` and MlpNorm
    /// `pre_feedforward_layernorm`).
    AttnOutNorm,
    /// Gemma 2/3: the RMSNorm weight on the MLP output (`post_feedforward_layernorm`).
    MlpOutNorm,
    Gate,
    GateBias,
    Up,
    UpBias,
    Down,
    DownBias,
    FinalNorm,
    FinalNormBias,
    LmHead,
}

impl Role {
    /// Norm weights (initialised to 1, never decayed by default).
    pub fn is_norm_weight(self) -> bool {
        matches!(
            self,
            Role::AttnNorm
                | Role::QNorm
                | Role::KNorm
                | Role::MlpNorm
                | Role::AttnOutNorm
                | Role::MlpOutNorm
                | Role::FinalNorm
        )
    }

    /// Default weight-decay rule (HF Trainer, nanoGPT): matrices decay; norms and biases do not.
    pub fn decays_by_default(self) -> bool {
        !matches!(
            self,
            Role::AttnNorm
                | Role::AttnNormBias
                | Role::QNorm
                | Role::KNorm
                | Role::MlpNorm
                | Role::MlpNormBias
                | Role::AttnOutNorm
                | Role::MlpOutNorm
                | Role::FinalNorm
                | Role::FinalNormBias
                | Role::QkvBias
                | Role::QBias
                | Role::KBias
                | Role::VBias
                | Role::OBias
                | Role::GateBias
                | Role::UpBias
                | Role::DownBias
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnitKind {
    Embedding,
    Block(usize),
    FinalNorm,
    Head,
}

/// A region of a unit's flat buffer the model reads as the tensor of `role` although it is
/// part of another logical tensor: a row block of a fused tensor (Phi-3's qkv_proj holds Q, K
/// and V). Its rows are contiguous, so it is `[offset, offset + numel)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoleView {
    pub role: Role,
    pub offset: usize,
    pub numel: usize,
}

#[derive(Clone, Debug)]
pub struct UnitSpec {
    pub kind: UnitKind,
    /// The logical tensors (what checkpoints, imports and exports name).
    pub tensors: Vec<TensorSpec>,
    /// Roles that are row blocks of a fused logical tensor.
    pub views: Vec<RoleView>,
    pub numel: usize,
}

impl UnitSpec {
    /// Where the model finds the weights of `role`: its own tensor, or a row block of a fused
    /// one; (offset, numel) in the unit's flat buffer.
    pub fn region(&self, role: Role) -> Option<(usize, usize)> {
        self.find(role).map(|t| (t.offset, t.numel())).or_else(|| {
            self.views
                .iter()
                .find(|v| v.role == role)
                .map(|v| (v.offset, v.numel))
        })
    }

    /// The tensor of `role` in this unit. Panics if absent: the layout and the model are built
    /// from the same config, so a missing role is a bug, not user input.
    pub fn tensor(&self, role: Role) -> &TensorSpec {
        self.find(role)
            .unwrap_or_else(|| panic!("unit {:?} has no tensor of role {role:?}", self.kind))
    }
    pub fn find(&self, role: Role) -> Option<&TensorSpec> {
        self.tensors.iter().find(|t| t.role == role)
    }
    pub fn name(&self) -> String {
        match self.kind {
            UnitKind::Embedding => "embedding".into(),
            UnitKind::Block(i) => format!("block.{i}"),
            UnitKind::FinalNorm => "final_norm".into(),
            UnitKind::Head => "lm_head".into(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct ParamLayout {
    pub units: Vec<UnitSpec>,
}

struct UnitBuilder {
    kind: UnitKind,
    arch: Arch,
    tp: TpShape,
    tensors: Vec<TensorSpec>,
    views: Vec<RoleView>,
    numel: usize,
}

impl UnitBuilder {
    fn new(kind: UnitKind, arch: Arch, tp: TpShape) -> Self {
        UnitBuilder {
            kind,
            arch,
            tp,
            tensors: Vec::new(),
            views: Vec::new(),
            numel: 0,
        }
    }
    /// Adds the logical tensor `name` of global `shape`: this rank's slice of it.
    fn add(&mut self, name: String, shape: &[usize], role: Role) {
        let slice = self.tp.slice(self.arch, role, shape);
        self.push(name, slice, role);
    }
    /// Adds a fused logical tensor whose rows are the consecutive `blocks` (role, rows): this
    /// rank's part of every block, and a view per block for the model.
    fn add_fused(&mut self, name: String, cols: usize, role: Role, blocks: &[(Role, usize)]) {
        let sizes: Vec<usize> = blocks.iter().map(|b| b.1).collect();
        let slice = self.tp.slice_fused(&[sizes.iter().sum(), cols], &sizes);
        let mut at = self.numel;
        for &(view, rows) in blocks {
            let numel = self.tp.local(rows) * cols;
            self.views.push(RoleView {
                role: view,
                offset: at,
                numel,
            });
            at += numel;
        }
        self.push(name, slice, role);
    }
    fn push(&mut self, name: String, slice: TensorSlice, role: Role) {
        let t = TensorSpec {
            name,
            shape: slice.local_shape.clone(),
            slice,
            offset: self.numel,
            role,
        };
        self.numel += t.numel();
        self.tensors.push(t);
    }
    fn add_if(&mut self, on: bool, name: String, shape: &[usize], role: Role) {
        if on {
            self.add(name, shape, role);
        }
    }
    fn build(self) -> UnitSpec {
        UnitSpec {
            kind: self.kind,
            tensors: self.tensors,
            views: self.views,
            numel: self.numel,
        }
    }
}

impl ParamLayout {
    /// The whole model (no tensor parallelism).
    pub fn new(c: &ModelConfig) -> Self {
        Self::sliced(c, TpShape::NONE)
    }

    /// This tensor-parallel rank's slices (model/tensor_parallel.rs), in the same units.
    pub fn sliced(c: &ModelConfig, tp: TpShape) -> Self {
        match c.arch {
            Arch::Llama => llama(c, tp),
            Arch::Gpt2 => gpt2(c, tp),
        }
    }

    pub fn num_params(&self) -> usize {
        self.units.iter().map(|u| u.numel).sum()
    }

    /// Index of the first block unit (blocks are contiguous, in order).
    pub fn block_unit(&self, layer: usize) -> usize {
        1 + layer
    }

    pub fn unit_of(&self, kind: UnitKind) -> Option<usize> {
        self.units.iter().position(|u| u.kind == kind)
    }

    /// Every logical tensor with the index of its unit, in unit order.
    pub fn tensors(&self) -> impl Iterator<Item = (usize, &TensorSpec)> {
        self.units
            .iter()
            .enumerate()
            .flat_map(|(i, u)| u.tensors.iter().map(move |t| (i, t)))
    }
}

fn llama(c: &ModelConfig, tp: TpShape) -> ParamLayout {
    let (d, v, f) = (c.hidden, c.vocab_size, c.ffn);
    let (qd, kvd) = (c.heads * c.head_dim, c.kv_heads * c.head_dim);
    let mut units = Vec::new();
    let mut e = UnitBuilder::new(UnitKind::Embedding, c.arch, tp);
    e.add(
        "model.embed_tokens.weight".into(),
        &[v, d],
        Role::TokenEmbedding,
    );
    units.push(e.build());
    for i in 0..c.layers {
        let p = format!("model.layers.{i}.");
        let mut b = UnitBuilder::new(UnitKind::Block(i), c.arch, tp);
        if c.fused_projections {
            fused_block(&mut b, c, &p);
            units.push(b.build());
            continue;
        }
        b.add(format!("{p}self_attn.q_proj.weight"), &[qd, d], Role::Q);
        b.add_if(
            c.qkv_bias,
            format!("{p}self_attn.q_proj.bias"),
            &[qd],
            Role::QBias,
        );
        b.add(format!("{p}self_attn.k_proj.weight"), &[kvd, d], Role::K);
        b.add_if(
            c.qkv_bias,
            format!("{p}self_attn.k_proj.bias"),
            &[kvd],
            Role::KBias,
        );
        b.add(format!("{p}self_attn.v_proj.weight"), &[kvd, d], Role::V);
        b.add_if(
            c.qkv_bias,
            format!("{p}self_attn.v_proj.bias"),
            &[kvd],
            Role::VBias,
        );
        b.add(format!("{p}self_attn.o_proj.weight"), &[d, qd], Role::O);
        b.add_if(
            c.o_bias,
            format!("{p}self_attn.o_proj.bias"),
            &[d],
            Role::OBias,
        );
        // per head [Dh], or OLMo-2's over the whole projection [H·Dh], [KV·Dh]
        let (q_norm, k_norm) = match c.qk_norm_whole {
            true => (qd, kvd),
            false => (c.head_dim, c.head_dim),
        };
        b.add_if(
            c.qk_norm,
            format!("{p}self_attn.q_norm.weight"),
            &[q_norm],
            Role::QNorm,
        );
        b.add_if(
            c.qk_norm,
            format!("{p}self_attn.k_norm.weight"),
            &[k_norm],
            Role::KNorm,
        );
        b.add(format!("{p}mlp.gate_proj.weight"), &[f, d], Role::Gate);
        b.add_if(
            c.mlp_bias,
            format!("{p}mlp.gate_proj.bias"),
            &[f],
            Role::GateBias,
        );
        b.add(format!("{p}mlp.up_proj.weight"), &[f, d], Role::Up);
        b.add_if(
            c.mlp_bias,
            format!("{p}mlp.up_proj.bias"),
            &[f],
            Role::UpBias,
        );
        b.add(format!("{p}mlp.down_proj.weight"), &[d, f], Role::Down);
        b.add_if(
            c.mlp_bias,
            format!("{p}mlp.down_proj.bias"),
            &[d],
            Role::DownBias,
        );
        b.add_if(
            c.pre_norms,
            format!("{p}input_layernorm.weight"),
            &[d],
            Role::AttnNorm,
        );
        if c.sandwich_norms {
            // Gemma 2/3 and OLMo-2: post_attention_layernorm norms the attention output (OLMo-2
            // has no input norms)
            let norms = [
                ("post_attention_layernorm", Role::AttnOutNorm, true),
                ("pre_feedforward_layernorm", Role::MlpNorm, c.pre_norms),
                ("post_feedforward_layernorm", Role::MlpOutNorm, true),
            ];
            for (name, role, present) in norms {
                b.add_if(present, format!("{p}{name}.weight"), &[d], role);
            }
        } else {
            b.add(
                format!("{p}post_attention_layernorm.weight"),
                &[d],
                Role::MlpNorm,
            );
        }
        units.push(b.build());
    }
    let mut n = UnitBuilder::new(UnitKind::FinalNorm, c.arch, tp);
    n.add("model.norm.weight".into(), &[d], Role::FinalNorm);
    units.push(n.build());
    push_untied_head(&mut units, c, tp);
    ParamLayout { units }
}

/// A Phi-3 block: q | k | v in one `qkv_proj`, gate | up in one `gate_up_proj` (no biases, no
/// q/k norms; config.rs refuses neither since Phi-3 has neither).
fn fused_block(b: &mut UnitBuilder, c: &ModelConfig, p: &str) {
    let (d, f) = (c.hidden, c.ffn);
    let (qd, kvd) = (c.heads * c.head_dim, c.kv_heads * c.head_dim);
    b.add(format!("{p}self_attn.o_proj.weight"), &[d, qd], Role::O);
    b.add_fused(
        format!("{p}self_attn.qkv_proj.weight"),
        d,
        Role::QkvRows,
        &[(Role::Q, qd), (Role::K, kvd), (Role::V, kvd)],
    );
    b.add_fused(
        format!("{p}mlp.gate_up_proj.weight"),
        d,
        Role::GateUp,
        &[(Role::Gate, f), (Role::Up, f)],
    );
    b.add(format!("{p}mlp.down_proj.weight"), &[d, f], Role::Down);
    b.add(format!("{p}input_layernorm.weight"), &[d], Role::AttnNorm);
    b.add(
        format!("{p}post_attention_layernorm.weight"),
        &[d],
        Role::MlpNorm,
    );
}

/// The last unit of both families when the head is not tied to the token table: `lm_head.weight`
/// [vocab, hidden] (the HF name in Llama and GPT-2 checkpoints alike).
fn push_untied_head(units: &mut Vec<UnitSpec>, c: &ModelConfig, tp: TpShape) {
    if !c.tie_embeddings {
        let mut h = UnitBuilder::new(UnitKind::Head, c.arch, tp);
        h.add(
            "lm_head.weight".into(),
            &[c.vocab_size, c.hidden],
            Role::LmHead,
        );
        units.push(h.build());
    }
}

fn gpt2(c: &ModelConfig, tp: TpShape) -> ParamLayout {
    let (d, v, f) = (c.hidden, c.vocab_size, c.ffn);
    let mut units = Vec::new();
    let mut e = UnitBuilder::new(UnitKind::Embedding, c.arch, tp);
    e.add(
        "transformer.wte.weight".into(),
        &[v, d],
        Role::TokenEmbedding,
    );
    e.add(
        "transformer.wpe.weight".into(),
        &[c.max_positions, d],
        Role::PositionEmbedding,
    );
    units.push(e.build());
    for i in 0..c.layers {
        let p = format!("transformer.h.{i}.");
        let mut b = UnitBuilder::new(UnitKind::Block(i), c.arch, tp);
        b.add(format!("{p}ln_1.weight"), &[d], Role::AttnNorm);
        b.add(format!("{p}ln_1.bias"), &[d], Role::AttnNormBias);
        b.add(format!("{p}attn.c_attn.weight"), &[d, 3 * d], Role::Qkv);
        b.add(format!("{p}attn.c_attn.bias"), &[3 * d], Role::QkvBias);
        b.add(format!("{p}attn.c_proj.weight"), &[d, d], Role::O);
        b.add(format!("{p}attn.c_proj.bias"), &[d], Role::OBias);
        b.add(format!("{p}ln_2.weight"), &[d], Role::MlpNorm);
        b.add(format!("{p}ln_2.bias"), &[d], Role::MlpNormBias);
        b.add(format!("{p}mlp.c_fc.weight"), &[d, f], Role::Up);
        b.add(format!("{p}mlp.c_fc.bias"), &[f], Role::UpBias);
        b.add(format!("{p}mlp.c_proj.weight"), &[f, d], Role::Down);
        b.add(format!("{p}mlp.c_proj.bias"), &[d], Role::DownBias);
        units.push(b.build());
    }
    let mut n = UnitBuilder::new(UnitKind::FinalNorm, c.arch, tp);
    n.add("transformer.ln_f.weight".into(), &[d], Role::FinalNorm);
    n.add("transformer.ln_f.bias".into(), &[d], Role::FinalNormBias);
    units.push(n.build());
    push_untied_head(&mut units, c, tp);
    ParamLayout { units }
}
