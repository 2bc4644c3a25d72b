//! Sliding-window attention as config.json sets it, per layer (transformers 5.x semantics).
//!
//! In a windowed layer query i sees key j iff i − w < j ≤ i (w = `sliding_window`); other layers
//! are full causal attention.
//!   mistral:       `sliding_window` w (or null): every layer windowed (v0.1: 4096; later: null;
//!                  absent: transformers' default, 4096).
//!                  A `layer_types` key is ignored by MistralForCausalLM, so it is here too.
//!   qwen2, qwen3:  the window is `sliding_window` when `use_sliding_window` is true, else none;
//!                  layer ℓ is windowed when `layer_types[ℓ]` is "sliding_attention", or, without
//!                  `layer_types`, when a window is set and ℓ ≥ `max_window_layers` (default 28).
//!                  A layer marked "sliding_attention" without a window is an error (transformers
//!                  cannot build its mask either).
//!   smollm3:       as qwen2, except that without `layer_types` the windowed layers are the NoPE
//!                  layers (`no_rope_layers[ℓ]` = 0), as SmolLM3Config derives layer_types.
//!   phi3:          `sliding_window` w (absent or null: none): every layer windowed, as mistral
//!                  but with no window by default (Phi3Config's default is None).
//!   gemma2, gemma3_text: `sliding_window` w (absent: 4096; null is refused, as transformers
//!                  cannot build these models' masks without one even when no layer is
//!                  windowed: set a window of at least the sequence length instead); layer ℓ is windowed when
//!                  `layer_types[ℓ]` is "sliding_attention", or, without `layer_types`, as the
//!                  config classes derive it: Gemma 2 every other layer from layer 0, Gemma 3
//!                  every layer but each `sliding_window_pattern`-th (default 6).
//!   llama, gemma:  no sliding window; a non-null `sliding_window` is rejected rather than ignored.
//! A window is never dropped: a config that sets one either runs it or is rejected with a reason.

use crate::error::Result;
use crate::user;
use serde_json::{Map, Value};

/// Which layers attend through a sliding window, and its width.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct SlidingWindow {
    /// The window w (keys i − w < j ≤ i), when any layer uses one.
    pub window: Option<usize>,
    /// Per layer: windowed or full causal.
    pub layers: Vec<bool>,
}

impl SlidingWindow {
    /// The window of layer `l`, if it has one.
    pub fn of(&self, l: usize) -> Option<usize> {
        self.window
            .filter(|_| self.layers.get(l).copied().unwrap_or(false))
    }

    /// Full causal attention in every one of `layers` layers.
    pub fn none(layers: usize) -> Self {
        SlidingWindow {
            window: None,
            layers: vec![false; layers],
        }
    }

    /// The first windowed layer (as qwen2's `max_window_layers` counts), or `layers` if none.
    pub fn first_windowed_layer(&self) -> usize {
        self.layers
            .iter()
            .position(|&w| w)
            .unwrap_or(self.layers.len())
    }

    /// The keys of a qwen2 / qwen3 config.json that reproduce these windows in transformers 4.x
    /// and 5.x: use_sliding_window, sliding_window, max_window_layers, layer_types.
    pub fn qwen_keys(&self) -> Vec<(&'static str, Value)> {
        let types: Vec<Value> = self
            .layers
            .iter()
            .map(|&w| {
                if w {
                    "sliding_attention"
                } else {
                    "full_attention"
                }
                .into()
            })
            .collect();
        vec![
            ("use_sliding_window", self.window.is_some().into()),
            (
                "sliding_window",
                self.window.map_or(Value::Null, Value::from),
            ),
            ("max_window_layers", self.first_windowed_layer().into()),
            ("layer_types", Value::Array(types)),
        ]
    }
}

