//! ZeRO stage 3: parameters, gradients and optimizer state all sharded over the dp group.
//!
//! Per rank (Ψ parameters, Ψp padded, CPU f32: P = 4, G = 4, K = 12):
//!   compute-weight shards  Act [Ψp/N]          PΨp/N
//!   gradient shards        Acc [Ψp/N]          GΨp/N
//!   master, m, v           Acc [Ψp/N] x 3      KΨp/N     total (P + G + K)Ψ/N, plus padding
//!   gathered (transient)   full compute weights of at most 3 units  (`gathered_peak`)
//!   in flight (transient)  full gradients of the units whose backward runs (as stage 2)
//!
//! Gather schedule. The units the model asks for (`before_use`) during the first optimizer step
//! are recorded as the walk order (the trace: embedding, blocks, final norm, head, blocks in
//! reverse). From then on, `before_use(u)` at trace position i gathers u if it is not resident and
//! at once gathers trace[i+1] (the prefetch: on a GPU it overlaps u's compute on a side stream;
//! with blocking CPU collectives it is issued before u computes). `after_use(u)` frees u unless
//! u is the very next unit of the trace. Resident at once: the unit in use and the next one;
//! three in the head (final norm, head, and the last block prefetched). No prefetch crosses the
//! end of the trace (the step changes the weights). A call off the trace resyncs to u's next
//! occurrence, or gathers on demand.
//!
//! Communication per step, with one micro-batch: every unit is all-gathered once per use —
//! blocks twice (forward, backward), the final norm and an untied head once (their forward and
//! backward run back to back in `head`), the embedding once for its forward plus once when tied
//! (the head) — and every unit's gradient is reduce-scattered once (in `after_grad`, as stage
//! 2): (N-1)/N · 4 · (Σ_u uses(u) · padded(u) + Ψp) bytes, at most 3Ψ worth. `step` moves no
//! weights: AdamW updates the master shards and casts them into the compute shards.

use crate::engine::{
    Engine, EngineGroups, FullState, MemoryReport, StepConfig, StepStats, UnitMeta,
};
use crate::shard::{ShardPlan, ShardedAdam};
use crate::source::{OwnedShard, StateSource};
use crate::stage2::ShardedGrads;
use crate::store::ParamStore;
use ferrotron_kernels::{Buffer, Dst, Result, Src};
use ferrotron_parallel::device::Collectives;

pub struct Stage3<B: Collectives> {
    groups: EngineGroups,
    plan: ShardPlan,
    /// This rank's block of every unit's compute weights.
    shards: Vec<B::Act>,
    /// Per unit: the full gathered compute weights while resident, else empty.
    gathered: Vec<B::Act>,
    in_use: Vec<bool>,
    trace: Vec<usize>,
    recording: bool,
    cursor: usize,
    live: usize,
    live_peak: usize,
    grads: ShardedGrads<B>,
    adam: ShardedAdam<B>,
}

impl<B: Collectives> Stage3<B> {
    pub fn new(
        b: &B,
        groups: EngineGroups,
        units: Vec<UnitMeta>,
        src: &dyn StateSource,
    ) -> Result<Self> {
        let plan = ShardPlan::new(units, groups.dp.size(), groups.dp.rank())?;
        let adam = ShardedAdam::new(b, &plan, src)?;
        let grads = ShardedGrads::new(b, &plan)?;
        let n = plan.units.len();
        let mut s = Stage3 {
            groups,
            shards: (0..n)
                .map(|u| b.zeros_act(plan.shard_len(u)))
                .collect::<Result<_>>()?,
            gathered: (0..n).map(|_| b.zeros_act(0)).collect::<Result<_>>()?,
            in_use: vec![false; n],
            trace: Vec::new(),
            recording: true,
            cursor: 0,
            live: 0,
            live_peak: 0,
            plan,
            grads,
            adam,
        };
        s.refresh_shards(b)?;
        Ok(s)
    }

    fn refresh_shards(&mut self, b: &B) -> Result<()> {
        for (m, w) in self.adam.master.iter().zip(&mut self.shards) {
            b.acc_to_act(Src::all(m), Dst::all(w))?;
        }
        Ok(())
    }

    fn gather(&mut self, b: &B, u: usize) -> Result<()> {
        if !self.gathered[u].is_empty() || self.plan.padded[u] == 0 {
            return Ok(());
        }
        // all_gather overwrites every element: no zero fill
        let mut full = b.empty_act(self.plan.padded[u])?;
        b.all_gather_act(
            self.groups.dp.as_ref(),
            Src::all(&self.shards[u]),
            Dst::all(&mut full),
        )?;
        self.gathered[u] = full;
        self.live += self.plan.padded[u];
        self.live_peak = self.live_peak.max(self.live);
        Ok(())
    }

