//! Model configuration, read from a Hugging Face `config.json`.
//!
//! Two families: the Llama family (Llama 2/3.x, Mistral, Qwen2/2.5, Qwen3, Phi-3/3.5/4-mini,
//! SmolLM3 (NoPE layers: `no_rope_layers`), Granite 3.x (embedding, residual, attention and
//! logits multipliers):
//! RMSNorm, RoPE with llama3 / linear / yarn / dynamic / longrope scaling and Phi's partial
//! rotary (rope.rs), SwiGLU, GQA, sliding windows (window.rs), Qwen3's per-head q/k RMSNorm,
//! Phi-3's fused qkv_proj / gate_up_proj (layout.rs), Gemma (RMSNorm scale 1 + w, GeGLU, the
//! embedding times √hidden; Gemma 2/3 in gemma.rs), OLMo-2 (norms on the branch outputs only,
//! q/k norms over the whole projection)) and GPT-2 (LayerNorm, learned positions, tanh-GELU, fused Conv1D
//! QKV, optional per-layer attention scale). Every key
//! the math depends on is read here; a value the model does not implement (a rope scaling type,
//! a window layout, another activation) is rejected with an error naming the file and key.
//! `from_file` also keeps the file's every key and the generation_config.json beside it
//! (`source`), which checkpoints and exports carry through (crate::hf_files).

use super::gemma;
use super::rope::{self, RopeScaling};
use super::window::{self, SlidingWindow};
use crate::error::{Error, Result};
use crate::hf_files::HfSource;
use crate::user;
use ferrotron_kernels::{Gelu, Glu};
use serde_json::{Map, Value};
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    Llama,
    Gpt2,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    pub arch: Arch,
    /// HF `model_type` as read ("llama", "mistral", "qwen2", "qwen3", "phi3", "smollm3",
    /// "granite", "gpt2").
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub ffn: usize,
    pub norm_eps: f64,
    /// Llama family: rotary base. GPT-2: unused.
    pub rope_theta: f64,
    /// Llama family: how the rotary frequency table is scaled (llama3, linear, yarn, dynamic,
    /// longrope).
    pub rope_scaling: RopeScaling,
    /// Llama family: the leading dims of each head that rotate (head_dim, or less under Phi's
    /// partial_rotary_factor). GPT-2: unused.
    pub rotary_dim: usize,
    /// Granite's multipliers (1 for every other type): the token embedding's output times
    /// `embedding_multiplier`; each attention and MLP output times `residual_multiplier` before
    /// its residual add; the logits divided by `logits_scaling`.
    pub embedding_multiplier: f64,
    pub residual_multiplier: f64,
    pub logits_scaling: f64,
    /// Granite's `attention_multiplier`: the softmax scale itself, in place of 1/√head_dim.
    pub attention_multiplier: Option<f64>,
    /// Per layer: whether q and k are rotated (SmolLM3's `no_rope_layers`: 0 marks a NoPE layer,
    /// which attends without positions); all true otherwise, and unused for GPT-2.
    pub rope_layers: Vec<bool>,
    /// Phi-3: q | k | v stored as one `qkv_proj` [(H + 2·KV)·Dh, D] and gate | up as one
    /// `gate_up_proj` [2F, D] (layout.rs views their row blocks as Q, K, V, Gate, Up).
    pub fused_projections: bool,
    /// Qwen3: RMSNorm (weight [head_dim]) over each query and key head, before RoPE.
    pub qk_norm: bool,
    /// OLMo-2: the q and k norms run over each token's whole projection (weights [H·Dh] and
    /// [KV·Dh]) instead of over each head.
    pub qk_norm_whole: bool,
    /// Whether each block norms its attention and MLP inputs (input_layernorm and
    /// post_attention_layernorm / Gemma 2-3's pre_feedforward_layernorm); false for OLMo-2,
    /// whose only block norms are on the branch outputs (`sandwich_norms`).
    pub pre_norms: bool,
    /// Sliding-window attention per layer (Mistral, Qwen2/3).
    pub sliding_window: SlidingWindow,
    /// q·k is divided by √head_dim (GPT-2's `scale_attn_weights`; always for the Llama family).
    pub attn_scale_by_head_dim: bool,
    /// GPT-2's `scale_attn_by_inverse_layer_idx`: layer l's q·k is also divided by l + 1.
    pub attn_scale_by_inverse_layer: bool,
    /// GPT-2: the MLP's GELU (`activation_function`: tanh for "gelu_new" and its aliases,
    /// exact for "gelu"). Llama family: unused (see `glu`).
    pub gelu: Gelu,
    /// Llama family: the gated MLP's activation (`hidden_act`): SwiGLU for "silu", GeGLU for
    /// the GELU names (Gemma's "gelu_pytorch_tanh", and its legacy "gelu"). GPT-2: unused.
    pub glu: Glu,
    /// Gemma 2/3: the attention and MLP outputs are normed before their residual adds
    /// (post_attention_layernorm, post_feedforward_layernorm), and the MLP input by
    /// pre_feedforward_layernorm.
    pub sandwich_norms: bool,
    /// Gemma 2/3's `query_pre_attn_scalar` s: the softmax scale is s^−½.
    pub query_pre_attn_scalar: Option<f64>,
    /// Gemma 3: the rotary embedding (θ, scaling) of the sliding-window layers, which differs
    /// from the full-attention layers' (`rope_theta`, `rope_scaling`).
    pub local_rope: Option<(f64, RopeScaling)>,
    /// Gemma 2's `attn_logit_softcapping` c: scaled attention scores pass through c·tanh(s/c)
    /// before the mask. None for every other type.
    pub attn_softcap: Option<f64>,
    /// Gemma 2's `final_logit_softcapping` c: the logits pass through c·tanh(z/c) before the
    /// cross-entropy (and sampling). None for every other type.
    pub final_softcap: Option<f64>,
    /// Added to every RMSNorm weight before it scales: 1 for Gemma, whose norms compute
    /// x̂·(1 + w) and store w (initialised to 0), 0 otherwise.
    pub norm_weight_offset: f64,
    /// Context length the checkpoint was built for (GPT-2: the learned position table size).
    pub max_positions: usize,
    pub tie_embeddings: bool,
    /// Bias on q, k, v projections.
    pub qkv_bias: bool,
    /// Bias on the attention output projection.
    pub o_bias: bool,
    pub mlp_bias: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
    /// The Llama family's `pad_token_id` as transformers builds the token embedding with it,
    /// `nn.Embedding(padding_idx)`: the row whose lookups pass no gradient back (its gradient
    /// comes only from a tied head). None for GPT-2, whose embedding has no padding_idx.
    pub embedding_padding_idx: Option<usize>,
    /// Notes for the user about accepted-but-ignored settings (e.g. dropout), printed at load.
    pub notes: Vec<String>,
    /// The config.json this was read from (every key) and its generation_config.json: what a
    /// checkpoint and an export carry through (`None` when parsed from a string).
    pub source: Option<HfSource>,
}

