//! A run's checkpoints: the trainer state saved beside the model state, the distributed save
//! (every rank writes what its engine owns, one unit at a time), and the trainer state read back
//! on resume.

use super::setup::Setup;
use crate::checkpoint::{self, CheckpointMeta, OwnedState};
use crate::error::{Error, Result};
use ferrotron_zero::{Collectives, Engine, OwnedShard};
use serde_json::{json, Value};
use std::ops::Range;

/// An engine's owned state as the checkpoint writer sees it.
struct EngineState<'a, B: Collectives> {
    b: &'a B,
    engine: &'a mut dyn Engine<B>,
}

impl<B: Collectives> OwnedState for EngineState<'_, B> {
    fn owned_ranges(&self) -> Vec<Range<usize>> {
        self.engine.owned_ranges()
    }
    fn for_each_owned(&mut self, f: &mut dyn FnMut(OwnedShard) -> Result<()>) -> Result<()> {
        // The writer's errors (a full disk: the user's) travel through the engine as kernels
        // errors; keep the original to return.
        let mut failure: Option<Error> = None;
        let r = self.engine.for_each_owned(self.b, &mut |s| {
            f(s).map_err(|e| {
                let msg = e.to_string();
                failure = Some(e);
                ferrotron_kernels::Error::Unsupported(msg)
            })
        });
        match (r, failure) {
            (Ok(()), _) => Ok(()),
            (Err(_), Some(e)) => Err(e),
            (Err(e), None) => Err(e.into()),
        }
    }
}

impl<B: Collectives + 'static> Setup<B> {
    /// Saves a checkpoint: collective over the world, every rank writes its own part.
    /// `loss_mean`: the spike guard's running mean, kept for a resumed run.
    pub fn save_checkpoint(
        &mut self,
        b: &B,
        step: u64,
        tokens: u64,
        loss_mean: Option<f64>,
    ) -> Result<()> {
        let trainer = json!({
            "step": step,
            "tokens": tokens,
            "loss_mean": loss_mean,
            "sampler": self.sampler.state(),
            "seed": self.recipe.train.seed,
            "recipe": serde_json::to_value(&self.recipe).unwrap_or(Value::Null),
        });
        let meta = CheckpointMeta {
            cfg: &self.model.cfg,
            layout: &self.model.layout,
            tokenizer: &self.tokenizer,
            trainer_state: &trainer,
            keep_last: self.recipe.checkpoint.keep_last,
        };
        let started = std::time::Instant::now();
        let mut state = EngineState {
            b,
            engine: &mut *self.engine,
        };
        let dir = checkpoint::save_distributed(
            &*self.comms.world,
            &self.recipe.checkpoint_dir(),
            step,
            &meta,
            &mut state,
            &|t| {
                let layout = &self.model.layout;
                super::weights::writes_tensor(&self.model, t)
                    && self.pipeline.as_ref().is_none_or(|p| p.writes(layout, t))
            },
        )?;
        if self.rank0 {
            crate::outln!(
                "step {step}: checkpoint {} ({:.2} s)",
                dir.display(),
                started.elapsed().as_secs_f64()
            );
        }
        Ok(())
    }
}
