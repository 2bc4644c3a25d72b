//! Rotary embedding frequencies as config.json defines them (transformers' rope init functions).
//!
//! The rotary op (`Backend::rope_forward`) takes a table inv_freq[i], i < Dh/2; this file makes
//! it. With base θ and d = head_dim, the default table is f_i = θ^(−2i/d), i < d/2. Scaling
//! changes the table, and yarn also multiplies cos and sin by an attention factor m:
//!   linear (factor s):  f_i / s
//!   llama3 (factor s, low/high_freq_factor l < h, original_max_position_embeddings L):
//!     wavelength λ_i = 2π / f_i;
//!     λ_i < L/h (high frequencies):  f_i
//!     λ_i > L/l (low frequencies):   f_i / s
//!     otherwise, with t = (L/λ_i − l) / (h − l):  (1 − t)·f_i/s + t·f_i
//!   yarn (factor s, original_max_position_embeddings L, beta_fast b_f = 32, beta_slow b_s = 1,
//!     truncate = true, attention_factor m):
//!     c(b) = d·ln(L / (2π·b)) / (2·ln θ);  lo = c(b_f), hi = c(b_s) (floor / ceil when
//!     truncating), clamped to [0, d − 1] (hi += 0.001 when equal);
//!     r_i = clamp((i − lo) / (hi − lo), 0, 1):  r_i·f_i/s + (1 − r_i)·f_i
//!     m = attention_factor if given, else g(s, mscale) / g(s, mscale_all_dim) when both are
//!     given, else g(s, 1), with g(s, k) = 0.1·k·ln s + 1 (1 when s ≤ 1). Since q and k are both
//!     rotated, m enters attention as m² on the softmax scale (`attention_factor`).
//!   dynamic (NTK, factor s): θ grows with the batch's length only beyond
//!     max_position_embeddings; within it (the only case accepted: ModelConfig
//!     ::check_sequence_length) the table is the default one.
//!   longrope (Phi-3, `su` and, for phi3, `yarn` are its old names; short_factor / long_factor
//!     e_i, original_max_position_embeddings L, factor s = max_position_embeddings / L unless
//!     given, attention_factor m): f_i / e_i, with the short factors while the batch's largest
//!     position + 1 ≤ L and the long ones beyond, chosen per forward as transformers does
//!     (`long_inv_freq`, `Transformer::rope_table`); m = attention_factor if given, else
//!     √(1 + ln s / ln L) (1 when s ≤ 1), on cos and sin as for yarn.
//! Partial rotary (phi3's `partial_rotary_factor` p, top level or in the rope dict, the dict
//! first): only the first R = ⌊p·head_dim⌋ dims of each head rotate, and every table above is
//! built with R in place of head_dim (d = R). Other model types rotate the whole head; their
//! transformers classes cannot apply a partial table, so p ≠ 1 in a rope dict is rejected.
//! Read from transformers 4.x (`rope_theta`, `rope_scaling: {rope_type | type, ...}`) or 5.x
//! (`rope_parameters: {rope_theta, rope_type, ...}`); when both are given they must agree. Other
//! types are rejected by name.

use crate::error::Result;
use crate::user;
use serde_json::{Map, Value};

/// How the default frequency table is scaled.
#[derive(Clone, Debug, PartialEq)]
pub enum RopeScaling {
    None,
    Linear {
        factor: f64,
    },
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_positions: usize,
    },
    Yarn {
        factor: f64,
        original_max_positions: usize,
        beta_fast: f64,
        beta_slow: f64,
        truncate: bool,
        attention_factor: f64,
    },
    /// Dynamic NTK: the default table while positions stay within max_position_embeddings.
    Dynamic {
        factor: f64,
    },
    /// LongRoPE with its short factors (positions below `original_max_positions`).
    Longrope {
        short_factor: Vec<f64>,
        long_factor: Vec<f64>,
        original_max_positions: usize,
        /// `factor` as config.json gives it (None: derived from the two lengths).
        factor: Option<f64>,
        attention_factor: f64,
    },
}

/// The rotary keys of a config: base, scaling and the rotated dims of each head.
#[derive(Clone, Debug, PartialEq)]
pub struct RopeParams {
    pub theta: f64,
    pub scaling: RopeScaling,
    /// R ≤ head_dim, even: the dims of each head that rotate (partial rotary below head_dim).
    pub rotary_dim: usize,
}