impl ModelConfig {
    /// Reads and validates `path` (a config.json).
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| user!("{}: cannot read: {e}", path.display()))?;
        let mut cfg = Self::from_json_str(&text, &path.display().to_string())?;
        cfg.source = Some(HfSource::beside(path, &text)?);
        Ok(cfg)
    }

    /// The Llama family's `hidden_act` for `glu`, as transformers' config class reads it back.
    pub fn hidden_act(&self) -> &'static str {
        match (self.glu, self.model_type.as_str()) {
            (Glu::Silu, _) => "silu",
            (Glu::Gelu(Gelu::Tanh), _) => "gelu_pytorch_tanh",
            // GemmaConfig reads "gelu" as the tanh GELU; "gelu_python" is the exact one
            (Glu::Gelu(Gelu::Erf), "gemma") => "gelu_python",
            (Glu::Gelu(Gelu::Erf), _) => "gelu",
        }
    }

    /// The rotary inverse-frequency table [rotary_dim / 2] (scaled as the config says).
    pub fn rope_inv_freq(&self) -> Vec<f64> {
        self.rope_scaling.inv_freq(self.rope_theta, self.rotary_dim)
    }

    /// Longrope's table for batches whose largest position + 1 exceeds the returned length.
    pub fn rope_long_inv_freq(&self) -> Option<(usize, Vec<f64>)> {
        self.rope_scaling
            .long_inv_freq(self.rope_theta, self.rotary_dim)
    }

    /// The softmax scale of layer `layer` (0-based): 1/√head_dim (unless GPT-2's
    /// scale_attn_weights = false), / (layer + 1) under scale_attn_by_inverse_layer_idx. (Yarn's
    /// and longrope's attention factor multiplies cos and sin in the rotary op instead: under
    /// partial rotary it scales only the rotated dims.)
    pub fn attention_scale(&self, layer: usize) -> f64 {
        if let Some(m) = self.attention_multiplier {
            return m;
        }
        if let Some(s) = self.query_pre_attn_scalar {
            return s.powf(-0.5);
        }
        let mut scale = if self.attn_scale_by_head_dim {
            1.0 / (self.head_dim as f64).sqrt()
        } else {
            1.0
        };
        if self.attn_scale_by_inverse_layer {
            scale /= (layer + 1) as f64;
        }
        scale
    }

    /// Refuses a training or reference sequence of `seq_len` positions the model cannot
    /// represent as transformers would: beyond GPT-2's learned position table, beyond
    /// max_position_embeddings under dynamic rotary scaling (whose frequencies then change with
    /// each batch's length).
    pub fn check_sequence_length(&self, seq_len: usize) -> std::result::Result<(), String> {
        if seq_len <= self.max_positions {
            return Ok(());
        }
        if self.arch == Arch::Gpt2 {
            return Err(format!(
                "sequences of {seq_len} tokens exceed the model's {} learned positions (n_positions)",
                self.max_positions
            ));
        }
        if let RopeScaling::Dynamic { .. } = self.rope_scaling {
            return Err(format!(
                "sequences of {seq_len} tokens exceed max_position_embeddings = {}, beyond which dynamic rotary scaling changes its frequencies with every batch's length; ferrotron supports it only within that length",
                self.max_positions
            ));
        }
        Ok(())
    }

    /// Parses config JSON; `origin` names the file in errors.
    pub fn from_json_str(text: &str, origin: &str) -> Result<Self> {
        let v: Value =
            serde_json::from_str(text).map_err(|e| user!("{origin}: not valid JSON: {e}"))?;
        let obj = v
            .as_object()
            .ok_or_else(|| user!("{origin}: expected a JSON object at the top level"))?;
        let c = Keys { obj, origin };
        let model_type = c.string("model_type")?;
        let cfg = match model_type.as_str() {
            "llama" | "mistral" | "qwen2" | "qwen3" | "phi3" | "smollm3" | "granite"
            | "gemma" | "gemma2" | "gemma3_text" | "olmo2" => llama(&c, model_type)?,
            "gpt2" => gpt2(&c)?,
            "gemma3" => {
                return Err(user!(
                    "{origin}: model_type `gemma3` (Gemma3ForConditionalGeneration: the text model with a vision tower) is not supported; the text-only checkpoints (gemma-3-1b, model_type `gemma3_text`) are"
                ))
            }
            other => {
                return Err(user!(
                    "{origin}: model_type `{other}` is not supported (supported: llama, mistral, qwen2, qwen3, phi3, smollm3, granite, gemma, gemma2, gemma3_text, olmo2, gpt2)"
                ))
            }
        };
        cfg.validate(origin)?;
        Ok(cfg)
    }

    fn validate(&self, origin: &str) -> Result<()> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden size", self.hidden),
            ("number of layers", self.layers),
            ("attention heads", self.heads),
            ("key/value heads", self.kv_heads),
            ("head_dim", self.head_dim),
            ("intermediate size", self.ffn),
            (
                "the position count (max_position_embeddings / n_positions)",
                self.max_positions,
            ),
        ];
        for (what, v) in positive {
            if v == 0 {
                return Err(user!("{origin}: {what} must be positive"));
            }
        }
        if self.heads % self.kv_heads != 0 {
            return Err(user!(
                "{origin}: num_attention_heads ({}) is not a multiple of num_key_value_heads ({})",
                self.heads,
                self.kv_heads
            ));
        }
        if self.arch == Arch::Gpt2 && self.heads.checked_mul(self.head_dim) != Some(self.hidden) {
            return Err(user!(
                "{origin}: n_embd ({}) is not divisible by n_head ({})",
                self.hidden,
                self.heads
            ));
        }
        Ok(())
    }

    /// Parameters counted over every logical tensor (tied tensors once).
    pub fn num_params(&self) -> usize {
        crate::model::layout::ParamLayout::new(self).num_params()
    }

    /// Writes this configuration as a HF config.json object of its architecture.
    pub fn to_hf_json(&self) -> Value {
        let mut m = Map::new();
        let mut put = |k: &str, v: Value| {
            m.insert(k.to_string(), v);
        };
        match self.arch {
            Arch::Llama => {
                let class = match self.model_type.as_str() {
                    "mistral" => "MistralForCausalLM",
                    "qwen2" => "Qwen2ForCausalLM",
                    "qwen3" => "Qwen3ForCausalLM",
                    "phi3" => "Phi3ForCausalLM",
                    "smollm3" => "SmolLM3ForCausalLM",
                    "granite" => "GraniteForCausalLM",
                    "gemma" => "GemmaForCausalLM",
                    "gemma2" => "Gemma2ForCausalLM",
                    "gemma3_text" => "Gemma3ForCausalLM",
                    "olmo2" => "Olmo2ForCausalLM",
                    _ => "LlamaForCausalLM",
                };
                put("architectures", serde_json::json!([class]));
                put("model_type", self.model_type.clone().into());
                put("vocab_size", self.vocab_size.into());
                put("hidden_size", self.hidden.into());
                put("intermediate_size", self.ffn.into());
                put("num_hidden_layers", self.layers.into());
                put("num_attention_heads", self.heads.into());
                put("num_key_value_heads", self.kv_heads.into());
                put("head_dim", self.head_dim.into());
                let act_key = match self.model_type.as_str() {
                    "gemma2" | "gemma3_text" => "hidden_activation",
                    _ => "hidden_act",
                };
                put(act_key, self.hidden_act().into());
                put("max_position_embeddings", self.max_positions.into());
                put("rms_norm_eps", self.norm_eps.into());
                match &self.local_rope {
                    Some((local_theta, local_scaling)) => {
                        let params = |theta: f64, scaling: &RopeScaling| {
                            let mut p = match scaling.to_hf_json() {
                                Value::Object(m) => m,
                                _ => serde_json::json!({"rope_type": "default"})
                                    .as_object()
                                    .cloned()
                                    .unwrap_or_default(),
                            };
                            p.insert("rope_theta".into(), theta.into());
                            Value::Object(p)
                        };
                        put(
                            "rope_parameters",
                            serde_json::json!({
                                "full_attention": params(self.rope_theta, &self.rope_scaling),
                                "sliding_attention": params(*local_theta, local_scaling),
                            }),
                        );
                    }
                    None => {
                        put("rope_theta", self.rope_theta.into());
                        put("rope_scaling", self.rope_scaling.to_hf_json());
                    }
                }
                if let Some(s) = self.query_pre_attn_scalar {
                    put("query_pre_attn_scalar", s.into());
                }
                if self.sandwich_norms {
                    let cap = |c: Option<f64>| c.map_or(Value::Null, Value::from);
                    put("attn_logit_softcapping", cap(self.attn_softcap));
                    put("final_logit_softcapping", cap(self.final_softcap));
                }
                put("tie_word_embeddings", self.tie_embeddings.into());
                if self.model_type == "granite" {
                    put("embedding_multiplier", self.embedding_multiplier.into());
                    put("residual_multiplier", self.residual_multiplier.into());
                    put("logits_scaling", self.logits_scaling.into());
                    let m = self.attention_multiplier.unwrap_or(1.0);
                    put("attention_multiplier", m.into());
                }
                if self.rotary_dim != self.head_dim {
                    put(
                        "partial_rotary_factor",
                        (self.rotary_dim as f64 / self.head_dim as f64).into(),
                    );
                }
                if let RopeScaling::Longrope {
                    original_max_positions,
                    ..
                } = self.rope_scaling
                {
                    put(
                        "original_max_position_embeddings",
                        original_max_positions.into(),
                    );
                }
                if !matches!(self.model_type.as_str(), "qwen2" | "phi3") {
                    put("attention_bias", self.qkv_bias.into());
                    put("mlp_bias", self.mlp_bias.into());
                }
                match self.model_type.as_str() {
                    "gemma2" | "gemma3_text" => {
                        for (k, v) in self.sliding_window.qwen_keys() {
                            if k == "sliding_window" || k == "layer_types" {
                                put(k, v);
                            }
                        }
                    }
                    "mistral" | "phi3" => put(
                        "sliding_window",
                        self.sliding_window.window.map_or(Value::Null, Value::from),
                    ),
                    "qwen2" | "qwen3" => {
                        for (k, v) in self.sliding_window.qwen_keys() {
                            put(k, v);
                        }
                    }
                    "smollm3" => {
                        for (k, v) in self.sliding_window.qwen_keys() {
                            if k != "max_window_layers" {
                                put(k, v);
                            }
                        }
                        let nope: Vec<Value> =
                            self.rope_layers.iter().map(|&r| (r as u8).into()).collect();
                        put("no_rope_layers", Value::Array(nope));
                    }
                    _ => {}
                }
            }
            Arch::Gpt2 => {
                put("architectures", serde_json::json!(["GPT2LMHeadModel"]));
                put("model_type", "gpt2".into());
                put("vocab_size", self.vocab_size.into());
                put("n_embd", self.hidden.into());
                put("n_layer", self.layers.into());
                put("n_head", self.heads.into());
                put("n_inner", self.ffn.into());
                put("n_positions", self.max_positions.into());
                // HF's gpt2 config carries the context length twice; llama.cpp's converter
                // reads n_ctx.
                put("n_ctx", self.max_positions.into());
                put("layer_norm_epsilon", self.norm_eps.into());
                let act = match self.gelu {
                    Gelu::Tanh => "gelu_new",
                    Gelu::Erf => "gelu",
                };
                put("activation_function", act.into());
                put("scale_attn_weights", self.attn_scale_by_head_dim.into());
                put(
                    "scale_attn_by_inverse_layer_idx",
                    self.attn_scale_by_inverse_layer.into(),
                );
                put("tie_word_embeddings", self.tie_embeddings.into());
                for k in ["attn_pdrop", "embd_pdrop", "resid_pdrop"] {
                    put(k, 0.0.into());
                }
            }
        }
        put(
            "bos_token_id",
            self.bos_token_id.map(Value::from).unwrap_or(Value::Null),
        );
        put(
            "eos_token_id",
            self.eos_token_id.map(Value::from).unwrap_or(Value::Null),
        );
        put("torch_dtype", "float32".into());
        Value::Object(m)
    }
}

