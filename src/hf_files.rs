//! The Hugging Face side files a model carries from the directory it came from, through every
//! checkpoint, to its export: config.json's keys, generation_config.json and the tokenizer files.
//! Training changes weights, not these, so a serving stack loads the export as it loaded the
//! source (the same config fields, eos lists as lists, the same tokenizer class and ids).
//!
//! Contract:
//! - `HfSource::beside(path, text)`: every key of a config.json, and the generation_config.json
//!   in the same directory (when the file is named config.json and that file exists).
//! - `config_json(cfg, dtype)`: with a source, the source's object as it was, except the stored
//!   dtype (`torch_dtype` and `dtype`, when `dtype` is given: an export's storage type) and the
//!   few keys serving stacks need that it may lack (`FILL_IF_MISSING`: `architectures`, GPT-2's
//!   `n_ctx`, which llama.cpp's converter reads). Without one, `ModelConfig::to_hf_json`.
//!   bos/eos absent from config.json come from the tokenizer.
//! - `generation_config(cfg, tokenizer)`: the source's generation_config.json unchanged, else
//!   `{bos_token_id, eos_token_id}` from config.json (a list stays a list) or the tokenizer;
//!   `eos_ids(cfg)`: the stop ids it declares (what `ferrotron sample` stops on, as `generate`).
//! - `write_tokenizer(tokenizer, dir, cfg)`: a tokenizer loaded from HF files (tokenizer.json and
//!   tokenizer_config.json) has its directory's tokenizer files copied byte for byte
//!   (`TOKENIZER_FILES`); only a chat template that training set differently is written over the
//!   source's. A tokenizer from other files (GPT-2's encoder.json + vocab.bpe, or a bare
//!   tokenizer.json) is written by `Tokenizer::save`.

use crate::checkpoint::fsutil::{write_file, write_json};
use crate::error::Result;
use crate::model::ModelConfig;
use crate::tokenizer::{Tokenizer, TokenizerConfig};
use crate::user;
use serde_json::{json, Map, Value};
use std::path::Path;

/// The HF tokenizer files copied through as they are, when present.
pub const TOKENIZER_FILES: [&str; 10] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "chat_template.jinja",
    "chat_template.json",
    "vocab.txt",
];

/// Keys a source config.json may lack that serving stacks read: vLLM picks the model class by
/// `architectures`; llama.cpp's converter reads GPT-2's `n_ctx`. Every other key of a source is
/// one transformers derives from the keys the source has, as ferrotron's parser did.
const FILL_IF_MISSING: [&str; 2] = ["architectures", "n_ctx"];

/// What a config.json held, as read.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct HfSource {
    /// Every key of config.json.
    pub config: Map<String, Value>,
    /// generation_config.json beside it, when there is one.
    pub generation: Option<Value>,
}

impl HfSource {
    /// The source of the config at `path` whose text is `text` (already parsed as valid JSON by
    /// the caller).
    pub fn beside(path: &Path, text: &str) -> Result<Self> {
        let config = match serde_json::from_str(text) {
            Ok(Value::Object(m)) => m,
            _ => return Err(user!("{}: expected a JSON object", path.display())),
        };
        let gen_path = path.with_file_name("generation_config.json");
        let generation =
            if path.file_name().is_some_and(|n| n == "config.json") && gen_path.is_file() {
                let text = std::fs::read_to_string(&gen_path)
                    .map_err(|e| user!("{}: cannot read: {e}", gen_path.display()))?;
                let v: Value = serde_json::from_str(&text)
                    .map_err(|e| user!("{}: not valid JSON: {e}", gen_path.display()))?;
                if !v.is_object() {
                    return Err(user!(
                        "{}: expected a JSON object at the top level",
                        gen_path.display()
                    ));
                }
                Some(v)
            } else {
                None
            };
        Ok(HfSource { config, generation })
    }
}

/// The config.json to write for `cfg` (see the module contract); `dtype` ("float32",
/// "bfloat16") sets the stored dtype.
pub fn config_json(cfg: &ModelConfig, tokenizer: &Tokenizer, dtype: Option<&str>) -> Value {
    let own = match cfg.to_hf_json() {
        Value::Object(m) => m,
        _ => unreachable!("to_hf_json returns an object"),
    };
    let mut out = match &cfg.source {
        Some(src) => {
            let mut m = src.config.clone();
            for k in FILL_IF_MISSING {
                if let (false, Some(v)) = (m.contains_key(k), own.get(k)) {
                    m.insert(k.to_string(), v.clone());
                }
            }
            m
        }
        None => {
            let mut m = own;
            m.remove("bos_token_id");
            m.remove("eos_token_id");
            m
        }
    };
    let (bos, eos) = token_ids(cfg, tokenizer);
    out.entry("bos_token_id").or_insert(bos);
    out.entry("eos_token_id").or_insert(eos);
    if let Some(d) = dtype {
        out.insert("torch_dtype".into(), d.into());
        out.insert("dtype".into(), d.into());
    }
    Value::Object(out)
}

