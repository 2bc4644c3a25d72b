//! Import of Hugging Face safetensors checkpoints into flat per-unit host buffers (f32).
//!
//! Reads `model.safetensors`, or the shards named by `model.safetensors.index.json`, memory-mapped.
//! Stored dtypes F32, BF16, F16 and F64 are converted to f32. Every tensor the layout expects must
//! be present with exactly the shape config.json implies; a tensor the model would not use is an
//! error too (it means the checkpoint is not the model the config describes), except known
//! non-parameter buffers (GPT-2's causal-mask `attn.bias`, rotary `inv_freq`) and a tied
//! `lm_head.weight` copy. Every error names the file and the tensor.

use super::config::{Arch, ModelConfig};
use super::layout::ParamLayout;
use crate::error::Result;
use crate::user;
use memmap2::Mmap;
use rayon::prelude::*;
use safetensors::{Dtype, SafeTensors};
use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};

/// Memory-mapped safetensors files of one checkpoint.
pub struct SafetensorsFiles {
    files: Vec<(PathBuf, Mmap)>,
}

impl SafetensorsFiles {
    /// Opens `dir/model.safetensors` or the shards listed in `dir/model.safetensors.index.json`.
    pub fn open_dir(dir: &Path) -> Result<Self> {
        let index = dir.join("model.safetensors.index.json");
        let single = dir.join("model.safetensors");
        let paths: Vec<PathBuf> = if index.exists() {
            let text = std::fs::read_to_string(&index)
                .map_err(|e| user!("{}: cannot read: {e}", index.display()))?;
            let v: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| user!("{}: not valid JSON: {e}", index.display()))?;
            let map = v
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| user!("{}: missing object `weight_map`", index.display()))?;
            let mut shards: Vec<String> = Vec::new();
            for (name, f) in map {
                let f = f.as_str().ok_or_else(|| {
                    user!(
                        "{}: weight_map entry `{name}` is not a file name",
                        index.display()
                    )
                })?;
                if !shards.iter().any(|s| s == f) {
                    shards.push(f.to_string());
                }
            }
            shards.sort();
            shards.into_iter().map(|s| dir.join(s)).collect()
        } else if single.exists() {
            vec![single]
        } else {
            return Err(user!(
                "{}: no model.safetensors or model.safetensors.index.json found",
                dir.display()
            ));
        };
        Self::open(&paths)
    }

    pub fn open(paths: &[PathBuf]) -> Result<Self> {
        let mut files = Vec::new();
        for p in paths {
            let f = File::open(p).map_err(|e| user!("{}: cannot open: {e}", p.display()))?;
            // SAFETY: the file is opened read-only; a concurrent writer is outside our contract.
            let m =
                unsafe { Mmap::map(&f) }.map_err(|e| user!("{}: cannot map: {e}", p.display()))?;
            SafeTensors::deserialize(&m)
                .map_err(|e| user!("{}: not a valid safetensors file: {e}", p.display()))?;
            files.push((p.clone(), m));
        }
        Ok(SafetensorsFiles { files })
    }

    /// Every tensor name with the index of the file holding it.
    fn names(&self) -> Result<BTreeMap<String, usize>> {
        let mut out = BTreeMap::new();
        for (i, (p, m)) in self.files.iter().enumerate() {
            let st = SafeTensors::deserialize(m).map_err(|e| user!("{}: {e}", p.display()))?;
            for name in st.names() {
                if out.insert(name.to_string(), i).is_some() {
                    return Err(user!(
                        "{}: tensor `{name}` appears in more than one shard",
                        p.display()
                    ));
                }
            }
        }
        Ok(out)
    }

    /// Reads tensor `name` from file `file` as f32, checking its shape (`want`, if given).
    pub fn read_f32(
        &self,
        file: usize,
        name: &str,
        want: Option<&[usize]>,
        out: &mut [f32],
    ) -> Result<()> {
        let (path, m) = &self.files[file];
        let st = SafeTensors::deserialize(m).map_err(|e| user!("{}: {e}", path.display()))?;
        let view = st
            .tensor(name)
            .map_err(|_| user!("{}: tensor `{name}` is missing", path.display()))?;
        if let Some(want) = want {
            if view.shape() != want {
                return Err(user!(
                    "{}: tensor `{name}` has shape {:?}, but config.json implies {:?}",
                    path.display(),
                    view.shape(),
                    want
                ));
            }
        }
        let numel: usize = view.shape().iter().product();
        assert_eq!(out.len(), numel, "caller sized the output for `{name}`");
        convert(view.dtype(), view.data(), out).map_err(|dt| {
            user!(
                "{}: tensor `{name}` has dtype {dt:?}; only F32, BF16, F16 and F64 are supported",
                path.display()
            )
        })
    }

    /// Reads a whole tensor as f32 with its shape, looked up across files.
    pub fn tensor_f32(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        for (i, (path, m)) in self.files.iter().enumerate() {
            let st = SafeTensors::deserialize(m).map_err(|e| user!("{}: {e}", path.display()))?;
            if let Ok(view) = st.tensor(name) {
                let shape = view.shape().to_vec();
                let mut out = vec![0.0; shape.iter().product()];
                self.read_f32(i, name, None, &mut out)?;
                return Ok((shape, out));
            }
        }
        Err(user!("{}: tensor `{name}` is missing", self.describe()))
    }

    /// Reads an integer tensor (I64 or I32) with its shape.
    pub fn tensor_i64(&self, name: &str) -> Result<(Vec<usize>, Vec<i64>)> {
        for (path, m) in &self.files {
            let st = SafeTensors::deserialize(m).map_err(|e| user!("{}: {e}", path.display()))?;
            if let Ok(view) = st.tensor(name) {
                let d = view.data();
                let v: Vec<i64> = match view.dtype() {
                    Dtype::I64 => d
                        .chunks_exact(8)
                        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                        .collect(),
                    Dtype::I32 => d
                        .chunks_exact(4)
                        .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as i64)
                        .collect(),
                    dt => {
                        return Err(user!(
                            "{}: tensor `{name}` has dtype {dt:?}, expected an integer type",
                            path.display()
                        ))
                    }
                };
                return Ok((view.shape().to_vec(), v));
            }
        }
        Err(user!("{}: tensor `{name}` is missing", self.describe()))
    }

    /// Reads a whole tensor as f64 (for reference data).
    pub fn tensor_f64(&self, name: &str) -> Result<(Vec<usize>, Vec<f64>)> {
        for (path, m) in &self.files {
            let st = SafeTensors::deserialize(m).map_err(|e| user!("{}: {e}", path.display()))?;
            if let Ok(view) = st.tensor(name) {
                if view.dtype() == Dtype::F64 {
                    let v = view
                        .data()
                        .chunks_exact(8)
                        .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                        .collect();
                    return Ok((view.shape().to_vec(), v));
                }
                let (shape, v) = self.tensor_f32(name)?;
                return Ok((shape, v.into_iter().map(f64::from).collect()));
            }
        }
        Err(user!("{}: tensor `{name}` is missing", self.describe()))
    }

    fn describe(&self) -> String {
        match self.files.as_slice() {
            [(p, _)] => p.display().to_string(),
            fs => fs
                .first()
                .and_then(|(p, _)| p.parent())
                .map(|d| d.display().to_string())
                .unwrap_or_default(),
        }
    }
}

