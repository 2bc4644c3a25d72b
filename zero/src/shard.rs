//! What every stage shares: the shard plan, host access to buffers, and the sharded AdamW.
//!
//! Shard plan. N = dp size, r = dp rank. Unit u has `numel` elements; it is padded to
//! `padded = ceil(numel / N) · N` and rank r owns `[r·k, (r+1)·k)`, k = padded / N. Padding is
//! zero in every buffer, is never stepped (so it never decays), and never enters the norm.
//! Stage 0 uses the plan with N = 1 (one shard: the whole unit, no padding).
//!
//! AdamW over a shard runs region by region: the unit's regions (logical tensors, each with its
//! weight-decay flag) intersected with the owned range; padding lies in no region.

use crate::engine::{EngineGroups, FullState, GradSum, StepConfig, UnitMeta};
use crate::source::{OwnedShard, StatePart, StateSource};
use ferrotron_kernels::{AdamWGroup, AdamWStep, Backend, Buffer, Dst, Error, Result, Src};
use ferrotron_parallel::device::Collectives;
use ferrotron_parallel::{Comm, CommError};
use std::ops::Range;

/// A communication failure as a kernels error (the `ParamStore` hooks return kernels results).
pub(crate) fn comm_err(e: CommError) -> Error {
    Error::Unsupported(format!("communication failed: {e}"))
}

/// Which elements of every unit this rank owns.
#[derive(Clone, Debug)]
pub struct ShardPlan {
    pub units: Vec<UnitMeta>,
    pub n: usize,
    pub rank: usize,
    /// Per unit: numel rounded up to a multiple of n.
    pub padded: Vec<usize>,
}

impl ShardPlan {
    /// Checks that each unit's regions tile it in order (the optimizer relies on it).
    pub fn new(units: Vec<UnitMeta>, n: usize, rank: usize) -> Result<Self> {
        if n == 0 || rank >= n {
            return Err(Error::Unsupported(format!(
                "dp rank {rank} is not below the dp size {n}"
            )));
        }
        for u in &units {
            let mut at = 0;
            for r in &u.regions {
                if r.offset != at {
                    return Err(Error::Unsupported(format!(
                        "unit {}: regions must tile the unit in order, but a region starts at {} where {at} was expected",
                        u.name, r.offset
                    )));
                }
                at += r.len;
            }
            if at != u.numel {
                return Err(Error::Unsupported(format!(
                    "unit {}: regions cover {at} of {} elements",
                    u.name, u.numel
                )));
            }
        }
        let padded = units.iter().map(|u| u.numel.div_ceil(n) * n).collect();
        Ok(ShardPlan {
            units,
            n,
            rank,
            padded,
        })
    }

    pub fn shard_len(&self, u: usize) -> usize {
        self.padded[u] / self.n
    }
    /// The owned range, in unit coordinates (may reach into the padding).
    pub fn own(&self, u: usize) -> Range<usize> {
        let k = self.shard_len(u);
        self.rank * k..(self.rank + 1) * k
    }
    /// Ψ: parameters of the model.
    pub fn psi(&self) -> usize {
        self.units.iter().map(|u| u.numel).sum()
    }
    /// Σ padded unit sizes.
    pub fn psi_padded(&self) -> usize {
        self.padded.iter().sum()
    }
    /// Padding elements of all units (full buffers).
    pub fn padding(&self) -> usize {
        self.psi_padded() - self.psi()
    }
    /// Padding elements inside this rank's shards (only the last ranks of a unit hold any).
    pub fn own_padding(&self) -> usize {
        (0..self.units.len())
            .map(|u| {
                let (own, n) = (self.own(u), self.units[u].numel);
                own.len() - (own.end.min(n) - own.start.min(n))
            })
            .sum()
    }
    /// The longest shard of any unit: the size of the reduce-scatter scratch buffer.
    pub fn max_shard_len(&self) -> usize {
        (0..self.units.len())
            .map(|u| self.shard_len(u))
            .max()
            .unwrap_or(0)
    }
    /// Σ shard lengths (Ψp / N).
    pub fn shard_total(&self) -> usize {
        self.psi_padded() / self.n
    }
    /// The owned pieces of unit u's regions, as (start relative to the shard, len, decay).
    pub fn pieces(&self, u: usize) -> Vec<(usize, usize, bool)> {
        let own = self.own(u);
        self.units[u]
            .regions
            .iter()
            .filter_map(|r| {
                let (s, e) = (r.offset.max(own.start), (r.offset + r.len).min(own.end));
                (s < e).then(|| (s - own.start, e - s, r.decay))
            })
            .collect()
    }
    /// The owned pieces of unit u's regions this rank counts in the gradient norm, as (start
    /// relative to the shard, len).
    pub fn norm_pieces(&self, u: usize) -> Vec<(usize, usize)> {
        let own = self.own(u);
        self.units[u]
            .regions
            .iter()
            .filter(|r| r.counted)
            .filter_map(|r| {
                let (s, e) = (r.offset.max(own.start), (r.offset + r.len).min(own.end));
                (s < e).then(|| (s - own.start, e - s))
            })
            .collect()
    }
    /// The owned range without its padding (what this rank reads, writes and saves).
    pub fn own_data(&self, u: usize) -> Range<usize> {
        let (own, n) = (self.own(u), self.units[u].numel);
        own.start.min(n)..own.end.min(n)
    }
    /// This rank's zero-padded shard of unit `u`'s `part`, filled from `src`.
    pub fn read_shard(&self, src: &dyn StateSource, part: StatePart, u: usize) -> Result<Vec<f32>> {
        let mut out = vec![0.0; self.shard_len(u)];
        let data = self.own_data(u);
        src.fill(part, u, data.clone(), &mut out[..data.len()])?;
        Ok(out)
    }
}

