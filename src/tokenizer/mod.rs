//! Tokenizers: HF tokenizer.json (tokenizers crate, pure-Rust regex) and GPT-2 encoder.json +
//! vocab.bpe (or vocab.json + merges.txt), both as one `tokenizers::Tokenizer`.
//! Contract:
//! - `Tokenizer::from_dir(dir)`: tokenizer.json when present, else the GPT-2 file pair;
//!   tokenizer_config.json (optional) gives bos/eos/pad tokens and `chat_template`. Without a
//!   config, `<|endoftext|>` (then `</s>`, `<eos>`) found in the vocabulary is eos and bos.
//! - `encode` adds no special tokens (HF `add_special_tokens=False`); special tokens written in
//!   the text are still matched whole. `encode_with_special` runs the post-processor (e.g. BOS).
//! - `save(dir)` writes tokenizer.json, tokenizer_config.json and special_tokens_map.json, which
//!   `transformers.AutoTokenizer` loads, and which `from_dir` loads back identically.

pub mod chat_template;
pub mod config;
pub mod gpt2;

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::user;
pub use chat_template::{ChatTemplate, Message, CHATML, CHAT_ROLES};
pub use config::TokenizerConfig;

/// A byte range `[start, end)` in the encoded text.
pub type Span = (usize, usize);

/// A loaded tokenizer with its special tokens and optional chat template.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    config: TokenizerConfig,
    source: PathBuf,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Tokenizer({}, vocab {})",
            self.source.display(),
            self.vocab_size()
        )
    }
}

