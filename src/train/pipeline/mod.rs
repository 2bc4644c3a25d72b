//! Pipeline parallelism in the trainer (`parallel.pp` > 1): this rank's stage of the model, and
//! how its units, ZeRO engine and checkpoint part follow from it.
//!
//! - Stages: `StageSplit` (src/model/stages.rs) cuts the blocks into pp × pp_virtual_stages
//!   chunks; this rank (pp coordinate r) runs chunks r, r + p, …, holds their units, and
//!   gives the engine every other unit with numel 0 (ZeRO shards and steps only what it holds).
//! - Schedule: `parallel.pp_schedule` over m = `BatchPlan::microbatches` micro-batches, run by
//!   the executor of parallel/src/pipeline (`step.rs`); evaluation and samples run a
//!   forward-only pipeline (`forward.rs`, always tagged host messages).
//! - Point-to-point (`parallel.pp_p2p`): "auto" sends boundary tensors device to device in
//!   NCCL groups when the run is on CUDA with `gpu_comm = "nccl"` and the schedule runs over
//!   NCCL's grouped, tagless calls (`check_grouped`: every schedule does; GPipe, 1F1B and ZB-H1
//!   with their own lists, interleaved with its messages placed in lock-step rounds,
//!   parallel/src/pipeline/rounds.rs); "grouped" asks for the grouped calls everywhere (over
//!   MPI/TCP on the CPU) and is refused for a schedule they cannot run; "tagged" keeps tagged
//!   host messages.
//! - Tied embeddings: the last stage holds a copy of the embedding unit for the output
//!   projection. Both copies start from the same source and get the same update: the table's
//!   gradient is summed over the embedding group {first stage, last stage} before the norm
//!   (`GradSum`, as Megatron's embedding group does), counted in the norm on the first stage
//!   only, and only the first stage writes it to checkpoints (so exports hold it once).
//! - The gradient norm's partial sums are added over the model-parallel group (`MeshComms::mp`,
//!   the pp × tp ranks of one dp coordinate): every logical element enters once.
//! - Composition with ZeRO over dp: each stage's engine shards its own units over its dp group
//!   and keeps the stage's meaning per micro-batch: ZeRO-3 gathers a unit for each use and frees
//!   it after (per micro-batch: every block twice, forward and backward, the embedding and the
//!   head once), ZeRO-2 and -3 reduce-scatter each unit's gradient after each micro-batch's
//!   backward, ZeRO-1 reduce-scatters and all-gathers the stage once per step. Keeping the
//!   stage gathered for the step (torchtitan's FSDP + PP) is what ZeRO-1 already is in volume
//!   and peak memory; docs/design.md has the measured figures.
//! - Tensor (and sequence) parallelism is another group inside a stage: the boundary
//!   activations are what the chunk's blocks produce on this rank (N/tp tokens with sequence
//!   parallelism, else all N on every tp rank), and the pp group, the embedding group and the
//!   mesh are formed per (dp, tp) coordinate.

mod forward;
pub mod memory;
mod step;

pub use step::metrics_record;

use super::comm_err;
use crate::error::Result;
use crate::model::{Holding, ParamLayout, Role, StageSplit, TensorSpec, Transformer};
use crate::recipe::Recipe;
use crate::user;
use ferrotron_parallel::pipeline::{check_grouped, Schedule, TimeModel};
use ferrotron_parallel::{Comm, MeshComms};
use ferrotron_zero::{Collectives, EngineGroups, GradSum, UnitMeta};
use std::sync::Arc;

