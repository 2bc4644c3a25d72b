//! Saving a checkpoint: every rank writes the part of the state it owns, in parallel, streamed
//! one unit at a time; the step is committed only once every rank has written (format: see
//! `checkpoint/mod.rs`).
//!
//! Protocol, over the world group (every rank calls `save_distributed`):
//!   1. rank 0 removes leftover temporary directories and creates `<root>/.tmp-step-<N>/`;
//!      all ranks agree it exists (an all-reduce of success flags);
//!   2. each rank writes `shard-<r>-of-<n>.safetensors` and its `.json` index into it, fsynced;
//!      all ranks agree every rank succeeded;
//!   3. rank 0 writes config.json, the tokenizer and, last, trainer_state.json, fsyncs the
//!      directory, renames it to `step-<N>` and prunes to the newest `keep_last`; all agree.
//!
//! A rank that dies or fails before step 3 leaves only a temporary directory, which is never
//! read: the previous step stays the latest. A failed step removes its temporary directory.

use super::fsutil::{publish_dir, remove_dir_quiet, write_json};
use super::prune::{keep_last_steps, remove_tmp_dirs};
use super::shards::{plan_fragments, shard_stem, ShardIndex, SHARD_FORMAT, SHARD_VERSION};
use super::{step_dir_name, TMP_PREFIX, TRAINER_STATE};
use crate::error::{Error, Result};
use crate::model::{ModelConfig, ParamLayout, TensorSpec};
use crate::tensorfile::{Entry, StoreDtype, StreamWriter};
use crate::tokenizer::Tokenizer;
use crate::user;
use ferrotron_parallel::{Comm, LocalComm, ReduceOp};
use ferrotron_zero::{FullState, OwnedShard, StatePart};
use serde_json::{json, Value};
use std::ops::Range;
use std::path::{Path, PathBuf};

/// What a checkpoint holds besides the state.
pub struct CheckpointMeta<'a> {
    pub cfg: &'a ModelConfig,
    pub layout: &'a ParamLayout,
    pub tokenizer: &'a Tokenizer,
    /// The trainer's opaque state (step, tokens, sampler, …).
    pub trainer_state: &'a Value,
    /// Keep this many newest step directories (0: keep all).
    pub keep_last: usize,
}

/// The part of the state one rank writes.
pub trait OwnedState {
    /// Per unit of the layout, the range (unit coordinates) this rank writes.
    fn owned_ranges(&self) -> Vec<Range<usize>>;
    /// Hands `f` the owned ranges' values, unit by unit, in unit order.
    fn for_each_owned(&mut self, f: &mut dyn FnMut(OwnedShard) -> Result<()>) -> Result<()>;
}

/// A full host state owns everything (a single process).
impl OwnedState for FullState {
    fn owned_ranges(&self) -> Vec<Range<usize>> {
        self.master.iter().map(|u| 0..u.len()).collect()
    }
    fn for_each_owned(&mut self, f: &mut dyn FnMut(OwnedShard) -> Result<()>) -> Result<()> {
        for u in 0..self.master.len() {
            f(OwnedShard {
                unit: u,
                range: 0..self.master[u].len(),
                master: &self.master[u],
                exp_avg: &self.exp_avg[u],
                exp_avg_sq: &self.exp_avg_sq[u],
            })?;
        }
        Ok(())
    }
}

/// Saves a full state from one process as `<root>/step-<step>/` (tests, conversions).
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
    check_state(layout, state)?;
    let meta = CheckpointMeta {
        cfg,
        layout,
        tokenizer,
        trainer_state,
        keep_last,
    };
    let world = LocalComm::named("world");
    save_distributed(&world, root, step, &meta, &mut state.clone(), &|_| true)
}

/// Every rank of `world` calls this with its owned state (see the module comment); `writes`
/// says which tensors this rank writes (false for replicas another rank writes). Returns the
/// step directory.
pub fn save_distributed(
    world: &dyn Comm,
    root: &Path,
    step: u64,
    meta: &CheckpointMeta,
    state: &mut dyn OwnedState,
    writes: &dyn Fn(&TensorSpec) -> bool,
) -> Result<PathBuf> {
    let (rank, n) = (world.rank(), world.size());
    let tmp = root.join(format!("{TMP_PREFIX}{step:08}"));
    let dest = root.join(step_dir_name(step));
    let not_saved = |e: Error| match e {
        Error::User(m) => {
            user!("{m}; checkpoint step {step} was not saved (earlier checkpoints are untouched)")
        }
        other => other,
    };
    let prepared = if rank == 0 {
        prepare(root, &tmp)
    } else {
        Ok(())
    };
    agree(world, prepared, step, "create its directory").map_err(not_saved)?;
    let written = write_shard(&tmp, rank, n, meta.layout, state, writes);
    if let Err(e) = agree(world, written, step, "write its files") {
        if rank == 0 {
            remove_dir_quiet(&tmp);
        }
        return Err(not_saved(e));
    }
    let committed = if rank == 0 {
        commit(&tmp, &dest, root, step, n, meta)
    } else {
        Ok(())
    };
    agree(world, committed, step, "commit it").map_err(not_saved)?;
    Ok(dest)
}

