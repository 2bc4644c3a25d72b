//! What `--resume` continues from, and what it refuses or says.
//!
//! - Nothing to do: when the newest checkpoint is already at or past `train.steps`, the run
//!   prints so and exits 0 without loading anything, writing anything or touching metrics.jsonl
//!   (a finished job submitted again succeeds and changes nothing).
//! - Another `train.global_batch` than the checkpoint's is supported exactly: the token count
//!   continues from the saved count (not step × batch), the data continues from the sampler's
//!   saved position (epoch, cursor: rows already handed out, whatever the batch size), and the LR
//!   schedule is a function of the step. A note says what changed.
//! - Another `train.seed`: the data order continues with the checkpoint's seed (it is part of
//!   the sampler state); a note says so.
//! - A dataset or `data.seq_len` that changed the number of training rows is rejected by the
//!   sampler (`Sampler::from_state`).

use crate::checkpoint;
use crate::data::{Sampler, SamplerState};
use crate::error::Result;
use crate::recipe::Recipe;
use crate::user;
use serde_json::Value;
use std::path::Path;

/// Where a resumed run starts.
pub struct Resumed {
    /// The last completed step.
    pub step: u64,
    /// Tokens trained on up to that step.
    pub tokens: u64,
    pub sampler: Sampler,
    /// The spike guard's running mean at that step (None in checkpoints that predate it).
    pub loss_mean: Option<f64>,
}

/// With `--resume`: Some(exit code) when the newest checkpoint already reached `train.steps`
/// (rank 0 prints why). Reads only trainer_state.json.
pub fn nothing_to_do(recipe: &Recipe, resume: bool, rank0: bool) -> Result<Option<i32>> {
    if !resume || !recipe.checkpoint.enabled {
        return Ok(None);
    }
    let Some(dir) = checkpoint::latest(&recipe.checkpoint_dir())? else {
        return Ok(None);
    };
    let step = checkpoint::load::read_step(&dir)?;
    let steps = recipe.train.steps;
    if step < steps {
        return Ok(None);
    }
    if rank0 {
        let reached = if step > steps { "beyond" } else { "at" };
        crate::outln!(
            "nothing to do: the newest checkpoint {} is at step {step}, {reached} train.steps = {steps}; raise train.steps to train further (exit code 0, nothing written)",
            dir.display()
        );
    }
    Ok(Some(0))
}

/// The start of a resumed run from the checkpoint `dir`'s trainer state, checked against the
/// recipe and the training rows now loaded.
pub fn from_trainer_state(
    dir: &Path,
    trainer: &Value,
    recipe: &Recipe,
    train_rows: usize,
    rank0: bool,
) -> Result<Resumed> {
    let bad = |k: &str| user!("{}: trainer_state.json lacks a valid `{k}`", dir.display());
    let step = trainer
        .get("step")
        .and_then(Value::as_u64)
        .ok_or_else(|| bad("step"))?;
    let tokens = trainer
        .get("tokens")
        .and_then(Value::as_u64)
        .ok_or_else(|| bad("tokens"))?;
    let state: SamplerState = trainer
        .get("sampler")
        .cloned()
        .and_then(|v| serde_json::from_value(v).ok())
        .ok_or_else(|| bad("sampler"))?;
    let saved = |section: &str, key: &str| trainer.get("recipe")?.get(section)?.get(key).cloned();
    let mut notes = Vec::new();
    let batch = recipe.train.global_batch as u64;
    if let Some(old) = saved("train", "global_batch").and_then(|v| v.as_u64()) {
        if old != batch {
            notes.push(format!(
                "train.global_batch = {batch} differs from the checkpoint's {old}: training continues at step {} from the saved token count {tokens} and the sampler's data position (epoch {}, {} rows into it); the learning-rate schedule continues in steps",
                step + 1,
                state.epoch,
                state.cursor
            ));
        }
    }
    if state.seed != recipe.train.seed {
        notes.push(format!(
            "train.seed = {} differs from the checkpoint's {}: the data order continues with the checkpoint's seed",
            recipe.train.seed, state.seed
        ));
    }
    let sampler = Sampler::from_state(state, train_rows)?;
    if rank0 {
        for n in notes {
            crate::errln!("note: --resume: {n}");
        }
    }
    let loss_mean = trainer.get("loss_mean").and_then(Value::as_f64);
    Ok(Resumed {
        step,
        tokens,
        sampler,
        loss_mean,
    })
}