impl Tokenizer {
    /// Loads the tokenizer in `dir` (see the module contract).
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        if !dir.is_dir() {
            let what = if dir.exists() {
                "is not a directory (name the directory holding the tokenizer files)"
            } else {
                "does not exist"
            };
            return Err(user!("tokenizer directory {} {what}", dir.display()));
        }
        let json = dir.join("tokenizer.json");
        let pairs = [("encoder.json", "vocab.bpe"), ("vocab.json", "merges.txt")];
        let inner = if json.is_file() {
            tokenizers::Tokenizer::from_file(&json)
                .map_err(|e| user!("cannot load {}: {e}", json.display()))?
        } else if let Some((v, m)) = pairs
            .iter()
            .find(|(v, m)| dir.join(v).is_file() && dir.join(m).is_file())
        {
            gpt2::from_files(&dir.join(v), &dir.join(m))?
        } else {
            return Err(user!(
                "{} holds no tokenizer: expected tokenizer.json, or encoder.json + vocab.bpe, or vocab.json + merges.txt",
                dir.display()
            ));
        };
        let config = TokenizerConfig::read(&dir.join("tokenizer_config.json"))?;
        Self::new(inner, config, dir.to_path_buf())
    }

    fn new(
        inner: tokenizers::Tokenizer,
        mut config: TokenizerConfig,
        source: PathBuf,
    ) -> Result<Self> {
        if config.eos_token.is_none() {
            config.eos_token = [gpt2::ENDOFTEXT, "</s>", "<eos>"]
                .iter()
                .find(|t| inner.token_to_id(t).is_some())
                .map(|t| t.to_string());
            if config.bos_token.is_none() && config.eos_token.as_deref() == Some(gpt2::ENDOFTEXT) {
                config.bos_token = config.eos_token.clone();
            }
        }
        for (what, tok) in [
            ("eos_token", &config.eos_token),
            ("bos_token", &config.bos_token),
        ] {
            if let Some(t) = tok {
                if inner.token_to_id(t).is_none() {
                    return Err(user!(
                        "{}: {what} {t:?} is not in the vocabulary",
                        source.join("tokenizer_config.json").display()
                    ));
                }
            }
        }
        Ok(Self {
            inner,
            config,
            source,
        })
    }

    /// Token ids of `text`, without added special tokens.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.encode_with_special(text, false)
    }

    /// Token ids of `text`; with `add_special` the post-processor runs (BOS/EOS as the tokenizer
    /// declares).
    pub fn encode_with_special(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, add_special)
            .map_err(|e| self.err(e))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Token ids with each token's byte range in `text` (no special tokens added).
    pub fn encode_with_offsets(&self, text: &str) -> Result<(Vec<u32>, Vec<Span>)> {
        let enc = self.inner.encode(text, false).map_err(|e| self.err(e))?;
        Ok((enc.get_ids().to_vec(), enc.get_offsets().to_vec()))
    }

    /// Encodes many texts in parallel (no special tokens added).
    pub fn encode_batch(&self, texts: Vec<&str>) -> Result<Vec<Vec<u32>>> {
        let encs = self
            .inner
            .encode_batch_fast(texts, false)
            .map_err(|e| self.err(e))?;
        Ok(encs.into_iter().map(|e| e.get_ids().to_vec()).collect())
    }

    /// Text of `ids` (special tokens kept).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, false).map_err(|e| self.err(e))
    }

    /// True for a byte-level BPE without normalizer or prefix space (GPT-2, Llama-3, Qwen style):
    /// its pre-tokenizer always splits between `x\n` and a printable ASCII character.
    pub fn is_byte_level(&self) -> bool {
        let pre = serde_json::to_string(&self.inner.get_pre_tokenizer()).unwrap_or_default();
        self.inner.get_normalizer().is_none()
            && pre.contains("ByteLevel")
            && !pre.contains("\"add_prefix_space\":true")
    }

    /// Number of ids, added tokens included (the model's embedding must have at least this many).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    pub fn eos_token(&self) -> Option<&str> {
        self.config.eos_token.as_deref()
    }

    pub fn bos_token(&self) -> Option<&str> {
        self.config.bos_token.as_deref()
    }

    pub fn eos_id(&self) -> Option<u32> {
        self.eos_token().and_then(|t| self.token_to_id(t))
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.bos_token().and_then(|t| self.token_to_id(t))
    }

    /// Padding id: pad token, else eos, else 0. Padded positions never carry a loss.
    pub fn pad_id(&self) -> u32 {
        let pad = self
            .config
            .pad_token
            .as_deref()
            .and_then(|t| self.token_to_id(t));
        pad.or(self.eos_id()).unwrap_or(0)
    }

    /// The BOS id when the tokenizer's post-processor starts every sequence with a BOS distinct
    /// from EOS (Llama style); None for GPT-2 style tokenizers.
    pub fn leading_bos(&self) -> Option<u32> {
        let bos = self.bos_id()?;
        let ids = self.encode_with_special("a", true).ok()?;
        (Some(bos) != self.eos_id() && ids.first() == Some(&bos)).then_some(bos)
    }

    /// The tokenizer's own Jinja chat template, if it has one.
    pub fn chat_template_source(&self) -> Option<&str> {
        self.config.chat_template.as_deref()
    }

    /// Compiles `source` (or the tokenizer's template, or ChatML when it has none) with this
    /// tokenizer's bos/eos strings.
    pub fn chat_template(&self, source: Option<&str>) -> Result<ChatTemplate> {
        let src = source.or(self.chat_template_source()).unwrap_or(CHATML);
        ChatTemplate::new(
            src,
            self.bos_token().unwrap_or(""),
            self.eos_token().unwrap_or(""),
        )
        .map_err(|e| user!("{}: {e}", self.source.display()))
    }

    /// Sets the chat template saved with the tokenizer (e.g. the one a fine-tune used).
    pub fn set_chat_template(&mut self, source: Option<String>) {
        self.config.chat_template = source;
    }

    /// Where it was loaded from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// A content hash of the tokenizer (model, normalizer, special tokens): equal hashes encode
    /// equally. Used as part of token-cache keys.
    pub fn identity(&self) -> Result<String> {
        let json = self.inner.to_string(false).map_err(|e| self.err(e))?;
        let mut h = Sha256::new();
        h.update(json.as_bytes());
        h.update(self.config.eos_token.as_deref().unwrap_or("").as_bytes());
        Ok(format!("{:x}", h.finalize()))
    }

    /// Writes tokenizer.json, tokenizer_config.json and special_tokens_map.json into `dir`.
    pub fn save(&self, dir: impl AsRef<Path>, model_max_length: Option<usize>) -> Result<()> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| user!("cannot create {}: {e}", dir.display()))?;
        let json = self.inner.to_string(true).map_err(|e| self.err(e))?;
        write(&dir.join("tokenizer.json"), &json)?;
        let cfg = serde_json::to_string_pretty(&self.config.to_json(model_max_length))
            .map_err(|e| Error::Internal(e.to_string()))?;
        write(&dir.join("tokenizer_config.json"), &cfg)?;
        let map = serde_json::to_string_pretty(&self.config.special_tokens_map())
            .map_err(|e| Error::Internal(e.to_string()))?;
        write(&dir.join("special_tokens_map.json"), &map)
    }

    fn err(&self, e: tokenizers::Error) -> Error {
        Error::Internal(format!("tokenizer {}: {e}", self.source.display()))
    }
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| user!("cannot write {}: {e}", path.display()))
}
