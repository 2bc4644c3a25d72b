//! Where a run's starting state comes from, and the ZeRO engine built from it: a checkpoint to
//! resume (master weights, both moments, the trainer's state), HF weights (`model.hf_dir`, which
//! may also be a ferrotron checkpoint), or counter-based random init. The engine asks the source
//! for exactly the ranges it keeps, so no rank ever reads or draws the whole model.

use super::init::InitSource;
use crate::checkpoint;
use crate::error::{Error, Result};
use crate::model::{ParamLayout, TensorSpec, Transformer, UnitKind};
use crate::recipe::Recipe;
use crate::tensorfile::LayoutSource;
use ferrotron_parallel::MeshComms;
use ferrotron_zero::{
    build_engine, Collectives, Engine, EngineGroups, GradSum, Region, StateSource, UnitMeta,
};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The state a run starts from.
pub enum Start {
    /// A checkpoint of this run (`--resume`).
    Resume {
        dir: PathBuf,
        source: LayoutSource,
        /// The trainer's opaque state saved with it.
        trainer: Value,
    },
    /// Pretrained weights (HF directory or checkpoint); AdamW moments start at zero.
    Pretrained(LayoutSource),
    /// Random init.
    Init(InitSource),
}

impl Start {
    /// Picks the source: the newest checkpoint when resuming and one exists, else the recipe's
    /// model. Nothing is read yet beyond headers and indexes.
    pub fn pick(
        recipe: &Recipe,
        resume: bool,
        model: &Transformer,
        weights_dir: Option<&Path>,
        rank0: bool,
    ) -> Result<Self> {
        if resume {
            let root = recipe.checkpoint_dir();
            match checkpoint::latest(&root)? {
                Some(dir) => {
                    let (source, trainer) =
                        checkpoint::open_state(&dir, &model.cfg, &model.layout)?;
                    return Ok(Start::Resume {
                        dir,
                        source,
                        trainer,
                    });
                }
                None if rank0 => crate::errln!(
                    "note: --resume: no checkpoint in {} yet, starting from step 0",
                    root.display()
                ),
                None => {}
            }
        }
        Ok(match weights_dir {
            Some(dir) => {
                Start::Pretrained(checkpoint::open_weights(dir, &model.cfg, &model.layout)?)
            }
            None => Start::Init(InitSource::new(
                &model.cfg,
                &model.layout,
                recipe.model.init_std,
                recipe.train.seed,
            )),
        })
    }

    fn source(&self) -> &dyn StateSource {
        match self {
            Start::Resume { source, .. } | Start::Pretrained(source) => source,
            Start::Init(s) => s,
        }
    }

    /// A failure of the engine's reads, as the source's own error when it has one (which
    /// names the file and tensor, and is the user's to fix).
    fn explain(&self, e: ferrotron_kernels::Error) -> Error {
        match self {
            Start::Resume { source, .. } | Start::Pretrained(source) => source.explain(e.into()),
            Start::Init(_) => e.into(),
        }
    }

    /// The ZeRO engine of `recipe.parallel.zero_stage` over `groups` for the units `metas`
    /// (`engine_metas`, or a pipeline stage's part of them), filled from this source.
    pub fn build_engine<B: Collectives + 'static>(
        &self,
        b: &B,
        recipe: &Recipe,
        groups: EngineGroups,
        metas: Vec<UnitMeta>,
    ) -> Result<Box<dyn Engine<B>>> {
        build_engine(recipe.parallel.zero_stage, b, groups, metas, self.source())
            .map_err(|e| self.explain(e))
    }
}

/// The engine's groups: ZeRO over dp, the norm also summed over the model-parallel ranks, and
/// the replicated tensors whose gradients are partial sums over the tp group
/// (model/tensor_parallel.rs) summed there.
pub fn engine_groups(comms: &MeshComms, model: &Transformer) -> EngineGroups {
    let mut groups = EngineGroups::data_parallel(comms.dp.clone());
    groups.model_parallel = comms.mp.clone();
    for (u, unit) in model.layout.units.iter().enumerate() {
        for t in &unit.tensors {
            if model.tp.grad_summed_over_tp(model.cfg.arch, t.role) {
                groups.grad_sums.push(GradSum {
                    unit: u,
                    range: t.offset..t.offset + t.numel(),
                    group: comms.tp.clone(),
                });
            }
        }
    }
    groups
}

/// Whether this rank writes (and counts in the gradient norm) tensor `t`: not when it is a
/// tensor-parallel replica another rank (tp rank 0) holds too.
pub fn writes_tensor(model: &Transformer, t: &TensorSpec) -> bool {
    model.tp.rank == 0 || !model.tp.replicates(model.cfg.arch, t.role)
}

/// This rank's per-unit regions: the recipe's weight-decay rule, and the norm counting what
/// this rank writes (`writes_tensor`).
pub fn engine_metas(model: &Transformer, decay_everything: bool) -> Vec<UnitMeta> {
    unit_metas_tp(&model.layout, decay_everything, &|t| {
        writes_tensor(model, t)
    })
}

/// Per-unit regions with the weight-decay rule of the recipe (one rank, every tensor counted).
pub fn unit_metas(layout: &ParamLayout, decay_everything: bool) -> Vec<UnitMeta> {
    unit_metas_tp(layout, decay_everything, &|_| true)
}

/// Per-unit regions; `counted` says which tensors this rank counts in the gradient norm.
fn unit_metas_tp(
    layout: &ParamLayout,
    decay_everything: bool,
    counted: &dyn Fn(&TensorSpec) -> bool,
) -> Vec<UnitMeta> {
    // An untied token embedding's gradient is written at the batch's rows only (a tied one is
    // also the head's, written whole).
    let untied = layout.unit_of(UnitKind::Head).is_some();
    layout
        .units
        .iter()
        .map(|u| UnitMeta {
            name: u.name(),
            numel: u.numel,
            sparse_grad: untied && u.kind == UnitKind::Embedding,
            regions: u
                .tensors
                .iter()
                .map(|t| Region {
                    offset: t.offset,
                    len: t.numel(),
                    decay: decay_everything || t.role.decays_by_default(),
                    counted: counted(t),
                })
                .collect(),
        })
        .collect()
}