/// Typed access to config keys with errors that name the file and key.
struct Keys<'a> {
    obj: &'a Map<String, Value>,
    origin: &'a str,
}

impl Keys<'_> {
    fn get(&self, key: &str) -> Option<&Value> {
        self.obj.get(key).filter(|v| !v.is_null())
    }
    fn missing(&self, key: &str) -> Error {
        user!("{}: missing key `{key}`", self.origin)
    }
    fn wrong(&self, key: &str, want: &str, v: &Value) -> Error {
        user!("{}: key `{key}` must be {want}, found {v}", self.origin)
    }
    fn string(&self, key: &str) -> Result<String> {
        let v = self.get(key).ok_or_else(|| self.missing(key))?;
        v.as_str()
            .map(str::to_string)
            .ok_or_else(|| self.wrong(key, "a string", v))
    }
    fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(|x| Some(x as usize))
                .ok_or_else(|| self.wrong(key, "a non-negative integer", v)),
        }
    }
    fn usize(&self, key: &str) -> Result<usize> {
        self.opt_usize(key)?.ok_or_else(|| self.missing(key))
    }
    /// The number of layers: per-layer settings are built from it before the preflight's size
    /// check, so a count no model could have is refused here (2^40 aborted on allocation).
    fn layer_count(&self, key: &str) -> Result<usize> {
        const MAX_LAYERS: usize = 1 << 20;
        let n = self.usize(key)?;
        if n > MAX_LAYERS {
            return Err(user!(
                "{}: {key} = {n} is more layers than ferrotron supports (at most {MAX_LAYERS})",
                self.origin
            ));
        }
        Ok(n)
    }
    /// A key that is absent takes the config class's default (`derived` when the class derives
    /// it); a key that is null is `derived`.
    fn usize_or_class(&self, key: &str, class: Option<usize>, derived: usize) -> Result<usize> {
        match self.obj.contains_key(key) {
            false => Ok(class.unwrap_or(derived)),
            true => Ok(self.opt_usize(key)?.unwrap_or(derived)),
        }
    }
    fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.wrong(key, "a number", v)),
        }
    }
    fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.wrong(key, "true or false", v)),
        }
    }
    /// A token id: an integer, or a list whose first element is used (HF allows lists for eos).
    fn opt_token(&self, key: &str) -> Result<Option<u32>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(a)) if a.is_empty() => Ok(None),
            Some(Value::Array(a)) => a[0]
                .as_u64()
                .map(|x| Some(x as u32))
                .ok_or_else(|| self.wrong(key, "an integer", &a[0])),
            Some(v) => v
                .as_u64()
                .map(|x| Some(x as u32))
                .ok_or_else(|| self.wrong(key, "an integer", v)),
        }
    }
    /// `pad_token_id` (absent: the class default) as torch's nn.Embedding takes padding_idx for
    /// a table of `vocab` rows: −vocab ≤ p < vocab, a negative p counting from the end; null:
    /// none. Outside that range transformers cannot build the model, so it is refused.
    fn padding_idx(&self, vocab: usize, class_default: Option<i64>) -> Result<Option<usize>> {
        let key = "pad_token_id";
        let p = match self.obj.get(key) {
            None => class_default,
            Some(Value::Null) => None,
            Some(v) => Some(v.as_i64().ok_or_else(|| self.wrong(key, "an integer", v))?),
        };
        let Some(p) = p else { return Ok(None) };
        let v = vocab as i64;
        if !(-v..v).contains(&p) {
            return Err(user!(
                "{}: pad_token_id = {p} is outside the vocabulary of {vocab} tokens (transformers builds the embedding with padding_idx = pad_token_id and cannot either)",
                self.origin
            ));
        }
        Ok(Some(if p < 0 { (p + v) as usize } else { p as usize }))
    }
    fn dropout_note(&self, keys: &[&str], notes: &mut Vec<String>) -> Result<()> {
        for k in keys {
            if let Some(p) = self.opt_f64(k)? {
                if p != 0.0 {
                    notes.push(format!(
                        "{}: `{k}` = {p} is ignored: ferrotron trains without dropout",
                        self.origin
                    ));
                }
            }
        }
        Ok(())
    }
}

