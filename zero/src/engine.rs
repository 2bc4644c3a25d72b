//! The contract between the trainer and a data-parallel strategy (ZeRO stage 0, 1, 2 or 3).
//!
//! An engine owns the model state of one rank — fp32 (Acc) master weights, gradients and AdamW
//! moments, whole or sharded over the data-parallel group — and serves the model through
//! `ParamStore`. Per optimizer step the trainer calls:
//!   zero_grads;  for each micro-batch { model forward/backward through the store };  step.
//! `step` finishes the gradient reduction (the mean over the dp group), clips by the global
//! gradient norm, runs AdamW on the parameters this rank owns, and makes the updated compute
//! weights available again. The model never knows which stage runs.

use crate::store::ParamStore;
use ferrotron_kernels::{Backend, Result};

/// A contiguous region of a unit (a logical tensor) and whether weight decay applies to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Region {
    pub offset: usize,
    pub len: usize,
    pub decay: bool,
}

/// The shape of one unit: its flat length and the regions that tile it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnitMeta {
    pub name: String,
    pub numel: usize,
    pub regions: Vec<Region>,
}

/// Hyper-parameters of one optimizer step.
#[derive(Clone, Copy, Debug)]
pub struct StepConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Clip the global gradient norm to this value (None: no clipping).
    pub clip_norm: Option<f64>,
    /// The AdamW step count t (1-based).
    pub step: u64,
}

/// What `step` reports.
#[derive(Clone, Copy, Debug)]
pub struct StepStats {
    /// Global gradient norm before clipping (over the whole model, all ranks).
    pub grad_norm: f64,
    /// The factor gradients were multiplied by (1 when not clipped).
    pub clip_factor: f64,
}

/// Model-state bytes this rank holds, by kind (ZeRO paper's P, G, K terms), at the peak of a step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct MemoryReport {
    pub parameters: u64,
    pub gradients: u64,
    pub optimizer_states: u64,
    /// Compute weights of units gathered at once (stage 3), at the peak.
    pub gathered_peak: u64,
    /// Elements added to make units divide the dp size, in bytes.
    pub padding: u64,
}

/// Full (unsharded) fp32 model state on the host, one Vec per unit: what checkpoints store.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FullState {
    pub master: Vec<Vec<f32>>,
    pub exp_avg: Vec<Vec<f32>>,
    pub exp_avg_sq: Vec<Vec<f32>>,
}

pub trait Engine<B: Backend>: ParamStore<B> {
    /// The ZeRO stage (0 = plain data parallelism).
    fn stage(&self) -> u8;
    /// Clears gradient accumulators before the first micro-batch of a step.
    fn zero_grads(&mut self, b: &B) -> Result<()>;
    /// Reduces, clips and applies AdamW; see the module comment.
    fn step(&mut self, b: &B, cfg: &StepConfig) -> Result<StepStats>;
    fn memory(&self) -> MemoryReport;
    /// The full state, identical on every rank (gathers shards).
    fn full_state(&mut self, b: &B) -> Result<FullState>;
    /// Replaces this rank's state from a full state (each rank keeps its shards).
    fn load_full_state(&mut self, b: &B, state: &FullState) -> Result<()>;
}
