//! Data pipeline: text, alpaca and chat datasets, packing, deterministic sampling.
//!
//! Trainer usage:
//! ```ignore
//! let tok = Tokenizer::from_dir(cfg.tokenizer.as_ref().unwrap_or(&hf_dir))?;
//! let ds = data::load(&cfg, &tok, seq_len)?;            // ds.stats.summary() to print
//! let mut s = Sampler::new(ds.train.len(), seed)?;      // or Sampler::from_state(saved, ..)
//! let global = s.next_global_batch(global_rows);          // same on every rank
//! for mb in microbatches(rank_slice(&global, dp_rank, dp)?, micro_rows)? {
//!     let batch = ds.train.batch(mb)?;                    // see batch.rs for the layout
//! }
//! for ids in eval_order(ds.val.len(), rows, max_batches) { ds.val.batch(&ids)?; }
//! // chat fine-tune: export the template the data was rendered with
//! tok.set_chat_template(Some(data::chat_template_source(&cfg, &tok)?));
//! ```
//! Held-out split: text takes the last `ceil(val_fraction * rows)` rows of the stream (the tail
//! of the last file); alpaca/chat take `ceil(val_fraction * examples)` examples chosen by a
//! fixed-seed permutation (a property of the data, not of the run's seed), packed separately.

pub mod batch;
pub mod cache;
pub mod config;
pub mod packing;
pub mod records;
pub mod rowset;
pub mod sampler;
pub mod sft;
pub mod text;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use batch::{Batch, IGNORE_INDEX};
pub use config::{DataConfig, Format, OnBadRow, TextSplit};
pub use rowset::RowSet;
pub use sampler::{eval_order, microbatches, rank_slice, Sampler, SamplerState};

use crate::error::Result;
use crate::tokenizer::{ChatTemplate, Tokenizer, CHATML};
use crate::user;
use rowset::{Row, Store};

/// Seed of the example-level held-out split.
const SPLIT_SEED: u64 = 0x5eed_5917;

/// Counts reported at start.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DataStats {
    pub files: usize,
    /// Text: documents; alpaca/chat: examples kept.
    pub documents: usize,
    pub tokens: usize,
    pub train_rows: usize,
    pub val_rows: usize,
    /// Text files whose tokens came from the cache.
    pub cache_hits: usize,
    pub rows_read: usize,
    pub skipped_rows: usize,
    pub truncated: usize,
    pub dropped_no_labels: usize,
    /// Share of training-row tokens that are not padding.
    pub fill: f64,
}

impl DataStats {
    pub fn summary(&self) -> String {
        let mut s = format!(
            "data: {} file(s), {} documents, {} tokens; {} train rows, {} val rows, {:.1}% filled",
            self.files,
            self.documents,
            self.tokens,
            self.train_rows,
            self.val_rows,
            self.fill * 100.0
        );
        if self.rows_read > 0 {
            s += &format!(
                "; {} rows read, {} skipped, {} truncated, {} without labels dropped",
                self.rows_read, self.skipped_rows, self.truncated, self.dropped_no_labels
            );
        } else {
            s += &format!(
                "; {} of {} file(s) from the token cache",
                self.cache_hits, self.files
            );
        }
        s
    }
}

pub struct Datasets {
    pub train: RowSet,
    pub val: RowSet,
    pub stats: DataStats,
}

