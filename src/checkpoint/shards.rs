//! The per-rank files of a checkpoint: which fragments of which logical tensors a rank wrote.
//!
//! Rank r of a world of n writes `shard-<r>-of-<n>.safetensors` and `shard-<r>-of-<n>.json`
//! (r, n zero-padded to 5 digits). The JSON index lists the rank's fragments; a fragment is a
//! logical tensor's `TensorSlice` (its global shape and the slice the rank's layout holds) and a
//! flat range `[a, b)` of that slice's local tensor (the rank's ZeRO-owned part of it). For each
//! fragment the safetensors file holds three 1-D F32 tensors of b − a values:
//! `master.<name>`, `exp_avg.<name>` and `exp_avg_sq.<name>`. Over all ranks the fragments of a
//! tensor store each of its elements exactly once, so any later layout (other dp size, ZeRO
//! stage, tensor or pipeline slicing) finds every element it needs, and reads only those.

use crate::error::Result;
use crate::model::{ParamLayout, TensorSlice, TensorSpec};
use crate::user;
use serde::{Deserialize, Serialize};
use std::ops::Range;
use std::path::Path;

pub const SHARD_FORMAT: &str = "ferrotron-shard";
pub const SHARD_VERSION: u64 = 1;

/// `shard-00003-of-00008`.
pub fn shard_stem(rank: usize, world: usize) -> String {
    format!("shard-{rank:05}-of-{world:05}")
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FragmentEntry {
    pub tensor: String,
    pub slice: TensorSlice,
    pub range: [usize; 2],
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShardIndex {
    pub format: String,
    pub version: u64,
    pub rank: usize,
    pub world: usize,
    pub fragments: Vec<FragmentEntry>,
}

impl ShardIndex {
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| user!("{}: cannot read: {e}", path.display()))?;
        let idx: ShardIndex = serde_json::from_str(&text)
            .map_err(|e| user!("{}: not a shard index: {e}", path.display()))?;
        if idx.format != SHARD_FORMAT || idx.version != SHARD_VERSION {
            return Err(user!(
                "{}: format {} version {} is not {SHARD_FORMAT} version {SHARD_VERSION}",
                path.display(),
                idx.format,
                idx.version
            ));
        }
        Ok(idx)
    }
}

/// One fragment a rank writes: its entry and where it lies in its unit.
pub struct PlannedFragment {
    pub unit: usize,
    /// The fragment's elements in unit coordinates.
    pub in_unit: Range<usize>,
    pub entry: FragmentEntry,
}

/// The fragments of the owned unit ranges `owned` (one per unit, possibly empty), in unit order
/// and tensor order; tensors for which `writes` is false are left to another rank (tensor-
/// parallel replicas).
pub fn plan_fragments(
    layout: &ParamLayout,
    owned: &[Range<usize>],
    writes: &dyn Fn(&TensorSpec) -> bool,
) -> Vec<PlannedFragment> {
    let mut out = Vec::new();
    for (u, (unit, own)) in layout.units.iter().zip(owned).enumerate() {
        for t in &unit.tensors {
            let (s, e) = (own.start.max(t.offset), own.end.min(t.offset + t.numel()));
            if s >= e || !writes(t) {
                continue;
            }
            out.push(PlannedFragment {
                unit: u,
                in_unit: s..e,
                entry: FragmentEntry {
                    tensor: t.name.clone(),
                    slice: t.slice.clone(),
                    range: [s - t.offset, e - t.offset],
                },
            });
        }
    }
    out
}
