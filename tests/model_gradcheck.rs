//! Whole-model gradients against f64 finite differences, on shapes unlike the HF fixtures: the
//! paths real checkpoints add (Qwen2's q/k/v biases after which RoPE runs — the key bias has a
//! real gradient —, llama3 and linear rope scaling with all three llama3 bands, Qwen3's per-head
//! q/k RMSNorm with head_dim ≠ hidden/heads, sliding windows in some or all layers, GQA / MQA,
//! packed varlen segments, tied and untied heads, Phi-3's fused projections with longrope and
//! partial rotary, SmolLM3's NoPE layers, Granite's multipliers).
//!
//! Method: loss L = Σ CE over the batch's targets, computed by forward + head on the f64 CPU
//! backend; backward gives ∂L/∂θ for every parameter. For a sample of elements of every tensor
//! (and every element of the key biases and q/k norm weights), the fourth-order central
//! difference of L with step 1e-3 must agree with it:
//!   |analytic − numeric| ≤ 1e-6 · (|numeric| + 1e-3 · max |numeric| of the tensor's sample).

use ferrotron::model::{DeviceBatch, HostBatch, ModelConfig, ResidentStore, Role, Transformer};
use ferrotron_kernels::cpu::CpuBackend;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

type B = CpuBackend<f64>;

/// Two packed documents of 13 and 27 tokens (positions restart, attention never crosses).
fn batch(vocab: usize) -> HostBatch {
    let lens = [13usize, 27];
    let n: usize = lens.iter().sum();
    let input_ids: Vec<i32> = (0..n).map(|i| ((i * 37 + 11) % vocab) as i32).collect();
    let mut targets = vec![-100; n];
    let mut positions = Vec::new();
    let mut cu = vec![0i32];
    let mut start = 0;
    for &l in &lens {
        for t in 0..l {
            positions.push(t as i32);
            if t + 1 < l {
                targets[start + t] = input_ids[start + t + 1];
            }
        }
        start += l;
        cu.push(start as i32);
    }
    targets[3] = -100; // an ignored target inside a document
    HostBatch {
        input_ids,
        targets,
        positions,
        cu_seqlens: cu,
    }
}

/// Random weights: matrices and embeddings uniform ±0.4, norm weights 1 ± 0.3, biases ±0.3.
fn weights(model: &Transformer, seed: u64) -> Vec<Vec<f64>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    model
        .layout
        .units
        .iter()
        .map(|u| {
            let mut buf = vec![0.0; u.numel];
            for t in &u.tensors {
                for x in &mut buf[t.offset..t.offset + t.numel()] {
                    let r: f64 = rng.random_range(-1.0..1.0);
                    *x = if t.role.is_norm_weight() {
                        1.0 + 0.3 * r
                    } else if t.role.decays_by_default() {
                        0.4 * r
                    } else {
                        0.3 * r
                    };
                }
            }
            buf
        })
        .collect()
}

/// (L, ∂L/∂θ per unit).
fn loss_and_grads(model: &Transformer, w: &[Vec<f64>], host: &HostBatch) -> (f64, Vec<Vec<f64>>) {
    let b = B::new();
    let batch = DeviceBatch::upload(&b, host).unwrap();
    let mut store = ResidentStore::<B> {
        weights: w.to_vec(),
        grads: w.iter().map(|u| vec![0.0; u.len()]).collect(),
    };
    let fwd = model.forward(&b, &mut store, &batch).unwrap();
    let (loss, dx) = model
        .head(&b, &mut store, &batch, &fwd, Some(1.0), None)
        .unwrap();
    model
        .backward(&b, &mut store, &batch, &fwd, dx.unwrap())
        .unwrap();
    (loss, store.grads)
}

fn loss(model: &Transformer, w: &[Vec<f64>], host: &HostBatch) -> f64 {
    let b = B::new();
    let batch = DeviceBatch::upload(&b, host).unwrap();
    let mut store = ResidentStore::<B> {
        weights: w.to_vec(),
        grads: w.iter().map(|_| Vec::new()).collect(),
    };
    let fwd = model.forward(&b, &mut store, &batch).unwrap();
    model
        .head(&b, &mut store, &batch, &fwd, None, None)
        .unwrap()
        .0
}

const STEP: f64 = 1e-3;