/// bos and eos ids: config.json's values as written there (an eos list stays a list), else the
/// tokenizer's.
fn token_ids(cfg: &ModelConfig, tokenizer: &Tokenizer) -> (Value, Value) {
    let from_source = |k: &str| {
        cfg.source
            .as_ref()
            .and_then(|s| s.config.get(k))
            .filter(|v| !v.is_null())
            .cloned()
    };
    let id = |v: Option<u32>| v.map_or(Value::Null, Value::from);
    (
        from_source("bos_token_id").unwrap_or_else(|| id(cfg.bos_token_id.or(tokenizer.bos_id()))),
        from_source("eos_token_id").unwrap_or_else(|| id(cfg.eos_token_id.or(tokenizer.eos_id()))),
    )
}

/// The stop ids the source declares: generation_config.json's `eos_token_id`, else
/// config.json's (an integer or a list), else `cfg.eos_token_id`.
pub fn eos_ids(cfg: &ModelConfig) -> Vec<u32> {
    let listed = |v: Option<&Value>| -> Option<Vec<u32>> {
        match v? {
            Value::Array(a) => Some(
                a.iter()
                    .filter_map(|x| x.as_u64())
                    .map(|x| x as u32)
                    .collect(),
            ),
            x => x.as_u64().map(|x| vec![x as u32]),
        }
    };
    let src = cfg.source.as_ref();
    listed(src.and_then(|s| s.generation.as_ref()?.get("eos_token_id")))
        .or_else(|| listed(src.and_then(|s| s.config.get("eos_token_id"))))
        .unwrap_or_else(|| cfg.eos_token_id.into_iter().collect())
}

/// generation_config.json for `cfg` (see the module contract).
pub fn generation_config(cfg: &ModelConfig, tokenizer: &Tokenizer) -> Value {
    if let Some(g) = cfg.source.as_ref().and_then(|s| s.generation.clone()) {
        return g;
    }
    let (bos, eos) = token_ids(cfg, tokenizer);
    json!({"_from_model_config": true, "bos_token_id": bos, "eos_token_id": eos})
}

/// Writes config.json (stored dtype `dtype`, if given) and generation_config.json into `dir`.
pub fn write_model_files(
    dir: &Path,
    cfg: &ModelConfig,
    tokenizer: &Tokenizer,
    dtype: Option<&str>,
) -> Result<()> {
    write_json(
        &dir.join("config.json"),
        &config_json(cfg, tokenizer, dtype),
    )?;
    write_json(
        &dir.join("generation_config.json"),
        &generation_config(cfg, tokenizer),
    )
}

/// Writes the tokenizer files into `dir` (see the module contract); returns their names.
pub fn write_tokenizer(
    tokenizer: &Tokenizer,
    dir: &Path,
    cfg: &ModelConfig,
) -> Result<Vec<String>> {
    let src = tokenizer.source();
    let hf_files = ["tokenizer.json", "tokenizer_config.json"];
    if !hf_files.iter().all(|f| src.join(f).is_file()) {
        tokenizer.save(dir, Some(cfg.max_positions))?;
        return Ok([
            "tokenizer.json",
            "tokenizer_config.json",
            "special_tokens_map.json",
        ]
        .map(String::from)
        .to_vec());
    }
    let source_cfg = TokenizerConfig::read(&src.join("tokenizer_config.json"))?;
    let template = tokenizer.chat_template_source();
    let changed = template != source_cfg.chat_template.as_deref();
    let jinja = src.join("chat_template.jinja").is_file();
    let mut written = Vec::new();
    for name in TOKENIZER_FILES {
        let from = src.join(name);
        if !from.is_file() {
            continue;
        }
        let to = dir.join(name);
        match (changed, name) {
            (true, "tokenizer_config.json") if !jinja => {
                let mut raw = source_cfg.raw.clone();
                raw.insert(
                    "chat_template".into(),
                    template.map_or(Value::Null, Value::from),
                );
                write_json(&to, &Value::Object(raw))?;
            }
            (true, "chat_template.jinja") => {
                let text = template.unwrap_or_default();
                write_file(&to, |w| w.write_all(text.as_bytes()))?;
            }
            _ => {
                let bytes = std::fs::read(&from)
                    .map_err(|e| user!("{}: cannot read: {e}", from.display()))?;
                write_file(&to, |w| w.write_all(&bytes))?;
            }
        }
        written.push(name.to_string());
    }
    Ok(written)
}
