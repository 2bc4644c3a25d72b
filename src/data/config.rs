//! `[data]` section of a recipe. Unknown keys are rejected (deny_unknown_fields).
//!
//! ```toml
//! [data]
//! format = "text"            # "text" | "alpaca" | "chat"
//! path = "data-cache/shakespeare.txt"   # or paths = ["a.txt", "b.txt"]
//! tokenizer = "data-cache/gpt2"         # tokenizer dir; unset: the trainer uses model.hf_dir
//! seq_len = 256              # unset: the trainer uses the model's context length
//! val_fraction = 0.05        # held-out share of rows (text: the tail of the token stream)
//! packing = true             # several documents per row, attention kept within a document
//! text_split = "eos"         # text documents: "eos" (split on the eos token's text, e.g.
//!                            # <|endoftext|>, and at file ends) | "blank_line"
//! chat_template = "chatml"   # chat: unset = tokenizer's template, else ChatML; "chatml";
//!                            # a path to a .jinja file; or the Jinja source itself
//! on_bad_row = "error"       # "error" (file:line) | "skip" (count and go on)
//! cache_dir = "data-cache/tokens"  # text token cache; unset: <first file's dir>/.ferrotron-cache
//! ```

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Text,
    Alpaca,
    Chat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnBadRow {
    #[default]
    Error,
    Skip,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TextSplit {
    #[default]
    Eos,
    BlankLine,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    pub format: Format,
    pub path: Option<PathBuf>,
    pub paths: Vec<PathBuf>,
    pub tokenizer: Option<PathBuf>,
    pub seq_len: Option<usize>,
    pub val_fraction: f64,
    pub packing: bool,
    pub text_split: TextSplit,
    pub chat_template: Option<String>,
    pub on_bad_row: OnBadRow,
    pub cache_dir: Option<PathBuf>,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            format: Format::Text,
            path: None,
            paths: Vec::new(),
            tokenizer: None,
            seq_len: None,
            val_fraction: 0.05,
            packing: true,
            text_split: TextSplit::Eos,
            chat_template: None,
            on_bad_row: OnBadRow::Error,
            cache_dir: None,
        }
    }
}

impl DataConfig {
    /// `path` followed by `paths`.
    pub fn all_paths(&self) -> Vec<PathBuf> {
        self.path.iter().chain(self.paths.iter()).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_unknown_keys() {
        let c: DataConfig = toml::from_str("path = \"a.txt\"").unwrap();
        assert_eq!(c.format, Format::Text);
        assert!(c.packing);
        assert_eq!(c.val_fraction, 0.05);
        assert_eq!(c.all_paths(), vec![PathBuf::from("a.txt")]);
        let c: DataConfig =
            toml::from_str("format = \"chat\"\non_bad_row = \"skip\"\ntext_split = \"blank_line\"")
                .unwrap();
        assert_eq!(
            (c.format, c.on_bad_row, c.text_split),
            (Format::Chat, OnBadRow::Skip, TextSplit::BlankLine)
        );
        let e = toml::from_str::<DataConfig>("pathz = \"a\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `pathz`"), "{e}");
        assert!(toml::from_str::<DataConfig>("format = \"csv\"").is_err());
    }
}
