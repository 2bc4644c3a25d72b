//! Finding and reading checkpoints (format: see `checkpoint/mod.rs`).
//!
//! `step_dirs`/`latest` list only complete step directories (named `step-<digits>`, holding
//! trainer_state.json); temporary directories are never read. `load` checks that config.json
//! describes the caller's model, then reads every weight and moment with its exact shape; every
//! error names the file and the tensor.

use super::{STEP_PREFIX, TRAINER_STATE};
use crate::error::Result;
use crate::model::hf_import::load_units;
use crate::model::{ModelConfig, ParamLayout};
use crate::user;
use ferrotron_zero::FullState;
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;
use std::collections::BTreeMap;
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

/// Reads the checkpoint in `dir` for the model `cfg`/`layout`: the full state and the trainer's
/// opaque state (as passed to `save`).
pub fn load(dir: &Path, cfg: &ModelConfig, layout: &ParamLayout) -> Result<(FullState, Value)> {
    let trainer = read_trainer_state(dir)?;
    check_config(dir, cfg)?;
    let master = load_units(dir, cfg, layout)?;
    let (exp_avg, exp_avg_sq) = load_moments(dir, layout)?;
    Ok((
        FullState {
            master,
            exp_avg,
            exp_avg_sq,
        },
        trainer,
    ))
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

fn read_trainer_state(dir: &Path) -> Result<Value> {
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
    Ok(v.get_mut("trainer").map(Value::take).unwrap_or(Value::Null))
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

/// The safetensors files of `<stem>`: one file, or the shards its index lists.
fn group_files(dir: &Path, stem: &str) -> Result<Vec<PathBuf>> {
    let single = dir.join(format!("{stem}.safetensors"));
    let index = dir.join(format!("{stem}.safetensors.index.json"));
    if index.is_file() {
        let v = read_json(&index)?;
        let map = v
            .get("weight_map")
            .and_then(Value::as_object)
            .ok_or_else(|| user!("{}: missing object `weight_map`", index.display()))?;
        let mut files: Vec<PathBuf> = map
            .values()
            .filter_map(Value::as_str)
            .map(|f| dir.join(f))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        files.dedup();
        Ok(files)
    } else if single.is_file() {
        Ok(vec![single])
    } else {
        Err(user!("{}: {stem}.safetensors is missing", dir.display()))
    }
}

/// (exp_avg, exp_avg_sq), one buffer per unit.
type Moments = (Vec<Vec<f32>>, Vec<Vec<f32>>);

/// Reads `exp_avg.<name>` and `exp_avg_sq.<name>` for every tensor of the layout (F32, exact shape).
fn load_moments(dir: &Path, layout: &ParamLayout) -> Result<Moments> {
    let paths = group_files(dir, "optimizer")?;
    let mut maps = Vec::new();
    for p in &paths {
        let f = std::fs::File::open(p).map_err(|e| user!("{}: cannot open: {e}", p.display()))?;
        // SAFETY: read-only mapping of a checkpoint file nobody writes while we read it.
        let m = unsafe { Mmap::map(&f) }.map_err(|e| user!("{}: cannot map: {e}", p.display()))?;
        SafeTensors::deserialize(&m)
            .map_err(|e| user!("{}: not a valid safetensors file: {e}", p.display()))?;
        maps.push(m);
    }
    let files: Vec<SafeTensors> = maps
        .iter()
        .map(|m| SafeTensors::deserialize(m).expect("validated above"))
        .collect();
    let mut owner: BTreeMap<String, usize> = BTreeMap::new();
    for (i, st) in files.iter().enumerate() {
        for name in st.names() {
            owner.insert(name.to_string(), i);
        }
    }
    let mut parts = [Vec::new(), Vec::new()];
    for (pi, prefix) in ["exp_avg.", "exp_avg_sq."].into_iter().enumerate() {
        let mut units: Vec<Vec<f32>> = layout.units.iter().map(|u| vec![0.0; u.numel]).collect();
        for (u, t) in layout.tensors() {
            let name = format!("{prefix}{}", t.name);
            let Some(fi) = owner.remove(&name) else {
                return Err(user!(
                    "{}: tensor `{name}` is missing (expected shape {:?})",
                    paths[0].display(),
                    t.shape
                ));
            };
            let p = &paths[fi];
            let view = files[fi]
                .tensor(&name)
                .map_err(|e| user!("{}: tensor `{name}`: {e}", p.display()))?;
            if view.shape() != t.shape.as_slice() {
                return Err(user!(
                    "{}: tensor `{name}` has shape {:?}, but the model has {:?}",
                    p.display(),
                    view.shape(),
                    t.shape
                ));
            }
            if view.dtype() != Dtype::F32 {
                return Err(user!(
                    "{}: tensor `{name}` has dtype {:?}; optimizer moments must be F32",
                    p.display(),
                    view.dtype()
                ));
            }
            let out = &mut units[u][t.offset..t.offset + t.numel()];
            for (x, c) in out.iter_mut().zip(view.data().chunks_exact(4)) {
                *x = f32::from_le_bytes(c.try_into().expect("4 bytes"));
            }
        }
        parts[pi] = units;
    }
    if let Some((name, fi)) = owner.into_iter().next() {
        return Err(user!(
            "{}: unexpected tensor `{name}` (not a moment of this model's parameters)",
            paths[fi].display()
        ));
    }
    let [a, b] = parts;
    Ok((a, b))
}
