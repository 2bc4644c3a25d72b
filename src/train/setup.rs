//! Everything a training run builds before its first step: the process groups, tokenizer, data,
//! model and weights (HF import, random init, or a checkpoint to resume), the ZeRO engine, the
//! sampler; and what it does around steps: the memory table, checkpoints, samples.

use super::{comm_err, init::init_units};
use crate::checkpoint;
use crate::data::{self, Datasets, Sampler};
use crate::error::Result;
use crate::model::{hf_import::load_units, Arch, ModelConfig, ParamLayout, Transformer};
use crate::recipe::Recipe;
use crate::tokenizer::Tokenizer;
use crate::user;
use ferrotron_kernels::cuda::{device::device_count, CudaAct, CudaBackend};
use ferrotron_parallel::{env::DistEnv, init_world, Mesh, MeshComms, WorldOptions};
use ferrotron_zero::{build_engine, Collectives, Engine, Region, UnitMeta};
use serde_json::{json, Value};
use std::time::Duration;

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
    /// Sequences per forward/backward on one rank.
    pub micro_batch: usize,
    /// The last completed step (0 for a fresh run).
    pub start_step: u64,
    /// Tokens trained on up to `start_step` (from the checkpoint when resuming).
    pub start_tokens: u64,
}

/// Per-unit regions with the weight-decay rule of the recipe.
pub fn unit_metas(layout: &ParamLayout, decay_everything: bool) -> Vec<UnitMeta> {
    layout
        .units
        .iter()
        .map(|u| UnitMeta {
            name: u.name(),
            numel: u.numel,
            regions: u
                .tensors
                .iter()
                .map(|t| Region {
                    offset: t.offset,
                    len: t.numel(),
                    decay: decay_everything || t.role.decays_by_default(),
                })
                .collect(),
        })
        .collect()
}