/// What transformers' config class of a Llama-family `model_type` assumes for a key that
/// config.json leaves out (transformers 5: MistralConfig num_key_value_heads 8; Qwen2Config /
/// Qwen3Config 32, and Qwen3Config head_dim 128; SmolLM3Config 4 and tied embeddings; LlamaConfig
/// derives both). None: derived from the heads (kv heads = heads, head_dim = hidden / heads).
struct ClassDefaults {
    kv_heads: Option<usize>,
    head_dim: Option<usize>,
    max_positions: usize,
    tie_embeddings: bool,
    /// pad_token_id (nn.Embedding's padding_idx).
    pad: Option<i64>,
}

impl ClassDefaults {
    fn of(model_type: &str) -> Self {
        let (kv_heads, head_dim, max_positions) = match model_type {
            "mistral" => (Some(8), None, 131_072),
            "qwen2" => (Some(32), None, 32_768),
            "qwen3" => (Some(32), Some(128), 32_768),
            "phi3" => (None, None, 4096),
            "smollm3" => (Some(4), None, 32_768),
            "gemma" => (Some(16), Some(256), 8192),
            "gemma2" => (Some(4), Some(256), 8192),
            "gemma3_text" => (Some(4), Some(256), 131_072),
            _ => (None, None, 2048),
        };
        ClassDefaults {
            kv_heads,
            head_dim,
            max_positions,
            tie_embeddings: model_type == "smollm3" || gemma::is_gemma(model_type),
            pad: match model_type {
                "phi3" => Some(32_000),
                "smollm3" => Some(128_004),
                "gemma" | "gemma2" | "gemma3_text" => Some(0),
                "olmo2" => Some(1),
                _ => None,
            },
        }
    }
}

/// SmolLM3's rotary layers: `no_rope_layers` (one 0/1 per layer, 1 = rotary), or without it
/// every layer but each `no_rope_layer_interval`-th (default 4); every layer for other types.
fn rope_layers(c: &Keys, model_type: &str, layers: usize) -> Result<Vec<bool>> {
    let origin = c.origin;
    if model_type != "smollm3" {
        return Ok(vec![true; layers]);
    }
    match c.get("no_rope_layers") {
        Some(v) => {
            let list = v.as_array().ok_or_else(|| {
                user!("{origin}: key `no_rope_layers` must be a list of 0 and 1, found {v}")
            })?;
            if list.len() != layers {
                return Err(user!(
                    "{origin}: `no_rope_layers` lists {} layers, num_hidden_layers is {layers}",
                    list.len()
                ));
            }
            list.iter()
                .enumerate()
                .map(|(i, x)| match x.as_u64() {
                    Some(0) => Ok(false),
                    Some(1) => Ok(true),
                    _ => Err(user!(
                        "{origin}: no_rope_layers[{i}] = {x} must be 0 (no rotary) or 1"
                    )),
                })
                .collect()
        }
        None => {
            let every = c.opt_usize("no_rope_layer_interval")?.unwrap_or(4);
            if every == 0 {
                return Err(user!(
                    "{origin}: no_rope_layer_interval must be positive, found 0"
                ));
            }
            Ok((0..layers).map(|l| (l + 1) % every != 0).collect())
        }
    }
}

fn llama(c: &Keys, model_type: String) -> Result<ModelConfig> {
    let origin = c.origin;
    let hidden = c.usize("hidden_size")?;
    let heads = c.usize("num_attention_heads")?;
    if heads == 0 {
        return Err(user!("{origin}: num_attention_heads must be positive"));
    }
    // A key that is absent takes its transformers class default; null means "derive it".
    let class = ClassDefaults::of(&model_type);
    let kv_heads = c.usize_or_class("num_key_value_heads", class.kv_heads, heads)?;
    let head_dim = c.usize_or_class("head_dim", class.head_dim, hidden / heads)?;
    let gemma = gemma::is_gemma(&model_type);
    let olmo2 = model_type == "olmo2";
    let glu = glu_from_hf(c, &model_type)?;
    let gemma_extras = gemma::extras(c.obj, &model_type, origin)?;
    let max_positions = c
        .opt_usize("max_position_embeddings")?
        .unwrap_or(class.max_positions);
    let (rope, local_rope) = match model_type.as_str() {
        "gemma3_text" => {
            let (full, local) = gemma::gemma3_ropes(c.obj, origin, max_positions, head_dim)?;
            (full, Some((local.theta, local.scaling)))
        }
        _ => (
            rope::from_config(c.obj, origin, max_positions, head_dim, &model_type)?,
            None,
        ),
    };
    let layers = c.layer_count("num_hidden_layers")?;
    let mut notes = Vec::new();
    let rope_layers = rope_layers(c, &model_type, layers)?;
    let sliding_window = window::from_config(c.obj, &model_type, &rope_layers, origin, &mut notes)?;
    // pretraining_tp > 1 made transformers 4.x split each projection into that many slices and
    // add the partial products (the same sums, another rounding); transformers 5 ignores it.
    if c.opt_usize("pretraining_tp")? == Some(0) {
        return Err(user!(
            "{origin}: pretraining_tp must be at least 1, found 0"
        ));
    }
    // Qwen2: q, k, v biases, none on o. Phi-3: none (its classes read neither key). Others
    // (Qwen3 too): `attention_bias` on all four.
    let phi3 = model_type == "phi3";
    let qkv_bias;
    let o_bias;
    if model_type == "qwen2" {
        qkv_bias = true;
        o_bias = false;
    } else if phi3 {
        for key in ["attention_bias", "mlp_bias"] {
            if c.opt_bool(key)? == Some(true) {
                notes.push(format!(
                    "{origin}: `{key}` is ignored for phi3 (transformers' Phi3 has no biases)"
                ));
            }
        }
        qkv_bias = false;
        o_bias = false;
    } else {
        if (gemma || olmo2) && c.opt_bool("mlp_bias")? == Some(true) {
            notes.push(format!(
                "{origin}: `mlp_bias` is ignored for {model_type} (its transformers MLP has no biases)"
            ));
        }
        qkv_bias = c.opt_bool("attention_bias")?.unwrap_or(false);
        o_bias = qkv_bias;
    }
    let dropouts: &[&str] = if phi3 {
        &["attention_dropout", "resid_pdrop", "embd_pdrop"]
    } else {
        &["attention_dropout"]
    };
    c.dropout_note(dropouts, &mut notes)?;
    let vocab_size = c.usize("vocab_size")?;
    // GraniteConfig's four multipliers, 1.0 by default; other classes have none
    let multiplier = |key: &str| -> Result<f64> {
        if model_type != "granite" {
            return Ok(1.0);
        }
        match c.opt_f64(key)? {
            None => Ok(1.0),
            Some(m) if m.is_finite() && m > 0.0 => Ok(m),
            Some(m) => Err(user!("{origin}: {key} = {m} must be a positive number")),
        }
    };
    let (embedding_multiplier, residual_multiplier, logits_scaling) = (
        multiplier("embedding_multiplier")?,
        multiplier("residual_multiplier")?,
        multiplier("logits_scaling")?,
    );
    let attention_multiplier = match model_type.as_str() {
        "granite" => Some(multiplier("attention_multiplier")?),
        _ => None,
    };
    // Gemma scales the embedding by √hidden, rounded to f32 (transformers keeps the factor in a
    // float32 buffer and casts it to the weights' dtype)
    let embedding_multiplier = match gemma {
        true => (hidden as f64).sqrt() as f32 as f64,
        false => embedding_multiplier,
    };
    Ok(ModelConfig {
        arch: Arch::Llama,
        vocab_size,
        hidden,
        layers,
        heads,
        kv_heads,
        head_dim,
        ffn: c.usize("intermediate_size")?,
        // Phi3Config's and Olmo2Config's default is 1e-5, the others' 1e-6
        norm_eps: c
            .opt_f64("rms_norm_eps")?
            .unwrap_or(if phi3 || olmo2 { 1e-5 } else { 1e-6 }),
        rope_theta: rope.theta,
        rope_scaling: rope.scaling,
        rotary_dim: rope.rotary_dim,
        embedding_multiplier,
        residual_multiplier,
        logits_scaling,
        attention_multiplier,
        rope_layers,
        fused_projections: phi3,
        qk_norm: matches!(model_type.as_str(), "qwen3" | "gemma3_text" | "olmo2"),
        qk_norm_whole: olmo2,
        pre_norms: !olmo2,
        sliding_window,
        attn_scale_by_head_dim: true,
        attn_scale_by_inverse_layer: false,
        gelu: Gelu::Tanh,
        glu,
        sandwich_norms: gemma_extras.is_some() || olmo2,
        query_pre_attn_scalar: gemma_extras.as_ref().map(|e| e.query_pre_attn_scalar),
        local_rope,
        attn_softcap: gemma_extras.as_ref().and_then(|e| e.attn_softcap),
        final_softcap: gemma_extras.as_ref().and_then(|e| e.final_softcap),
        norm_weight_offset: if gemma { 1.0 } else { 0.0 },
        max_positions,
        tie_embeddings: c
            .opt_bool("tie_word_embeddings")?
            .unwrap_or(class.tie_embeddings),
        qkv_bias,
        o_bias,
        mlp_bias: !phi3 && !gemma && !olmo2 && c.opt_bool("mlp_bias")?.unwrap_or(false),
        bos_token_id: c.opt_token("bos_token_id")?,
        eos_token_id: c.opt_token("eos_token_id")?,
        embedding_padding_idx: c.padding_idx(vocab_size, class.pad)?,
        model_type,
        notes,
        source: None,
    })
}

