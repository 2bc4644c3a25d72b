//! ZeRO stage 0: plain data parallelism. Every rank holds everything, replicated.
//!
//! Per rank (Ψ parameters, CPU f32: P = 4, G = 4, K = 12):
//!   compute weights  Act [Ψ]        PΨ          (none where Act = Acc, the CPU: P = 0, below)
//!   gradients        Acc [Ψ]        GΨ
//!   master, m, v     Acc [Ψ] x 3    KΨ          total (P + G + K)Ψ
//! step: all-reduce (sum) every unit's gradient (2(N-1)/N · GΨ bytes per rank), the model-parallel
//! gradient sums, the norm from the full gradient (identical on every dp rank: added only over
//! the model-parallel group), AdamW on the whole model, and the compute copy refreshed from the
//! master.
//! Where the backend can see the master as compute weights (`Backend::acc_as_act`: on the CPU both
//! are the same f32 or f64 buffers), the engine keeps no compute copy: the model reads the master
//! itself, which AdamW updates in place, and P = 0 (16 bytes per parameter in f32, not 20).

use crate::engine::{
    Engine, EngineGroups, FullState, MemoryReport, StepConfig, StepStats, UnitMeta,
};
use crate::shard::{apply_grad_sums, global_norm, ShardPlan, ShardedAdam};
use crate::source::{OwnedShard, StateSource};
use crate::store::ParamStore;
use ferrotron_kernels::{Buffer, Dst, Result, Src};
use ferrotron_parallel::device::Collectives;

pub struct Stage0<B: Collectives> {
    groups: EngineGroups,
    plan: ShardPlan,
    /// Which block of every unit this rank writes to checkpoints (everything is replicated, so
    /// the dp ranks split the writing as the sharded stages do).
    owner: ShardPlan,
    /// The compute copy; empty when the model reads the master itself (`aliased`).
    weights: Vec<B::Act>,
    aliased: bool,
    grads: Vec<B::Acc>,
    adam: ShardedAdam<B>,
}

impl<B: Collectives> Stage0<B> {
    pub fn new(
        b: &B,
        groups: EngineGroups,
        units: Vec<UnitMeta>,
        src: &dyn StateSource,
    ) -> Result<Self> {
        let owner = ShardPlan::new(units.clone(), groups.dp.size(), groups.dp.rank())?;
        let plan = ShardPlan::new(units, 1, 0)?;
        let adam = ShardedAdam::new(b, &plan, src)?;
        let aliased = B::acc_as_act(&adam.master).is_some();
        let weights = match aliased {
            true => Vec::new(),
            false => (plan.units.iter())
                .map(|u| b.zeros_act(u.numel))
                .collect::<Result<_>>()?,
        };
        let grads = plan
            .units
            .iter()
            .map(|u| b.zeros_acc(u.numel))
            .collect::<Result<_>>()?;
        let mut s = Stage0 {
            groups,
            plan,
            owner,
            weights,
            aliased,
            grads,
            adam,
        };
        s.refresh_weights(b)?;
        Ok(s)
    }

    fn refresh_weights(&mut self, b: &B) -> Result<()> {
        if self.aliased {
            return Ok(());
        }
        for (m, w) in self.adam.master.iter().zip(&mut self.weights) {
            b.acc_to_act(Src::all(m), Dst::all(w))?;
        }
        Ok(())
    }
}

impl<B: Collectives> ParamStore<B> for Stage0<B> {
    fn parts(&mut self) -> (&[B::Act], &mut [B::Acc]) {
        let weights = match self.aliased {
            true => B::acc_as_act(&self.adam.master).expect("the backend aliases Act and Acc"),
            false => &self.weights,
        };
        (weights, &mut self.grads)
    }
}

impl<B: Collectives> Engine<B> for Stage0<B> {
    fn stage(&self) -> u8 {
        0
    }
    fn zero_grads(&mut self, b: &B) -> Result<()> {
        // A sparsely written gradient stays sparse in memory unless the all-reduce writes it whole.
        let alone = self.groups.dp.size() == 1;
        for (g, unit) in self.grads.iter_mut().zip(&self.plan.units) {
            match alone && unit.sparse_grad {
                true => b.release_zero_acc(Dst::all(g))?,
                false => b.fill_zero_acc(Dst::all(g))?,
            }
        }
        Ok(())
    }
    fn step(&mut self, b: &B, cfg: &StepConfig) -> Result<StepStats> {
        // Units this rank does not hold (other pipeline stages) are empty: nothing to reduce.
        for g in self.grads.iter_mut().filter(|g| !g.is_empty()) {
            b.all_reduce_sum_acc(self.groups.dp.as_ref(), Dst::all(g))?;
        }
        let units = &self.plan.units;
        apply_grad_sums(b, &self.groups.grad_sums, &mut self.grads, |u| {
            (0..units[u].numel, 0)
        })?;
        let sq = self.adam.sum_squares(b, &self.plan, &self.grads, |_| 0)?;
        let (norm, clip_factor) = global_norm(&self.groups, sq, false, cfg)?;
        self.adam
            .apply(b, &self.plan, &self.grads, |_| 0, cfg, clip_factor)?;
        self.refresh_weights(b)?;
        Ok(StepStats {
            grad_norm: norm,
            clip_factor,
        })
    }
    fn memory(&self) -> MemoryReport {
        let act: usize = self.weights.iter().map(|w| w.len()).sum();
        let acc: usize = self.grads.iter().map(|g| g.len()).sum();
        MemoryReport {
            parameters: act as u64 * B::ACT_BYTES,
            gradients: acc as u64 * B::ACC_BYTES,
            optimizer_states: self.adam.bytes(),
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
            .map(|u| self.owner.own_data(u))
            .collect()
    }
    fn for_each_owned(&mut self, b: &B, f: &mut dyn FnMut(OwnedShard) -> Result<()>) -> Result<()> {
        self.adam.for_each_owned(b, &self.plan, &self.owner, f)
    }
}