/// AdamW state for the shards this rank owns: fp32 master weights, m and v (K = 12 bytes per
/// owned element on CPU f32).
pub struct ShardedAdam<B: Backend> {
    pub master: Vec<B::Acc>,
    pub m: Vec<B::Acc>,
    pub v: Vec<B::Acc>,
}

impl<B: Collectives> ShardedAdam<B> {
    /// Master weights from `src` (and the moments, when it has them; else zero).
    pub fn new(b: &B, plan: &ShardPlan, src: &dyn StateSource) -> Result<Self> {
        let zeros = |u: usize| b.zeros_acc(plan.shard_len(u));
        let n = plan.units.len();
        let mut s = ShardedAdam {
            master: (0..n).map(zeros).collect::<Result<_>>()?,
            m: (0..n).map(zeros).collect::<Result<_>>()?,
            v: (0..n).map(zeros).collect::<Result<_>>()?,
        };
        s.load(b, plan, src)?;
        Ok(s)
    }

    pub fn bytes(&self) -> u64 {
        let n: usize = self
            .master
            .iter()
            .chain(&self.m)
            .chain(&self.v)
            .map(|x| x.len())
            .sum();
        n as u64 * B::ACC_BYTES
    }

    /// Σ g² over the owned, non-padding, counted elements; `grads[u]` holds the shard at
    /// `offset(u)`.
    pub fn sum_squares(
        &self,
        b: &B,
        plan: &ShardPlan,
        grads: &[B::Acc],
        offset: impl Fn(usize) -> usize,
    ) -> Result<f64> {
        let mut regions = Vec::new();
        for (u, g) in grads.iter().enumerate() {
            for (start, len) in plan.norm_pieces(u) {
                regions.push(Src::range(g, offset(u) + start, len));
            }
        }
        b.sum_squares_many(&regions)
    }

    /// Steps every owned region, the gradient read as g·clip_factor (clipping folded into the
    /// optimizer: the gradients are not modified), in one multi-tensor AdamW call.
    pub fn apply(
        &mut self,
        b: &B,
        plan: &ShardPlan,
        grads: &[B::Acc],
        offset: impl Fn(usize) -> usize,
        cfg: &StepConfig,
        clip_factor: f64,
    ) -> Result<()> {
        let h = AdamWStep {
            lr: cfg.lr,
            beta1: cfg.beta1,
            beta2: cfg.beta2,
            eps: cfg.eps,
            weight_decay: cfg.weight_decay,
            step: cfg.step,
        };
        let groups = (self.master.iter_mut().zip(&mut self.m).zip(&mut self.v))
            .zip(grads)
            .enumerate()
            .map(|(u, (((p, m), v), g))| {
                let len = p.len();
                AdamWGroup {
                    param: Dst::all(p),
                    grad: Src::range(g, offset(u), len),
                    m: Dst::all(m),
                    v: Dst::all(v),
                    pieces: plan.pieces(u),
                }
            })
            .collect();
        b.adamw_multi_step(groups, &h, clip_factor.min(1.0))
    }