impl RopeScaling {
    /// The inverse-frequency table for `theta` and the rotary dim `head_dim` (even; R under
    /// partial rotary).
    pub fn inv_freq(&self, theta: f64, head_dim: usize) -> Vec<f64> {
        let base = ferrotron_kernels::rope_inv_freq(theta, head_dim);
        match *self {
            RopeScaling::Longrope {
                ref short_factor, ..
            } => divided(&base, short_factor),
            RopeScaling::None | RopeScaling::Dynamic { .. } => base,
            RopeScaling::Linear { factor } => base.iter().map(|f| f / factor).collect(),
            RopeScaling::Llama3 {
                factor,
                low_freq_factor: low,
                high_freq_factor: high,
                original_max_positions,
            } => {
                let old = original_max_positions as f64;
                let (low_wavelen, high_wavelen) = (old / low, old / high);
                base.iter()
                    .map(|&f| {
                        let wavelen = 2.0 * std::f64::consts::PI / f;
                        if wavelen < high_wavelen {
                            f
                        } else if wavelen > low_wavelen {
                            f / factor
                        } else {
                            let t = (old / wavelen - low) / (high - low);
                            (1.0 - t) * f / factor + t * f
                        }
                    })
                    .collect()
            }
            RopeScaling::Yarn {
                factor,
                original_max_positions,
                beta_fast,
                beta_slow,
                truncate,
                ..
            } => {
                let d = head_dim as f64;
                let correction_dim = |rotations: f64| {
                    d * (original_max_positions as f64 / (rotations * 2.0 * std::f64::consts::PI))
                        .ln()
                        / (2.0 * theta.ln())
                };
                let (mut lo, mut hi) = (correction_dim(beta_fast), correction_dim(beta_slow));
                if truncate {
                    (lo, hi) = (lo.floor(), hi.ceil());
                }
                let (lo, mut hi) = (lo.max(0.0), hi.min(d - 1.0));
                if lo == hi {
                    hi += 0.001;
                }
                base.iter()
                    .enumerate()
                    .map(|(i, &f)| {
                        let r = ((i as f64 - lo) / (hi - lo)).clamp(0.0, 1.0);
                        r * f / factor + (1.0 - r) * f
                    })
                    .collect()
            }
        }
    }

    /// The factor m that multiplies cos and sin (yarn; 1 otherwise). Rotating both q and k by
    /// m·R multiplies every attention logit by m².
    pub fn attention_factor(&self) -> f64 {
        match *self {
            RopeScaling::Yarn {
                attention_factor, ..
            }
            | RopeScaling::Longrope {
                attention_factor, ..
            } => attention_factor,
            _ => 1.0,
        }
    }

    /// Longrope's second table: (the longest batch, as largest position + 1, that uses
    /// `inv_freq`; the table of longer ones, f_i / long_factor_i). None for other scalings.
    pub fn long_inv_freq(&self, theta: f64, head_dim: usize) -> Option<(usize, Vec<f64>)> {
        match *self {
            RopeScaling::Longrope {
                ref long_factor,
                original_max_positions,
                ..
            } => {
                let base = ferrotron_kernels::rope_inv_freq(theta, head_dim);
                Some((original_max_positions, divided(&base, long_factor)))
            }
            _ => None,
        }
    }

    /// The `rope_scaling` object of a transformers 4.x config.json (null when unscaled).
    pub fn to_hf_json(&self) -> Value {
        match *self {
            RopeScaling::None => Value::Null,
            RopeScaling::Linear { factor } => {
                serde_json::json!({"rope_type": "linear", "factor": factor})
            }
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_positions,
            } => serde_json::json!({
                "rope_type": "llama3",
                "factor": factor,
                "low_freq_factor": low_freq_factor,
                "high_freq_factor": high_freq_factor,
                "original_max_position_embeddings": original_max_positions,
            }),
            RopeScaling::Yarn {
                factor,
                original_max_positions,
                beta_fast,
                beta_slow,
                truncate,
                attention_factor,
            } => serde_json::json!({
                "rope_type": "yarn",
                "factor": factor,
                "original_max_position_embeddings": original_max_positions,
                "beta_fast": beta_fast,
                "beta_slow": beta_slow,
                "truncate": truncate,
                "attention_factor": attention_factor,
            }),
            RopeScaling::Dynamic { factor } => {
                serde_json::json!({"rope_type": "dynamic", "factor": factor})
            }
            RopeScaling::Longrope {
                ref short_factor,
                ref long_factor,
                original_max_positions,
                factor,
                attention_factor,
            } => {
                let mut v = serde_json::json!({
                    "rope_type": "longrope",
                    "short_factor": short_factor,
                    "long_factor": long_factor,
                    "original_max_position_embeddings": original_max_positions,
                    "attention_factor": attention_factor,
                });
                if let Some(f) = factor {
                    v["factor"] = f.into();
                }
                v
            }
        }
    }
}

