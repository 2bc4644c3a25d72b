//! ZeRO stage 2: optimizer state and gradients sharded; compute weights full.
//!
//! Per rank (Ψ parameters, Ψp padded, CPU f32: P = 4, G = 4, K = 12):
//!   compute weights     Act [Ψp]            PΨp
//!   gradient shards     Acc [Ψp/N]          GΨp/N
//!   master, m, v        Acc [Ψp/N] x 3      KΨp/N     total PΨ + (G + K)Ψ/N, plus padding
//!   in flight           a unit's full gradient Acc [padded_u], only from `before_grad(u)` to
//!                       `after_grad(u)` (with tied embeddings the table's gradient lives from the
//!                       head's backward to the embedding's: reported as `grads_in_flight_peak`).
//! `after_grad(u)` (once per unit and micro-batch, bucket = the unit): reduce-scatter (sum) the
//! full gradient, add the rank's block into its shard accumulator, free the full buffer.
//! `step`: Σ g² over own shards, all-reduced -> norm and clip; AdamW on own shards; master shards
//! cast into own blocks of the compute copy, which is all-gathered in place.
//! Per step and micro-batch: reduce-scatter (N-1)/N · 4Ψp; per step: all-gather (N-1)/N · 4Ψp.

use crate::collectives::Collectives;
use crate::engine::{
    Engine, EngineGroups, FullState, MemoryReport, StepConfig, StepStats, UnitMeta,
};
use crate::shard::{apply_grad_sums, global_norm, refresh_full_weights, ShardPlan, ShardedAdam};
use crate::source::{OwnedShard, StateSource};
use crate::store::ParamStore;
use ferrotron_kernels::{Buffer, Dst, Result, Src};
use ferrotron_parallel::Comm;

/// Full per-unit gradient buffers that exist only while a unit's backward runs, and the sharded
/// accumulators they are reduced into (shared by stages 2 and 3).
pub(crate) struct ShardedGrads<B: Collectives> {
    /// Per unit: the full padded gradient while in flight, else empty.
    pub full: Vec<B::Acc>,
    /// Per unit: this rank's reduced gradient block, accumulated over micro-batches.
    pub shard: Vec<B::Acc>,
    live: usize,
    pub live_peak: usize,
    /// Reduce-scatter output, reused for every unit and micro-batch (the longest shard).
    pub scratch: B::Acc,
}

impl<B: Collectives> ShardedGrads<B> {
    pub fn new(b: &B, plan: &ShardPlan) -> Result<Self> {
        let n = plan.units.len();
        Ok(ShardedGrads {
            full: (0..n).map(|_| b.zeros_acc(0)).collect::<Result<_>>()?,
            shard: (0..n)
                .map(|u| b.zeros_acc(plan.shard_len(u)))
                .collect::<Result<_>>()?,
            live: 0,
            live_peak: 0,
            scratch: b.zeros_acc(plan.max_shard_len())?,
        })
    }
    /// Allocates unit u's zeroed full gradient unless it is already in flight (tied embeddings:
    /// the head and the embedding both ask for it).
    pub fn before_grad(&mut self, b: &B, plan: &ShardPlan, u: usize) -> Result<()> {
        if self.full[u].is_empty() && plan.padded[u] > 0 {
            self.full[u] = b.zeros_acc(plan.padded[u])?;
            self.live += plan.padded[u];
            self.live_peak = self.live_peak.max(self.live);
        }
        Ok(())
    }
    /// Reduce-scatters unit u's full gradient into the shard accumulator and frees it.
    pub fn after_grad(&mut self, b: &B, plan: &ShardPlan, dp: &dyn Comm, u: usize) -> Result<()> {
        if self.full[u].is_empty() {
            return Ok(());
        }
        let k = plan.shard_len(u);
        let block = Dst::range(&mut self.scratch, 0, k);
        b.reduce_scatter_sum_acc(dp, Src::all(&self.full[u]), block)?;
        b.add_acc(
            Dst::all(&mut self.shard[u]),
            Src::range(&self.scratch, 0, k),
        )?;
        self.full[u] = b.zeros_acc(0)?;
        self.live -= plan.padded[u];
        Ok(())
    }
    pub fn zero(&mut self, b: &B) -> Result<()> {
        self.shard
            .iter_mut()
            .try_for_each(|g| b.fill_zero_acc(Dst::all(g)))
    }
    /// Bytes held across steps (the shard accumulators).
    pub fn shard_bytes(&self) -> u64 {
        self.shard.iter().map(|g| g.len()).sum::<usize>() as u64 * B::ACC_BYTES
    }
    /// Model-parallel sums, norm, clip and AdamW over the shards: the common tail of `step` for
    /// stages 2 and 3.
    pub fn step(
        &mut self,
        b: &B,
        plan: &ShardPlan,
        groups: &EngineGroups,
        adam: &mut ShardedAdam<B>,
        cfg: &StepConfig,
    ) -> Result<StepStats> {
        if let Some(u) = self.full.iter().position(|g| !g.is_empty()) {
            return Err(ferrotron_kernels::Error::Unsupported(format!(
                "step called while the gradient of unit {} is still in flight (after_grad was not called)",
                plan.units[u].name
            )));
        }
        apply_grad_sums(b, &groups.grad_sums, &mut self.shard, |u| (plan.own(u), 0))?;
        let sq = adam.sum_squares(b, plan, &self.shard, |_| 0)?;
        let (grad_norm, clip_factor) = global_norm(groups, sq, true, cfg)?;
        adam.apply(b, plan, &self.shard, |_| 0, cfg, clip_factor)?;
        Ok(StepStats {
            grad_norm,
            clip_factor,
        })
    }
}

