//! What the Gemma family's config.json adds to the Llama family's keys (transformers 5.x:
//! GemmaConfig, Gemma2Config, Gemma3TextConfig), read here for config.rs:
//!   every Gemma:   RMSNorm x̂·(1 + w) with w stored (init 0); the token embedding times √hidden
//!                  (a float32 factor); GeGLU (`hidden_act` "gelu_pytorch_tanh", Gemma 1's legacy
//!                  "gelu" read as it; Gemma 2/3 name it `hidden_activation`).
//!   gemma2, gemma3_text:
//!                  sandwich norms: the attention and MLP outputs are normed
//!                  (post_attention_layernorm, post_feedforward_layernorm) before their residual
//!                  adds, and the MLP input by pre_feedforward_layernorm;
//!                  the softmax scale query_pre_attn_scalar^−½ (default 256);
//!                  attn_logit_softcapping c: scores ← c·tanh(s/c) (Gemma 2, default 50; Gemma 3's
//!                  attention never applies it in transformers 5.x, so a non-null value is
//!                  refused rather than honoured or dropped); final_logit_softcapping c on the
//!                  logits (Gemma 2 default 30, Gemma 3 none).
//!   gemma3_text:   q_norm / k_norm over each head; one rotary table per layer type:
//!                  `rope_parameters` {"full_attention": {...}, "sliding_attention": {...}}, or
//!                  in older configs `rope_theta` (+ `rope_scaling`) for full-attention layers
//!                  (default θ 1e6) and `rope_local_base_freq` for sliding ones (default 1e4).
//!                  Refused where transformers 5.x would silently read something else: a
//!                  `rope_scaling` with the legacy key `type` (it keeps the default rotary), and
//!                  yarn's `truncate` = false inside a per-layer-type dict (it reads it from the top).
//! `use_bidirectional_attention` = true (an encoder's mask) is refused.

use super::rope::{self, RopeParams};
use crate::error::Result;
use crate::user;
use serde_json::{Map, Value};

/// Whether `model_type` is one of the Gemma family.
pub fn is_gemma(model_type: &str) -> bool {
    matches!(model_type, "gemma" | "gemma2" | "gemma3_text")
}

/// Gemma 2 and 3: the settings their decoder layers and heads add.
pub struct GemmaExtras {
    /// query_pre_attn_scalar s (the softmax scale is s^−½).
    pub query_pre_attn_scalar: f64,
    pub attn_softcap: Option<f64>,
    pub final_softcap: Option<f64>,
}

/// The extras of a gemma2 / gemma3_text config object (None for gemma and other types).
pub fn extras(
    obj: &Map<String, Value>,
    model_type: &str,
    origin: &str,
) -> Result<Option<GemmaExtras>> {
    if is_gemma(model_type) && flag(obj, "use_bidirectional_attention", origin)? == Some(true) {
        return Err(user!(
            "{origin}: use_bidirectional_attention = true is not supported (ferrotron trains causal language models)"
        ));
    }
    let gemma2 = model_type == "gemma2";
    if !gemma2 && model_type != "gemma3_text" {
        return Ok(None);
    }
    let scalar = match positive(obj, "query_pre_attn_scalar", origin)? {
        Present::Absent | Present::Null => 256.0,
        Present::Value(v) => v,
    };
    // Gemma2Config's caps default to 50 and 30; Gemma3TextConfig's to none; null: none
    let cap = |key: &str, default: f64| -> Result<Option<f64>> {
        Ok(match positive(obj, key, origin)? {
            Present::Absent if gemma2 => Some(default),
            Present::Absent | Present::Null => None,
            Present::Value(v) => Some(v),
        })
    };
    let attn_softcap = cap("attn_logit_softcapping", 50.0)?;
    if let (false, Some(c)) = (gemma2, attn_softcap) {
        return Err(user!(
            "{origin}: attn_logit_softcapping = {c} is not applied by Gemma 3 (transformers' Gemma3Attention ignores it, so a checkpoint trained with this config never used it); set it to null"
        ));
    }
    Ok(Some(GemmaExtras {
        query_pre_attn_scalar: scalar,
        attn_softcap,
        final_softcap: cap("final_logit_softcapping", 30.0)?,
    }))
}