/// Converts little-endian stored values to f32; on an unsupported dtype returns it.
fn convert(dt: Dtype, data: &[u8], out: &mut [f32]) -> std::result::Result<(), Dtype> {
    const CHUNK: usize = 1 << 16;
    match dt {
        Dtype::F32 => out
            .par_chunks_mut(CHUNK)
            .zip(data.par_chunks(CHUNK * 4))
            .for_each(|(o, d)| {
                for (x, c) in o.iter_mut().zip(d.chunks_exact(4)) {
                    *x = f32::from_le_bytes(c.try_into().unwrap());
                }
            }),
        Dtype::BF16 => out
            .par_chunks_mut(CHUNK)
            .zip(data.par_chunks(CHUNK * 2))
            .for_each(|(o, d)| {
                for (x, c) in o.iter_mut().zip(d.chunks_exact(2)) {
                    *x = half::bf16::from_le_bytes(c.try_into().unwrap()).to_f32();
                }
            }),
        Dtype::F16 => out
            .par_chunks_mut(CHUNK)
            .zip(data.par_chunks(CHUNK * 2))
            .for_each(|(o, d)| {
                for (x, c) in o.iter_mut().zip(d.chunks_exact(2)) {
                    *x = half::f16::from_le_bytes(c.try_into().unwrap()).to_f32();
                }
            }),
        Dtype::F64 => out
            .par_chunks_mut(CHUNK)
            .zip(data.par_chunks(CHUNK * 8))
            .for_each(|(o, d)| {
                for (x, c) in o.iter_mut().zip(d.chunks_exact(8)) {
                    *x = f64::from_le_bytes(c.try_into().unwrap()) as f32;
                }
            }),
        other => return Err(other),
    }
    Ok(())
}

/// Names a checkpoint may hold that are not parameters of the model.
fn ignorable(name: &str, cfg: &ModelConfig) -> bool {
    name.ends_with(".attn.bias")
        || name.ends_with(".attn.masked_bias")
        || name.ends_with("rotary_emb.inv_freq")
        || (cfg.tie_embeddings && name == "lm_head.weight")
}

/// Loads every parameter of `layout` from the HF checkpoint in `dir` into one f32 buffer per unit.
pub fn load_units(dir: &Path, cfg: &ModelConfig, layout: &ParamLayout) -> Result<Vec<Vec<f32>>> {
    let files = SafetensorsFiles::open_dir(dir)?;
    let names = files.names()?;
    let mut used: HashSet<&str> = HashSet::new();
    let mut units: Vec<Vec<f32>> = layout.units.iter().map(|u| vec![0.0; u.numel]).collect();
    for (ui, unit) in layout.units.iter().enumerate() {
        for t in &unit.tensors {
            // Original GPT-2 checkpoints name tensors without the `transformer.` prefix.
            let stored = [
                t.name.as_str(),
                t.name.strip_prefix("transformer.").unwrap_or(&t.name),
            ]
            .into_iter()
            .find(|n| names.contains_key(*n))
            .filter(|_| cfg.arch == Arch::Gpt2 || names.contains_key(&t.name));
            let Some(stored) = stored else {
                return Err(user!(
                    "{}: tensor `{}` is missing from the checkpoint (config.json implies shape {:?})",
                    dir.display(),
                    t.name,
                    t.shape
                ));
            };
            let (key, _) = names.get_key_value(stored).expect("looked up above");
            used.insert(key.as_str());
            let out = &mut units[ui][t.offset..t.offset + t.numel()];
            files.read_f32(names[stored], stored, Some(&t.shape), out)?;
        }
    }
    for name in names.keys() {
        if !used.contains(name.as_str()) && !ignorable(name, cfg) {
            return Err(user!(
                "{}: unexpected tensor `{name}` (not a parameter of a {} model with this config.json)",
                dir.display(),
                cfg.model_type
            ));
        }
    }
    Ok(units)
}