    fn release(&mut self, b: &B, u: usize) -> Result<()> {
        if !self.gathered[u].is_empty() {
            self.gathered[u] = b.zeros_act(0)?;
            self.live -= self.plan.padded[u];
        }
        Ok(())
    }

    fn release_all(&mut self, b: &B) -> Result<()> {
        for u in 0..self.gathered.len() {
            self.in_use[u] = false;
            self.release(b, u)?;
        }
        Ok(())
    }
}

impl<B: Collectives> ParamStore<B> for Stage3<B> {
    fn before_use(&mut self, b: &B, u: usize) -> Result<()> {
        self.in_use[u] = true;
        if self.recording {
            self.trace.push(u);
            return self.gather(b, u);
        }
        let len = self.trace.len();
        if self.trace.get(self.cursor) != Some(&u) {
            match (0..len)
                .map(|i| (self.cursor + i) % len)
                .find(|&i| self.trace[i] == u)
            {
                Some(i) => self.cursor = i,
                None => return self.gather(b, u),
            }
        }
        self.gather(b, u)?;
        self.cursor += 1;
        if self.cursor < len {
            let next = self.trace[self.cursor];
            self.gather(b, next)?;
        } else {
            self.cursor = 0;
        }
        Ok(())
    }
    fn after_use(&mut self, b: &B, u: usize) -> Result<()> {
        self.in_use[u] = false;
        let upcoming =
            !self.recording && self.cursor != 0 && self.trace.get(self.cursor) == Some(&u);
        if upcoming {
            Ok(())
        } else {
            self.release(b, u)
        }
    }
    fn before_grad(&mut self, b: &B, u: usize) -> Result<()> {
        self.grads.before_grad(b, &self.plan, u)
    }
    fn after_grad(&mut self, b: &B, u: usize) -> Result<()> {
        self.grads
            .after_grad(b, &self.plan, self.groups.dp.as_ref(), u)
    }
    fn parts(&mut self) -> (&[B::Act], &mut [B::Acc]) {
        (&self.gathered, &mut self.grads.full)
    }
}

