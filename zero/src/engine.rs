//! The contract between the trainer and a data-parallel strategy (ZeRO stage 0, 1, 2 or 3).
//!
//! An engine owns the model state of one rank — fp32 (Acc) master weights, gradients and AdamW
//! moments, whole or sharded over the data-parallel group — and serves the model through
//! `ParamStore`. Per optimizer step the trainer calls:
//!   zero_grads;  for each micro-batch { model forward/backward through the store };  step.
//! `step` finishes the gradient reduction, clips by the global gradient norm, runs AdamW on the
//! parameters this rank owns, and makes the updated compute weights available again. The model
//! never knows which stage runs.
//!
//! Gradient convention: the dp reduction is a SUM. Each rank scales its loss by
//! 1 / (target tokens of the GLOBAL batch, all ranks), so the sum over ranks is the gradient of
//! the global mean loss, exact also when ranks hold different numbers of targets.
//!
//! Bytes per parameter (the ZeRO paper's P, G, K) on CPU f32: P = 4 (the compute copy, `Act`),
//! G = 4 (`Acc` gradients), K = 12 (fp32 master weights, Adam m and v, all `Acc`). The compute
//! copy is kept apart from the master even where both are f32, so the CPU engines have the
//! layout of the GPU ones (bf16 compute, P = 2). Ψ = parameter count, N = dp size.

use crate::source::{OwnedShard, StateSource};
use crate::store::ParamStore;
use ferrotron_kernels::{Backend, Result};
use ferrotron_parallel::{Comm, LocalComm};
use std::ops::Range;
use std::sync::Arc;

/// A contiguous region of a unit (a logical tensor): whether weight decay applies to it, and
/// whether this rank counts it in the global gradient norm.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Region {
    pub offset: usize,
    pub len: usize,
    pub decay: bool,
    /// False on a replica whose gradient another model-parallel rank already counts (a tensor
    /// replicated over the tensor-parallel group, on every tp rank but 0; the tied embedding's
    /// copy on the last pipeline stage), so every logical element enters the norm once.
    pub counted: bool,
}

/// Gradient elements `range` (unit coordinates) of unit `unit` of which each rank of `group`
/// holds a partial sum (a replicated weight used on sharded tokens or heads, a tied embedding
/// on two pipeline stages): `step` sums them over `group` before the norm. Every rank of the
/// group declares the same sums in the same order, and holds the same unit layout.
#[derive(Clone)]
pub struct GradSum {
    pub unit: usize,
    pub range: Range<usize>,
    pub group: Arc<dyn Comm>,
}

/// The process groups an engine works over.
#[derive(Clone)]
pub struct EngineGroups {
    /// Data parallel: ZeRO shards over it; gradients are summed over it.
    pub dp: Arc<dyn Comm>,
    /// The other axes (tensor × pipeline parallel): the gradient norm's partial sums are added
    /// over it (each rank holds different logical elements there).
    pub model_parallel: Arc<dyn Comm>,
    pub grad_sums: Vec<GradSum>,
}

impl EngineGroups {
    /// Data parallelism only.
    pub fn data_parallel(dp: Arc<dyn Comm>) -> Self {
        EngineGroups {
            dp,
            model_parallel: Arc::new(LocalComm::named("mp")),
            grad_sums: Vec::new(),
        }
    }
}

/// The shape of one unit: its flat length and the regions that tile it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnitMeta {
    pub name: String,
    pub numel: usize,
    pub regions: Vec<Region>,
    /// A step writes few of the gradient's elements (an untied token embedding: the rows of the
    /// batch's ids). Where nothing else writes the whole gradient (stage 0 on one dp rank: no
    /// all-reduce), zero_grads releases its memory (`Backend::release_zero_acc`) instead of
    /// writing zeros, so only the rows a step writes hold memory.
    pub sparse_grad: bool,
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

/// Model-state bytes this rank holds, measured from the buffers allocated (lengths x element
/// size), by kind (the ZeRO paper's P, G, K terms). The first three are what stays allocated
/// across steps; the peaks are what a step adds while it runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct MemoryReport {
    /// Compute weights held across steps (full, or this rank's shard at stage 3).
    pub parameters: u64,
    /// Gradient accumulators held across the step (full, or the shard at stages 2-3).
    pub gradients: u64,
    /// Master weights + Adam m + v (this rank's shards from stage 1 on).
    pub optimizer_states: u64,
    /// Stage 3: full compute weights of units gathered at once, at the peak of the last step.
    pub gathered_peak: u64,
    /// Stages 2-3: full per-unit gradient buffers alive at once (while their backward runs), at
    /// the peak of the last step.
    pub grads_in_flight_peak: u64,
    /// Communication scratch: the reduce-scatter output buffer, one longest unit shard, reused.
    pub scratch_peak: u64,
    /// Of `parameters + gradients + optimizer_states`: the bytes that are padding (units padded
    /// to a multiple of N).
    pub padding: u64,
}

impl MemoryReport {
    /// Bytes held across steps (the ZeRO formula's terms).
    pub fn model_state(&self) -> u64 {
        self.parameters + self.gradients + self.optimizer_states
    }
}

/// Full (unsharded) fp32 model state on the host, one Vec per unit. Only tests and the layout
/// comparison harness gather it; training, checkpoints and samples never do.
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
    /// The full state, identical on every rank (gathers shards: collective, every dp rank calls
    /// it). For tests and comparisons only: it needs the whole model on every rank.
    fn full_state(&mut self, b: &B) -> Result<FullState>;
    /// Replaces this rank's state from `src`, reading only what this rank keeps.
    fn load_state(&mut self, b: &B, src: &dyn StateSource) -> Result<()>;
    /// Per unit, the range (unit coordinates, padding excluded) this rank owns for saving.
    fn owned_ranges(&self) -> Vec<std::ops::Range<usize>>;
    /// Hands `f` this rank's owned part of every unit (see source.rs), one unit at a time; the
    /// dp ranks' owned parts tile the model exactly once. Not collective.
    fn for_each_owned(&mut self, b: &B, f: &mut dyn FnMut(OwnedShard) -> Result<()>) -> Result<()>;
}

/// A boxed engine (what `build_engine` returns) serves the model directly: the model's
/// `S: ParamStore<B>` parameters need a sized type.
impl<B: Backend> ParamStore<B> for Box<dyn Engine<B>> {
    fn before_use(&mut self, b: &B, u: usize) -> Result<()> {
        (**self).before_use(b, u)
    }
    fn after_use(&mut self, b: &B, u: usize) -> Result<()> {
        (**self).after_use(b, u)
    }
    fn before_grad(&mut self, b: &B, u: usize) -> Result<()> {
        (**self).before_grad(b, u)
    }
    fn after_grad(&mut self, b: &B, u: usize) -> Result<()> {
        (**self).after_grad(b, u)
    }
    fn parts(&mut self) -> (&[B::Act], &mut [B::Acc]) {
        (**self).parts()
    }
}
