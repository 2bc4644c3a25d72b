//! Finding and reading checkpoints (format: see `checkpoint/mod.rs`).
//!
//! `step_dirs`/`latest` list only complete step directories (named `step-<digits>`, holding
//! trainer_state.json); temporary directories are never read. `open_state` checks that
//! config.json describes the caller's model and that every weight and moment is stored with its
//! exact logical shape, then returns a source that reads, for any layout, only the stored pieces
//! a rank's ranges overlap. Both formats load: distributed (version 2, per-rank shards) and whole
//! (version 1, model.safetensors + optimizer.safetensors). Every error names the file and the
//! tensor.

use super::shards::ShardIndex;
use super::{STEP_PREFIX, TRAINER_STATE};
use crate::error::Result;
use crate::model::hf_import::open_hf;
use crate::model::{ModelConfig, ParamLayout};
use crate::tensorfile::{Fragments, LayoutSource, SafetensorsFiles};
use crate::user;
use ferrotron_zero::{FullState, StatePart};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Complete checkpoints in `root`, oldest first. A missing root has none.
pub fn step_dirs(root: &Path) -> Result<Vec<(u64, PathBuf)>> {
    if !root.exists() {
        return Ok(Vec::new());
    }
    let entries = std::fs::read_dir(root)
        .map_err(|e| user!("cannot list checkpoint directory {}: {e}", root.display()))?;
    let mut out = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(digits) = name.strip_prefix(STEP_PREFIX) else {
            continue;
        };
        let Ok(step) = digits.parse::<u64>() else {
            continue;
        };
        if e.path().join(TRAINER_STATE).is_file() {
            out.push((step, e.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// The newest complete checkpoint in `root`, if any.
pub fn latest(root: &Path) -> Result<Option<PathBuf>> {
    Ok(step_dirs(root)?.pop().map(|(_, p)| p))
}

/// A checkpoint named on the command line: a step directory, or a root (its newest step).
pub fn resolve(path: &Path) -> Result<PathBuf> {
    if !path.exists() {
        return Err(user!("checkpoint {} does not exist", path.display()));
    }
    if path.join(TRAINER_STATE).is_file() {
        return Ok(path.to_path_buf());
    }
    latest(path)?.ok_or_else(|| {
        user!("{} is not a checkpoint: it holds neither {TRAINER_STATE} nor any step-* checkpoint directory", path.display())
    })
}

/// The state of the checkpoint in `dir` as a source for `layout` (any layout: each rank reads
/// only what it keeps), and the trainer's opaque state (as passed to the save). Everything is
/// validated before anything is read: the config, every tensor's shape and that every element
/// of every tensor is stored.
pub fn open_state(
    dir: &Path,
    cfg: &ModelConfig,
    layout: &ParamLayout,
) -> Result<(LayoutSource, Value)> {
    let (state, trainer) = read_trainer_state(dir)?;
    check_config(dir, cfg)?;
    let frags = match state.get("shards") {
        Some(shards) => open_shards(dir, shards)?,
        None => open_full(dir, layout)?,
    };
    check_tensors(dir, &frags, layout, true)?;
    Ok((LayoutSource::new(layout.clone(), frags, true), trainer))
}

/// The master weights of a model directory: a HF directory, or a checkpoint (step directory).
pub fn open_weights(dir: &Path, cfg: &ModelConfig, layout: &ParamLayout) -> Result<LayoutSource> {
    if !dir.join(TRAINER_STATE).is_file() {
        return open_hf(dir, cfg, layout);
    }
    let (state, _) = read_trainer_state(dir)?;
    let frags = match state.get("shards") {
        Some(shards) => open_shards(dir, shards)?,
        None => return open_hf(dir, cfg, layout),
    };
    check_tensors(dir, &frags, layout, false)?;
    Ok(LayoutSource::new(layout.clone(), frags, false))
}

/// Reads the whole checkpoint in `dir` into one process (tests, the layout-comparison harness).
pub fn load(dir: &Path, cfg: &ModelConfig, layout: &ParamLayout) -> Result<(FullState, Value)> {
    let (src, trainer) = open_state(dir, cfg, layout)?;
    Ok((
        FullState {
            master: src.read_all(StatePart::Master)?,
            exp_avg: src.read_all(StatePart::ExpAvg)?,
            exp_avg_sq: src.read_all(StatePart::ExpAvgSq)?,
        },
        trainer,
    ))
}

/// A distributed checkpoint's fragments: every shard the trainer state lists.
fn open_shards(dir: &Path, shards: &Value) -> Result<Fragments> {
    let bad = || {
        user!(
            "{}: `shards` is not a list of shard names",
            dir.join(TRAINER_STATE).display()
        )
    };
    let stems: Vec<&str> = shards
        .as_array()
        .ok_or_else(bad)?
        .iter()
        .map(|v| v.as_str().ok_or_else(bad))
        .collect::<Result<_>>()?;
    let mut indexes = Vec::new();
    let mut paths = Vec::new();
    for stem in &stems {
        if stem.contains('/') || stem.contains("..") {
            return Err(bad());
        }
        let index = dir.join(format!("{stem}.json"));
        let file = dir.join(format!("{stem}.safetensors"));
        if !index.is_file() || !file.is_file() {
            return Err(user!(
                "{}: shard {stem} is missing ({stem}.json and {stem}.safetensors are both needed)",
                dir.display()
            ));
        }
        indexes.push(ShardIndex::read(&index)?);
        paths.push(file);
    }
    let files = SafetensorsFiles::open_each(&paths)?;
    // Each shard file holds exactly what its index lists, in F32 (as save.rs writes it).
    for (file, idx) in indexes.iter().enumerate() {
        let listed: std::collections::HashSet<String> = idx
            .fragments
            .iter()
            .flat_map(|f| StatePart::ALL.map(|p| format!("{}.{}", p.name(), f.tensor)))
            .collect();
        for (name, dtype) in files.tensors_in(file) {
            if !listed.contains(&name) {
                return Err(user!(
                    "{}: tensor `{name}` is not in the shard's index {}.json",
                    paths[file].display(),
                    stems[file]
                ));
            }
            if dtype != safetensors::Dtype::F32 {
                return Err(user!(
                    "{}: tensor `{name}` has dtype {dtype:?}; checkpoint shards hold F32",
                    paths[file].display()
                ));
            }
        }
    }
    let mut frags = Fragments::new(files);
    for (file, idx) in indexes.iter().enumerate() {
        for f in &idx.fragments {
            for part in StatePart::ALL {
                frags.add_fragment(
                    part,
                    &f.tensor,
                    &f.slice,
                    f.range[0]..f.range[1],
                    file,
                    &format!("{}.{}", part.name(), f.tensor),
                )?;
            }
        }
    }
    frags.finish()?;
    Ok(frags)
}

/// A checkpoint written whole (format version 1): model.safetensors (HF names) and
/// optimizer.safetensors (`exp_avg.<name>`, `exp_avg_sq.<name>`), or their shards.
fn open_full(dir: &Path, layout: &ParamLayout) -> Result<Fragments> {
    let mut paths = Vec::new();
    for stem in ["model", "optimizer"] {
        let files = SafetensorsFiles::open_stem(dir, stem)?;
        paths.extend(files.paths());
    }
    let mut frags = Fragments::new(SafetensorsFiles::open(&paths)?);
    let mut expected = std::collections::HashSet::new();
    for (_, t) in layout.tensors() {
        for part in StatePart::ALL {
            let stored = match part {
                StatePart::Master => t.name.clone(),
                p => format!("{}.{}", p.name(), t.name),
            };
            if expected.insert(stored.clone()) {
                frags.add_whole(part, &t.name, t.global_shape(), &stored)?;
            }
        }
    }
    let unexpected = frags
        .files()
        .names()
        .find(|n| !expected.contains(*n))
        .map(String::from);
    if let Some(name) = unexpected {
        return Err(user!(
            "{}: unexpected tensor `{name}` (not a parameter or moment of this model)",
            frags.files().describe()
        ));
    }
    frags.finish()?;
    Ok(frags)
}

/// Every logical tensor of the layout is stored whole (every element, the model's shape), in
/// every part (`moments`: also both AdamW moments); nothing else is stored.
fn check_tensors(dir: &Path, frags: &Fragments, layout: &ParamLayout, moments: bool) -> Result<()> {
    let parts: &[StatePart] = if moments {
        &StatePart::ALL
    } else {
        &[StatePart::Master]
    };
    let mut names = std::collections::HashSet::new();
    for (_, t) in layout.tensors() {
        names.insert(t.name.as_str());
        for &part in parts {
            match frags.global_shape(part, &t.name) {
                None => {
                    return Err(user!(
                        "{}: the checkpoint has no {} of tensor `{}` (expected shape {:?})",
                        dir.display(),
                        part.name(),
                        t.name,
                        t.global_shape()
                    ))
                }
                Some(shape) if shape != t.global_shape() => {
                    return Err(user!(
                        "{}: tensor `{}` has shape {shape:?}, but the model has {:?}",
                        dir.display(),
                        t.name,
                        t.global_shape()
                    ))
                }
                Some(_) => frags.check_complete(part, &t.name)?,
            }
        }
    }
    let mut extra: Vec<&str> = frags
        .names(StatePart::Master)
        .filter(|n| !names.contains(n))
        .collect();
    extra.sort();
    if let Some(name) = extra.first() {
        return Err(user!(
            "{}: unexpected tensor `{name}` (not a parameter of this model)",
            dir.display()
        ));
    }
    Ok(())
}

/// The step number recorded in `dir/trainer_state.json`.
pub fn read_step(dir: &Path) -> Result<u64> {
    let path = dir.join(TRAINER_STATE);
    let v = read_json(&path)?;
    v.get("step")
        .and_then(Value::as_u64)
        .ok_or_else(|| user!("{}: missing integer `step`", path.display()))
}

fn read_json(path: &Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).map_err(|e| user!("{}: cannot read: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| user!("{}: not valid JSON: {e}", path.display()))
}

/// The whole trainer_state.json and its `trainer` member (the trainer's opaque state).
fn read_trainer_state(dir: &Path) -> Result<(Value, Value)> {
    let path = dir.join(TRAINER_STATE);
    if !path.is_file() {
        return Err(user!(
            "{} is not a checkpoint: {TRAINER_STATE} is missing",
            dir.display()
        ));
    }
    let mut v = read_json(&path)?;
    if v.get("format").and_then(Value::as_str) != Some("ferrotron-checkpoint") {
        return Err(user!(
            "{}: not a ferrotron checkpoint state (`format` is not \"ferrotron-checkpoint\")",
            path.display()
        ));
    }
    let version = v.get("version").and_then(Value::as_u64);
    if !matches!(version, Some(1) | Some(super::FORMAT_VERSION)) {
        return Err(user!(
            "{}: checkpoint format version {} is not one this build reads (1 or {})",
            path.display(),
            v.get("version").unwrap_or(&Value::Null),
            super::FORMAT_VERSION
        ));
    }
    let trainer = v.get_mut("trainer").map(Value::take).unwrap_or(Value::Null);
    Ok((v, trainer))
}

/// The checkpoint's config.json must describe the same model (token ids aside).
fn check_config(dir: &Path, cfg: &ModelConfig) -> Result<()> {
    let path = dir.join("config.json");
    let saved = ModelConfig::from_file(&path)?.to_hf_json();
    let want = cfg.to_hf_json();
    let (Value::Object(saved), Value::Object(want)) = (saved, want) else {
        unreachable!("to_hf_json returns objects")
    };
    for (k, v) in &want {
        if matches!(k.as_str(), "bos_token_id" | "eos_token_id") {
            continue;
        }
        let got = saved.get(k).unwrap_or(&Value::Null);
        if got != v {
            return Err(user!(
                "{}: `{k}` is {got}, but the model being loaded has {v}",
                path.display()
            ));
        }
    }
    Ok(())
}