/// Checks every tensor of the model built from `config` (JSON) on the packed batch.
fn gradcheck(name: &str, config: serde_json::Value) {
    let cfg = ModelConfig::from_json_str(&config.to_string(), name).unwrap();
    let model = Transformer::new(cfg);
    let host = batch(model.cfg.vocab_size);
    let w = weights(&model, 7);
    let (_, grads) = loss_and_grads(&model, &w, &host);
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut worst = (0.0f64, String::new());
    for (u, t) in model.layout.tensors() {
        let all = matches!(t.role, Role::KBias | Role::QNorm | Role::KNorm);
        let picks: Vec<usize> = if all {
            (0..t.numel()).collect()
        } else {
            (0..4).map(|_| rng.random_range(0..t.numel())).collect()
        };
        let mut numeric = Vec::new();
        for &i in &picks {
            let at = |s: f64| {
                let mut w2 = w.clone();
                w2[u][t.offset + i] += s * STEP;
                loss(&model, &w2, &host)
            };
            let (p2, p1, m1, m2) = (at(2.0), at(1.0), at(-1.0), at(-2.0));
            numeric.push((-p2 + 8.0 * p1 - 8.0 * m1 + m2) / (12.0 * STEP));
        }
        let scale = numeric.iter().fold(0f64, |m, v| m.max(v.abs()));
        assert!(scale > 0.0, "{name}: {}: the numeric gradient is 0", t.name);
        for (&i, &n) in picks.iter().zip(&numeric) {
            let a = grads[u][t.offset + i];
            let err = (a - n).abs() / (n.abs() + 1e-3 * scale);
            if err > worst.0 {
                worst = (err, format!("{}[{i}]", t.name));
            }
            assert!(
                err <= 1e-6,
                "{name}: {}[{i}]: analytic {a:.12e}, numeric {n:.12e} (error {err:.2e})",
                t.name
            );
        }
    }
    println!("{name}: worst element error {:.2e} at {}", worst.0, worst.1);
}

