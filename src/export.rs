//! `ferrotron export CHECKPOINT --hf OUT [--dtype bf16|f32]`: a checkpoint as a Hugging Face
//! model directory that transformers, vLLM and SGLang load.
//!
//! CHECKPOINT is a step directory, or a checkpoint root (its newest step). OUT receives:
//! - `config.json`: the HF schema of the architecture, `torch_dtype`/`dtype` = the export dtype;
//! - `model.safetensors` (or `model-0000i-of-0000n.safetensors` + `model.safetensors.index.json`
//!   above 5 GB): HF names and HF layouts (GPT-2 Conv1D weights stay [in, out]; a tied
//!   `lm_head.weight` is not written, as `save_pretrained` does), F32 or BF16 (round to nearest
//!   even);
//! - tokenizer files (`tokenizer.json`, `tokenizer_config.json`, `special_tokens_map.json`);
//! - `generation_config.json`: bos/eos token ids.
//!
//! Atomic: everything is written to a temporary sibling of OUT and renamed into place; OUT must
//! not exist or be an empty directory (an export never overwrites files).

use crate::checkpoint::fsutil::{publish_dir, remove_dir_quiet, write_json};
use crate::checkpoint::tensors::{write_sharded, StoreDtype, TensorRef};
use crate::checkpoint::{self, DEFAULT_SHARD_BYTES};
use crate::error::Result;
use crate::model::hf_import::load_units;
use crate::model::{ModelConfig, ParamLayout};
use crate::tokenizer::Tokenizer;
use crate::user;
use serde_json::{json, Value};
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
    println!(
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
    let units = load_units(&source, &cfg, &layout)?;
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
    remove_dir_quiet(&tmp);
    let result = std::fs::create_dir(&tmp)
        .map_err(|e| user!("cannot create {}: {e}", tmp.display()))
        .and_then(|_| write_hf(&tmp, &cfg, &layout, &units, &tokenizer, dtype, shard_bytes))
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

fn write_hf(
    dir: &Path,
    cfg: &ModelConfig,
    layout: &ParamLayout,
    units: &[Vec<f32>],
    tokenizer: &Tokenizer,
    dtype: ExportDtype,
    shard_bytes: u64,
) -> Result<Vec<String>> {
    let tensors: Vec<TensorRef> = layout
        .tensors()
        .map(|(u, t)| TensorRef {
            name: t.name.clone(),
            shape: t.shape.clone(),
            data: &units[u][t.offset..t.offset + t.numel()],
        })
        .collect();
    let mut files = write_sharded(dir, "model", &tensors, dtype.store(), shard_bytes)?;
    let bos = cfg.bos_token_id.or(tokenizer.bos_id());
    let eos = cfg.eos_token_id.or(tokenizer.eos_id());
    let mut config = cfg.to_hf_json();
    if let Value::Object(m) = &mut config {
        m.insert("torch_dtype".into(), dtype.torch_name().into());
        m.insert("dtype".into(), dtype.torch_name().into());
        m.insert("bos_token_id".into(), json!(bos));
        m.insert("eos_token_id".into(), json!(eos));
    }
    write_json(&dir.join("config.json"), &config)?;
    write_json(
        &dir.join("generation_config.json"),
        &json!({"_from_model_config": true, "bos_token_id": bos, "eos_token_id": eos}),
    )?;
    tokenizer.save(dir, Some(cfg.max_positions))?;
    files.extend(
        [
            "config.json",
            "generation_config.json",
            "tokenizer.json",
            "tokenizer_config.json",
            "special_tokens_map.json",
        ]
        .map(String::from),
    );
    Ok(files)
}
