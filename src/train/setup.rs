//! Everything a training run builds before its first step, in order: the process groups, the
//! model config and tokenizer, the data, the batch split, the starting state (checkpoint, HF
//! weights or random init) and the ZeRO engine filled from it, the sampler. The jobs live in
//! their own files: groups.rs, batching.rs, weights.rs, checkpointing.rs, plan.rs, sampling.rs.

use super::batching::{self, BatchPlan};
use super::pipeline::Pipeline;
use super::weights::{engine_groups, engine_metas, Start};
use crate::data::{self, Datasets, Sampler};
use crate::error::Result;
use crate::model::{ModelConfig, TpShape, Transformer};
use crate::recipe::Recipe;
use crate::tokenizer::Tokenizer;
use crate::user;
use ferrotron_parallel::MeshComms;
use ferrotron_parallel::TpGroup;
use ferrotron_zero::{Collectives, Engine};

pub struct Setup<B: ferrotron_kernels::Backend> {
    pub recipe: Recipe,
    pub comms: MeshComms,
    /// The tensor-parallel group as the model calls it.
    pub tp: TpGroup,
    pub rank0: bool,
    pub tokenizer: Tokenizer,
    pub data: Datasets,
    pub model: Transformer,
    pub engine: Box<dyn Engine<B>>,
    pub sampler: Sampler,
    pub seq_len: usize,
    pub batch: BatchPlan,
    /// Sequences per forward/backward on one rank (`batch.micro_batch`).
    pub micro_batch: usize,
    /// The last completed step (0 for a fresh run).
    pub start_step: u64,
    /// Tokens trained on before `start_step`.
    pub start_tokens: u64,
    /// The spike guard's running mean at `start_step` (resumed runs).
    pub start_loss_mean: Option<f64>,
    /// This rank's pipeline stage (None when `parallel.pp` = 1).
    pub pipeline: Option<Pipeline>,
}

impl<B: Collectives + 'static> Setup<B> {
    /// `comms`: this rank's process groups (`groups::open`).
    pub fn new(b: &B, recipe: Recipe, resume: bool, comms: MeshComms) -> Result<Self> {
        let p = &recipe.parallel;
        let rank0 = comms.world.rank() == 0;
        let dp = comms.dp.size();

        // Model config and tokenizer.
        let (cfg, weights_dir) = match (&recipe.model.hf_dir, &recipe.model.config) {
            (Some(dir), _) => (
                ModelConfig::from_file(&dir.join("config.json"))?,
                Some(dir.clone()),
            ),
            (None, Some(path)) => (ModelConfig::from_file(path)?, None),
            (None, None) => unreachable!("validated by Recipe"),
        };
        if rank0 {
            for note in &cfg.notes {
                crate::errln!("note: {note}");
            }
        }
        let tok_dir = recipe.data.tokenizer.clone().or_else(|| weights_dir.clone()).ok_or_else(|| {
            user!("set `data.tokenizer` (a directory with tokenizer.json or encoder.json + vocab.bpe)")
        })?;
        let tokenizer = Tokenizer::from_dir(&tok_dir)?;
        if tokenizer.vocab_size() > cfg.vocab_size {
            return Err(user!(
                "the tokenizer in {} has {} tokens but the model's vocab_size is {}",
                tok_dir.display(),
                tokenizer.vocab_size(),
                cfg.vocab_size
            ));
        }

        // Data and the batch split.
        let seq_len = recipe.data.seq_len.unwrap_or(cfg.max_positions.min(1024));
        cfg.check_sequence_length(seq_len)
            .map_err(|e| user!("data.seq_len = {seq_len}: {e}"))?;
        let data = data::load(&recipe.data, &tokenizer, seq_len)?;
        if data.train.is_empty() {
            return Err(user!(
                "the training data yields no rows of {seq_len} tokens"
            ));
        }
        let batch = batching::plan(&recipe, dp)?;
        batching::check_sequence_split(&recipe, seq_len)?;

        // This rank's slices of the model, the starting state and the engine filled from it.
        let t = &recipe.train;
        let tp_shape = TpShape {
            size: comms.tp.size(),
            rank: comms.tp.rank(),
            sequence_parallel: p.sequence_parallel,
        };
        let cfg_file = weights_dir
            .as_ref()
            .map(|d| d.join("config.json"))
            .or_else(|| recipe.model.config.clone())
            .unwrap_or_default();
        let model = Transformer::with_tp(cfg, tp_shape)
            .map_err(|e| user!("{}: {e}", cfg_file.display()))?
            .with_recompute(t.activation_checkpointing == "full");
        let pipeline = Pipeline::new(b, &recipe, &comms, &model, batch.microbatches)?;
        let start = Start::pick(&recipe, resume, &model, weights_dir.as_deref(), rank0)?;
        let mut groups = engine_groups(&comms, &model);
        let mut metas = engine_metas(&model, recipe.optim.decay_norms_and_biases);
        if let Some(pp) = &pipeline {
            metas = pp.unit_metas(&model.layout, metas);
            pp.add_grad_sums(&mut groups, &model.layout);
        }
        let mut engine = start.build_engine(b, &recipe, groups, metas)?;
        if let Start::Pretrained(_) = &start {
            let dir = weights_dir
                .as_deref()
                .expect("pretrained weights have a directory");
            super::finite::check_engine(b, &mut *engine, &model.layout, &*comms.world, dir)?;
        }
        let mut sampler = Sampler::new(data.train.len(), t.seed)?;
        let (mut start_step, mut start_tokens, mut start_loss_mean) = (0, 0, None);
        if let Start::Resume { dir, trainer, .. } = &start {
            let r =
                super::resume::from_trainer_state(dir, trainer, &recipe, data.train.len(), rank0)?;
            (start_step, start_tokens, sampler) = (r.step, r.tokens, r.sampler);
            start_loss_mean = r.loss_mean;
            if rank0 {
                crate::errln!("resuming from {} (step {start_step})", dir.display());
            }
        }
        drop(start);

        let s = Setup {
            recipe,
            tp: TpGroup {
                comm: comms.tp.clone(),
            },
            comms,
            rank0,
            tokenizer,
            data,
            model,
            engine,
            sampler,
            seq_len,
            micro_batch: batch.micro_batch,
            batch,
            start_step,
            start_tokens,
            start_loss_mean,
            pipeline,
        };
        if s.rank0 {
            s.print_plan();
        }
        Ok(s)
    }
}