/// Gemma 3's two rotary embeddings: (full-attention layers, sliding-window layers).
pub fn gemma3_ropes(
    obj: &Map<String, Value>,
    origin: &str,
    max_positions: usize,
    head_dim: usize,
) -> Result<(RopeParams, RopeParams)> {
    let nested = obj.get("rope_parameters").filter(|v| !v.is_null());
    let part = |kind: &str| -> Result<Option<Map<String, Value>>> {
        let Some(v) = nested else { return Ok(None) };
        let o = v
            .as_object()
            .ok_or_else(|| user!("{origin}: key `rope_parameters` must be an object, found {v}"))?;
        if !o.contains_key("full_attention") && !o.contains_key("sliding_attention") {
            return Err(user!(
                "{origin}: gemma3_text's `rope_parameters` must map full_attention and sliding_attention to their rotary parameters"
            ));
        }
        match o.get(kind).filter(|v| !v.is_null()) {
            None => Ok(None),
            Some(Value::Object(m)) => Ok(Some(m.clone())),
            Some(v) => Err(user!(
                "{origin}: key `rope_parameters.{kind}` must be an object, found {v}"
            )),
        }
    };
    // as Gemma3TextConfig.convert_rope_params_to_dict: a rope_scaling joins the full-attention
    // parameters; rope_theta and rope_local_base_freq fill the thetas the dicts leave out
    let mut full = part("full_attention")?.unwrap_or_default();
    if let Some(Value::Object(s)) = obj.get("rope_scaling") {
        if s.contains_key("type") && !s.contains_key("rope_type") {
            return Err(user!(
                "{origin}: gemma3_text's `rope_scaling` names its kind with the legacy key `type`, which transformers 5.x does not read for Gemma 3 (it keeps the default rotary embedding); write `rope_type` instead"
            ));
        }
        for (k, v) in s {
            full.insert(k.clone(), v.clone());
        }
    }
    let mut local = part("sliding_attention")?.unwrap_or_default();
    for (params, theta_key, default) in [
        (&mut full, "rope_theta", 1_000_000.0),
        (&mut local, "rope_local_base_freq", 10_000.0),
    ] {
        if !params.contains_key("rope_theta") {
            let theta = obj.get(theta_key).filter(|v| !v.is_null());
            params.insert(
                "rope_theta".into(),
                theta.cloned().unwrap_or(default.into()),
            );
        }
    }
    for (params, kind) in [(&full, "full_attention"), (&local, "sliding_attention")] {
        if params.get("truncate") == Some(&Value::Bool(false)) {
            return Err(user!(
                "{origin}: `truncate` = false for gemma3_text's {kind} layers is not supported: transformers 5.x reads yarn's truncate only from the top level of rope_parameters, so for gemma3_text it is always true; remove the key"
            ));
        }
    }
    let parse = |params: Map<String, Value>, kind: &str| {
        let mut o = Map::new();
        o.insert("rope_parameters".into(), Value::Object(params));
        let at = format!("{origin} (rope_parameters.{kind})");
        rope::from_config(&o, &at, max_positions, head_dim, "gemma3_text")
    };
    let (full, local) = (
        parse(full, "full_attention")?,
        parse(local, "sliding_attention")?,
    );
    if local
        .scaling
        .long_inv_freq(local.theta, local.rotary_dim)
        .is_some()
    {
        return Err(user!(
            "{origin}: longrope on gemma3_text's sliding-attention layers is not supported"
        ));
    }
    Ok((full, local))
}

enum Present {
    Absent,
    Null,
    Value(f64),
}

/// A positive number under `key`: absent, null, or its value.
fn positive(obj: &Map<String, Value>, key: &str, origin: &str) -> Result<Present> {
    match obj.get(key) {
        None => Ok(Present::Absent),
        Some(Value::Null) => Ok(Present::Null),
        Some(v) => match v.as_f64() {
            Some(x) if x.is_finite() && x > 0.0 => Ok(Present::Value(x)),
            _ => Err(user!(
                "{origin}: key `{key}` must be a positive number or null, found {v}"
            )),
        },
    }
}

fn flag(obj: &Map<String, Value>, key: &str, origin: &str) -> Result<Option<bool>> {
    match obj.get(key).filter(|v| !v.is_null()) {
        None => Ok(None),
        Some(v) => v
            .as_bool()
            .map(Some)
            .ok_or_else(|| user!("{origin}: key `{key}` must be true or false, found {v}")),
    }
}