/// Longrope's table: each frequency f_i divided by its factor e_i.
fn divided(base: &[f64], factors: &[f64]) -> Vec<f64> {
    base.iter().zip(factors).map(|(f, e)| f / e).collect()
}

/// The rotary parameters of a Llama-family config object of `model_type`; `origin` names the
/// file in errors. `max_positions` is the config's max_position_embeddings, its class default
/// when absent (as transformers reads `config.max_position_embeddings`).
pub fn from_config(
    obj: &Map<String, Value>,
    origin: &str,
    max_positions: usize,
    head_dim: usize,
    model_type: &str,
) -> Result<RopeParams> {
    let phi3 = model_type == "phi3";
    let num = |o: &Map<String, Value>, key: &str, at: &str| -> Result<Option<f64>> {
        match o.get(key).filter(|v| !v.is_null()) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| user!("{origin}: key `{at}{key}` must be a number, found {v}")),
        }
    };
    let mut theta = num(obj, "rope_theta", "")?;
    let top_partial = num(obj, "partial_rotary_factor", "")?;
    let mut partial = if phi3 { top_partial } else { None };
    let mut scaling: Option<(&str, RopeScaling)> = None;
    for key in ["rope_scaling", "rope_parameters"] {
        let Some(v) = obj.get(key).filter(|v| !v.is_null()) else {
            continue;
        };
        let Some(o) = v.as_object() else {
            return Err(user!("{origin}: key `{key}` must be an object, found {v}"));
        };
        let at = format!("{key}.");
        if let Some(t) = num(o, "rope_theta", &at)? {
            theta = Some(t);
        }
        let this_partial = num(o, "partial_rotary_factor", &at)?.or(top_partial);
        if phi3 {
            partial = this_partial;
        } else if this_partial.is_some_and(|p| p != 1.0) {
            return Err(user!(
                "{origin}: {key}.partial_rotary_factor = {} is not supported for {model_type} (rotary embedding over the whole head; transformers' {model_type} cannot apply a partial one either)",
                this_partial.unwrap_or(1.0)
            ));
        }
        let kind = match o.get("rope_type").or_else(|| o.get("type")) {
            None | Some(Value::Null) => "default",
            Some(Value::String(s)) => s.as_str(),
            Some(v) => {
                return Err(user!(
                    "{origin}: key `{key}.rope_type` must be a string, found {v}"
                ))
            }
        };
        // Phi3Config renames `su` and `yarn` to longrope and accepts nothing else.
        let kind = match kind {
            "su" => "longrope",
            "yarn" if phi3 => "longrope",
            "default" | "longrope" => kind,
            other if phi3 => {
                return Err(user!(
                    "{origin}: {key}.rope_type `{other}` is not supported for phi3 (transformers' Phi3 accepts default and longrope)"
                ))
            }
            other => other,
        };
        let factor = || -> Result<f64> {
            let f = num(o, "factor", &at)?
                .ok_or_else(|| user!("{origin}: {key}.rope_type `{kind}` needs `{key}.factor`"))?;
            if f.is_finite() && f > 0.0 {
                Ok(f)
            } else {
                Err(user!("{origin}: {key}.factor = {f} must be positive"))
            }
        };
        // transformers: a top-level original_max_position_embeddings wins (Phi3Config always
        // has one, 4096 by default), then the one in the rope dict, then
        // max_position_embeddings.
        let original_max_positions = || -> Result<usize> {
            let top = num(obj, "original_max_position_embeddings", "")?;
            let old = top
                .or(if phi3 { Some(4096.0) } else { None })
                .or(num(o, "original_max_position_embeddings", &at)?)
                .unwrap_or(max_positions as f64);
            if !(old >= 1.0 && old.fract() == 0.0) {
                return Err(user!(
                    "{origin}: original_max_position_embeddings = {old} must be a positive integer"
                ));
            }
            Ok(old as usize)
        };
        let this = match kind {
            "default" => RopeScaling::None,
            "linear" => RopeScaling::Linear { factor: factor()? },
            "llama3" => {
                let need = |k: &str| -> Result<f64> {
                    num(o, k, &at)?
                        .ok_or_else(|| user!("{origin}: {key}.rope_type `llama3` needs `{key}.{k}`"))
                };
                let (low, high) = (need("low_freq_factor")?, need("high_freq_factor")?);
                if !(low > 0.0 && high > low) {
                    return Err(user!(
                        "{origin}: {key}.low_freq_factor ({low}) must be positive and below high_freq_factor ({high})"
                    ));
                }
                RopeScaling::Llama3 {
                    factor: factor()?,
                    low_freq_factor: low,
                    high_freq_factor: high,
                    original_max_positions: original_max_positions()?,
                }
            }
            "yarn" => {
                let original = original_max_positions()?;
                // transformers requires the key; a null factor is max_position_embeddings /
                // original (DeepSeek-V3's way)
                let factor = match (o.contains_key("factor"), num(o, "factor", &at)?) {
                    (false, _) | (true, Some(_)) => factor()?,
                    (true, None) => max_positions as f64 / original as f64,
                };
                // `or` as in transformers: 0 or null takes the default.
                let beta = |k: &str, default: f64| -> Result<f64> {
                    Ok(num(o, k, &at)?.filter(|b| *b != 0.0).unwrap_or(default))
                };
                let (beta_fast, beta_slow) = (beta("beta_fast", 32.0)?, beta("beta_slow", 1.0)?);
                if !(beta_fast.is_finite() && beta_slow > 0.0 && beta_fast >= beta_slow) {
                    return Err(user!(
                        "{origin}: {key}.beta_fast ({beta_fast}) must be at least beta_slow ({beta_slow}), both positive"
                    ));
                }
                let truncate = match o.get("truncate").filter(|v| !v.is_null()) {
                    None => true,
                    Some(Value::Bool(b)) => *b,
                    Some(v) => {
                        return Err(user!(
                            "{origin}: key `{key}.truncate` must be true or false, found {v}"
                        ))
                    }
                };
                let mscale_of = |s: f64, k: f64| if s <= 1.0 { 1.0 } else { 0.1 * k * s.ln() + 1.0 };
                let attention_factor = match num(o, "attention_factor", &at)? {
                    Some(m) => m,
                    None => match (
                        num(o, "mscale", &at)?.filter(|m| *m != 0.0),
                        num(o, "mscale_all_dim", &at)?.filter(|m| *m != 0.0),
                    ) {
                        (Some(m), Some(all)) => mscale_of(factor, m) / mscale_of(factor, all),
                        _ => mscale_of(factor, 1.0),
                    },
                };
                if !(attention_factor.is_finite() && attention_factor > 0.0) {
                    return Err(user!(
                        "{origin}: {key}.attention_factor = {attention_factor} must be positive"
                    ));
                }
                RopeScaling::Yarn {
                    factor,
                    original_max_positions: original,
                    beta_fast,
                    beta_slow,
                    truncate,
                    attention_factor,
                }
            }
            "dynamic" => RopeScaling::Dynamic { factor: factor()? },
            "longrope" => {
                let original = original_max_positions()?;
                let given = match num(o, "factor", &at)? {
                    None => None,
                    Some(_) => Some(factor()?),
                };
                let s = given.unwrap_or(max_positions as f64 / original as f64);
                let attention_factor = match num(o, "attention_factor", &at)? {
                    Some(m) => m,
                    None if s <= 1.0 => 1.0,
                    None => (1.0 + s.ln() / (original as f64).ln()).sqrt(),
                };
                if !(attention_factor.is_finite() && attention_factor > 0.0) {
                    return Err(user!(
                        "{origin}: {key}.attention_factor = {attention_factor} must be positive"
                    ));
                }
                let factors = |k: &str| -> Result<Vec<f64>> {
                    let v = o.get(k).filter(|v| !v.is_null()).ok_or_else(|| {
                        user!("{origin}: {key}.rope_type `longrope` needs `{key}.{k}`")
                    })?;
                    let list = v.as_array().ok_or_else(|| {
                        user!("{origin}: key `{key}.{k}` must be a list of numbers, found {v}")
                    })?;
                    list.iter()
                        .map(|x| match x.as_f64() {
                            Some(e) if e.is_finite() && e > 0.0 => Ok(e),
                            _ => Err(user!(
                                "{origin}: key `{key}.{k}` must hold positive numbers, found {x}"
                            )),
                        })
                        .collect()
                };
                RopeScaling::Longrope {
                    short_factor: factors("short_factor")?,
                    long_factor: factors("long_factor")?,
                    original_max_positions: original,
                    factor: given,
                    attention_factor,
                }
            }
            other => {
                return Err(user!(
                    "{origin}: {key}.rope_type `{other}` is not supported (supported: default, linear, llama3, yarn, dynamic, longrope)"
                ))
            }
        };
        if let Some((first, prev)) = &scaling {
            if *prev != this {
                return Err(user!(
                    "{origin}: `{first}` and `{key}` describe different rotary scalings ({prev:?} and {this:?})"
                ));
            }
        }
        scaling = Some((key, this));
    }
    // the class default: SmolLM3Config's default_theta is 2e6, the others' 1e4
    let theta = theta.unwrap_or(if model_type == "smollm3" {
        2_000_000.0
    } else {
        10000.0
    });
    if !(theta.is_finite() && theta > 1.0) {
        return Err(user!("{origin}: rope_theta = {theta} must be above 1"));
    }
    let p = partial.unwrap_or(1.0);
    // int(head_dim * partial_rotary_factor), as transformers computes it
    let rotary = head_dim as f64 * p;
    if p == 1.0 && head_dim % 2 != 0 {
        return Err(user!(
            "{origin}: head_dim ({head_dim}) must be even for rotary embeddings"
        ));
    }
    if !(p > 0.0 && p <= 1.0 && rotary >= 2.0) || rotary as usize % 2 != 0 {
        return Err(user!(
            "{origin}: partial_rotary_factor = {p} with head_dim {head_dim} gives {} rotary dims; it must be in (0, 1] and give an even count of at least 2",
            rotary.max(0.0) as usize
        ));
    }
    let rotary_dim = rotary as usize;
    let scaling = scaling.map_or(RopeScaling::None, |(_, s)| s);
    if let RopeScaling::Longrope {
        short_factor,
        long_factor,
        ..
    } = &scaling
    {
        for (k, list) in [("short_factor", short_factor), ("long_factor", long_factor)] {
            if list.len() != rotary_dim / 2 {
                return Err(user!(
                    "{origin}: the longrope `{k}` has {} entries; {rotary_dim} rotary dims need {}",
                    list.len(),
                    rotary_dim / 2
                ));
            }
        }
    }
    Ok(RopeParams {
        theta,
        scaling,
        rotary_dim,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: serde_json::Value) -> Result<(f64, RopeScaling)> {
        parse_as("llama", 16, json).map(|r| (r.theta, r.scaling))
    }

    fn parse_as(model_type: &str, head_dim: usize, json: serde_json::Value) -> Result<RopeParams> {
        let max_positions = json["max_position_embeddings"].as_u64().unwrap_or(2048);
        from_config(
            json.as_object().unwrap(),
            "config.json",
            max_positions as usize,
            head_dim,
            model_type,
        )
    }

    /// Ours (f64) against transformers 5.24's `_compute_llama3_parameters` /
    /// `_compute_linear_scaling_rope_parameters` (computed in float32, printed with repr) for
    /// head_dim 16: equal to f32 rounding.
    fn assert_table(json: serde_json::Value, hf: [f64; 8]) {
        let (theta, s) = parse(json).unwrap();
        let ours = s.inv_freq(theta, 16);
        for (i, (a, b)) in ours.iter().zip(hf).enumerate() {
            assert!(
                (a - b).abs() <= 1.2e-7 * b,
                "entry {i}: ours {a:e}, transformers {b:e}"
            );
        }
    }

    #[test]
    fn llama3_table_matches_transformers() {
        // the tiny-llama3 fixture: wavelengths 6.3 (< 32/4: kept) and 32.4, 167, ... (> 32/1:
        // divided by 8)
        assert_table(
            serde_json::json!({"rope_parameters": {"rope_type": "llama3",
                "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 32}}),
            [
                1.0,
                0.024240344762802124,
                0.004700753837823868,
                0.0009115831344388425,
                0.00017677668074611574,
                3.428102354519069e-05,
                6.647869668086059e-06,
                1.289173155782919e-06,
            ],
        );
        // all three bands: wavelengths 6.3, 19.9 (< 128/4: kept), 62.8 (between: smoothed),
        // 199, ... (> 128/1: divided by 8)
        assert_table(
            serde_json::json!({"rope_theta": 10000.0, "rope_scaling": {"rope_type": "llama3",
                "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                "original_max_position_embeddings": 128}}),
            [
                1.0,
                0.3162277638912201,
                0.04275117814540863,
                0.0039528473280370235,
                0.0012499999720603228,
                0.00039528473280370235,
                0.0001250000059371814,
                3.9528473280370235e-05,
            ],
        );
        assert_table(
            serde_json::json!({"rope_parameters": {"rope_type": "linear", "factor": 4.0,
                "rope_theta": 10000.0}}),
            [
                0.25,
                0.07905694097280502,
                0.02500000037252903,
                0.007905694656074047,
                0.0024999999441206455,
                0.0007905694656074047,
                0.0002500000118743628,
                7.905694656074047e-05,
            ],
        );
    }

    /// transformers 5.24's `_compute_yarn_parameters` (float32, printed with repr), head_dim 16.
    #[test]
    fn yarn_table_and_attention_factor_match_transformers() {
        // 4.x style; bands: entry 0 kept, the rest divided by 4; m = 0.1·ln 4 + 1
        let json = serde_json::json!({"rope_theta": 10000.0, "max_position_embeddings": 64,
            "rope_scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16}});
        assert_table(
            json.clone(),
            [
                1.0,
                0.07905694097280502,
                0.02500000037252903,
                0.007905694656074047,
                0.0024999999441206455,
                0.0007905694656074047,
                0.0002500000118743628,
                7.905694656074047e-05,
            ],
        );
        let m = parse(json).unwrap().1.attention_factor();
        assert!((m - 1.138629436111989).abs() < 1e-15, "{m}");
        // an untruncated ramp over entries 1..3 and the DeepSeek-style mscale ratio
        let json = serde_json::json!({"max_position_embeddings": 128, "rope_parameters": {
            "rope_type": "yarn", "rope_theta": 1000000.0, "factor": 8.0,
            "original_max_position_embeddings": 32, "beta_fast": 8, "beta_slow": 2,
            "truncate": false, "mscale": 0.707, "mscale_all_dim": 1.0}});
        assert_table(
            json.clone(),
            [
                1.0,
                0.02222849242389202,
                0.0039528473280370235,
                0.0007029266562312841,
                0.0001250000059371814,
                2.2228492525755428e-05,
                3.9528467823402025e-06,
                7.029266839708725e-07,
            ],
        );
        let m = parse(json).unwrap().1.attention_factor();
        assert!((m - 0.9495608824621653).abs() < 1e-15, "{m}");
        // an explicit attention_factor wins; a null factor is max / original positions
        let (_, s) = parse(serde_json::json!({"max_position_embeddings": 4096,
            "original_max_position_embeddings": 1024,
            "rope_scaling": {"rope_type": "yarn", "factor": null, "attention_factor": 1.5}}))
        .unwrap();
        assert_eq!(
            s,
            RopeScaling::Yarn {
                factor: 4.0,
                original_max_positions: 1024,
                beta_fast: 32.0,
                beta_slow: 1.0,
                truncate: true,
                attention_factor: 1.5
            }
        );
        // dynamic keeps the default table (within max_position_embeddings)
        let (theta, s) =
            parse(serde_json::json!({"rope_scaling": {"type": "dynamic", "factor": 2.0}})).unwrap();
        assert_eq!(s.inv_freq(theta, 8), RopeScaling::None.inv_freq(theta, 8));
        assert_eq!(s.attention_factor(), 1.0);
    }

    #[test]
    fn linear_and_4x_style_scaling() {
        let (theta, s) = parse(serde_json::json!({
            "rope_theta": 10000.0, "rope_scaling": {"type": "linear", "factor": 4.0}
        }))
        .unwrap();
        assert_eq!(s, RopeScaling::Linear { factor: 4.0 });
        let t = s.inv_freq(theta, 8);
        assert_eq!(t, vec![0.25, 0.025, 0.0025, 0.00025]);
        // 4.x llama3: rope_theta at top level, original context from max_position_embeddings
        let (_, s) = parse(serde_json::json!({
            "rope_theta": 500000.0, "max_position_embeddings": 4096,
            "rope_scaling": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0}
        }))
        .unwrap();
        assert_eq!(
            s,
            RopeScaling::Llama3 {
                factor: 32.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_positions: 4096
            }
        );
    }

    #[test]
    fn unsupported_or_inconsistent_scaling_is_rejected_by_name() {
        for (json, want) in [
            (
                serde_json::json!({"rope_scaling": {"rope_type": "longrope", "factor": 4.0}}),
                "`longrope` needs `rope_scaling.short_factor`",
            ),
            (
                serde_json::json!({"rope_scaling": {"rope_type": "longrope",
                    "short_factor": [1.0, 1.0], "long_factor": [1.0, 1.0]}}),
                "the longrope `short_factor` has 2 entries; 16 rotary dims need 8",
            ),
            (
                serde_json::json!({"rope_scaling": {"rope_type": "yarn"}}),
                "needs `rope_scaling.factor`",
            ),
            (
                serde_json::json!({"max_position_embeddings": 64, "rope_scaling": {
                    "rope_type": "yarn", "factor": 4.0, "beta_fast": 1, "beta_slow": 32}}),
                "beta_fast",
            ),
            (
                serde_json::json!({"max_position_embeddings": 64, "rope_scaling": {
                    "rope_type": "yarn", "factor": 4.0, "truncate": "no"}}),
                "truncate",
            ),
            (
                serde_json::json!({"rope_parameters": {"rope_type": "dynamic"}}),
                "factor",
            ),
            (
                serde_json::json!({"rope_scaling": {"rope_type": "linear"}}),
                "factor",
            ),
            (
                serde_json::json!({"rope_scaling": {"rope_type": "llama3", "factor": 8.0,
                    "low_freq_factor": 4.0, "high_freq_factor": 1.0,
                    "original_max_position_embeddings": 8192}}),
                "low_freq_factor",
            ),
            (
                serde_json::json!({"rope_scaling": {"rope_type": "linear", "factor": 2.0},
                    "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0}}),
                "different rotary scalings",
            ),
            (
                serde_json::json!({"partial_rotary_factor": 0.5, "rope_parameters": {"rope_type": "default"}}),
                "partial_rotary_factor",
            ),
        ] {
            let e = parse(json).unwrap_err().to_string();
            assert!(e.contains("config.json") && e.contains(want), "{e}");
        }
        // phi3 takes partial rotary and longrope only, and its rotary dims must be even
        let eight = serde_json::json!([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]);
        for (json, want) in [
            (
                serde_json::json!({"rope_parameters": {"rope_type": "llama3", "factor": 8.0,
                    "low_freq_factor": 1.0, "high_freq_factor": 4.0}}),
                "rope_type `llama3` is not supported for phi3",
            ),
            (
                serde_json::json!({"partial_rotary_factor": 0.7}),
                "gives 11 rotary dims",
            ),
            (
                serde_json::json!({"rope_scaling": {"type": "longrope", "short_factor": eight,
                    "long_factor": [1.0, "x"]}}),
                "`rope_scaling.long_factor` must hold positive numbers",
            ),
        ] {
            let e = parse_as("phi3", 16, json).unwrap_err().to_string();
            assert!(e.contains("config.json") && e.contains(want), "{e}");
        }
    }

    /// transformers 5.24's `_compute_longrope_parameters` (float32, printed with repr) for
    /// head_dim 16, through Phi3Config.from_dict.
    #[test]
    fn longrope_table_and_attention_factor_match_transformers() {
        let short = [1.0, 1.05, 1.3, 2.0, 3.5, 6.0, 9.0, 12.0];
        let long = [1.0, 2.0, 4.0, 8.0, 16.0, 24.0, 32.0, 48.0];
        // transformers raises θ to the f32-rounded exponent 2i/R: up to 2^-24·ln θ (1e-6 for
        // θ = 2.5e5) relative
        let near = |ours: &[f64], hf: &[f64]| {
            assert_eq!(ours.len(), hf.len());
            for (i, (a, b)) in ours.iter().zip(hf).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-6 * b,
                    "entry {i}: ours {a:e}, transformers {b:e}"
                );
            }
        };
        // 5.x: the short factors below original_max_position_embeddings; factor 8 from the two
        // lengths gives m = √(1 + ln 8 / ln 4096)
        let r = parse_as(
            "phi3",
            16,
            serde_json::json!({"max_position_embeddings": 32768,
                "original_max_position_embeddings": 4096, "rope_parameters": {
                "rope_type": "longrope", "rope_theta": 10000.0, "short_factor": short,
                "long_factor": long}}),
        )
        .unwrap();
        assert_eq!(r.rotary_dim, 16);
        near(
            &r.scaling.inv_freq(r.theta, r.rotary_dim),
            &[
                1.0,
                0.3011693060398102,
                0.07692307978868484,
                0.015811389312148094,
                0.0028571428265422583,
                0.0005270463298074901,
                0.00011111111234640703,
                2.635231430758722e-05,
            ],
        );
        assert!((r.scaling.attention_factor() - 1.118033988749895).abs() < 1e-15);
        // Phi-4-mini style, 4.x keys: partial_rotary_factor 0.75 at the top level (12 of 16 dims
        // rotate), Phi3Config's default original length 4096, attention_factor given
        let r = parse_as(
            "phi3",
            16,
            serde_json::json!({"max_position_embeddings": 131072, "rope_theta": 250000.0,
                "partial_rotary_factor": 0.75, "rope_scaling": {"type": "longrope",
                "short_factor": short[..6], "long_factor": long[..6], "attention_factor": 1.5}}),
        )
        .unwrap();
        assert_eq!(r.rotary_dim, 12);
        near(
            &r.scaling.inv_freq(r.theta, r.rotary_dim),
            &[
                1.0,
                0.11999247968196869,
                0.012210776098072529,
                0.0010000000474974513,
                7.199546962510794e-05,
                5.291338311508298e-06,
            ],
        );
        assert_eq!(r.scaling.attention_factor(), 1.5);
        // beyond 4096 positions, transformers' long table (the same call with seq_len 5000)
        let (limit, long_table) = r.scaling.long_inv_freq(r.theta, r.rotary_dim).unwrap();
        assert_eq!(limit, 4096);
        near(
            &long_table,
            &[
                1.0,
                0.06299605220556259,
                0.003968502394855022,
                0.0002500000118743628,
                1.5749008525745012e-05,
                1.3228345778770745e-06,
            ],
        );
        // a top-level original_max_position_embeddings wins over the rope dict's
        let r = parse_as(
            "phi3",
            16,
            serde_json::json!({"max_position_embeddings": 131072,
                "original_max_position_embeddings": 8192, "rope_theta": 250000.0,
                "rope_scaling": {"type": "longrope", "short_factor": short, "long_factor": long,
                "original_max_position_embeddings": 2048}}),
        )
        .unwrap();
        assert!((r.scaling.attention_factor() - 1.1435437497937313).abs() < 1e-15);
        // `su` is longrope's old name; other model types read longrope too (whole heads)
        let su = parse_as(
            "phi3",
            16,
            serde_json::json!({"max_position_embeddings": 32768,
                "original_max_position_embeddings": 4096, "rope_scaling": {"type": "su",
                "short_factor": short, "long_factor": long}}),
        )
        .unwrap();
        let llama = parse_as(
            "llama",
            16,
            serde_json::json!({"max_position_embeddings": 32768,
                "original_max_position_embeddings": 4096, "rope_scaling": {"type": "longrope",
                "short_factor": short, "long_factor": long}}),
        )
        .unwrap();
        assert_eq!(su, llama);
    }
}