/// The sliding windows of a Llama-family config object with `layers` layers; `rope_layers`:
/// whether each layer applies the rotary embedding (smollm3's default windows follow it).
pub fn from_config(
    obj: &Map<String, Value>,
    model_type: &str,
    rope_layers: &[bool],
    origin: &str,
    notes: &mut Vec<String>,
) -> Result<SlidingWindow> {
    let layers = rope_layers.len();
    let get = |k: &str| obj.get(k).filter(|v| !v.is_null());
    let window = match get("sliding_window") {
        None => None,
        Some(v) => match v.as_u64() {
            Some(w) if w > 0 => Some(w as usize),
            _ => {
                return Err(user!(
                    "{origin}: key `sliding_window` must be a positive integer or null, found {v}"
                ))
            }
        },
    };
    let flag = |k: &str| -> Result<Option<bool>> {
        get(k)
            .map(|v| {
                v.as_bool()
                    .ok_or_else(|| user!("{origin}: key `{k}` must be true or false, found {v}"))
            })
            .transpose()
    };
    match model_type {
        "mistral" | "phi3" => {
            // MistralConfig's default when the key is absent (null: no window); Phi3Config's
            // is None
            let window = match obj.contains_key("sliding_window") || model_type == "phi3" {
                true => window,
                false => Some(4096),
            };
            if get("layer_types").is_some() {
                notes.push(format!(
                    "{origin}: `layer_types` is ignored for {model_type} (transformers applies sliding_window to every layer)"
                ));
            }
            Ok(SlidingWindow {
                window,
                layers: vec![window.is_some(); layers],
            })
        }
        "gemma2" | "gemma3_text" => {
            // both classes default to 4096
            let window = match (obj.contains_key("sliding_window"), window) {
                (false, _) => 4096,
                (true, Some(w)) => w,
                (true, None) => return Err(user!(
                    "{origin}: {model_type} needs a sliding_window (transformers cannot build its attention masks with sliding_window = null, even where every layer is full_attention); set one of at least the sequence length for no effective window"
                )),
            };
            let window = Some(window);
            let windowed = match get("layer_types") {
                Some(v) => layer_types(v, layers, origin)?,
                None if model_type == "gemma2" => (0..layers).map(|l| l % 2 == 0).collect(),
                None => {
                    let every = match get("sliding_window_pattern") {
                        None => 6,
                        Some(v) => v.as_u64().filter(|&p| p > 0).ok_or_else(|| {
                            user!("{origin}: key `sliding_window_pattern` must be a positive integer, found {v}")
                        })? as usize,
                    };
                    (0..layers).map(|l| (l + 1) % every != 0).collect()
                }
            };
            with_windowed_layers(window, windowed, origin)
        }
        "qwen2" | "qwen3" | "smollm3" => {
            let use_window = flag("use_sliding_window")?.unwrap_or(false);
            let window = window.filter(|_| use_window);
            let windowed: Vec<bool> = match get("layer_types") {
                Some(v) => layer_types(v, layers, origin)?,
                None if model_type == "smollm3" => (0..layers)
                    .map(|l| window.is_some() && !rope_layers[l])
                    .collect(),
                None => {
                    let first = match get("max_window_layers") {
                        None => 28,
                        Some(v) => v.as_u64().ok_or_else(|| {
                            user!("{origin}: key `max_window_layers` must be a non-negative integer, found {v}")
                        })? as usize,
                    };
                    (0..layers).map(|l| window.is_some() && l >= first).collect()
                }
            };
            with_windowed_layers(window, windowed, origin)
        }
        _ => match window {
            None => Ok(SlidingWindow::none(layers)),
            Some(w) => Err(user!(
                "{origin}: sliding_window = {w} is not supported for {model_type} (transformers' {model_type} has no sliding window; use model_type mistral for a windowed model)"
            )),
        },
    }
}

/// The windows of `windowed` layers; a windowed layer without a window is an error
/// (transformers cannot build its mask either).
fn with_windowed_layers(
    window: Option<usize>,
    windowed: Vec<bool>,
    origin: &str,
) -> Result<SlidingWindow> {
    if let Some(l) = windowed.iter().position(|&w| w) {
        if window.is_none() {
            return Err(user!(
                "{origin}: layer_types[{l}] is sliding_attention but no window is set (use_sliding_window is not true or sliding_window is null)"
            ));
        }
    }
    let any = windowed.iter().any(|&w| w);
    Ok(SlidingWindow {
        window: window.filter(|_| any),
        layers: windowed,
    })
}