impl<B: Collectives> Engine<B> for Stage3<B> {
    fn stage(&self) -> u8 {
        3
    }
    fn zero_grads(&mut self, b: &B) -> Result<()> {
        self.grads.zero(b)
    }
    fn step(&mut self, b: &B, cfg: &StepConfig) -> Result<StepStats> {
        if let Some(u) = self.in_use.iter().position(|&x| x) {
            return Err(ferrotron_kernels::Error::Unsupported(format!(
                "step called while unit {} is in use (after_use was not called)",
                self.plan.units[u].name
            )));
        }
        self.release_all(b)?;
        if !self.trace.is_empty() {
            self.recording = false;
        }
        self.cursor = 0;
        let stats = self
            .grads
            .step(b, &self.plan, &self.groups, &mut self.adam, cfg)?;
        self.refresh_shards(b)?;
        Ok(stats)
    }
    fn memory(&self) -> MemoryReport {
        let act: usize = self.shards.iter().map(|w| w.len()).sum();
        let own_pad = self.plan.own_padding() as u64;
        MemoryReport {
            parameters: act as u64 * B::ACT_BYTES,
            gradients: self.grads.shard_bytes(),
            optimizer_states: self.adam.bytes(),
            gathered_peak: self.live_peak as u64 * B::ACT_BYTES,
            grads_in_flight_peak: self.grads.live_peak as u64 * B::ACC_BYTES,
            scratch_peak: self.grads.scratch.len() as u64 * B::ACC_BYTES,
            padding: own_pad * (B::ACT_BYTES + 4 * B::ACC_BYTES),
        }
    }
    fn full_state(&mut self, b: &B) -> Result<FullState> {
        self.adam.full_state(b, &self.plan, self.groups.dp.as_ref())
    }
    fn load_state(&mut self, b: &B, src: &dyn StateSource) -> Result<()> {
        self.release_all(b)?;
        self.adam.load(b, &self.plan, src)?;
        self.refresh_shards(b)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Region;
    use crate::source::UnitWeights;
    use ferrotron_kernels::cpu::CpuBackend;
    use ferrotron_parallel::Comm;
    use ferrotron_parallel::{LocalComm, OpKind};
    use std::sync::Arc;

    type Cpu = CpuBackend<f32>;

    fn units(sizes: &[usize]) -> Vec<UnitMeta> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| UnitMeta {
                name: format!("u{i}"),
                numel: n,
                sparse_grad: false,
                regions: vec![Region {
                    offset: 0,
                    len: n,
                    decay: true,
                    counted: true,
                }],
            })
            .collect()
    }

    /// The hook sequence of the model (src/model/transformer.rs) for `blocks` blocks; `head` is the
    /// unit holding the output projection (the embedding, 0, when tied).
    fn micro_batch(
        e: &mut Stage3<Cpu>,
        b: &Cpu,
        blocks: usize,
        head: usize,
        resident_max: &mut usize,
    ) {
        let fu = blocks + 1;
        let mut use_unit = |e: &mut Stage3<Cpu>, u: usize| {
            e.before_use(b, u).unwrap();
            assert!(!e.parts().0[u].is_empty(), "unit {u} resident while used");
            *resident_max =
                (*resident_max).max(e.gathered.iter().filter(|g| !g.is_empty()).count());
        };
        for u in 0..=blocks {
            use_unit(e, u);
            e.after_use(b, u).unwrap();
        }
        use_unit(e, fu);
        use_unit(e, head);
        for u in [fu, head] {
            e.before_grad(b, u).unwrap();
        }
        e.after_grad(b, fu).unwrap();
        if head != 0 {
            e.after_grad(b, head).unwrap();
        }
        e.after_use(b, fu).unwrap();
        e.after_use(b, head).unwrap();
        for u in (1..=blocks).rev() {
            use_unit(e, u);
            e.before_grad(b, u).unwrap();
            e.after_grad(b, u).unwrap();
            e.after_use(b, u).unwrap();
        }
        e.before_grad(b, 0).unwrap();
        e.after_grad(b, 0).unwrap();
    }

    fn gathers_per_step(tied: bool) -> (Vec<u64>, usize) {
        let b = Cpu::new();
        let sizes: &[usize] = if tied {
            &[10, 20, 20, 2]
        } else {
            &[10, 20, 20, 2, 10]
        };
        let head = if tied { 0 } else { 4 };
        let init: Vec<Vec<f32>> = sizes.iter().map(|&n| vec![0.5; n]).collect();
        let dp: Arc<dyn Comm> = Arc::new(LocalComm::named("dp"));
        let groups = EngineGroups::data_parallel(dp.clone());
        let mut e = Stage3::new(&b, groups, units(sizes), &UnitWeights(&init)).unwrap();
        let cfg = StepConfig {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.0,
            clip_norm: None,
            step: 1,
        };
        let (mut calls, mut resident_max) = (Vec::new(), 0);
        for step in 1..=3 {
            let before = dp.counters().snapshot();
            e.zero_grads(&b).unwrap();
            micro_batch(&mut e, &b, 2, head, &mut resident_max);
            micro_batch(&mut e, &b, 2, head, &mut resident_max);
            e.step(&b, &StepConfig { step, ..cfg }).unwrap();
            calls.push(
                dp.counters()
                    .snapshot()
                    .since(&before)
                    .op(OpKind::AllGather)
                    .calls,
            );
            assert!(
                e.gathered.iter().all(|g| g.is_empty()),
                "nothing stays gathered across a step"
            );
        }
        (calls, resident_max)
    }

    #[test]
    fn each_use_gathers_once_and_at_most_three_units_are_resident() {
        // Per micro-batch: blocks twice, final norm once, head once, embedding once (+1 tied).
        let (calls, resident) = gathers_per_step(false);
        assert_eq!(calls, vec![14, 14, 14]);
        assert!(resident <= 3, "{resident} units resident");
        let (calls, resident) = gathers_per_step(true);
        assert_eq!(calls, vec![14, 14, 14]);
        assert!(resident <= 3, "{resident} units resident");
    }

    #[test]
    fn step_with_a_unit_in_use_is_an_error() {
        let b = Cpu::new();
        let dp: Arc<dyn Comm> = Arc::new(LocalComm::named("dp"));
        let groups = EngineGroups::data_parallel(dp);
        let mut e = Stage3::new(&b, groups, units(&[4]), &UnitWeights(&[vec![1.0; 4]])).unwrap();
        e.before_use(&b, 0).unwrap();
        let cfg = StepConfig {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.0,
            clip_norm: None,
            step: 1,
        };
        let err = e.step(&b, &cfg).unwrap_err().to_string();
        assert!(err.contains("unit u0 is in use"), "{err}");
    }
}
