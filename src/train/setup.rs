//! Everything a training run builds before its first step, in order: the process groups, the
//! model config and tokenizer, the data, the batch split, the starting state (checkpoint, HF
//! weights or random init) and the ZeRO engine filled from it, the sampler. The jobs live in
//! their own files: groups.rs, batching.rs, weights.rs, checkpointing.rs, plan.rs, sampling.rs.

use super::batching::{self, BatchPlan};
use super::groups;
use super::weights::Start;
use crate::data::{self, Datasets, Sampler};
use crate::error::Result;
use crate::model::{Arch, ModelConfig, Transformer};
use crate::recipe::Recipe;
use crate::tokenizer::Tokenizer;
use crate::user;
use ferrotron_parallel::{env::DistEnv, MeshComms};
use ferrotron_zero::{Collectives, Engine, EngineGroups};

pub struct Setup<B: ferrotron_kernels::Backend> {
    pub recipe: Recipe,
    pub comms: MeshComms,
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
}

impl<B: Collectives + 'static> Setup<B> {
    /// `dist`: the launcher's view of this process (rank, world, local rank), read once by `train::run`.
    pub fn new(b: &B, recipe: Recipe, resume: bool, dist: &DistEnv) -> Result<Self> {
        let p = &recipe.parallel;
        if p.tp != 1 || p.pp != 1 {
            return Err(user!(
                "parallel.tp = {} and parallel.pp = {}: tensor and pipeline parallelism are not implemented in this build yet (use 1)",
                p.tp,
                p.pp
            ));
        }
        let comms = groups::open(b, &recipe, dist)?;
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
                eprintln!("note: {note}");
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
        if cfg.arch == Arch::Gpt2 && seq_len > cfg.max_positions {
            return Err(user!(
                "data.seq_len = {seq_len} exceeds the model's {} learned positions (n_positions)",
                cfg.max_positions
            ));
        }
        let data = data::load(&recipe.data, &tokenizer, seq_len)?;
        if data.train.is_empty() {
            return Err(user!(
                "the training data yields no rows of {seq_len} tokens"
            ));
        }
        let batch = batching::plan(&recipe, dp)?;

        // The starting state and the engine filled from it.
        let t = &recipe.train;
        let model = Transformer::new(cfg).with_recompute(t.activation_checkpointing == "full");
        let start = Start::pick(&recipe, resume, &model, weights_dir.as_deref(), rank0)?;
        let groups = EngineGroups::data_parallel(comms.dp.clone());
        let mut engine = start.build_engine(b, &recipe, groups, &model.layout)?;
        if let Start::Pretrained(_) = &start {
            let dir = weights_dir
                .as_deref()
                .expect("pretrained weights have a directory");
            super::finite::check_engine(b, &mut *engine, &model.layout, &*comms.world, dir)?;
        }
        let mut sampler = Sampler::new(data.train.len(), t.seed)?;
        let (mut start_step, mut start_tokens) = (0, 0);
        if let Start::Resume { dir, trainer, .. } = &start {
            let r =
                super::resume::from_trainer_state(dir, trainer, &recipe, data.train.len(), rank0)?;
            (start_step, start_tokens, sampler) = (r.step, r.tokens, r.sampler);
            if rank0 {
                eprintln!("resuming from {} (step {start_step})", dir.display());
            }
        }
        drop(start);

        let s = Setup {
            recipe,
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
        };
        if s.rank0 {
            s.print_plan();
        }
        Ok(s)
    }
}