/// `layer_types` (one "full_attention" or "sliding_attention" per layer): windowed per layer.
fn layer_types(v: &Value, layers: usize, origin: &str) -> Result<Vec<bool>> {
    let list = v
        .as_array()
        .ok_or_else(|| user!("{origin}: key `layer_types` must be a list, found {v}"))?;
    if list.len() != layers {
        return Err(user!(
            "{origin}: `layer_types` lists {} layers, num_hidden_layers is {layers}",
            list.len()
        ));
    }
    list.iter()
        .enumerate()
        .map(|(i, t)| match t.as_str() {
            Some("full_attention") => Ok(false),
            Some("sliding_attention") => Ok(true),
            _ => Err(user!(
                "{origin}: layer_types[{i}] = {t} is not supported (full_attention or sliding_attention)"
            )),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(t: &str, layers: usize, json: Value) -> Result<SlidingWindow> {
        from_config(
            json.as_object().unwrap(),
            t,
            &vec![true; layers],
            "config.json",
            &mut Vec::new(),
        )
    }

    /// SmolLM3Config derives layer_types from no_rope_layers: windows on the NoPE layers when
    /// use_sliding_window; an explicit layer_types wins.
    #[test]
    fn smollm3_windows_default_to_the_nope_layers() {
        let nope = [true, true, true, false, true, true, true, false];
        let at = |json: Value| {
            let w = from_config(
                json.as_object().unwrap(),
                "smollm3",
                &nope,
                "config.json",
                &mut Vec::new(),
            )
            .unwrap();
            (0..8).map(|l| w.of(l)).collect::<Vec<_>>()
        };
        let on = serde_json::json!({"use_sliding_window": true, "sliding_window": 9});
        let w = at(on);
        assert_eq!((w[2], w[3], w[7]), (None, Some(9), Some(9)));
        assert!(at(serde_json::json!({"sliding_window": 9}))
            .iter()
            .all(Option::is_none));
        let types: Vec<&str> = (0..8)
            .map(|l| {
                if l == 0 {
                    "sliding_attention"
                } else {
                    "full_attention"
                }
            })
            .collect();
        let w = at(
            serde_json::json!({"use_sliding_window": true, "sliding_window": 9,
            "layer_types": types}),
        );
        assert_eq!((w[0], w[3]), (Some(9), None));
    }

    #[test]
    fn mistral_windows_every_layer() {
        let w = parse("mistral", 3, serde_json::json!({"sliding_window": 4096})).unwrap();
        assert_eq!((w.of(0), w.of(2)), (Some(4096), Some(4096)));
        let w = parse("mistral", 3, serde_json::json!({"sliding_window": null})).unwrap();
        assert_eq!(w, SlidingWindow::none(3));
        let w = parse("mistral", 3, serde_json::json!({})).unwrap();
        assert_eq!(w.of(1), Some(4096), "MistralConfig's default");
    }

    #[test]
    fn qwen_windows_follow_use_sliding_window_and_layer_types() {
        // Qwen2.5 as published: a window size, but use_sliding_window false: no window.
        let q25 = serde_json::json!({"use_sliding_window": false, "sliding_window": 32768,
            "max_window_layers": 21});
        assert_eq!(parse("qwen2", 4, q25).unwrap(), SlidingWindow::none(4));
        // on, without layer_types: layers from max_window_layers on
        let on = serde_json::json!({"use_sliding_window": true, "sliding_window": 8,
            "max_window_layers": 2});
        let w = parse("qwen2", 4, on).unwrap();
        assert_eq!(w.layers, vec![false, false, true, true]);
        assert_eq!((w.of(1), w.of(2)), (None, Some(8)));
        assert_eq!(w.first_windowed_layer(), 2);
        // layer_types decide when present
        let typed = serde_json::json!({"use_sliding_window": true, "sliding_window": 8,
            "max_window_layers": 0, "layer_types": ["sliding_attention", "full_attention"]});
        let w = parse("qwen3", 2, typed).unwrap();
        assert_eq!(w.layers, vec![true, false]);
        // round trip of the keys written for export
        let keys: Map<String, Value> = w
            .qwen_keys()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        assert_eq!(parse("qwen3", 2, Value::Object(keys)).unwrap(), w);
    }

    #[test]
    fn windows_that_cannot_run_are_rejected() {
        for (t, json, want) in [
            (
                "qwen2",
                serde_json::json!({"use_sliding_window": false, "sliding_window": 8,
                    "layer_types": ["full_attention", "sliding_attention"]}),
                "layer_types[1] is sliding_attention",
            ),
            (
                "qwen2",
                serde_json::json!({"layer_types": ["full_attention"]}),
                "lists 1 layers",
            ),
            (
                "qwen3",
                serde_json::json!({"layer_types": ["chunked_attention", "full_attention"]}),
                "chunked_attention",
            ),
            (
                "llama",
                serde_json::json!({"sliding_window": 16}),
                "sliding_window",
            ),
            (
                "mistral",
                serde_json::json!({"sliding_window": 0}),
                "positive",
            ),
        ] {
            let e = parse(t, 2, json).unwrap_err().to_string();
            assert!(e.contains("config.json") && e.contains(want), "{e}");
        }
    }
}