/// Rank 0: a fresh temporary directory for the step.
fn prepare(root: &Path, tmp: &Path) -> Result<()> {
    std::fs::create_dir_all(root)
        .map_err(|e| user!("cannot create checkpoint directory {}: {e}", root.display()))?;
    remove_tmp_dirs(root);
    std::fs::create_dir(tmp).map_err(|e| user!("cannot create {}: {e}", tmp.display()))
}

/// Every rank learns whether every rank's `local` succeeded; returns this rank's own error, or
/// one saying another rank failed.
fn agree(world: &dyn Comm, local: Result<()>, step: u64, what: &str) -> Result<()> {
    let mut ok = [if local.is_ok() { 1.0f64 } else { 0.0 }];
    world
        .all_reduce((&mut ok[..]).into(), ReduceOp::Min)
        .map_err(|e| Error::Internal(e.to_string()))?;
    local?;
    if ok[0] < 1.0 {
        return Err(user!(
            "checkpoint step {step}: another rank failed to {what} (its error says why)"
        ));
    }
    Ok(())
}

/// Rank `rank` of `n`: its shard file and index in `dir`, streamed unit by unit (step 2 of the
/// protocol; public for in-process tests that play several ranks).
pub fn write_shard(
    dir: &Path,
    rank: usize,
    n: usize,
    layout: &ParamLayout,
    state: &mut dyn OwnedState,
    writes: &dyn Fn(&TensorSpec) -> bool,
) -> Result<()> {
    let owned = state.owned_ranges();
    if owned.len() != layout.units.len() {
        return Err(Error::Internal(format!(
            "checkpoint save: {} owned ranges for {} units",
            owned.len(),
            layout.units.len()
        )));
    }
    let plan = plan_fragments(layout, &owned, writes);
    let stem = shard_stem(rank, n);
    // Entries in write order: per unit, the three parts, each over the unit's fragments.
    let mut entries = Vec::new();
    let mut by_unit: Vec<Vec<usize>> = vec![Vec::new(); layout.units.len()];
    for (i, f) in plan.iter().enumerate() {
        by_unit[f.unit].push(i);
    }
    for frags in &by_unit {
        for part in StatePart::ALL {
            for &i in frags {
                let f = &plan[i];
                entries.push(Entry {
                    name: format!("{}.{}", part.name(), f.entry.tensor),
                    shape: vec![f.in_unit.len()],
                });
            }
        }
    }
    let path = dir.join(format!("{stem}.safetensors"));
    let mut w = StreamWriter::create(&path, entries, StoreDtype::F32, &[])?;
    state.for_each_owned(&mut |s| {
        if s.range != owned[s.unit] {
            return Err(Error::Internal(format!(
                "checkpoint save: unit {} handed out {:?}, planned {:?}",
                s.unit, s.range, owned[s.unit]
            )));
        }
        for (part, values) in [
            (StatePart::Master, s.master),
            (StatePart::ExpAvg, s.exp_avg),
            (StatePart::ExpAvgSq, s.exp_avg_sq),
        ] {
            for &i in &by_unit[s.unit] {
                let f = &plan[i];
                let at = f.in_unit.start - s.range.start;
                let name = format!("{}.{}", part.name(), f.entry.tensor);
                w.push(&name, &values[at..at + f.in_unit.len()])?;
            }
        }
        Ok(())
    })?;
    if let Some(e) = w.next_entry() {
        return Err(Error::Internal(format!(
            "checkpoint save: `{}` was planned but its unit was never handed out",
            e.name
        )));
    }
    w.finish()?;
    let index = ShardIndex {
        format: SHARD_FORMAT.into(),
        version: SHARD_VERSION,
        rank,
        world: n,
        fragments: plan.into_iter().map(|f| f.entry).collect(),
    };
    write_json(
        &dir.join(format!("{stem}.json")),
        &serde_json::to_value(&index).expect("index serializes"),
    )
}

/// Rank 0: the model files and the trainer state, then the rename that commits the step (step 3
/// of the protocol; public for in-process tests that play several ranks).
pub fn commit(
    tmp: &Path,
    dest: &Path,
    root: &Path,
    step: u64,
    n: usize,
    meta: &CheckpointMeta,
) -> Result<()> {
    let aside = root.join(format!("{TMP_PREFIX}{step:08}.old"));
    let result = write_model_files(tmp, meta.cfg, meta.tokenizer)
        .and_then(|_| {
            let shards: Vec<String> = (0..n).map(|r| shard_stem(r, n)).collect();
            let ts = json!({
                "format": "ferrotron-checkpoint",
                "version": super::FORMAT_VERSION,
                "step": step,
                "shards": shards,
                "trainer": meta.trainer_state,
            });
            write_json(&tmp.join(TRAINER_STATE), &ts)
        })
        .and_then(|_| publish_dir(tmp, dest, &aside));
    if let Err(e) = result {
        remove_dir_quiet(tmp);
        return Err(e);
    }
    keep_last_steps(root, meta.keep_last, dest)
}

/// config.json, generation_config.json and the tokenizer files, carried from the model's source
/// (hf_files.rs), so that export and sample work from the checkpoint alone.
fn write_model_files(dir: &Path, cfg: &ModelConfig, tokenizer: &Tokenizer) -> Result<()> {
    crate::hf_files::write_model_files(dir, cfg, tokenizer, None)?;
    crate::hf_files::write_tokenizer(tokenizer, dir, cfg).map(|_| ())
}

/// Every unit of every part of the state has the layout's size (a mismatch is a caller bug).
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
