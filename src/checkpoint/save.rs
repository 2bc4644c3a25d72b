//! `save`: writes one checkpoint directory atomically (format: see `checkpoint/mod.rs`), then
//! keeps only the newest `keep_last` step directories.

use super::fsutil::{publish_dir, remove_dir_quiet, write_json};
use super::prune::{keep_last_steps, remove_tmp_dirs};
use super::tensors::{write_sharded, StoreDtype, TensorRef};
use super::{step_dir_name, DEFAULT_SHARD_BYTES, TMP_PREFIX, TRAINER_STATE};
use crate::error::{Error, Result};
use crate::model::{ModelConfig, ParamLayout};
use crate::tokenizer::Tokenizer;
use crate::user;
use ferrotron_zero::FullState;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// Knobs of `save_with`.
#[derive(Clone, Copy, Debug)]
pub struct SaveOptions {
    /// Keep this many newest step directories (0: keep all).
    pub keep_last: usize,
    /// Shard model/optimizer files above this many bytes.
    pub shard_bytes: u64,
}

/// Saves `state` as `<root>/step-<step>/` and prunes to the newest `keep_last` (0: keep all).
/// Returns the step directory.
#[allow(clippy::too_many_arguments)]
pub fn save(
    root: &Path,
    step: u64,
    cfg: &ModelConfig,
    layout: &ParamLayout,
    state: &FullState,
    tokenizer: &Tokenizer,
    trainer_state: &Value,
    keep_last: usize,
) -> Result<PathBuf> {
    let opts = SaveOptions {
        keep_last,
        shard_bytes: DEFAULT_SHARD_BYTES,
    };
    save_with(
        root,
        step,
        cfg,
        layout,
        state,
        tokenizer,
        trainer_state,
        &opts,
    )
}

/// `save` with every option.
#[allow(clippy::too_many_arguments)]
pub fn save_with(
    root: &Path,
    step: u64,
    cfg: &ModelConfig,
    layout: &ParamLayout,
    state: &FullState,
    tokenizer: &Tokenizer,
    trainer_state: &Value,
    opts: &SaveOptions,
) -> Result<PathBuf> {
    check_state(layout, state)?;
    std::fs::create_dir_all(root)
        .map_err(|e| user!("cannot create checkpoint directory {}: {e}", root.display()))?;
    remove_tmp_dirs(root);
    let tmp = root.join(format!("{TMP_PREFIX}{step:08}"));
    let dest = root.join(step_dir_name(step));
    let aside = root.join(format!("{TMP_PREFIX}{step:08}.old"));
    let written = std::fs::create_dir(&tmp)
        .map_err(|e| user!("cannot create {}: {e}", tmp.display()))
        .and_then(|_| {
            write_contents(
                &tmp,
                step,
                cfg,
                layout,
                state,
                tokenizer,
                trainer_state,
                opts.shard_bytes,
            )
        })
        .and_then(|_| publish_dir(&tmp, &dest, &aside));
    if let Err(e) = written {
        remove_dir_quiet(&tmp);
        return Err(match e {
            Error::User(m) => user!(
                "{m}; checkpoint step {step} was not saved (earlier checkpoints are untouched)"
            ),
            other => other,
        });
    }
    keep_last_steps(root, opts.keep_last, &dest)?;
    Ok(dest)
}

/// Every unit of every part of the state has the layout's size (a mismatch is a trainer bug).
fn check_state(layout: &ParamLayout, state: &FullState) -> Result<()> {
    for (what, part) in [
        ("master", &state.master),
        ("exp_avg", &state.exp_avg),
        ("exp_avg_sq", &state.exp_avg_sq),
    ] {
        let sizes: Vec<usize> = part.iter().map(Vec::len).collect();
        let want: Vec<usize> = layout.units.iter().map(|u| u.numel).collect();
        if sizes != want {
            return Err(Error::Internal(format!(
                "checkpoint save: FullState.{what} has unit sizes {sizes:?}, the layout has {want:?}"
            )));
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn write_contents(
    dir: &Path,
    step: u64,
    cfg: &ModelConfig,
    layout: &ParamLayout,
    state: &FullState,
    tokenizer: &Tokenizer,
    trainer_state: &Value,
    shard_bytes: u64,
) -> Result<()> {
    write_sharded(
        dir,
        "model",
        &views(layout, &state.master, ""),
        StoreDtype::F32,
        shard_bytes,
    )?;
    let mut moments = views(layout, &state.exp_avg, "exp_avg.");
    moments.extend(views(layout, &state.exp_avg_sq, "exp_avg_sq."));
    write_sharded(dir, "optimizer", &moments, StoreDtype::F32, shard_bytes)?;
    // config.json, generation_config.json and tokenizer files, carried from the model's source
    crate::hf_files::write_model_files(dir, cfg, tokenizer, None)?;
    crate::hf_files::write_tokenizer(tokenizer, dir, cfg)?;
    let ts = json!({"format": "ferrotron-checkpoint", "version": 1, "step": step, "trainer": trainer_state});
    write_json(&dir.join(TRAINER_STATE), &ts)
}

/// Logical-tensor views of one part of the state, names prefixed.
fn views<'a>(layout: &ParamLayout, part: &'a [Vec<f32>], prefix: &str) -> Vec<TensorRef<'a>> {
    layout
        .tensors()
        .map(|(u, t)| TensorRef {
            name: format!("{prefix}{}", t.name),
            shape: t.shape.clone(),
            data: &part[u][t.offset..t.offset + t.numel()],
        })
        .collect()
}