/// `parallel.pp_p2p` for `schedule`: whether boundary tensors travel grouped, and the plan's
/// line saying how and why.
fn p2p_mode(recipe: &Recipe, schedule: &Schedule) -> Result<(bool, String)> {
    let p = &recipe.parallel;
    let device = recipe.train.device == "cuda";
    let nccl = recipe.uses_nccl();
    let safe = check_grouped(schedule);
    let grouped_how = if nccl {
        "NCCL send/recv groups, device to device in the compute precision"
    } else if device {
        "grouped point-to-point, host-staged as f32 over MPI/TCP"
    } else {
        "grouped point-to-point over MPI/TCP"
    };
    let tagged_how = if device {
        "tagged non-blocking messages, host-staged as f32 over MPI/TCP"
    } else {
        "tagged non-blocking messages over MPI/TCP"
    };
    let name = schedule.kind().name();
    Ok(match (p.pp_p2p.as_str(), safe) {
        ("grouped", Err(e)) => {
            return Err(user!(
                "parallel.pp_p2p = \"grouped\": the {name} schedule cannot run over grouped point-to-point ({e}); use parallel.pp_p2p = \"tagged\" or another parallel.pp_schedule"
            ))
        }
        ("grouped", Ok(())) => (true, format!("pipeline point-to-point: {grouped_how}")),
        ("tagged", _) => (false, format!("pipeline point-to-point: {tagged_how}")),
        (_, Ok(())) if nccl => (true, format!("pipeline point-to-point: {grouped_how}")),
        (_, Err(e)) if nccl => (
            false,
            format!(
                "pipeline point-to-point: {tagged_how}, because the {name} schedule cannot run over NCCL's grouped calls ({e})"
            ),
        ),
        _ => (false, format!("pipeline point-to-point: {tagged_how}")),
    })
}

/// This rank's part of the pipeline.
pub struct Pipeline {
    pub split: StageSplit,
    pub schedule: Schedule,
    /// The pipeline group: size p, group rank = stage (an NCCL group when boundary tensors go
    /// device to device).
    pub pp: Arc<dyn Comm>,
    /// Boundary tensors travel as NCCL-like groups of the backend's buffers (step.rs), else as
    /// tagged f32 host messages.
    pub grouped: bool,
    /// What the plan says about how they travel, and why.
    p2p_line: String,
    /// This rank's stage (its coordinate on the pp axis).
    pub rank: usize,
    /// Tied embeddings: the first and the last stage of this pp group (None elsewhere).
    pub embedding_group: Option<Arc<dyn Comm>>,
}

impl Pipeline {
    /// The pipeline of `recipe` over `comms`, or None when `parallel.pp` = 1 (after checking
    /// that the pipeline keys make sense there too). Collective over the pp group.
    pub fn new<B: Collectives>(
        b: &B,
        recipe: &Recipe,
        comms: &MeshComms,
        model: &Transformer,
        microbatches: usize,
    ) -> Result<Option<Pipeline>> {
        let p = &recipe.parallel;
        let (stages, v) = (comms.mesh.pp, p.pp_virtual_stages);
        let schedule =
            Schedule::new(&p.pp_schedule, stages, microbatches, v).map_err(|e| user!("{e}"))?;
        let layers = model.cfg.layers;
        let split =
            StageSplit::new(layers, stages, v, p.pp_layers.as_deref()).map_err(|e| user!("{e}"))?;
        if stages == 1 {
            return Ok(None);
        }
        let rank = comms.pp.rank();
        let mut embedding_group = None;
        if model.tied_head() {
            // A split of the pp group (every stage calls it): color 0 joins the ends.
            let ends = rank == 0 || rank == stages - 1;
            let name = format!("embedding(dp={},tp={})", comms.coords.dp, comms.coords.tp);
            let group = comms
                .pp
                .split(u32::from(!ends), rank as u32, &name)
                .map_err(comm_err)?;
            embedding_group = ends.then_some(group);
        }
        let (grouped, p2p_line) = p2p_mode(recipe, &schedule)?;
        let pp = if grouped && recipe.uses_nccl() {
            b.nccl_group(comms.pp.clone())?
        } else {
            comms.pp.clone()
        };
        Ok(Some(Pipeline {
            split,
            schedule,
            pp,
            grouped,
            p2p_line,
            rank,
            embedding_group,
        }))
    }

    /// How this rank holds unit `u`.
    pub fn holding(&self, layout: &ParamLayout, u: usize) -> Holding {
        self.split.holding(layout, self.rank, u)
    }

    /// Whether this rank holds a tied embedding's copy (the last stage).
    fn holds_copy(&self, layout: &ParamLayout) -> bool {
        self.holding(layout, 0) == Holding::TiedCopy
    }