/// The CUDA backend of this rank: GPU `LOCAL_RANK mod device count`. With NCCL, more local ranks
/// than GPUs is rejected (NCCL refuses two ranks on one GPU).
pub fn open_gpu<A: CudaAct>(recipe: &Recipe, dist: &DistEnv) -> Result<CudaBackend<A>> {
    let gpus = device_count().map_err(|e| user!("train.device = \"cuda\": {e}"))?;
    if gpus == 0 {
        return Err(user!(
            "train.device = \"cuda\" but no CUDA device is visible"
        ));
    }
    let local = dist.local_world_size.unwrap_or(1);
    if recipe.parallel.gpu_comm == "nccl" && local > gpus {
        return Err(user!(
            "{local} ranks on this node share {gpus} GPU(s) and NCCL refuses two ranks on one GPU: set parallel.gpu_comm = \"host-staged\" or start one rank per GPU"
        ));
    }
    let b = CudaBackend::<A>::new(dist.local_rank % gpus)
        .map_err(|e| user!("train.device = \"cuda\": {e}"))?;
    Ok(b)
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
        let options = WorldOptions {
            collective_timeout: Duration::from_secs_f64(p.collective_timeout_s),
            ..WorldOptions::default()
        };
        let world = init_world(dist, &options).map_err(comm_err)?;
        let mesh = Mesh::with_inferred_dp(world.size(), p.pp, p.tp).map_err(|e| user!("{e}"))?;
        let mut comms = MeshComms::build(world, mesh).map_err(comm_err)?;
        if recipe.train.device == "cuda" && p.gpu_comm == "nccl" {
            comms.dp = b.nccl_group(comms.dp.clone())?;
        }
        let rank0 = comms.world.rank() == 0;
        let dp = comms.dp.size();

        // Model config and starting weights.
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

        // Batch arithmetic.
        let t = &recipe.train;
        if t.global_batch % dp != 0 {
            return Err(user!(
                "train.global_batch = {} does not divide over {dp} data-parallel ranks",
                t.global_batch
            ));
        }
        let per_rank = t.global_batch / dp;
        let micro_batch = t.micro_batch.unwrap_or(per_rank);
        if per_rank % micro_batch != 0 {
            return Err(user!(
                "train.micro_batch = {micro_batch} does not divide the {per_rank} sequences each rank gets per step"
            ));
        }

        let model = Transformer::new(cfg).with_recompute(t.activation_checkpointing == "full");
        let units = match &weights_dir {
            Some(dir) => super::finite::checked(
                load_units(dir, &model.cfg, &model.layout)?,
                &model.layout,
                dir,
            )?,
            None => init_units(&model.cfg, &model.layout, recipe.model.init_std, t.seed),
        };
        let metas = unit_metas(&model.layout, recipe.optim.decay_norms_and_biases);
        let mut engine = build_engine(p.zero_stage, b, comms.dp.clone(), metas, &units)?;
        drop(units);

        let mut sampler = Sampler::new(data.train.len(), t.seed)?;
        let (mut start_step, mut start_tokens) = (0, 0);
        let ckpt_root = recipe.checkpoint_dir();
        if resume {
            match checkpoint::latest(&ckpt_root)? {
                None => {
                    if rank0 {
                        eprintln!(
                            "note: --resume: no checkpoint in {} yet, starting from step 0",
                            ckpt_root.display()
                        );
                    }
                }
                Some(dir) => {
                    let (state, trainer) = checkpoint::load(&dir, &model.cfg, &model.layout)?;
                    engine.load_full_state(b, &state)?;
                    let r = super::resume::from_trainer_state(
                        &dir,
                        &trainer,
                        &recipe,
                        data.train.len(),
                        rank0,
                    )?;
                    (start_step, start_tokens, sampler) = (r.step, r.tokens, r.sampler);
                    if rank0 {
                        eprintln!("resuming from {} (step {start_step})", dir.display());
                    }
                }
            }
        }

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
            micro_batch,
            start_step,
            start_tokens,
        };
        if s.rank0 {
            s.print_plan();
        }
        Ok(s)
    }

    fn print_plan(&self) {
        let t = &self.recipe.train;
        let dp = self.comms.dp.size();
        let params = self.model.layout.num_params();
        let accum = t.global_batch / dp / self.micro_batch;
        let c = &self.model.cfg;
        // fp32 master + compute copy + gradient + two Adam moments, before ZeRO sharding.
        let state_bytes = params as f64 * 20.0;
        // Activations forward keeps for backward, per micro-batch (exact; the working memory of
        // one block and the head's logits chunk come on top).
        let (act, acc) = self
            .model
            .activation_elements(self.micro_batch * self.seq_len);
        let act_bytes = (act as u64 * B::ACT_BYTES + acc as u64 * B::ACC_BYTES) as f64;
        println!(
            "ferrotron train: {} ({} layers, d={}, {} heads), {:.2} M parameters",
            c.model_type,
            c.layers,
            c.hidden,
            c.heads,
            params as f64 / 1e6
        );
        let device = if t.device == "cuda" {
            let comm = match self.comms.dp.nccl() {
                Some(_) => "nccl",
                None => "host-staged",
            };
            format!("cuda ({}), gpu comm {comm}", self.recipe.precision())
        } else {
            format!("cpu ({})", self.recipe.precision())
        };
        println!(
            "  world {} = pp {} x dp {dp} x tp {}; ZeRO stage {}; device {device}",
            self.comms.world.size(),
            self.recipe.parallel.pp,
            self.recipe.parallel.tp,
            self.recipe.parallel.zero_stage,
        );
        println!(
            "  global batch {} sequences x {} tokens = {} tokens/step; micro-batch {} per rank, {} accumulation step(s)",
            t.global_batch,
            self.seq_len,
            t.global_batch * self.seq_len,
            self.micro_batch,
            accum
        );
        println!(
            "  model FLOPs per token: {:.3e} (6 x {} matmul parameters + 12 x layers x d x seq_len)",
            self.model.flops_per_token(self.seq_len),
            self.model.matmul_params()
        );
        println!(
            "  estimated memory per rank: model state {} (before sharding), activations kept for backward {} per micro-batch (activation checkpointing: {})",
            binary_units(state_bytes),
            binary_units(act_bytes),
            t.activation_checkpointing
        );
        println!("  {}", self.data.stats.summary());
        println!("  {} steps from step {}", t.steps, self.start_step);
    }

    /// Every rank's model-state bytes; rank 0 prints the table. Returns the JSON rows.
    pub fn memory_table(&self) -> Result<Value> {
        let m = self.engine.memory();
        let mine = [
            m.parameters as f64,
            m.gradients as f64,
            m.optimizer_states as f64,
            m.gathered_peak as f64,
            m.padding as f64,
        ];
        let world = &self.comms.world;
        let mut all = vec![0.0f64; mine.len() * world.size()];
        world
            .all_gather((&mine[..]).into(), (&mut all[..]).into())
            .map_err(comm_err)?;
        let rows: Vec<Value> = all
            .chunks(mine.len())
            .enumerate()
            .map(|(r, v)| {
                json!({"rank": r, "parameters": v[0], "gradients": v[1], "optimizer_states": v[2], "gathered_peak": v[3], "padding": v[4]})
            })
            .collect();
        if self.rank0 {
            println!(
                "  model-state bytes per rank (ZeRO stage {}):",
                self.engine.stage()
            );
            println!("    rank   parameters    gradients  optim states  gathered peak  padding");
            for v in all.chunks(mine.len()).enumerate() {
                let (r, v) = v;
                println!(
                    "    {r:4} {:12.0} {:12.0} {:13.0} {:14.0} {:8.0}",
                    v[0], v[1], v[2], v[3], v[4]
                );
            }
        }
        Ok(Value::Array(rows))
    }

    /// Saves a checkpoint (collective: every rank contributes its shards; rank 0 writes).
    pub fn save_checkpoint(&mut self, b: &B, step: u64, tokens: u64) -> Result<()> {
        let state = self.engine.full_state(b)?;
        if self.rank0 {
            let trainer = json!({
                "step": step,
                "tokens": tokens,
                "sampler": self.sampler.state(),
                "seed": self.recipe.train.seed,
                "recipe": serde_json::to_value(&self.recipe).unwrap_or(Value::Null),
            });
            let ck = &self.recipe.checkpoint;
            let dir = checkpoint::save(
                &self.recipe.checkpoint_dir(),
                step,
                &self.model.cfg,
                &self.model.layout,
                &state,
                &self.tokenizer,
                &trainer,
                ck.keep_last,
            )?;
            println!("step {step}: checkpoint {}", dir.display());
        }
        self.comms.world.barrier().map_err(comm_err)
    }

    /// Prints a sample from the current weights, if the recipe sets a prompt. Collective (every
    /// rank gathers the weights); rank 0 generates and prints.
    pub fn print_sample(&mut self, b: &B) -> Result<()> {
        let Some(prompt) = self.recipe.train.sample_prompt.clone() else {
            return Ok(());
        };
        let state = self.engine.full_state(b)?;
        if !self.rank0 {
            return Ok(());
        }
        let opts = crate::sample::SampleOptions {
            max_new_tokens: self.recipe.train.sample_tokens,
            ..Default::default()
        };
        let text =
            crate::sample::generate(&self.model, &state.master, &self.tokenizer, &prompt, &opts)?;
        println!("sample: {prompt}{text}");
        Ok(())
    }
}

/// A byte count in the largest binary unit that keeps it at least 1 (1536 → "1.5 KiB").
pub(super) fn binary_units(bytes: f64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut v = bytes;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{v:.0} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn byte_counts_read_in_binary_units() {
        assert_eq!(super::binary_units(512.0), "512 B");
        assert_eq!(super::binary_units(1536.0), "1.5 KiB");
        assert_eq!(super::binary_units(3.0 * 1048576.0), "3.0 MiB");
        assert_eq!(super::binary_units(24.8e9), "23.1 GiB");
    }
}
