//! `ferrotron export CHECKPOINT --hf OUT [--dtype bf16|f32]`: a checkpoint as a Hugging Face
//! model directory that transformers, vLLM and SGLang load.
//!
//! CHECKPOINT is a step directory, or a checkpoint root (its newest step). OUT receives:
//! - `config.json`: the source model's config.json (every key it had, carried through the
//!   checkpoint; the HF schema of the architecture for a model built from ferrotron's own
//!   config), `torch_dtype`/`dtype` = the export dtype;
//! - `model.safetensors` (or `model-0000i-of-0000n.safetensors` + `model.safetensors.index.json`
//!   above 5 GB), streamed: one logical tensor is in memory at a time, read from whatever
//!   fragments the checkpoint's ranks wrote; HF names and HF layouts (GPT-2 Conv1D weights stay [in, out]; a tied
//!   `lm_head.weight` is not written, as `save_pretrained` does), F32 or BF16 (round to nearest
//!   even);
//! - tokenizer files: the source's HF tokenizer files as they were (`tokenizer.json`,
//!   `tokenizer_config.json`, ...; see crate::hf_files), or ones written from the tokenizer;
//! - `generation_config.json`: the source's, or bos/eos token ids.
//!
//! Atomic: everything is written to a temporary sibling of OUT and renamed into place; OUT must
//! not exist or be an empty directory (an export never overwrites files).

use crate::checkpoint::fsutil::{publish_dir, remove_dir_quiet};
use crate::checkpoint::tensors::{write_sharded_with, StoreDtype};
use crate::checkpoint::{self, DEFAULT_SHARD_BYTES};
use crate::error::Result;
use crate::hf_files;
use crate::model::{ModelConfig, ParamLayout};
use crate::tensorfile::{Entry, LayoutSource};
use crate::tokenizer::Tokenizer;
use crate::user;
use ferrotron_zero::StatePart;
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportDtype {
    F32,
    Bf16,
}

impl ExportDtype {
    fn store(self) -> StoreDtype {
        match self {
            ExportDtype::F32 => StoreDtype::F32,
            ExportDtype::Bf16 => StoreDtype::Bf16,
        }
    }
    fn torch_name(self) -> &'static str {
        match self {
            ExportDtype::F32 => "float32",
            ExportDtype::Bf16 => "bfloat16",
        }
    }
}

/// Command-line arguments of `ferrotron export`.
#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// A checkpoint step directory, or a checkpoint root (its newest step is exported).
    pub checkpoint: PathBuf,
    /// Output directory (must not exist, or be empty).
    #[arg(long)]
    pub hf: PathBuf,
    /// Stored dtype of the weights.
    #[arg(long, value_enum, default_value = "f32")]
    pub dtype: ExportDtype,
}

/// What `export` wrote.
#[derive(Clone, Debug)]
pub struct ExportReport {
    /// The step directory that was exported.
    pub source: PathBuf,
    pub files: Vec<String>,
    pub params: usize,
}

/// Runs `ferrotron export`; returns the exit code.
pub fn run_cli(args: &ExportArgs) -> Result<i32> {
    let r = export(&args.checkpoint, &args.hf, args.dtype, DEFAULT_SHARD_BYTES)?;
    crate::outln!(
        "exported {} ({} parameters, {}) to {}: {}",
        r.source.display(),
        r.params,
        args.dtype.torch_name(),
        args.hf.display(),
        r.files.join(", ")
    );
    Ok(0)
}

/// Exports `checkpoint` to `out` (see the module comment); shards above `shard_bytes`.
pub fn export(
    checkpoint: &Path,
    out: &Path,
    dtype: ExportDtype,
    shard_bytes: u64,
) -> Result<ExportReport> {
    let source = checkpoint::resolve(checkpoint)?;
    let cfg = ModelConfig::from_file(&source.join("config.json"))?;
    crate::train::preflight::check_weights_fit(&cfg, &source.join("config.json"))?;
    let layout = ParamLayout::new(&cfg);
    let weights = checkpoint::open_weights(&source, &cfg, &layout)?;
    let tokenizer = Tokenizer::from_dir(&source)?;
    check_out(out)?;
    let name = out
        .file_name()
        .ok_or_else(|| user!("--hf {}: not a directory name", out.display()))?;
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent)
        .map_err(|e| user!("cannot create {}: {e}", parent.display()))?;
    let tag = format!(
        ".tmp-export-{}-{}",
        name.to_string_lossy(),
        std::process::id()
    );
    let tmp = parent.join(&tag);
    let aside = parent.join(format!("{tag}.old"));
    // `--hf NAME` (bare, relative): publish as ./NAME, so the parent to sync is "." and not "".
    let out = &parent.join(name);
    remove_dir_quiet(&tmp);
    let result = std::fs::create_dir(&tmp)
        .map_err(|e| user!("cannot create {}: {e}", tmp.display()))
        .and_then(|_| write_hf(&tmp, &cfg, &weights, &tokenizer, dtype, shard_bytes))
        .and_then(|files| publish_dir(&tmp, out, &aside).map(|_| files));
    match result {
        Ok(files) => Ok(ExportReport {
            source,
            files,
            params: layout.num_params(),
        }),
        Err(e) => {
            remove_dir_quiet(&tmp);
            Err(e)
        }
    }
}

/// OUT must be absent or an empty directory.
fn check_out(out: &Path) -> Result<()> {
    if !out.exists() {
        return Ok(());
    }
    let empty = out.is_dir()
        && std::fs::read_dir(out)
            .map(|mut d| d.next().is_none())
            .unwrap_or(false);
    if empty {
        Ok(())
    } else {
        Err(user!(
            "--hf {} already exists and is not an empty directory; choose a new output directory",
            out.display()
        ))
    }
}

/// The weights tensor by tensor (one logical tensor in memory at a time), then the model files.
fn write_hf(
    dir: &Path,
    cfg: &ModelConfig,
    weights: &LayoutSource,
    tokenizer: &Tokenizer,
    dtype: ExportDtype,
    shard_bytes: u64,
) -> Result<Vec<String>> {
    let entries: Vec<Entry> = weights
        .layout
        .tensors()
        .map(|(_, t)| Entry {
            name: t.name.clone(),
            shape: t.global_shape().to_vec(),
        })
        .collect();
    let mut files = write_sharded_with(
        dir,
        "model",
        &entries,
        dtype.store(),
        shard_bytes,
        &mut |i, buf| {
            let e = &entries[i];
            buf.resize(e.numel(), 0.0);
            weights.fragments.read(StatePart::Master, &e.name, 0, buf)
        },
    )?;
    // config.json (the source's keys, this dtype), generation_config.json, tokenizer files
    hf_files::write_model_files(dir, cfg, tokenizer, Some(dtype.torch_name()))?;
    files.extend(["config.json", "generation_config.json"].map(String::from));
    files.extend(hf_files::write_tokenizer(tokenizer, dir, cfg)?);
    Ok(files)
}