fn gpt2(c: &Keys) -> Result<ModelConfig> {
    let origin = c.origin;
    let hidden = c.usize("n_embd")?;
    let heads = c.usize("n_head")?;
    if heads == 0 {
        return Err(user!("{origin}: n_head must be positive"));
    }
    let act = c
        .opt_string("activation_function")?
        .unwrap_or_else(|| "gelu_new".into());
    let gelu = gelu_from_hf(&act).ok_or_else(|| {
        user!(
            "{origin}: activation_function `{act}` is not supported (gelu and the tanh GELUs \
             gelu_new, gelu_pytorch_tanh, gelu_fast, gelu_python_tanh, gelu_accurate are)"
        )
    })?;
    // reorder_and_upcast_attn only makes transformers compute q·k and the softmax in f32 under
    // half precision, which ferrotron's attention always does; the two scale flags are read.
    c.opt_bool("reorder_and_upcast_attn")?;
    if c.opt_bool("add_cross_attention")? == Some(true) {
        return Err(user!(
            "{origin}: add_cross_attention = true is not supported (decoder-only models)"
        ));
    }
    let mut notes = Vec::new();
    c.dropout_note(&["attn_pdrop", "embd_pdrop", "resid_pdrop"], &mut notes)?;
    let layers = c.layer_count("n_layer")?;
    Ok(ModelConfig {
        arch: Arch::Gpt2,
        model_type: "gpt2".into(),
        vocab_size: c.usize("vocab_size")?,
        hidden,
        layers,
        heads,
        kv_heads: heads,
        head_dim: hidden / heads,
        ffn: c.opt_usize("n_inner")?.unwrap_or(4 * hidden),
        norm_eps: c.opt_f64("layer_norm_epsilon")?.unwrap_or(1e-5),
        rope_theta: 0.0,
        rope_scaling: RopeScaling::None,
        rotary_dim: 0,
        embedding_multiplier: 1.0,
        residual_multiplier: 1.0,
        logits_scaling: 1.0,
        attention_multiplier: None,
        rope_layers: vec![false; layers],
        fused_projections: false,
        qk_norm: false,
        qk_norm_whole: false,
        pre_norms: true,
        sliding_window: SlidingWindow::none(layers),
        attn_scale_by_head_dim: c.opt_bool("scale_attn_weights")?.unwrap_or(true),
        attn_scale_by_inverse_layer: c
            .opt_bool("scale_attn_by_inverse_layer_idx")?
            .unwrap_or(false),
        gelu,
        glu: Glu::Silu,
        sandwich_norms: false,
        query_pre_attn_scalar: None,
        local_rope: None,
        attn_softcap: None,
        final_softcap: None,
        norm_weight_offset: 0.0,
        max_positions: c.opt_usize("n_positions")?.unwrap_or(1024),
        // GPT2Config ties by default; untied, transformers 5 keeps an `lm_head.weight` [V, D]
        tie_embeddings: c.opt_bool("tie_word_embeddings")?.unwrap_or(true),
        qkv_bias: true,
        o_bias: true,
        mlp_bias: true,
        bos_token_id: c.opt_token("bos_token_id")?,
        eos_token_id: c.opt_token("eos_token_id")?,
        embedding_padding_idx: None,
        notes,
        source: None,
    })
}

/// The gated MLP's activation of a Llama-family config (`hidden_act`, transformers' ACT2FN):
/// "silu" / "swish" (the default, Gemma's "gelu_pytorch_tanh"), or a GELU name; GemmaConfig
/// reads the legacy "gelu" of the original Gemma releases as the tanh GELU.
fn glu_from_hf(c: &Keys, model_type: &str) -> Result<Glu> {
    let default = match gemma::is_gemma(model_type) {
        true => "gelu_pytorch_tanh",
        false => "silu",
    };
    // Gemma2Config and Gemma3TextConfig name the key hidden_activation
    let key = match model_type {
        "gemma2" | "gemma3_text" => "hidden_activation",
        _ => "hidden_act",
    };
    let act = c.opt_string(key)?.unwrap_or_else(|| default.into());
    match act.as_str() {
        "silu" | "swish" => Ok(Glu::Silu),
        "gelu" if model_type == "gemma" => Ok(Glu::Gelu(Gelu::Tanh)),
        other => gelu_from_hf(other).map(Glu::Gelu).ok_or_else(|| {
            user!(
                "{}: {key} `{act}` is not supported for {model_type} (silu, gelu, gelu_pytorch_tanh and the other GELU names are)",
                c.origin
            )
        }),
    }
}

/// The GELU an HF `activation_function` names (transformers' ACT2CLS): the exact one for "gelu"
/// and "gelu_python", the tanh approximation for the five names that compute it; None otherwise.
fn gelu_from_hf(act: &str) -> Option<Gelu> {
    match act {
        "gelu" | "gelu_python" => Some(Gelu::Erf),
        "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" | "gelu_python_tanh" | "gelu_accurate" => {
            Some(Gelu::Tanh)
        }
        _ => None,
    }
}

