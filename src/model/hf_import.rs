//! Import of Hugging Face safetensors checkpoints: `model.safetensors`, or the shards named by
//! `model.safetensors.index.json`, memory-mapped and read slice by slice (each rank reads only
//! the elements it keeps; stored F32, BF16, F16 and F64 are converted per slice).
//!
//! `open_hf` checks the whole directory against the layout before anything is read: every tensor
//! the layout expects must be present with exactly the logical shape config.json implies; a
//! tensor the model would not use is an error too (it means the checkpoint is not the model the
//! config describes), except known non-parameter buffers (GPT-2's causal-mask `attn.bias`, rotary
//! `inv_freq`) and a tied `lm_head.weight` copy. Every error names the file and the tensor.

use super::config::{Arch, ModelConfig};
use super::layout::ParamLayout;
use crate::error::Result;
use crate::tensorfile::{Fragments, LayoutSource};
use crate::user;
use ferrotron_zero::StatePart;
use std::collections::HashSet;
use std::path::Path;

pub use crate::tensorfile::SafetensorsFiles;

/// Names a checkpoint may hold that are not parameters of the model.
fn ignorable(name: &str, cfg: &ModelConfig) -> bool {
    name.ends_with(".attn.bias")
        || name.ends_with(".attn.masked_bias")
        || name.ends_with("rotary_emb.inv_freq")
        || (cfg.tie_embeddings && name == "lm_head.weight")
}

/// The HF checkpoint in `dir` as a source of the layout's master weights (validated, nothing
/// read yet).
pub fn open_hf(dir: &Path, cfg: &ModelConfig, layout: &ParamLayout) -> Result<LayoutSource> {
    let files = SafetensorsFiles::open_dir(dir)?;
    let sorted: Vec<String> = files.names().map(String::from).collect();
    let names: HashSet<&str> = sorted.iter().map(String::as_str).collect();
    let mut frags = Fragments::new(files);
    let mut used: HashSet<String> = HashSet::new();
    let mut seen: HashSet<&str> = HashSet::new();
    for (_, t) in layout.tensors() {
        if !seen.insert(&t.name) {
            continue;
        }
        // Original GPT-2 checkpoints name tensors without the `transformer.` prefix.
        let stored = [
            t.name.as_str(),
            t.name.strip_prefix("transformer.").unwrap_or(&t.name),
        ]
        .into_iter()
        .find(|n| names.contains(*n))
        .filter(|_| cfg.arch == Arch::Gpt2 || names.contains(t.name.as_str()));
        let Some(stored) = stored else {
            return Err(user!(
                "{}: tensor `{}` is missing from the checkpoint (config.json implies shape {:?})",
                dir.display(),
                t.name,
                t.global_shape()
            ));
        };
        used.insert(stored.to_string());
        frags.add_whole(StatePart::Master, &t.name, t.global_shape(), stored)?;
    }
    if let Some(name) = sorted
        .iter()
        .find(|n| !used.contains(*n) && !ignorable(n, cfg))
    {
        return Err(user!(
            "{}: unexpected tensor `{name}` (not a parameter of a {} model with this config.json)",
            dir.display(),
            cfg.model_type
        ));
    }
    frags.finish()?;
    Ok(LayoutSource::new(layout.clone(), frags, false))
}

/// Loads every parameter of `layout` from the HF checkpoint in `dir` into one f32 buffer per unit
/// (single-process uses: check-hf, tests).
pub fn load_units(dir: &Path, cfg: &ModelConfig, layout: &ParamLayout) -> Result<Vec<Vec<f32>>> {
    open_hf(dir, cfg, layout)?.read_all(StatePart::Master)
}