    /// Gathers every shard into the full (unpadded) state, identical on every rank (through host
    /// memory: checkpoints are written from the host).
    pub fn full_state(&self, b: &B, plan: &ShardPlan, dp: &dyn Comm) -> Result<FullState> {
        let gather = |bufs: &[B::Acc]| -> Result<Vec<Vec<f32>>> {
            let mut out = Vec::with_capacity(bufs.len());
            for (u, x) in bufs.iter().enumerate() {
                let shard = b.download_acc(Src::all(x))?;
                let mut full = if plan.n == 1 || plan.padded[u] == 0 {
                    // Stage 0: the whole unit is local (the dp group may be larger); or a unit
                    // this rank does not hold.
                    shard
                } else {
                    let mut full = vec![0.0f32; plan.padded[u]];
                    dp.all_gather((&shard[..]).into(), (&mut full[..]).into())
                        .map_err(comm_err)?;
                    full
                };
                full.truncate(plan.units[u].numel);
                out.push(full);
            }
            Ok(out)
        };
        Ok(FullState {
            master: gather(&self.master)?,
            exp_avg: gather(&self.m)?,
            exp_avg_sq: gather(&self.v)?,
        })
    }

    /// Replaces this rank's shards from `src` (the moments become zero when it has none).
    pub fn load(&mut self, b: &B, plan: &ShardPlan, src: &dyn StateSource) -> Result<()> {
        for u in 0..plan.units.len() {
            self.master[u] = b.upload_acc(&plan.read_shard(src, StatePart::Master, u)?)?;
            if src.has_moments() {
                self.m[u] = b.upload_acc(&plan.read_shard(src, StatePart::ExpAvg, u)?)?;
                self.v[u] = b.upload_acc(&plan.read_shard(src, StatePart::ExpAvgSq, u)?)?;
            } else {
                b.fill_zero_acc(Dst::all(&mut self.m[u]))?;
                b.fill_zero_acc(Dst::all(&mut self.v[u]))?;
            }
        }
        Ok(())
    }

    /// Hands `f` the owned ranges of `owner` (a plan over the same units whose owned ranges lie
    /// inside this one's), one unit at a time, downloaded to the host.
    pub fn for_each_owned(
        &self,
        b: &B,
        plan: &ShardPlan,
        owner: &ShardPlan,
        f: &mut dyn FnMut(OwnedShard) -> Result<()>,
    ) -> Result<()> {
        for u in 0..plan.units.len() {
            let want = owner.own_data(u);
            if want.is_empty() {
                continue;
            }
            let held = plan.own(u);
            assert!(
                held.start <= want.start && want.end <= held.end,
                "unit {u}: owned range {want:?} outside the held {held:?}"
            );
            let off = want.start - held.start;
            let host = |x: &B::Acc| b.download_acc(Src::range(x, off, want.len()));
            let (master, m, v) = (host(&self.master[u])?, host(&self.m[u])?, host(&self.v[u])?);
            f(OwnedShard {
                unit: u,
                range: want,
                master: &master,
                exp_avg: &m,
                exp_avg_sq: &v,
            })?;
        }
        Ok(())
    }
}

/// Stages 1-2: each rank casts its master shards into its own blocks of the full compute copy,
/// then the copy is all-gathered in place ((N-1)/N · P·Ψp bytes per rank).
pub fn refresh_full_weights<B: Collectives>(
    b: &B,
    plan: &ShardPlan,
    dp: &dyn Comm,
    adam: &ShardedAdam<B>,
    weights: &mut [B::Act],
) -> Result<()> {
    for (u, w) in weights.iter_mut().enumerate() {
        if plan.padded[u] == 0 {
            continue; // a unit this rank does not hold (another pipeline stage's)
        }
        let own = plan.own(u);
        b.acc_to_act(
            Src::all(&adam.master[u]),
            Dst::range(w, own.start, own.len()),
        )?;
        b.all_gather_act_in_place(dp, w)?;
    }
    Ok(())
}

