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

use crate::engine::{Engine, FullState, MemoryReport, StepConfig, StepStats, UnitMeta};
use crate::shard::{comm_err, HostAccess, ShardPlan, ShardedAdam};
use crate::stage2::ShardedGrads;
use crate::store::ParamStore;
use ferrotron_kernels::{Buffer, Dst, Result, Src};
use ferrotron_parallel::Comm;
use std::sync::Arc;

pub struct Stage3<B: HostAccess> {
    dp: Arc<dyn Comm>,
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

impl<B: HostAccess> Stage3<B> {
    pub fn new(b: &B, dp: Arc<dyn Comm>, units: Vec<UnitMeta>, init: &[Vec<f32>]) -> Result<Self> {
        let plan = ShardPlan::new(units, dp.size(), dp.rank())?;
        let adam = ShardedAdam::new(b, &plan, init)?;
        let grads = ShardedGrads::new(b, &plan)?;
        let n = plan.units.len();
        let mut s = Stage3 {
            dp,
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
        let mut full = b.zeros_act(self.plan.padded[u])?;
        let input = B::act_host(&self.shards[u]);
        self.dp
            .all_gather(input.into(), B::act_host_mut(&mut full).into())
            .map_err(comm_err)?;
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

impl<B: HostAccess> ParamStore<B> for Stage3<B> {
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
        self.grads.after_grad(b, &self.plan, self.dp.as_ref(), u)
    }
    fn parts(&mut self) -> (&[B::Act], &mut [B::Acc]) {
        (&self.gathered, &mut self.grads.full)
    }
}

impl<B: HostAccess> Engine<B> for Stage3<B> {
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
            .step(b, &self.plan, self.dp.as_ref(), &mut self.adam, cfg)?;
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
            scratch_peak: self.grads.scratch_peak as u64 * B::ACC_BYTES,
            padding: own_pad * (B::ACT_BYTES + 4 * B::ACC_BYTES),
        }
    }
    fn full_state(&mut self, _: &B) -> Result<FullState> {
        self.adam.full_state(&self.plan, self.dp.as_ref())
    }
    fn load_full_state(&mut self, b: &B, state: &FullState) -> Result<()> {
        self.release_all(b)?;
        self.adam.load_full_state(&self.plan, state)?;
        self.refresh_shards(b)
    }
}