/// Loads, tokenizes (or reuses cached tokens), splits and packs the data of `cfg`.
pub fn load(cfg: &DataConfig, tok: &Tokenizer, seq_len: usize) -> Result<Datasets> {
    let paths = cfg.all_paths();
    if paths.is_empty() {
        return Err(user!("data.path is not set: name the training data file"));
    }
    for p in &paths {
        if p.as_os_str().is_empty() {
            return Err(user!(
                "data.path (or an entry of data.paths) is an empty string: name the data file"
            ));
        }
        if p.is_dir() {
            return Err(user!(
                "data file {} is a directory: data.path and data.paths name files, not directories",
                p.display()
            ));
        }
        if !p.is_file() {
            return Err(user!("data file {} does not exist", p.display()));
        }
    }
    if seq_len < 2 {
        return Err(user!("data.seq_len must be at least 2, got {seq_len}"));
    }
    if !(0.0..1.0).contains(&cfg.val_fraction) {
        return Err(user!(
            "data.val_fraction must be in [0, 1), got {}",
            cfg.val_fraction
        ));
    }
    let mut stats = DataStats {
        files: paths.len(),
        ..Default::default()
    };
    let (store, train, val) = match cfg.format {
        Format::Text => load_text(cfg, tok, &paths, seq_len, &mut stats)?,
        Format::Alpaca | Format::Chat => load_examples(cfg, tok, &paths, seq_len, &mut stats)?,
    };
    let store = Arc::new(store);
    let set = |rows| RowSet {
        store: store.clone(),
        rows,
        seq_len,
        pad_id: tok.pad_id(),
    };
    let (train, val) = (set(train), set(val));
    stats.train_rows = train.len();
    stats.val_rows = val.len();
    stats.fill = train.filled_tokens() as f64 / (train.len() * seq_len).max(1) as f64;
    Ok(Datasets { train, val, stats })
}

fn n_val(n: usize, fraction: f64, what: &str) -> Result<usize> {
    if fraction == 0.0 {
        return Ok(0);
    }
    let k = ((n as f64) * fraction).ceil() as usize;
    if k >= n {
        return Err(user!(
            "data.val_fraction = {fraction} leaves no training data ({n} {what}); lower it or add data"
        ));
    }
    Ok(k)
}

fn default_cache_dir(first: &Path) -> PathBuf {
    first
        .parent()
        .unwrap_or(Path::new("."))
        .join(".ferrotron-cache")
}

type Split = (Store, Vec<Row>, Vec<Row>);

fn load_text(
    cfg: &DataConfig,
    tok: &Tokenizer,
    paths: &[PathBuf],
    seq_len: usize,
    stats: &mut DataStats,
) -> Result<Split> {
    let (eos, eos_text) = match (tok.eos_id(), tok.eos_token()) {
        (Some(id), Some(t)) => (id, t.to_string()),
        _ => {
            return Err(user!(
                "{}: text data needs an eos token to end documents, and the tokenizer has none",
                tok.source().display()
            ))
        }
    };
    let cache_dir = cfg
        .cache_dir
        .clone()
        .unwrap_or_else(|| default_cache_dir(&paths[0]));
    let key = format!("{} {:?} {}", tok.identity()?, cfg.text_split, eos_text);
    let mut files = Vec::new();
    let mut rows = Vec::new();
    for (fi, p) in paths.iter().enumerate() {
        let (tf, hit) = cache::load_or_build(p, &key, &cache_dir, |text| {
            text::tokenize_text(tok, text, cfg.text_split, &eos_text, eos)
        })?;
        stats.cache_hits += usize::from(hit);
        let toks = tf.tokens();
        stats.tokens += toks.len();
        stats.documents += toks.iter().filter(|&&t| t == eos).count();
        text_rows(fi as u32, toks, eos, seq_len, cfg.packing, &mut rows);
        files.push(tf);
    }
    if rows.is_empty() {
        return Err(user!("{} holds no text", paths[0].display()));
    }
    let k = n_val(rows.len(), cfg.val_fraction, "rows")?;
    let val = rows.split_off(rows.len() - k);
    if let Some(Row::Text { cont, .. }) = rows.last_mut() {
        *cont = false; // the next token belongs to the held-out split
    }
    Ok((Store::Text { files, eos }, rows, val))
}