/// Qwen2 with q/k/v biases, GQA, llama3 rope scaling (original context 64 with head_dim 8: one
/// entry in each of the high, middle and low bands), a window of 5 in layers 1 and 2.
#[test]
fn qwen2_bias_llama3_rope_window_gradcheck() {
    gradcheck(
        "qwen2",
        serde_json::json!({
            "model_type": "qwen2", "vocab_size": 64, "hidden_size": 32, "intermediate_size": 48,
            "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2,
            "rms_norm_eps": 1e-6, "tie_word_embeddings": false,
            "use_sliding_window": true, "sliding_window": 5, "max_window_layers": 1,
            "rope_scaling": {"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
            "rope_theta": 10000.0
        }),
    );
}

/// Qwen3: per-head q/k norms, head_dim 10 with hidden 24 / 4 heads, MQA, linear rope scaling,
/// a window of 7 in layer 0 only (layer_types), tied embeddings.
#[test]
fn qwen3_qk_norm_linear_rope_window_gradcheck() {
    gradcheck(
        "qwen3",
        serde_json::json!({
            "model_type": "qwen3", "vocab_size": 64, "hidden_size": 24, "intermediate_size": 40,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 1,
            "head_dim": 10, "rms_norm_eps": 1e-6, "tie_word_embeddings": true,
            "use_sliding_window": true, "sliding_window": 7,
            "layer_types": ["sliding_attention", "full_attention"],
            "rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1000000.0}
        }),
    );
}

/// Phi-3: fused qkv_proj / gate_up_proj (the model's Q, K, V, Gate, Up are row blocks of
/// them), GQA, a window of 6, Phi-4-mini's rotary: 6 of 8 dims rotate, longrope short factors
/// with the attention factor of 128 / 32 positions on cos and sin. (No pad_token_id: nn.Embedding's
/// padding_idx deliberately gives its row no lookup gradient, which differences would see.)
#[test]
fn phi3_fused_longrope_partial_rotary_gradcheck() {
    gradcheck(
        "phi3",
        serde_json::json!({
            "model_type": "phi3", "vocab_size": 64, "hidden_size": 32, "intermediate_size": 36,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "rms_norm_eps": 1e-5, "tie_word_embeddings": false, "sliding_window": 6,
            "pad_token_id": null, "max_position_embeddings": 128,
            "original_max_position_embeddings": 32, "partial_rotary_factor": 0.75,
            "rope_scaling": {"type": "longrope", "short_factor": [1.0, 1.7, 3.1],
                "long_factor": [2.0, 4.0, 8.0]},
            "rope_theta": 10000.0
        }),
    );
}

/// SmolLM3: layer 1 without rotary (NoPE), a window of 5 in layer 2 only, tied.
#[test]
fn smollm3_nope_layer_gradcheck() {
    gradcheck(
        "smollm3",
        serde_json::json!({
            "model_type": "smollm3", "vocab_size": 64, "hidden_size": 24, "intermediate_size": 30,
            "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2,
            "rms_norm_eps": 1e-6, "pad_token_id": null, "no_rope_layers": [1, 0, 1],
            "use_sliding_window": true, "sliding_window": 5,
            "layer_types": ["full_attention", "full_attention", "sliding_attention"],
            "rope_theta": 10000.0
        }),
    );
}

/// Granite: the embedding multiplier, each residual branch scaled before its add, the softmax
/// scale given by attention_multiplier, the logits divided by logits_scaling; q/k/v/o biases,
/// tied.
#[test]
fn granite_multipliers_gradcheck() {
    gradcheck(
        "granite",
        serde_json::json!({
            "model_type": "granite", "vocab_size": 64, "hidden_size": 32, "intermediate_size": 40,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "rms_norm_eps": 1e-6, "tie_word_embeddings": true, "attention_bias": true,
            "embedding_multiplier": 6.0, "residual_multiplier": 0.3,
            "attention_multiplier": 0.2, "logits_scaling": 4.0, "rope_theta": 10000.0
        }),
    );
}

/// Gemma: RMSNorm scale 1 + w, the embedding times √24 (rounded to f32), an exact-GELU GeGLU
/// (GemmaConfig's "gelu_python"), explicit head_dim, attention biases, tied.
#[test]
fn gemma_offset_norms_geglu_gradcheck() {
    gradcheck(
        "gemma",
        serde_json::json!({
            "model_type": "gemma", "vocab_size": 64, "hidden_size": 24, "intermediate_size": 30,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "head_dim": 10, "hidden_act": "gelu_python", "attention_bias": true,
            "pad_token_id": null, "rope_theta": 10000.0
        }),
    );
}

/// Gemma 2: sandwich norms (attention and MLP outputs normed before their residual adds),
/// attention-logit softcap 3 and final-logit softcap 2 (both well inside tanh's bend at these
/// weights), the softmax scale query_pre_attn_scalar^−½, windows of 5 on layers 0 and 2, the tanh
/// GeGLU.
#[test]
fn gemma2_sandwich_norms_softcaps_gradcheck() {
    gradcheck(
        "gemma2",
        serde_json::json!({
            "model_type": "gemma2", "vocab_size": 64, "hidden_size": 24, "intermediate_size": 30,
            "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2,
            "head_dim": 8, "query_pre_attn_scalar": 13, "sliding_window": 5,
            "attn_logit_softcapping": 3.0, "final_logit_softcapping": 2.0,
            "pad_token_id": null, "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0}
        }),
    );
}

/// Gemma 3: per-head q/k norms (scale 1 + w), a linear-scaled rotary table on the full-attention
/// layer and the local one (θ 1e4) on the windowed layers, sandwich norms, no softcaps.
#[test]
fn gemma3_local_rope_qk_norm_gradcheck() {
    gradcheck(
        "gemma3_text",
        serde_json::json!({
            "model_type": "gemma3_text", "vocab_size": 64, "hidden_size": 24,
            "intermediate_size": 30, "num_hidden_layers": 3, "num_attention_heads": 4,
            "num_key_value_heads": 1, "head_dim": 10, "query_pre_attn_scalar": 11,
            "sliding_window": 6, "pad_token_id": null,
            "layer_types": ["sliding_attention", "full_attention", "sliding_attention"],
            "rope_parameters": {
                "full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1000000.0},
                "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}}
        }),
    );
}

/// OLMo-2: no input norms, the attention and MLP outputs normed before their residual adds,
/// q_norm / k_norm over each token's whole projection (head_dim 10: 40 and 20 dims), attention
/// biases, untied.
#[test]
fn olmo2_output_norms_whole_qk_norm_gradcheck() {
    gradcheck(
        "olmo2",
        serde_json::json!({
            "model_type": "olmo2", "vocab_size": 64, "hidden_size": 24, "intermediate_size": 30,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "head_dim": 10, "attention_bias": true, "pad_token_id": null,
            "rope_theta": 10000.0
        }),
    );
}

/// Mistral: a window of 4 in every layer, MHA, untied head.
#[test]
fn mistral_window_gradcheck() {
    gradcheck(
        "mistral",
        serde_json::json!({
            "model_type": "mistral", "vocab_size": 64, "hidden_size": 32, "intermediate_size": 40,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 4,
            "rms_norm_eps": 1e-5, "sliding_window": 4, "rope_theta": 10000.0
        }),
    );
}

/// GPT-2's fused key bias (no RoPE) adds one value per query row to its scores, which softmax
/// ignores: its gradient is exactly 0, and stays exactly 0; the query and value biases move.
#[test]
fn gpt2_key_bias_gradient_is_exactly_zero() {
    let cfg = ModelConfig::from_json_str(
        &serde_json::json!({"model_type": "gpt2", "vocab_size": 64, "n_embd": 32, "n_layer": 2,
            "n_head": 4, "n_positions": 64})
        .to_string(),
        "gpt2",
    )
    .unwrap();
    let model = Transformer::new(cfg);
    let w = weights(&model, 3);
    let (_, grads) = loss_and_grads(&model, &w, &batch(64));
    for l in 0..2 {
        let unit = &model.layout.units[model.layout.block_unit(l)];
        let b = unit.tensor(Role::QkvBias);
        let g = &grads[model.layout.block_unit(l)][b.offset..b.offset + b.numel()];
        let d = 32;
        assert!(g[d..2 * d].iter().all(|&x| x == 0.0), "layer {l}: {g:?}");
        assert!(g[..d].iter().any(|&x| x != 0.0) && g[2 * d..].iter().any(|&x| x != 0.0));
    }
}
