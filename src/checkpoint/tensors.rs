//! Writing logical tensors to safetensors files, sharded HF-style above a size threshold.
//!
//! One file: `<stem>.safetensors` (8-byte little-endian header length, JSON header padded with
//! spaces to a multiple of 8, then the tensors' bytes in the order given). Sharded (the total
//! exceeds `shard_bytes`): `<stem>-0000i-of-0000n.safetensors`, filled greedily in order as
//! `save_pretrained` does, plus `<stem>.safetensors.index.json` =
//! `{"metadata": {"total_size": bytes}, "weight_map": {name: file}}`. Data is stored as F32, or as
//! BF16 rounded to nearest-even (`half::bf16::from_f32`).

use super::fsutil::{write_file, write_json};
use crate::error::Result;
use serde_json::{json, Map, Value};
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreDtype {
    F32,
    Bf16,
}

impl StoreDtype {
    pub fn bytes(self) -> usize {
        match self {
            StoreDtype::F32 => 4,
            StoreDtype::Bf16 => 2,
        }
    }
    fn tag(self) -> &'static str {
        match self {
            StoreDtype::F32 => "F32",
            StoreDtype::Bf16 => "BF16",
        }
    }
}

/// A logical tensor to write: its name, shape and f32 values (row-major).
pub struct TensorRef<'a> {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: &'a [f32],
}

/// Writes `tensors` into `dir` (see the module comment); returns the file names written.
pub fn write_sharded(
    dir: &Path,
    stem: &str,
    tensors: &[TensorRef],
    dtype: StoreDtype,
    shard_bytes: u64,
) -> Result<Vec<String>> {
    let size = |t: &TensorRef| (t.data.len() * dtype.bytes()) as u64;
    let total: u64 = tensors.iter().map(size).sum();
    if total <= shard_bytes {
        let name = format!("{stem}.safetensors");
        write_one(&dir.join(&name), tensors, dtype)?;
        return Ok(vec![name]);
    }
    let mut shards: Vec<Vec<&TensorRef>> = vec![Vec::new()];
    let mut current = 0u64;
    for t in tensors {
        let last = shards.last_mut().expect("one shard");
        if !last.is_empty() && current + size(t) > shard_bytes {
            shards.push(Vec::new());
            current = 0;
        }
        shards.last_mut().expect("one shard").push(t);
        current += size(t);
    }
    let n = shards.len();
    let mut names = Vec::new();
    let mut weight_map = Map::new();
    for (i, shard) in shards.iter().enumerate() {
        let name = format!("{stem}-{:05}-of-{n:05}.safetensors", i + 1);
        let owned: Vec<TensorRef> = shard
            .iter()
            .map(|t| TensorRef {
                name: t.name.clone(),
                shape: t.shape.clone(),
                data: t.data,
            })
            .collect();
        write_one(&dir.join(&name), &owned, dtype)?;
        for t in shard {
            weight_map.insert(t.name.clone(), Value::String(name.clone()));
        }
        names.push(name);
    }
    let index = format!("{stem}.safetensors.index.json");
    write_json(
        &dir.join(&index),
        &json!({"metadata": {"total_size": total}, "weight_map": weight_map}),
    )?;
    names.push(index);
    Ok(names)
}

/// The header JSON (padded) for `tensors` stored contiguously in order.
fn header(tensors: &[TensorRef], dtype: StoreDtype) -> Vec<u8> {
    let mut h = Map::new();
    h.insert("__metadata__".into(), json!({"format": "pt"}));
    let mut offset = 0usize;
    for t in tensors {
        assert_eq!(
            t.shape.iter().product::<usize>(),
            t.data.len(),
            "tensor `{}` shape and data disagree",
            t.name
        );
        let end = offset + t.data.len() * dtype.bytes();
        h.insert(
            t.name.clone(),
            json!({"dtype": dtype.tag(), "shape": t.shape, "data_offsets": [offset, end]}),
        );
        offset = end;
    }
    let mut bytes = serde_json::to_vec(&Value::Object(h)).expect("header serializes");
    while bytes.len() % 8 != 0 {
        bytes.push(b' ');
    }
    bytes
}

fn write_one(path: &Path, tensors: &[TensorRef], dtype: StoreDtype) -> Result<()> {
    let head = header(tensors, dtype);
    write_file(path, |w| {
        w.write_all(&(head.len() as u64).to_le_bytes())?;
        w.write_all(&head)?;
        let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
        for t in tensors {
            for chunk in t.data.chunks(1 << 18) {
                buf.clear();
                match dtype {
                    StoreDtype::F32 => chunk
                        .iter()
                        .for_each(|x| buf.extend_from_slice(&x.to_le_bytes())),
                    StoreDtype::Bf16 => chunk.iter().for_each(|x| {
                        buf.extend_from_slice(&half::bf16::from_f32(*x).to_le_bytes())
                    }),
                }
                w.write_all(&buf)?;
            }
        }
        Ok(())
    })
}