    /// The engine's units on this rank: `all` (the whole model's) with the units of other
    /// stages emptied, and the tied copy kept out of the norm (its token table is counted on
    /// the first stage; GPT-2's position table rides along unused: no decay, so with its zero
    /// gradient it never moves).
    pub fn unit_metas(&self, layout: &ParamLayout, all: Vec<UnitMeta>) -> Vec<UnitMeta> {
        all.into_iter()
            .enumerate()
            .map(|(u, mut meta)| {
                match self.holding(layout, u) {
                    Holding::Own => {}
                    Holding::Absent => {
                        meta.numel = 0;
                        meta.regions.clear();
                    }
                    Holding::TiedCopy => {
                        for (region, t) in meta.regions.iter_mut().zip(&layout.units[u].tensors) {
                            region.counted = false;
                            region.decay &= t.role == Role::TokenEmbedding;
                        }
                    }
                }
                meta
            })
            .collect()
    }

    /// Adds the tied table's gradient sum over the embedding group to `groups` (ZeRO over dp,
    /// the norm over the model-parallel group and the tp sums are `weights::engine_groups`').
    pub fn add_grad_sums(&self, groups: &mut EngineGroups, layout: &ParamLayout) {
        if let Some(group) = &self.embedding_group {
            let t = layout.units[0].tensor(Role::TokenEmbedding);
            groups.grad_sums.push(GradSum {
                unit: 0,
                range: t.offset..t.offset + t.numel(),
                group: group.clone(),
            });
        }
    }

    /// Whether this rank writes tensor `t` to checkpoints: not the tied copy's.
    pub fn writes(&self, layout: &ParamLayout, t: &TensorSpec) -> bool {
        let embedding = matches!(t.role, Role::TokenEmbedding | Role::PositionEmbedding);
        !(embedding && self.holds_copy(layout))
    }

    /// This rank runs chunk 0 (the embedding).
    pub fn first(&self) -> bool {
        self.rank == 0
    }
    /// This rank runs the last chunk (the head).
    pub fn last(&self) -> bool {
        self.split.owner(self.split.last_chunk()) == self.rank
    }

    /// What the plan says about the pipeline: schedule, bubble, and per stage its units,
    /// parameters and the activations it keeps at its peak (`tokens` per micro-batch).
    pub fn describe(&self, model: &Transformer, tokens: usize, act_bytes: u64) -> Vec<String> {
        let s = &self.schedule;
        let t = TimeModel::default();
        let mut lines = vec![format!(
            "pipeline: schedule {} over {} stages, {} micro-batches per step, {} chunk(s) per rank; bubble (idle / compute) {:.3}",
            s.kind().name(),
            s.stages(),
            s.microbatches(),
            s.virtual_stages(),
            s.exact_bubble(&t) / s.ideal_time(&t)
        )];
        lines.push(format!("  {}", self.p2p_line));
        if self.split.is_uneven() {
            let counts: Vec<usize> = self.split.blocks.iter().map(|b| b.len()).collect();
            lines.push(format!(
                "  blocks per chunk {counts:?}: an uneven split (parallel.pp_layers sets it)"
            ));
        }
        let layout = &model.layout;
        for r in 0..s.stages() {
            let params: usize = (0..layout.units.len())
                .filter(|&u| self.split.holding(layout, r, u) != Holding::Absent)
                .map(|u| layout.units[u].numel)
                .sum();
            let chunk_act = self
                .split
                .chunks_of(r)
                .into_iter()
                .map(|c| {
                    model
                        .blocks_activation_elements(tokens, self.split.blocks[c].len())
                        .0
                })
                .max()
                .unwrap_or(0);
            let copy = if self.split.holding(layout, r, 0) == Holding::TiedCopy {
                " (+ the tied embedding's copy)"
            } else {
                ""
            };
            lines.push(format!(
                "  stage {r}: {}{copy}; {:.2} M parameters; up to {} (micro-batch, chunk) activations in flight, {}",
                self.split.describe(r),
                params as f64 / 1e6,
                s.expected_peak_in_flight(r),
                super::plan::binary_units(
                    (s.expected_peak_in_flight(r) * chunk_act) as f64 * act_bytes as f64
                )
            ));
        }
        lines
    }
}