/// The global gradient norm from this rank's Σ g² and the clip factor (PyTorch's
/// clip_grad_norm_: min(1, max_norm / (norm + 1e-6))). The partial sums are added over the dp
/// group when the ranks hold different shards (`over_dp`; stage 0's full gradients are the same
/// on every dp rank) and always over the model-parallel group.
pub fn global_norm(
    groups: &EngineGroups,
    local_sq: f64,
    over_dp: bool,
    cfg: &StepConfig,
) -> Result<(f64, f64)> {
    let mut s = [local_sq];
    if over_dp {
        groups
            .dp
            .all_reduce((&mut s[..]).into(), ferrotron_parallel::ReduceOp::Sum)
            .map_err(comm_err)?;
    }
    groups
        .model_parallel
        .all_reduce((&mut s[..]).into(), ferrotron_parallel::ReduceOp::Sum)
        .map_err(comm_err)?;
    let norm = s[0].sqrt();
    let factor = match cfg.clip_norm {
        Some(c) => (c / (norm + 1e-6)).min(1.0),
        None => 1.0,
    };
    Ok((norm, factor))
}

/// Sums every `GradSum` over its group in the gradient buffers this rank holds: `grads[u]` holds
/// unit coordinates `held(u).0`, the first of them at buffer position `held(u).1`.
pub fn apply_grad_sums<B: Collectives>(
    b: &B,
    sums: &[GradSum],
    grads: &mut [B::Acc],
    held: impl Fn(usize) -> (Range<usize>, usize),
) -> Result<()> {
    for s in sums {
        let (range, at) = held(s.unit);
        let (lo, hi) = (s.range.start.max(range.start), s.range.end.min(range.end));
        if lo < hi {
            let dst = Dst::range(&mut grads[s.unit], at + lo - range.start, hi - lo);
            b.all_reduce_sum_acc(s.group.as_ref(), dst)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Region;

    fn unit(name: &str, regions: &[(usize, bool)]) -> UnitMeta {
        let mut at = 0;
        let regions = regions
            .iter()
            .map(|&(len, decay)| {
                let r = Region {
                    offset: at,
                    len,
                    decay,
                    counted: true,
                };
                at += len;
                r
            })
            .collect();
        UnitMeta {
            name: name.into(),
            numel: at,
            sparse_grad: false,
            regions,
        }
    }

    #[test]
    fn shards_pad_the_last_rank_and_split_regions() {
        // 7 elements: a matrix of 5 (decay) and a norm of 2 (no decay), over 4 ranks: padded 8.
        let units = vec![unit("u", &[(5, true), (2, false)])];
        let plans: Vec<ShardPlan> = (0..4)
            .map(|r| ShardPlan::new(units.clone(), 4, r).unwrap())
            .collect();
        assert_eq!(plans[0].padded, vec![8]);
        assert_eq!(plans[1].pieces(0), vec![(0, 2, true)]);
        assert_eq!(plans[2].pieces(0), vec![(0, 1, true), (1, 1, false)]);
        assert_eq!(plans[3].pieces(0), vec![(0, 1, false)]); // the padding element is in no piece
        assert_eq!(
            plans.iter().map(|p| p.own_padding()).collect::<Vec<_>>(),
            vec![0, 0, 0, 1]
        );
        assert_eq!(plans[3].own_data(0), 6..7);
        let full = vec![vec![1., 2., 3., 4., 5., 6., 7.]];
        let src = crate::source::UnitWeights(&full);
        assert_eq!(
            plans[3].read_shard(&src, StatePart::Master, 0).unwrap(),
            vec![7.0, 0.0]
        );
    }

    #[test]
    fn replicas_stay_out_of_the_norm_pieces() {
        // A matrix (counted) and a replicated norm weight another rank counts.
        let mut units = vec![unit("u", &[(5, true), (3, false)])];
        units[0].regions[1].counted = false;
        let plans: Vec<ShardPlan> = (0..2)
            .map(|r| ShardPlan::new(units.clone(), 2, r).unwrap())
            .collect();
        assert_eq!(plans[0].norm_pieces(0), vec![(0, 4)]);
        assert_eq!(plans[1].norm_pieces(0), vec![(0, 1)]);
        assert_eq!(plans[1].pieces(0), vec![(0, 1, true), (1, 3, false)]);
    }

    #[test]
    fn regions_that_do_not_tile_a_unit_are_rejected() {
        let mut u = unit("block.0", &[(4, true)]);
        u.numel = 5;
        let e = ShardPlan::new(vec![u], 2, 0).unwrap_err().to_string();
        assert!(e.contains("block.0: regions cover 4 of 5 elements"), "{e}");
        assert!(ShardPlan::new(vec![], 2, 2).is_err());
    }
}
