//! tokenizer_config.json: the fields ferrotron reads (bos/eos/unk/pad tokens, chat_template) and
//! the file it writes for HF export. Special tokens may be plain strings or AddedToken objects
//! ({"content": ...}); `chat_template` may be a string or a list of {name, template} (the one named
//! "default" is used). Every other key is kept as-is so a round trip loses nothing.

use std::path::Path;

use serde_json::{Map, Value};

use crate::error::Result;
use crate::user;

/// The parsed parts of tokenizer_config.json, plus the raw object for round trips.
#[derive(Debug, Clone, Default)]
pub struct TokenizerConfig {
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    pub unk_token: Option<String>,
    pub pad_token: Option<String>,
    pub chat_template: Option<String>,
    pub raw: Map<String, Value>,
}

fn token_field(raw: &Map<String, Value>, key: &str) -> Option<String> {
    match raw.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

fn template_field(raw: &Map<String, Value>) -> Option<String> {
    match raw.get("chat_template")? {
        Value::String(s) => Some(s.clone()),
        Value::Array(list) => list.iter().find_map(|t| {
            (t.get("name")?.as_str()? == "default")
                .then(|| t.get("template")?.as_str().map(str::to_string))?
        }),
        _ => None,
    }
}

impl TokenizerConfig {
    /// Reads `path` when it exists; a missing file is an empty config.
    pub fn read(path: &Path) -> Result<Self> {
        if !path.exists() {
            return Ok(Self::default());
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| user!("cannot read {}: {e}", path.display()))?;
        let raw: Map<String, Value> = serde_json::from_str(&text)
            .map_err(|e| user!("{} is not a JSON object: {e}", path.display()))?;
        let mut cfg = Self {
            bos_token: token_field(&raw, "bos_token"),
            eos_token: token_field(&raw, "eos_token"),
            unk_token: token_field(&raw, "unk_token"),
            pad_token: token_field(&raw, "pad_token"),
            chat_template: template_field(&raw),
            raw,
        };
        // Newer HF releases keep the template in its own file.
        let jinja = path.with_file_name("chat_template.jinja");
        if cfg.chat_template.is_none() && jinja.is_file() {
            cfg.chat_template = Some(
                std::fs::read_to_string(&jinja)
                    .map_err(|e| user!("cannot read {}: {e}", jinja.display()))?,
            );
        }
        Ok(cfg)
    }

    /// The JSON object to write: the raw keys updated with the parsed fields.
    pub fn to_json(&self, model_max_length: Option<usize>) -> Value {
        let mut out = self.raw.clone();
        let mut set = |k: &str, v: &Option<String>| {
            if let Some(v) = v {
                out.insert(k.to_string(), Value::String(v.clone()));
            }
        };
        set("bos_token", &self.bos_token);
        set("eos_token", &self.eos_token);
        set("unk_token", &self.unk_token);
        set("pad_token", &self.pad_token);
        set("chat_template", &self.chat_template);
        out.insert(
            "tokenizer_class".into(),
            Value::String("PreTrainedTokenizerFast".into()),
        );
        if let Some(n) = model_max_length {
            out.insert("model_max_length".into(), Value::from(n));
        }
        out.entry("clean_up_tokenization_spaces")
            .or_insert(Value::Bool(false));
        Value::Object(out)
    }

    /// special_tokens_map.json content.
    pub fn special_tokens_map(&self) -> Value {
        let mut m = Map::new();
        for (k, v) in [
            ("bos_token", &self.bos_token),
            ("eos_token", &self.eos_token),
            ("unk_token", &self.unk_token),
            ("pad_token", &self.pad_token),
        ] {
            if let Some(v) = v {
                m.insert(k.into(), Value::String(v.clone()));
            }
        }
        Value::Object(m)
    }
}