/// Packed: consecutive windows of `seq_len` (the last one may be short). Unpacked: each document
/// cut into windows of at most `seq_len`, one per row.
fn text_rows(
    file: u32,
    toks: &[u32],
    eos: u32,
    seq_len: usize,
    packing: bool,
    rows: &mut Vec<Row>,
) {
    let mut push = |start: usize, end: usize, doc_end: usize| {
        let mut s = start;
        while s < end {
            let e = (s + seq_len).min(end);
            rows.push(Row::Text {
                file,
                start: s as u64,
                len: (e - s) as u32,
                cont: e < doc_end,
            });
            s = e;
        }
    };
    if packing {
        push(0, toks.len(), toks.len());
    } else {
        let mut start = 0;
        for (i, &t) in toks.iter().enumerate() {
            if t == eos {
                push(start, i + 1, i + 1);
                start = i + 1;
            }
        }
        push(start, toks.len(), toks.len());
    }
}

/// The Jinja source a chat dataset is rendered with: data.chat_template ("chatml", a .jinja
/// path, or inline Jinja), else the tokenizer's template, else ChatML. Save it with the
/// fine-tuned model (`Tokenizer::set_chat_template`) so the export serves the format it learned.
pub fn chat_template_source(cfg: &DataConfig, tok: &Tokenizer) -> Result<String> {
    Ok(match cfg.chat_template.as_deref() {
        None => tok.chat_template_source().unwrap_or(CHATML).to_string(),
        Some("chatml") => CHATML.to_string(),
        Some(s) if !s.contains("{%") && !s.contains("{{") => std::fs::read_to_string(s)
            .map_err(|e| user!("data.chat_template: cannot read the template file {s}: {e}"))?,
        Some(s) => s.to_string(),
    })
}

fn chat_template(cfg: &DataConfig, tok: &Tokenizer) -> Result<ChatTemplate> {
    tok.chat_template(Some(&chat_template_source(cfg, tok)?))
}

fn load_examples(
    cfg: &DataConfig,
    tok: &Tokenizer,
    paths: &[PathBuf],
    seq_len: usize,
    stats: &mut DataStats,
) -> Result<Split> {
    let tmpl = match cfg.format {
        Format::Chat => Some(chat_template(cfg, tok)?),
        _ => None,
    };
    let mut counts = sft::SftCounts::default();
    let mut examples = Vec::new();
    for p in paths {
        examples.extend(sft::load_examples(
            p,
            cfg.format,
            tok,
            tmpl.as_ref(),
            seq_len,
            cfg.on_bad_row,
            &mut counts,
        )?);
    }
    stats.rows_read = counts.rows;
    stats.skipped_rows = counts.skipped;
    stats.truncated = counts.truncated;
    stats.dropped_no_labels = counts.dropped;
    stats.documents = examples.len();
    stats.tokens = examples.iter().map(|e| e.ids.len()).sum();
    if examples.is_empty() {
        return Err(user!(
            "{}: no usable examples ({} rows read, {} skipped as bad rows, {} without a trained token after truncation to data.seq_len = {seq_len})",
            paths[0].display(),
            counts.rows,
            counts.skipped,
            counts.dropped
        ));
    }
    let k = n_val(examples.len(), cfg.val_fraction, "examples")?;
    let perm = sampler::permutation(examples.len(), SPLIT_SEED, 0);
    let mut val_ix: Vec<u32> = perm[..k].to_vec();
    let mut train_ix: Vec<u32> = perm[k..].to_vec();
    val_ix.sort_unstable();
    train_ix.sort_unstable();
    let rows = |ix: &[u32]| -> Vec<Row> {
        if cfg.packing {
            let lens: Vec<usize> = ix.iter().map(|&i| examples[i as usize].ids.len()).collect();
            packing::pack(&lens, seq_len)
                .into_iter()
                .map(|r| Row::Examples(r.into_iter().map(|j| ix[j as usize]).collect()))
                .collect()
        } else {
            ix.iter().map(|&i| Row::Examples(vec![i])).collect()
        }
    };
    let (train, val) = (rows(&train_ix), rows(&val_ix));
    Ok((Store::Examples(examples), train, val))
}
