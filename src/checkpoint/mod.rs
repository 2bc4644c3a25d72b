//! Checkpoints: one directory per saved step, loadable by any parallel layout.
//!
//! Format of `<root>/step-<NNNNNNNN>/` (NNNNNNNN = the optimizer step, zero-padded to 8 digits):
//! - `model.safetensors`: fp32 master weights as logical tensors (HF names, full HF shapes), or
//!   `model-0000i-of-0000n.safetensors` + `model.safetensors.index.json` above the shard size;
//!   the directory is therefore also a HF model directory (`hf_import::load_units` reads it).
//! - `optimizer.safetensors` (or shards + `optimizer.safetensors.index.json`): fp32 AdamW moments
//!   `exp_avg.<name>` and `exp_avg_sq.<name>`, same shapes as the weights.
//! - `config.json`: the model config in the HF schema of its architecture.
//! - `tokenizer.json`, `tokenizer_config.json`, `special_tokens_map.json`: so that export and
//!   sample work from the checkpoint alone.
//! - `trainer_state.json`: `{"format": "ferrotron-checkpoint", "version": 1, "step": N,
//!   "trainer": <the trainer's opaque state>}`, written last.
//!
//! Writing is atomic: everything goes into `<root>/.tmp-step-<NNNNNNNN>/`, every file is fsync'ed,
//! the directory is renamed to `step-<NNNNNNNN>` and the root fsync'ed. A failed write removes the
//! temporary directory and leaves earlier checkpoints untouched; leftover temporary directories
//! (from a crash) are never read and are removed by the next save.

pub mod fsutil;
pub mod load;
pub mod lock;
pub mod prune;
pub mod save;
pub mod tensors;

pub use load::{latest, load, resolve, step_dirs};
pub use save::{save, save_with, SaveOptions};

/// Prefix of complete checkpoint directories.
pub const STEP_PREFIX: &str = "step-";
/// Prefix of checkpoints being written (or left over from a crash).
pub const TMP_PREFIX: &str = ".tmp-step-";
/// Written last; a step directory without it is not a checkpoint.
pub const TRAINER_STATE: &str = "trainer_state.json";
/// Default largest shard: 5 GB, as `save_pretrained`.
pub const DEFAULT_SHARD_BYTES: u64 = 5_000_000_000;

/// `step-00000042`.
pub fn step_dir_name(step: u64) -> String {
    format!("{STEP_PREFIX}{step:08}")
}
