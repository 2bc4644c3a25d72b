//! Checkpoints: one directory per saved step, written in parallel by every rank, loadable by
//! any parallel layout.
//!
//! Format (version 2) of `<root>/step-<NNNNNNNN>/` (NNNNNNNN = the optimizer step, 8 digits):
//! - `shard-<r>-of-<n>.safetensors` and `shard-<r>-of-<n>.json`, one pair per rank of the world
//!   that saved: the fp32 master weights and both AdamW moments of the fragments of logical
//!   tensors that rank owned, and the index naming each fragment's tensor, slice and range
//!   (`shards.rs`). Together the fragments store every element of every tensor exactly once.
//! - `config.json`: the model config in the HF schema of its architecture.
//! - `tokenizer.json`, `tokenizer_config.json`, `special_tokens_map.json`: so that export and
//!   sample work from the checkpoint alone.
//! - `trainer_state.json`: `{"format": "ferrotron-checkpoint", "version": 2, "step": N,
//!   "shards": [stems], "trainer": <the trainer's opaque state>}`, written last.
//!
//! Version 1 checkpoints (`model.safetensors` with HF names and full shapes, plus
//! `optimizer.safetensors` with `exp_avg.<name>` / `exp_avg_sq.<name>`) still load.
//!
//! Writing is atomic (save.rs): every rank writes into `<root>/.tmp-step-<NNNNNNNN>/`, every
//! file is fsync'ed, and only when all ranks have written does rank 0 write the trainer state,
//! rename the directory to `step-<NNNNNNNN>` and fsync the root. A failed or killed save leaves
//! earlier checkpoints untouched; leftover temporary directories are never read and are removed
//! by the next save. The directory must be on a file system every rank sees (as for PyTorch's
//! distributed checkpoints).

pub mod fsutil;
pub mod load;
pub mod lock;
pub mod prune;
pub mod save;
pub mod shards;
pub mod tensors;

pub use load::{latest, load, open_state, open_weights, resolve, step_dirs};
pub use save::{save, save_distributed, CheckpointMeta, OwnedState};

/// The format version this build writes.
pub const FORMAT_VERSION: u64 = 2;

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
