//! Writing logical tensors HF-style, sharded above a size threshold, streamed tensor by tensor.
//!
//! One file: `<stem>.safetensors`. Sharded (the total exceeds `shard_bytes`):
//! `<stem>-0000i-of-0000n.safetensors`, filled greedily in order as `save_pretrained` does, plus
//! `<stem>.safetensors.index.json` = `{"metadata": {"total_size": bytes}, "weight_map": {name:
//! file}}`. The caller produces each tensor's values when its turn comes, so the writer holds
//! one tensor at a time (export's memory bound).

use super::fsutil::write_json;
use crate::error::Result;
use crate::tensorfile::{Entry, StreamWriter};
use serde_json::{json, Map, Value};
use std::path::Path;

pub use crate::tensorfile::StoreDtype;

/// A logical tensor already in memory: its name, shape and f32 values (row-major).
pub struct TensorRef<'a> {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: &'a [f32],
}

/// Writes `entries` into `dir` (see the module comment); `produce(i, buf)` fills `buf` with the
/// values of entry i. Returns the file names written.
pub fn write_sharded_with(
    dir: &Path,
    stem: &str,
    entries: &[Entry],
    dtype: StoreDtype,
    shard_bytes: u64,
    produce: &mut dyn FnMut(usize, &mut Vec<f32>) -> Result<()>,
) -> Result<Vec<String>> {
    let size = |e: &Entry| (e.numel() * dtype.bytes()) as u64;
    let total: u64 = entries.iter().map(size).sum();
    let mut shards: Vec<Vec<usize>> = vec![Vec::new()];
    let mut current = 0u64;
    for (i, e) in entries.iter().enumerate() {
        let last = shards.last_mut().expect("one shard");
        if !last.is_empty() && current + size(e) > shard_bytes {
            shards.push(Vec::new());
            current = 0;
        }
        shards.last_mut().expect("one shard").push(i);
        current += size(e);
    }
    let n = shards.len();
    let mut names = Vec::new();
    let mut weight_map = Map::new();
    let mut buf = Vec::new();
    for (si, shard) in shards.iter().enumerate() {
        let name = if n == 1 {
            format!("{stem}.safetensors")
        } else {
            format!("{stem}-{:05}-of-{n:05}.safetensors", si + 1)
        };
        let mine: Vec<Entry> = shard.iter().map(|&i| entries[i].clone()).collect();
        let mut w = StreamWriter::create(&dir.join(&name), mine, dtype, &[])?;
        for &i in shard {
            buf.clear();
            produce(i, &mut buf)?;
            w.push(&entries[i].name, &buf)?;
            weight_map.insert(entries[i].name.clone(), Value::String(name.clone()));
        }
        w.finish()?;
        names.push(name);
    }
    if n > 1 {
        let index = format!("{stem}.safetensors.index.json");
        write_json(
            &dir.join(&index),
            &json!({"metadata": {"total_size": total}, "weight_map": weight_map}),
        )?;
        names.push(index);
    }
    Ok(names)
}

/// `write_sharded_with` for tensors already in memory.
pub fn write_sharded(
    dir: &Path,
    stem: &str,
    tensors: &[TensorRef],
    dtype: StoreDtype,
    shard_bytes: u64,
) -> Result<Vec<String>> {
    let entries: Vec<Entry> = tensors
        .iter()
        .map(|t| {
            assert_eq!(
                t.shape.iter().product::<usize>(),
                t.data.len(),
                "tensor `{}` shape and data disagree",
                t.name
            );
            Entry {
                name: t.name.clone(),
                shape: t.shape.clone(),
            }
        })
        .collect();
    write_sharded_with(dir, stem, &entries, dtype, shard_bytes, &mut |i, buf| {
        buf.extend_from_slice(tensors[i].data);
        Ok(())
    })
}