impl Keys<'_> {
    fn opt_string(&self, key: &str) -> Result<Option<String>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(|s| Some(s.to_string()))
                .ok_or_else(|| self.wrong(key, "a string", v)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `base` with the keys of `extra` added, parsed as a config.json.
    fn with_keys(mut base: serde_json::Value, extra: serde_json::Value) -> Result<ModelConfig> {
        base.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        ModelConfig::from_json_str(&base.to_string(), "config.json")
    }

    fn parse(json: serde_json::Value) -> ModelConfig {
        ModelConfig::from_json_str(&json.to_string(), "config.json").unwrap()
    }

    #[test]
    fn attention_scale_follows_gpt2_flags_and_yarn() {
        let gpt2 = |extra: serde_json::Value| {
            let mut v = serde_json::json!({"model_type": "gpt2", "vocab_size": 10, "n_embd": 16,
                "n_layer": 3, "n_head": 4});
            v.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            parse(v)
        };
        let plain = gpt2(serde_json::json!({"reorder_and_upcast_attn": true}));
        assert_eq!(plain.attention_scale(2), 0.5);
        let by_layer = gpt2(serde_json::json!({"scale_attn_by_inverse_layer_idx": true}));
        assert_eq!(by_layer.attention_scale(0), 0.5);
        assert_eq!(by_layer.attention_scale(2), 0.5 / 3.0);
        let unscaled = gpt2(serde_json::json!({"scale_attn_weights": false}));
        assert_eq!(unscaled.attention_scale(1), 1.0);
        let llama = parse(serde_json::json!({"model_type": "qwen2", "vocab_size": 10,
            "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 4,
            "num_hidden_layers": 1,
            "intermediate_size": 8, "max_position_embeddings": 64,
            "rope_scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16}}));
        // yarn's factor m is on cos and sin (the rotary op), not in the softmax scale
        let m = 0.1 * 4f64.ln() + 1.0;
        assert!((llama.rope_scaling.attention_factor() - m).abs() < 1e-15);
        assert_eq!(llama.attention_scale(0), 0.25);
    }

    #[test]
    fn activation_names_map_to_the_function_transformers_computes() {
        let gpt2 = |act: &str| {
            ModelConfig::from_json_str(
                &serde_json::json!({"model_type": "gpt2", "vocab_size": 10, "n_embd": 16,
                    "n_layer": 1, "n_head": 4, "activation_function": act})
                .to_string(),
                "config.json",
            )
        };
        for act in [
            "gelu_new",
            "gelu_pytorch_tanh",
            "gelu_fast",
            "gelu_python_tanh",
            "gelu_accurate",
        ] {
            assert_eq!(gpt2(act).unwrap().gelu, Gelu::Tanh, "{act}");
        }
        for act in ["gelu", "gelu_python"] {
            let cfg = gpt2(act).unwrap();
            assert_eq!(cfg.gelu, Gelu::Erf, "{act}");
            // what an export writes reads back as the same function
            let written = cfg.to_hf_json()["activation_function"].clone();
            assert_eq!(written, "gelu");
        }
        for act in ["relu", "gelu_10", "quick_gelu", "silu"] {
            let err = gpt2(act).unwrap_err().to_string();
            assert!(
                err.contains("activation_function") && err.contains(act),
                "{err}"
            );
        }
        let llama = |extra: serde_json::Value| {
            with_keys(
                serde_json::json!({"model_type": "llama", "vocab_size": 10,
                "hidden_size": 16, "num_attention_heads": 2, "num_hidden_layers": 1,
                "intermediate_size": 8}),
                extra,
            )
        };
        // torch's nn.SiLU under its other name; pretraining_tp only split transformers 4.x's
        // products into slices
        assert!(llama(serde_json::json!({"hidden_act": "swish", "pretraining_tp": 2})).is_ok());
        assert!(llama(serde_json::json!({"pretraining_tp": 0})).is_err());
        // a gated MLP takes transformers' ACT2FN of hidden_act: "gelu" is the exact GELU for
        // Llama and Gemma 2/3, the tanh one for Gemma 1 (GemmaConfig's legacy remap)
        let glu_of = |t: &str, key: &str, act: &str| {
            let cfg = parse(serde_json::json!({"model_type": t, "vocab_size": 10,
                "hidden_size": 16, "num_attention_heads": 2, "num_key_value_heads": 1,
                "num_hidden_layers": 1, "intermediate_size": 8, key: act}));
            let back = cfg.to_hf_json()[key].as_str().unwrap().to_string();
            (cfg.glu, back)
        };
        let erf = Glu::Gelu(Gelu::Erf);
        let tanh = Glu::Gelu(Gelu::Tanh);
        assert_eq!(glu_of("llama", "hidden_act", "gelu"), (erf, "gelu".into()));
        assert_eq!(
            glu_of("gemma", "hidden_act", "gelu"),
            (tanh, "gelu_pytorch_tanh".into())
        );
        assert_eq!(
            glu_of("gemma", "hidden_act", "gelu_python"),
            (erf, "gelu_python".into())
        );
        let gemma2 = glu_of("gemma2", "hidden_activation", "gelu");
        assert_eq!(gemma2, (erf, "gelu".into()));
        assert!(llama(serde_json::json!({"hidden_act": "relu"})).is_err());
    }

    #[test]
    fn olmo2_reads_as_transformers_olmo2_config() {
        let c = parse(
            serde_json::json!({"model_type": "olmo2", "vocab_size": 100278,
            "hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2,
            "intermediate_size": 96, "mlp_bias": true}),
        );
        // Olmo2Config: eps 1e-5, pad 1, untied, kv heads = heads; no input norms, norms on the
        // branch outputs, q/k norms over the whole projection, no MLP biases (noted)
        assert_eq!((c.norm_eps, c.embedding_padding_idx), (1e-5, Some(1)));
        assert_eq!(
            (c.kv_heads, c.tie_embeddings, c.mlp_bias),
            (4, false, false)
        );
        assert!(!c.pre_norms && c.sandwich_norms && c.qk_norm && c.qk_norm_whole);
        assert_eq!((c.norm_weight_offset, c.attn_softcap), (0.0, None));
        assert!(c.notes.iter().any(|n| n.contains("mlp_bias")));
        let names: Vec<String> = crate::model::layout::ParamLayout::new(&c)
            .tensors()
            .map(|(_, t)| t.name.clone())
            .filter(|n| n.starts_with("model.layers.0.") && n.contains("norm"))
            .collect();
        assert_eq!(
            names,
            [
                "model.layers.0.self_attn.q_norm.weight",
                "model.layers.0.self_attn.k_norm.weight",
                "model.layers.0.post_attention_layernorm.weight",
                "model.layers.0.post_feedforward_layernorm.weight"
            ]
        );
        assert_eq!(c.to_hf_json()["architectures"][0], "Olmo2ForCausalLM");
    }

    #[test]
    fn gemma_family_reads_its_keys_and_class_defaults() {
        let base = |t: &str| {
            serde_json::json!({"model_type": t, "vocab_size": 64, "hidden_size": 16,
                "num_attention_heads": 2, "num_key_value_heads": 1, "num_hidden_layers": 7,
                "intermediate_size": 8})
        };
        let gemma = parse(base("gemma"));
        assert_eq!(gemma.norm_weight_offset, 1.0);
        assert_eq!(gemma.embedding_multiplier, 4.0);
        assert_eq!(gemma.head_dim, 256);
        let class_kv = with_keys(
            base("gemma"),
            serde_json::json!({"num_attention_heads": 32, "num_key_value_heads": serde_json::Value::Null}),
        )
        .unwrap();
        assert_eq!(
            class_kv.kv_heads, 32,
            "null derives kv heads from the heads"
        );
        let mut absent = base("gemma");
        absent
            .as_object_mut()
            .unwrap()
            .remove("num_key_value_heads");
        absent["num_attention_heads"] = 32.into();
        assert_eq!(parse(absent).kv_heads, 16, "GemmaConfig's default");
        assert_eq!(gemma.glu, Glu::Gelu(Gelu::Tanh));
        assert!(gemma.tie_embeddings && !gemma.sandwich_norms);
        assert_eq!(gemma.embedding_padding_idx, Some(0));
        // √3072 rounded to f32, as transformers keeps it
        let wide = with_keys(base("gemma"), serde_json::json!({"hidden_size": 3072})).unwrap();
        assert_eq!(wide.embedding_multiplier, 3072f64.sqrt() as f32 as f64);
        assert_ne!(wide.embedding_multiplier, 3072f64.sqrt());

        let g2 = parse(base("gemma2"));
        assert!(g2.sandwich_norms && !g2.qk_norm && g2.local_rope.is_none());
        assert_eq!(
            (g2.attn_softcap, g2.final_softcap),
            (Some(50.0), Some(30.0))
        );
        assert_eq!(g2.attention_scale(0), 256f64.powf(-0.5));
        assert_eq!(g2.sliding_window.window, Some(4096));
        let every_other: Vec<bool> = (0..7).map(|l| l % 2 == 0).collect();
        assert_eq!(g2.sliding_window.layers, every_other);
        let uncapped = with_keys(
            base("gemma2"),
            serde_json::json!({"attn_logit_softcapping": null, "final_logit_softcapping": 15.5,
                "query_pre_attn_scalar": 20}),
        )
        .unwrap();
        assert_eq!(
            (uncapped.attn_softcap, uncapped.final_softcap),
            (None, Some(15.5))
        );
        assert_eq!(uncapped.attention_scale(3), 20f64.powf(-0.5));

        let g3 = parse(base("gemma3_text"));
        assert!(g3.sandwich_norms && g3.qk_norm);
        assert_eq!((g3.attn_softcap, g3.final_softcap), (None, None));
        // every layer but each 6th windowed; θ 1e6 on full layers, 1e4 on windowed ones
        let pattern: Vec<bool> = (0..7).map(|l| (l + 1) % 6 != 0).collect();
        assert_eq!(g3.sliding_window.layers, pattern);
        assert_eq!(g3.rope_theta, 1e6);
        assert_eq!(g3.local_rope, Some((1e4, RopeScaling::None)));
        // the older keys: rope_scaling joins the full layers, rope_local_base_freq the others
        let old = with_keys(
            base("gemma3_text"),
            serde_json::json!({"rope_theta": 5e5, "rope_local_base_freq": 2e4,
                "rope_scaling": {"rope_type": "linear", "factor": 8.0},
                "sliding_window_pattern": 3}),
        )
        .unwrap();
        assert_eq!(old.rope_theta, 5e5);
        assert_eq!(old.rope_scaling, RopeScaling::Linear { factor: 8.0 });
        assert_eq!(old.local_rope, Some((2e4, RopeScaling::None)));
        let every_third: Vec<bool> = (0..7).map(|l| (l + 1) % 3 != 0).collect();
        assert_eq!(old.sliding_window.layers, every_third);
        let nested = with_keys(
            base("gemma3_text"),
            serde_json::json!({"rope_parameters": {
                "full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e6},
                "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}}}),
        )
        .unwrap();
        assert_eq!(nested.rope_scaling, RopeScaling::Linear { factor: 2.0 });
        // an exported config reads back the same
        let again = ModelConfig::from_json_str(&nested.to_hf_json().to_string(), "x").unwrap();
        assert_eq!(
            (
                again.rope_theta,
                again.rope_scaling.clone(),
                again.local_rope.clone()
            ),
            (
                nested.rope_theta,
                nested.rope_scaling.clone(),
                nested.local_rope.clone()
            )
        );
        assert_eq!(again.sliding_window, nested.sliding_window);

        let multimodal = with_keys(base("gemma3"), serde_json::json!({})).unwrap_err();
        assert!(
            multimodal.to_string().contains("gemma3_text"),
            "{multimodal}"
        );
        for (t, extra, needle) in [
            (
                "gemma2",
                serde_json::json!({"use_bidirectional_attention": true}),
                "use_bidirectional_attention",
            ),
            (
                "gemma2",
                serde_json::json!({"attn_logit_softcapping": 0.0}),
                "attn_logit_softcapping",
            ),
            (
                "gemma3_text",
                serde_json::json!({"rope_parameters": {"rope_type": "linear"}}),
                "full_attention",
            ),
            (
                "gemma3_text",
                serde_json::json!({"sliding_window_pattern": 0}),
                "sliding_window_pattern",
            ),
            (
                "gemma",
                serde_json::json!({"sliding_window": 8}),
                "sliding_window",
            ),
            // what transformers 5.24 would silently not apply is refused, not honoured
            (
                "gemma3_text",
                serde_json::json!({"attn_logit_softcapping": 50.0}),
                "Gemma3Attention ignores it",
            ),
            (
                "gemma3_text",
                serde_json::json!({"rope_theta": 1e6, "rope_scaling": {"type": "linear", "factor": 8.0}}),
                "legacy key `type`",
            ),
            (
                "gemma3_text",
                serde_json::json!({"rope_parameters": {
                    "full_attention": {"rope_type": "yarn", "factor": 4.0, "truncate": false,
                        "original_max_position_embeddings": 32, "rope_theta": 1e6},
                    "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}}}),
                "truncate` = false for gemma3_text's full_attention",
            ),
            (
                "gemma2",
                serde_json::json!({"sliding_window": null}),
                "needs a sliding_window",
            ),
            (
                "gemma3_text",
                serde_json::json!({"sliding_window": null, "layer_types": ["full_attention"]}),
                "needs a sliding_window",
            ),
        ] {
            let err = with_keys(base(t), extra).unwrap_err().to_string();
            assert!(err.contains(needle), "{t}: {err}");
        }
    }

    #[test]
    fn granite_reads_its_multipliers() {
        let granite = |extra: serde_json::Value| {
            with_keys(
                serde_json::json!({"model_type": "granite", "vocab_size": 49155,
                "hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2,
                "intermediate_size": 96}),
                extra,
            )
        };
        // GraniteConfig's defaults are all 1.0, attention_multiplier too (not 1/√head_dim)
        let c = granite(serde_json::json!({})).unwrap();
        let m = |c: &ModelConfig| {
            (
                c.embedding_multiplier,
                c.residual_multiplier,
                c.logits_scaling,
                c.attention_scale(1),
            )
        };
        assert_eq!(m(&c), (1.0, 1.0, 1.0, 1.0));
        let set = serde_json::json!({"embedding_multiplier": 12.0, "residual_multiplier": 0.22,
            "logits_scaling": 8.0, "attention_multiplier": 0.0078125});
        let c = granite(set).unwrap();
        assert_eq!(m(&c), (12.0, 0.22, 8.0, 0.0078125));
        let again = ModelConfig::from_json_str(&c.to_hf_json().to_string(), "x").unwrap();
        assert_eq!(m(&again), m(&c));
        let e = granite(serde_json::json!({"logits_scaling": 0.0}))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("logits_scaling = 0 must be a positive number"),
            "{e}"
        );
        // other types do not read the keys (their transformers classes ignore them)
        let llama = serde_json::json!({"model_type": "llama", "vocab_size": 10,
            "hidden_size": 8, "num_attention_heads": 2, "num_hidden_layers": 1,
            "intermediate_size": 8, "embedding_multiplier": 12.0});
        assert_eq!(parse(llama).embedding_multiplier, 1.0);
    }

    #[test]
    fn smollm3_reads_its_nope_layers_and_class_defaults() {
        let smol = |extra: serde_json::Value| {
            with_keys(
                serde_json::json!({"model_type": "smollm3", "vocab_size": 128256,
                "hidden_size": 64, "num_attention_heads": 8, "num_hidden_layers": 8,
                "intermediate_size": 96}),
                extra,
            )
        };
        // SmolLM3Config's defaults: a NoPE layer every 4th, 4 kv heads, tied, pad 128004
        let c = smol(serde_json::json!({})).unwrap();
        assert_eq!(c.rope_theta, 2_000_000.0, "SmolLM3Config's default_theta");
        let nope: Vec<usize> = (0..8).filter(|&l| !c.rope_layers[l]).collect();
        assert_eq!(nope, vec![3, 7]);
        assert_eq!(
            (c.kv_heads, c.tie_embeddings, c.embedding_padding_idx),
            (4, true, Some(128_004))
        );
        let c = smol(serde_json::json!({"no_rope_layer_interval": 3})).unwrap();
        assert_eq!(
            c.rope_layers,
            [true, true, false, true, true, false, true, true]
        );
        let listed = serde_json::json!({"no_rope_layers": [1, 0, 1, 1, 1, 1, 1, 0]});
        let c = smol(listed).unwrap();
        assert_eq!(c.rope_layers.iter().filter(|&&r| !r).count(), 2);
        let again = ModelConfig::from_json_str(&c.to_hf_json().to_string(), "x").unwrap();
        assert_eq!(again.rope_layers, c.rope_layers);
        for (bad, want) in [
            (
                serde_json::json!({"no_rope_layers": [1, 0]}),
                "`no_rope_layers` lists 2 layers",
            ),
            (
                serde_json::json!({"no_rope_layers": [1, 2, 1, 1, 1, 1, 1, 1]}),
                "no_rope_layers[1] = 2",
            ),
            (
                serde_json::json!({"no_rope_layer_interval": 0}),
                "no_rope_layer_interval must be positive",
            ),
        ] {
            let e = smol(bad).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
    }

    #[test]
    fn phi3_reads_as_transformers_phi3_config() {
        let phi3 = |extra: serde_json::Value| {
            with_keys(
                serde_json::json!({"model_type": "phi3", "vocab_size": 32064,
                "hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2,
                "intermediate_size": 96}),
                extra,
            )
        };
        // Phi3Config's defaults: 4096 positions, rms_norm_eps 1e-5, pad 32000, no window, no
        // biases (attention_bias is not a Phi-3 key: noted, not applied), fused projections
        let c = phi3(serde_json::json!({"attention_bias": true})).unwrap();
        assert_eq!(
            (c.max_positions, c.norm_eps, c.embedding_padding_idx),
            (4096, 1e-5, Some(32_000))
        );
        assert!(c.fused_projections && !c.qkv_bias && !c.o_bias && !c.mlp_bias);
        assert_eq!(c.sliding_window, SlidingWindow::none(2));
        assert!(c.notes.iter().any(|n| n.contains("attention_bias")));
        assert_eq!(c.rotary_dim, 16);
        // a window on every layer; a negative pad_token_id counts from the end, as in torch
        let c = phi3(serde_json::json!({"sliding_window": 2047, "pad_token_id": -1})).unwrap();
        assert_eq!(c.sliding_window.of(1), Some(2047));
        assert_eq!(c.embedding_padding_idx, Some(32_063));
        assert_eq!(
            phi3(serde_json::json!({"pad_token_id": null}))
                .unwrap()
                .embedding_padding_idx,
            None
        );
        let e = phi3(serde_json::json!({"pad_token_id": 32064}))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("pad_token_id = 32064 is outside the vocabulary of 32064"),
            "{e}"
        );
        // longrope: the short table up to the original length, the long one beyond
        let lr = serde_json::json!({"max_position_embeddings": 131072,
            "original_max_position_embeddings": 4096, "partial_rotary_factor": 0.75,
            "rope_scaling": {"type": "longrope", "short_factor": [1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
            "long_factor": [2.0, 2.0, 2.0, 2.0, 2.0, 2.0]}});
        let c = phi3(lr).unwrap();
        assert_eq!((c.rotary_dim, c.rope_inv_freq().len()), (12, 6));
        assert!(c.check_sequence_length(8192).is_ok());
        let (limit, long) = c.rope_long_inv_freq().unwrap();
        assert_eq!((limit, long[1] * 2.0), (4096, c.rope_inv_freq()[1]));
        // the config written back reads the same
        let again = ModelConfig::from_json_str(&c.to_hf_json().to_string(), "x").unwrap();
        assert_eq!(
            (
                again.rope_scaling,
                again.rotary_dim,
                again.fused_projections
            ),
            (c.rope_scaling, 12, true)
        );
        // the other Llama-family classes have no padding row by default
        let llama = serde_json::json!({"model_type": "llama", "vocab_size": 10,
            "hidden_size": 8, "num_attention_heads": 2, "num_hidden_layers": 1,
            "intermediate_size": 8});
        assert_eq!(parse(llama).embedding_padding_idx, None);
    }

    #[test]
    fn absent_keys_take_the_transformers_class_defaults() {
        let cfg = |model_type: &str, extra: serde_json::Value| {
            let mut v = serde_json::json!({"model_type": model_type, "vocab_size": 10,
                "hidden_size": 128, "num_attention_heads": 64, "num_hidden_layers": 1,
                "intermediate_size": 8});
            v.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            parse(v)
        };
        let none = serde_json::json!({});
        let at = |c: ModelConfig| (c.kv_heads, c.head_dim, c.max_positions);
        assert_eq!(at(cfg("llama", none.clone())), (64, 2, 2048));
        assert_eq!(at(cfg("mistral", none.clone())), (8, 2, 131_072));
        assert_eq!(at(cfg("qwen2", none.clone())), (32, 2, 32_768));
        assert_eq!(at(cfg("qwen3", none)), (32, 128, 32_768));
        // null: derived from the heads, as transformers' __post_init__ does
        let nulls = serde_json::json!({"num_key_value_heads": null, "head_dim": null});
        assert_eq!(at(cfg("qwen3", nulls)), (64, 2, 32_768));
        let set = serde_json::json!({"num_key_value_heads": 4, "head_dim": 8});
        assert_eq!(at(cfg("mistral", set)), (4, 8, 131_072));
        // yarn's original length and its default factor read the class default too
        let yarn = serde_json::json!({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}});
        let scaling = cfg("qwen2", yarn).rope_scaling;
        assert!(
            matches!(
                scaling,
                RopeScaling::Yarn {
                    factor: 4.0,
                    original_max_positions: 32_768,
                    ..
                }
            ),
            "{scaling:?}"
        );
        let implicit = serde_json::json!({"rope_scaling": {"rope_type": "yarn", "factor": null,
            "original_max_position_embeddings": 8192}});
        let scaling = cfg("qwen2", implicit).rope_scaling;
        assert!(
            matches!(
                scaling,
                RopeScaling::Yarn {
                    factor: 4.0,
                    original_max_positions: 8192,
                    ..
                }
            ),
            "{scaling:?}"
        );
    }

    #[test]
    fn sequences_beyond_the_positions_are_refused_where_the_math_needs_them() {
        let llama = |scaling: serde_json::Value| {
            parse(serde_json::json!({"model_type": "llama", "vocab_size": 10,
                "hidden_size": 16, "num_attention_heads": 2, "num_hidden_layers": 1,
                "intermediate_size": 8, "max_position_embeddings": 32, "rope_scaling": scaling}))
        };
        let dynamic = llama(serde_json::json!({"rope_type": "dynamic", "factor": 2.0}));
        assert!(dynamic.check_sequence_length(32).is_ok());
        let e = dynamic.check_sequence_length(33).unwrap_err();
        assert!(
            e.contains("max_position_embeddings = 32") && e.contains("dynamic"),
            "{e}"
        );
        // RoPE extrapolates: a longer sequence is the user's choice
        assert!(llama(serde_json::Value::Null)
            .check_sequence_length(64)
            .is_ok());
        let gpt2 = parse(serde_json::json!({"model_type": "gpt2", "vocab_size": 10,
            "n_embd": 16, "n_layer": 1, "n_head": 2, "n_positions": 8}));
        assert!(gpt2
            .check_sequence_length(9)
            .unwrap_err()
            .contains("n_positions"));
    }
}