pub struct Stage2<B: Collectives> {
    groups: EngineGroups,
    plan: ShardPlan,
    weights: Vec<B::Act>,
    grads: ShardedGrads<B>,
    adam: ShardedAdam<B>,
}

impl<B: Collectives> Stage2<B> {
    pub fn new(
        b: &B,
        groups: EngineGroups,
        units: Vec<UnitMeta>,
        src: &dyn StateSource,
    ) -> Result<Self> {
        let plan = ShardPlan::new(units, groups.dp.size(), groups.dp.rank())?;
        let adam = ShardedAdam::new(b, &plan, src)?;
        let grads = ShardedGrads::new(b, &plan)?;
        let weights = (0..plan.units.len())
            .map(|u| b.zeros_act(plan.padded[u]))
            .collect::<Result<_>>()?;
        let mut s = Stage2 {
            groups,
            plan,
            weights,
            grads,
            adam,
        };
        s.refresh_weights(b)?;
        Ok(s)
    }

    fn refresh_weights(&mut self, b: &B) -> Result<()> {
        refresh_full_weights(
            b,
            &self.plan,
            self.groups.dp.as_ref(),
            &self.adam,
            &mut self.weights,
        )
    }
}

impl<B: Collectives> ParamStore<B> for Stage2<B> {
    fn before_grad(&mut self, b: &B, u: usize) -> Result<()> {
        self.grads.before_grad(b, &self.plan, u)
    }
    fn after_grad(&mut self, b: &B, u: usize) -> Result<()> {
        self.grads
            .after_grad(b, &self.plan, self.groups.dp.as_ref(), u)
    }
    fn parts(&mut self) -> (&[B::Act], &mut [B::Acc]) {
        (&self.weights, &mut self.grads.full)
    }
}

impl<B: Collectives> Engine<B> for Stage2<B> {
    fn stage(&self) -> u8 {
        2
    }
    fn zero_grads(&mut self, b: &B) -> Result<()> {
        self.grads.zero(b)
    }
    fn step(&mut self, b: &B, cfg: &StepConfig) -> Result<StepStats> {
        let stats = self
            .grads
            .step(b, &self.plan, &self.groups, &mut self.adam, cfg)?;
        self.refresh_weights(b)?;
        Ok(stats)
    }
    fn memory(&self) -> MemoryReport {
        let act: usize = self.weights.iter().map(|w| w.len()).sum();
        let (pad, own_pad) = (self.plan.padding() as u64, self.plan.own_padding() as u64);
        MemoryReport {
            parameters: act as u64 * B::ACT_BYTES,
            gradients: self.grads.shard_bytes(),
            optimizer_states: self.adam.bytes(),
            grads_in_flight_peak: self.grads.live_peak as u64 * B::ACC_BYTES,
            scratch_peak: self.grads.scratch.len() as u64 * B::ACC_BYTES,
            padding: pad * B::ACT_BYTES + 4 * own_pad * B::ACC_BYTES,
            ..Default::default()
        }
    }
    fn full_state(&mut self, b: &B) -> Result<FullState> {
        self.adam.full_state(b, &self.plan, self.groups.dp.as_ref())
    }
    fn load_state(&mut self, b: &B, src: &dyn StateSource) -> Result<()> {
        self.adam.load(b, &self.plan, src)?;
        self.refresh_weights(b)
    }
    fn owned_ranges(&self) -> Vec<std::ops::Range<usize>> {
        (0..self.plan.units.len())
            .map(|u| self.plan.own_data(u))
            .collect()
    }
    fn for_each_owned(&mut self, b: &B, f: &mut dyn FnMut(OwnedShard) -> Result<()>) -> Result<()> {
        self.adam.for_each_owned(b, &self.plan, &self.plan, f)
    }
}
