//! ZeRO stage 1: optimizer state sharded over the dp group; weights and gradients full.
//!
//! Units are padded to a multiple of N (see shard.rs); rank r owns block r of every unit.
//! Per rank (Ψ parameters, Ψp padded, CPU f32: P = 4, G = 4, K = 12):
//!   compute weights  Act [Ψp]             PΨp
//!   gradients        Acc [Ψp]             GΨp
//!   master, m, v     Acc [Ψp/N] x 3       KΨp/N      total (P + G)Ψ + KΨ/N, plus padding
//! step, per unit: reduce-scatter (sum) the full gradient; the rank's reduced block is written
//! back into its own block of the gradient buffer ((N-1)/N · GΨp bytes). Σ g² over own blocks,
//! all-reduced (one f64) -> global norm and clip. AdamW on own blocks of the master. The master
//! shard is cast into the own block of the compute copy, and the compute copy all-gathered in
//! place ((N-1)/N · PΨp bytes). Per step: 2 · (N-1)/N · 4Ψp bytes sent per rank.

use crate::collectives::Collectives;
use crate::engine::{
    Engine, EngineGroups, FullState, MemoryReport, StepConfig, StepStats, UnitMeta,
};
use crate::shard::{apply_grad_sums, global_norm, refresh_full_weights, ShardPlan, ShardedAdam};
use crate::source::{OwnedShard, StateSource};
use crate::store::ParamStore;
use ferrotron_kernels::{Buffer, Dst, Result, Src};

pub struct Stage1<B: Collectives> {
    groups: EngineGroups,
    plan: ShardPlan,
    weights: Vec<B::Act>,
    grads: Vec<B::Acc>,
    adam: ShardedAdam<B>,
    /// Reduce-scatter output, reused for every unit (the longest shard).
    scratch: B::Acc,
}

impl<B: Collectives> Stage1<B> {
    pub fn new(
        b: &B,
        groups: EngineGroups,
        units: Vec<UnitMeta>,
        src: &dyn StateSource,
    ) -> Result<Self> {
        let plan = ShardPlan::new(units, groups.dp.size(), groups.dp.rank())?;
        let adam = ShardedAdam::new(b, &plan, src)?;
        let padded = |u: usize| plan.padded[u];
        let weights = (0..plan.units.len())
            .map(|u| b.zeros_act(padded(u)))
            .collect::<Result<_>>()?;
        let grads = (0..plan.units.len())
            .map(|u| b.zeros_acc(padded(u)))
            .collect::<Result<_>>()?;
        let mut s = Stage1 {
            groups,
            scratch: b.zeros_acc(plan.max_shard_len())?,
            plan,
            weights,
            grads,
            adam,
        };
        s.refresh_weights(b)?;
        Ok(s)
    }

    /// Master shards -> own blocks of the compute copy -> all-gather.
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

impl<B: Collectives> ParamStore<B> for Stage1<B> {
    fn parts(&mut self) -> (&[B::Act], &mut [B::Acc]) {
        (&self.weights, &mut self.grads)
    }
}

impl<B: Collectives> Engine<B> for Stage1<B> {
    fn stage(&self) -> u8 {
        1
    }
    fn zero_grads(&mut self, b: &B) -> Result<()> {
        self.grads
            .iter_mut()
            .try_for_each(|g| b.fill_zero_acc(Dst::all(g)))
    }
    fn step(&mut self, b: &B, cfg: &StepConfig) -> Result<StepStats> {
        let dp = self.groups.dp.as_ref();
        for u in 0..self.grads.len() {
            let (own, g) = (self.plan.own(u), &mut self.grads[u]);
            let shard = Dst::range(&mut self.scratch, 0, own.len());
            b.reduce_scatter_sum_acc(dp, Src::all(g), shard)?;
            b.copy_acc(
                Src::range(&self.scratch, 0, own.len()),
                Dst::range(g, own.start, own.len()),
            )?;
        }
        let plan = &self.plan;
        apply_grad_sums(b, &self.groups.grad_sums, &mut self.grads, |u| {
            (plan.own(u), plan.own(u).start)
        })?;
        let sq = self
            .adam
            .sum_squares(b, plan, &self.grads, |u| plan.own(u).start)?;
        let (grad_norm, clip_factor) = global_norm(&self.groups, sq, true, cfg)?;
        self.adam.apply(
            b,
            plan,
            &self.grads,
            |u| plan.own(u).start,
            cfg,
            clip_factor,
        )?;
        self.refresh_weights(b)?;
        Ok(StepStats {
            grad_norm,
            clip_factor,
        })
    }
    fn memory(&self) -> MemoryReport {
        let act: usize = self.weights.iter().map(|w| w.len()).sum();
        let acc: usize = self.grads.iter().map(|g| g.len()).sum();
        let (pad, own_pad) = (self.plan.padding() as u64, self.plan.own_padding() as u64);
        MemoryReport {
            parameters: act as u64 * B::ACT_BYTES,
            gradients: acc as u64 * B::ACC_BYTES,
            optimizer_states: self.adam.bytes(),
            scratch_peak: self.scratch.len() as u64 * B::ACC_BYTES,
            padding: pad * (B::ACT_BYTES + B::ACC_BYTES) + 3 * own_pad * B::ACC_BYTES,
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
