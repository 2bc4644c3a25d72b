//! The sample a run prints (`train.sample_prompt`): generated through the engine itself, so no
//! rank gathers the whole model; every rank runs the same forwards (ZeRO-3 gathers are
//! collective) and gets the same tokens, rank 0 prints them.

use super::setup::Setup;
use crate::error::Result;
use crate::sample::{generate_by, generate_with, SampleOptions};
use ferrotron_zero::Collectives;

impl<B: Collectives + 'static> Setup<B> {
    /// Prints a sample from the current weights, if the recipe sets a prompt. Collective.
    pub fn print_sample(&mut self, b: &B) -> Result<()> {
        let Some(prompt) = self.recipe.train.sample_prompt.clone() else {
            return Ok(());
        };
        let opts = SampleOptions {
            max_new_tokens: self.recipe.train.sample_tokens,
            ..Default::default()
        };
        // A sample's sequences have any length: with sequence parallelism it runs without.
        let plain;
        let model = if self.model.tp.sequence_parallel {
            plain = self.model.without_sequence_parallel();
            &plain
        } else {
            &self.model
        };
        let (engine, tp) = (&mut *self.engine, &self.tp);
        let text = match &self.pipeline {
            Some(p) => {
                let logits_of = |window: &[u32]| p.last_logits(b, model, engine, tp, window);
                generate_by(&model.cfg, &self.tokenizer, &prompt, &opts, logits_of)?
            }
            None => generate_with(b, model, engine, tp, &self.tokenizer, &prompt, &opts)?,
        };
        if self.rank0 {
            crate::outln!("sample: {prompt}{text}");
        }
        Ok(())
    }
}
