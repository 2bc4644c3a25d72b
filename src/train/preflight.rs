//! Preflight: before any allocation, the memory a rank will need is compared with what the
//! machine has, and a run that cannot fit stops with one sentence naming the figure and the key
//! to change (instead of "memory allocation of N bytes failed" and SIGABRT minutes later).
//!
//! Per rank, with P the parameters one rank holds (its tensor-parallel slices: block matrices
//! 1/tp, ⌈V/tp⌉ vocabulary rows, norms whole), N = dp = world/(tp·pp) ranks, w/g the compute-weight/gradient element bytes of
//! the backend and 12 = fp32 master + Adam m + v:
//!   model state   stage 0: P(w + g + 12)        stage 1: P(w + g) + 12P/N
//!                 stage 2: Pw + (g + 12)P/N + U·g      stage 3: (w + g + 12)P/N + U(2w + g)
//!                 (U = the largest unit: gathered/in-flight buffers of stages 2-3)
//!   activations   what forward keeps for one micro-batch (`Transformer::activation_elements`)
//!                 + the head's logits chunk and a few N·D working buffers
//!   pipeline      with parallel.pp > 1, N = world / (pp·tp), P and the activations are each
//!                 stage's (train/pipeline/memory.rs: its units; the schedule's peak of
//!                 micro-batches in flight × its largest chunk's activations), every stage checked
//!   transients    12U/N on the host: a rank reads its state unit by unit at start (init, HF
//!                 weights or a checkpoint fill only its own ranges) and writes its owned part
//!                 of one unit at a time to checkpoints (master, m, v of U/N elements); samples
//!                 run through the engine. No step ever needs the full model on one rank.
//! Peak per rank = model state + max(activations, transients). On the CPU the whole peak is host
//! memory; on CUDA the model state and activations are device memory, the transients host memory.
//! Host memory available: MemAvailable (/proc/meminfo), lowered to the cgroup's remaining limit;
//! the need is multiplied by the ranks on this host. Device: the GPU's free memory (CUDA), times
//! the ranks that share one GPU.
//!
//! A coarse f64 count of P runs first, so absurd config.json sizes (n_embd = 1e9, vocab_size =
//! 1e12, n_layer = 1e6) are rejected before the parameter layout is even built.

use super::pipeline::memory::{stage_shares, StageShare};
use super::plan::binary_units as bytes;
use crate::error::Result;
use crate::model::{Arch, ModelConfig, TpShape, Transformer};
use crate::recipe::Recipe;
use crate::user;
use ferrotron_parallel::env::DistEnv;
use std::path::{Path, PathBuf};

/// Memory available to this process's ranks, and where the figure comes from.
#[derive(Clone, Debug, PartialEq)]
pub struct Avail {
    pub bytes: u64,
    pub source: String,
}

/// Host memory this process may still use: MemAvailable, lowered to a cgroup v2 limit's
/// remainder. None where /proc/meminfo cannot be read (no check then).
pub fn host_available() -> Option<Avail> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let mut avail = Avail {
        bytes: kib * 1024,
        source: "MemAvailable in /proc/meminfo".into(),
    };
    let read = |f: &str| -> Option<u64> {
        std::fs::read_to_string(format!("/sys/fs/cgroup/{f}"))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    if let (Some(max), Some(current)) = (read("memory.max"), read("memory.current")) {
        let left = max.saturating_sub(current);
        if left < avail.bytes {
            avail = Avail {
                bytes: left,
                source: "the cgroup's memory.max less memory.current".into(),
            };
        }
    }
    Some(avail)
}

/// What the check needs to know about the backend.
#[derive(Clone, Debug)]
pub struct Device {
    /// Bytes per compute weight / activation element, and per gradient element.
    pub act_bytes: u64,
    pub acc_bytes: u64,
    /// The GPU's free memory (None on the CPU: everything is host memory).
    pub gpu: Option<Avail>,
    /// Ranks of this host sharing one GPU.
    pub ranks_per_gpu: u64,
    /// The model reads a whole master as its compute weights (`Backend::acc_as_act`: the CPU),
    /// so ZeRO-0 keeps no compute copy.
    pub aliases_master: bool,
    /// `Backend::LOGITS_CHUNK_ELEMS`: the head's logits chunk.
    pub logits_chunk_elems: u64,
    /// `Backend::LOGITS_ROW_ALIGN`: a single rank's logits rows are padded to it.
    pub logits_row_align: u64,
}

impl Device {
    /// A CPU backend: everything in host memory.
    pub fn cpu<B: ferrotron_zero::Collectives>() -> Device {
        Device {
            act_bytes: B::ACT_BYTES,
            acc_bytes: B::ACC_BYTES,
            gpu: None,
            ranks_per_gpu: 1,
            aliases_master: B::acc_as_act(&[]).is_some(),
            logits_chunk_elems: B::LOGITS_CHUNK_ELEMS as u64,
            logits_row_align: B::LOGITS_ROW_ALIGN as u64,
        }
    }

    /// The CUDA backend `b`: its GPU's free memory, shared by the local ranks mapped onto it
    /// (rank `LOCAL_RANK mod device count`, see `setup::open_gpu`).
    pub fn cuda<A: ferrotron_kernels::cuda::CudaAct>(
        b: &ferrotron_kernels::cuda::CudaBackend<A>,
        dist: &DistEnv,
    ) -> Result<Device> {
        use ferrotron_zero::Collectives;
        let gpus = ferrotron_kernels::cuda::device::device_count()
            .map_err(|e| user!("train.device = \"cuda\": {e}"))?
            .max(1);
        let (free, _total) = b.context().mem_get_info().map_err(|e| {
            user!("train.device = \"cuda\": cannot read the GPU's free memory: {e:?}")
        })?;
        let local = dist.local_world_size.unwrap_or(1).max(1);
        Ok(Device {
            act_bytes: <ferrotron_kernels::cuda::CudaBackend<A> as Collectives>::ACT_BYTES,
            acc_bytes: <ferrotron_kernels::cuda::CudaBackend<A> as Collectives>::ACC_BYTES,
            gpu: Some(Avail {
                bytes: free as u64,
                source: format!("free on CUDA device {}", dist.local_rank % gpus),
            }),
            ranks_per_gpu: local.div_ceil(gpus) as u64,
            aliases_master: false,
            logits_chunk_elems: <ferrotron_kernels::cuda::CudaBackend<A> as ferrotron_kernels::Backend>::LOGITS_CHUNK_ELEMS as u64,
            logits_row_align: <ferrotron_kernels::cuda::CudaBackend<A> as ferrotron_kernels::Backend>::LOGITS_ROW_ALIGN as u64,
        })
    }
}

/// The model config a recipe trains (`model.hf_dir`/config.json or `model.config`), with the
/// numbers the math divides by or takes roots of checked (a negative epsilon or rotary base
/// would only show up as a non-finite loss at step 1).
pub fn recipe_model_config(recipe: &Recipe) -> Result<(ModelConfig, PathBuf)> {
    let path = match (&recipe.model.hf_dir, &recipe.model.config) {
        (Some(dir), _) => dir.join("config.json"),
        (None, Some(path)) => path.clone(),
        (None, None) => return Err(user!("set `model.hf_dir` or `model.config`")),
    };
    let cfg = ModelConfig::from_file(&path)?;
    let (eps_key, positions_key) = match cfg.arch {
        Arch::Gpt2 => ("layer_norm_epsilon", "n_positions"),
        Arch::Llama => ("rms_norm_eps", "max_position_embeddings"),
    };
    let mut checks = vec![(eps_key, cfg.norm_eps)];
    if cfg.arch == Arch::Llama {
        checks.push(("rope_theta", cfg.rope_theta));
    }
    for (key, v) in checks {
        if !(v.is_finite() && v > 0.0) {
            return Err(user!(
                "{}: `{key}` must be a positive number, found {v:?}",
                path.display()
            ));
        }
    }
    if recipe.data.seq_len.is_none() && cfg.max_positions < 2 {
        return Err(user!(
            "{}: `{positions_key}` = {} leaves no room for a training sequence; set data.seq_len or fix it",
            path.display(),
            cfg.max_positions
        ));
    }
    Ok((cfg, path))
}

/// Stops the run when this rank's planned memory does not fit (see the top of the file).
pub fn check(recipe: &Recipe, dist: &DistEnv, dev: &Device, host: Option<Avail>) -> Result<()> {
    let (cfg, cfg_path) = recipe_model_config(recipe)?;
    let p = &recipe.parallel;
    let tp = p.tp.max(1);
    let dp = (dist.world_size.max(1) / (tp * p.pp.max(1))).max(1) as f64;
    let seq = recipe.data.seq_len.unwrap_or(cfg.max_positions.min(1024)) as f64;
    let t = &recipe.train;
    let per_rank = (t.global_batch as f64 / dp).ceil();
    let micro = match (t.micro_batch, p.microbatches) {
        (Some(m), _) => m as f64,
        (None, Some(m)) => (per_rank / m.max(1) as f64).ceil().max(1.0),
        (None, None) => per_rank,
    };
    let microbatches = (per_rank / micro).ceil().max(1.0) as usize;
    let tokens = (micro * seq) as usize;
    let local = dist.local_world_size.unwrap_or(1).max(1) as f64;
    let plan = Plan {
        recipe,
        cfg: &cfg,
        cfg_file: cfg_path.display().to_string(),
        dp,
        tp: tp as f64,
        seq,
        micro,
        dev,
    };
    // Coarse first: f64 counts, no layout built.
    // Every pipeline stage's share (the whole model without a pipeline), per tp rank.
    let model_params = coarse_params(&cfg) / tp as f64;
    for mut share in stage_shares(recipe, &cfg, None, tokens, microbatches)? {
        share.params /= tp as f64;
        let coarse = plan.need(&share, model_params);
        plan.compare(&coarse, local, host.as_ref())?;
    }
    if host.is_none() && dev.gpu.is_none() {
        return Ok(()); // nothing to compare with
    }
    // Exact: the layout's parameter counts (tp rank 0's slices) and the model's own activation
    // formula.
    let shape = TpShape {
        size: tp,
        rank: 0,
        sequence_parallel: p.sequence_parallel,
    };
    let model = Transformer::with_tp(cfg.clone(), shape)
        .map_err(|e| user!("{}: {e}", cfg_path.display()))?
        .with_recompute(t.activation_checkpointing == "full");
    let model_params = model.layout.num_params() as f64;
    for share in stage_shares(recipe, &cfg, Some(&model), tokens, microbatches)? {
        let exact = plan.need(&share, model_params);
        plan.compare(&exact, local, host.as_ref())?;
    }
    Ok(())
}

/// For inference on the host (`ferrotron sample`): the f32 weights (4 bytes per parameter,
/// counted from the config before anything is allocated) must fit in the host's memory.
pub fn check_weights_fit(cfg: &ModelConfig, cfg_file: &Path) -> Result<()> {
    let Some(host) = host_available() else {
        return Ok(());
    };
    let need = 4.0 * coarse_params(cfg);
    if need <= host.bytes as f64 {
        return Ok(());
    }
    let (v, d, l) = config_keys(cfg.arch);
    Err(user!(
        "{}: the model's f32 weights need {} ({:.3e} parameters) but this host has {} available ({}); {v} = {}, {d} = {}, {l} = {}",
        cfg_file.display(),
        bytes(need),
        coarse_params(cfg),
        bytes(host.bytes as f64),
        host.source,
        cfg.vocab_size,
        cfg.hidden,
        cfg.layers
    ))
}

/// The config.json keys of vocabulary size, hidden size and layers for `arch`.
fn config_keys(arch: Arch) -> (&'static str, &'static str, &'static str) {
    match arch {
        Arch::Gpt2 => ("vocab_size", "n_embd", "n_layer"),
        Arch::Llama => ("vocab_size", "hidden_size", "num_hidden_layers"),
    }
}

/// P counted from the config in f64: embeddings, and per block the attention and MLP matrices.
fn coarse_params(c: &ModelConfig) -> f64 {
    let (d, v, f) = (c.hidden as f64, c.vocab_size as f64, c.ffn as f64);
    let (qd, kvd) = (
        (c.heads as f64) * (c.head_dim as f64),
        (c.kv_heads as f64) * (c.head_dim as f64),
    );
    let mlp = if c.arch == Arch::Llama { 3.0 } else { 2.0 };
    let positions = if c.arch == Arch::Gpt2 {
        c.max_positions as f64 * d
    } else {
        0.0
    };
    let head = if c.tie_embeddings { 0.0 } else { v * d };
    v * d + positions + head + c.layers as f64 * (d * (2.0 * qd + 2.0 * kvd) + mlp * d * f)
}

struct Plan<'a> {
    recipe: &'a Recipe,
    cfg: &'a ModelConfig,
    cfg_file: String,
    dp: f64,
    tp: f64,
    seq: f64,
    micro: f64,
    dev: &'a Device,
}

/// Bytes per rank by kind.
struct Need {
    /// The pipeline stage these are for (None without a pipeline).
    stage: Option<usize>,
    params: f64,
    state: f64,
    activations: f64,
    transient: f64,
}

impl Plan<'_> {
    /// What one rank of `share`'s stage needs; `model_params` (this tp rank's slices of the
    /// whole model) sizes the largest unit.
    fn need(&self, share: &StageShare, model_params: f64) -> Need {
        let c = self.cfg;
        let (w, g) = (self.dev.act_bytes as f64, self.dev.acc_bytes as f64);
        let (p, n) = (share.params, self.dp);
        let d = c.hidden as f64;
        let table = (c.vocab_size as f64 / self.tp).ceil() * d;
        let largest_unit = table.max((model_params - table) / c.layers as f64);
        let state = match self.recipe.parallel.zero_stage {
            0 if self.dev.aliases_master => p * (g + 12.0),
            0 => p * (w + g + 12.0),
            1 => p * (w + g) + 12.0 * p / n,
            2 => p * w + (g + 12.0) * p / n + largest_unit * g,
            _ => (w + g + 12.0) * p / n + largest_unit * (2.0 * w + g),
        };
        let tokens = self.micro * self.seq;
        let kept = share.act * w + share.acc * g;
        use crate::model::transformer::{logits_row_width, HEAD_PREPARED_MAX_ELEMS};
        let head_chunk = (tokens * c.vocab_size as f64).min(self.dev.logits_chunk_elems as f64);
        // W_head prepared twice (forward and dx) when small (model/transformer/head.rs)
        let prepared = match table <= HEAD_PREPARED_MAX_ELEMS as f64 {
            true => 2.0 * table,
            false => 0.0,
        };
        // a single rank's padded head rows: W_head and its gradient copied padded, and the
        // chunk's gradient in a buffer of its own (model/transformer/head.rs `head_aligned`)
        let width = logits_row_width(c.vocab_size, self.dev.logits_row_align as usize);
        let padded_head = match self.tp == 1.0 && width != c.vocab_size {
            true => width as f64 * d * (w + g) + head_chunk * w,
            false => 0.0,
        };
        let activations =
            kept + (2.0 * head_chunk + prepared) * w + 4.0 * tokens * d * w + padded_head;
        let transient = 12.0 * largest_unit / n;
        Need {
            stage: share.stage,
            params: p,
            state,
            activations,
            transient,
        }
    }

    fn compare(&self, need: &Need, local: f64, host: Option<&Avail>) -> Result<()> {
        match &self.dev.gpu {
            None => {
                let per_rank = need.state + need.activations.max(need.transient);
                if let Some(h) = host {
                    self.fits(need, per_rank, local, h, "this host")?;
                }
            }
            Some(gpu) => {
                let per_rank = need.state + need.activations;
                self.fits(
                    need,
                    per_rank,
                    self.dev.ranks_per_gpu as f64,
                    gpu,
                    "the GPU",
                )?;
                if let Some(h) = host {
                    self.fits(need, need.transient, local, h, "this host")?;
                }
            }
        }
        Ok(())
    }

    fn fits(&self, need: &Need, per_rank: f64, ranks: f64, avail: &Avail, on: &str) -> Result<()> {
        let total = per_rank * ranks;
        if total <= avail.bytes as f64 {
            return Ok(());
        }
        let ranks_text = if ranks > 1.0 {
            format!(" x {ranks} ranks on {on} = {}", bytes(total))
        } else {
            String::new()
        };
        let stage = need
            .stage
            .map(|s| format!(" of pipeline stage {s}"))
            .unwrap_or_default();
        Err(user!(
            "the planned memory per rank{stage} is {} (model state {} for {:.3e} parameters at ZeRO stage {}, activations {} for a micro-batch of {} x {} tokens, checkpoint/start-up copies {}){ranks_text}, but {on} has {} available ({}); {}",
            bytes(per_rank),
            bytes(need.state),
            need.params,
            self.recipe.parallel.zero_stage,
            bytes(need.activations),
            self.micro,
            self.seq,
            bytes(need.transient),
            bytes(avail.bytes as f64),
            avail.source,
            self.advice(need, avail.bytes as f64 / ranks)
        ))
    }

    /// Which key to change: the model state alone over this rank's share `share` calls for
    /// sharding or a smaller model; otherwise the larger of activations and transients decides.
    fn advice(&self, need: &Need, share: f64) -> String {
        let r = self.recipe;
        if need.state <= share && need.activations >= need.transient {
            let micro_key = if r.train.micro_batch.is_some() {
                "train.micro_batch"
            } else {
                "train.micro_batch (default: train.global_batch / dp)"
            };
            let recompute = if r.train.activation_checkpointing == "full" {
                String::new()
            } else {
                ", or set train.activation_checkpointing = \"full\"".into()
            };
            return format!(
                "lower {micro_key} (now {}) or data.seq_len (now {}){recompute}",
                self.micro, self.seq
            );
        }
        if need.state <= share {
            return "checkpoints and samples gather the full fp32 state (12 bytes per parameter) on every rank: use a smaller model, more memory, or checkpoint.enabled = false for a throwaway run".into();
        }
        if r.parallel.zero_stage < 3 && self.dp > 1.0 {
            return format!(
                "raise parallel.zero_stage (now {}) to shard the model state over the {} ranks, or use a smaller model",
                r.parallel.zero_stage, self.dp
            );
        }
        let c = self.cfg;
        let (v, d, l) = config_keys(c.arch);
        format!(
            "use a smaller model: {} has {v} = {}, {d} = {}, {l} = {}",
            self.cfg_file, c.vocab_size, c.hidden, c.layers
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recipe(cfg: &str, sets: &[&str]) -> (tempfile::TempDir, Recipe) {
        let dir = tempfile::tempdir().unwrap();
        let c = dir.path().join("c.json");
        std::fs::write(&c, cfg).unwrap();
        let text = format!(
            "[model]\nconfig = \"{}\"\n[data]\npath = \"x\"\nseq_len = 64\n[train]\nsteps = 1\nglobal_batch = 8\nout_dir = \"o\"\n",
            c.display()
        );
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        (dir, Recipe::parse(&text, "r.toml", &sets).unwrap())
    }

    const GPT: &str = r#"{"model_type": "gpt2", "vocab_size": 256, "n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 64}"#;

    fn cpu() -> Device {
        Device {
            act_bytes: 4,
            acc_bytes: 4,
            gpu: None,
            ranks_per_gpu: 1,
            aliases_master: true,
            logits_chunk_elems: 1 << 24,
            logits_row_align: 1,
        }
    }

    fn gib(n: u64) -> Option<Avail> {
        Some(Avail {
            bytes: n << 30,
            source: "test".into(),
        })
    }

    #[test]
    fn a_small_model_fits_and_absurd_sizes_name_the_config_keys() {
        let one = DistEnv::single();
        let (_d, r) = recipe(GPT, &[]);
        check(&r, &one, &cpu(), gib(1)).unwrap();
        for (key, value) in [
            ("n_embd", "1000000000"),
            ("vocab_size", "1000000000000"),
            ("n_layer", "1000000"),
        ] {
            let cfg = GPT.replace(
                &format!(
                    "\"{key}\": {}",
                    serde_json::from_str::<serde_json::Value>(GPT).unwrap()[key]
                ),
                &format!("\"{key}\": {value}"),
            );
            let (_d, r) = recipe(&cfg, &[]);
            let t = std::time::Instant::now();
            let e = check(&r, &one, &cpu(), gib(16)).unwrap_err().to_string();
            assert!(t.elapsed().as_secs_f64() < 1.0, "{key}: slow");
            assert!(
                e.contains(&format!("{key} = {value}")) && e.contains("16.0 GiB available"),
                "{e}"
            );
        }
    }

    #[test]
    fn tensor_parallel_ranks_plan_their_slices() {
        // ~1.3e9 parameters: 16 bytes each at ZeRO 0 (no compute copy on the CPU) do not fit 16 GiB,
        // a quarter of them does.
        let big = r#"{"model_type": "gpt2", "vocab_size": 50000, "n_embd": 2048, "n_layer": 24, "n_head": 16, "n_positions": 64}"#;
        let mut four = DistEnv::single();
        four.world_size = 4;
        let sets = ["checkpoint.enabled=false", "train.micro_batch=1"];
        let (_d, r) = recipe(big, &sets);
        assert!(check(&r, &four, &cpu(), gib(16)).is_err());
        let (_d, r) = recipe(big, &[&sets[..], &["parallel.tp=4"]].concat());
        check(&r, &four, &cpu(), gib(16)).unwrap();
        let (_d, r) = recipe(big, &[&sets[..], &["parallel.tp=3"]].concat());
        let e = check(&r, &four, &cpu(), gib(16)).unwrap_err().to_string();
        assert!(e.contains("divide"), "{e}");
    }

    #[test]
    fn the_key_to_change_follows_the_largest_term() {
        let one = DistEnv::single();
        let (_d, r) = recipe(GPT, &["train.global_batch=100000"]);
        let e = check(&r, &one, &cpu(), gib(1)).unwrap_err().to_string();
        assert!(e.contains("lower train.micro_batch"), "{e}");
        let big = r#"{"model_type": "gpt2", "vocab_size": 50000, "n_embd": 2048, "n_layer": 24, "n_head": 16, "n_positions": 64}"#;
        let mut four = DistEnv::single();
        four.world_size = 4;
        let (_d, r) = recipe(big, &["checkpoint.enabled=false", "train.micro_batch=1"]);
        let e = check(&r, &four, &cpu(), gib(16)).unwrap_err().to_string();
        assert!(e.contains("raise parallel.zero_stage (now 0)"), "{e}");
        let (_d, r) = recipe(
            big,
            &[
                "checkpoint.enabled=false",
                "parallel.zero_stage=3",
                "train.micro_batch=1",
            ],
        );
        check(&r, &four, &cpu(), gib(16)).unwrap();
        // Four ranks on one host need four times the memory.
        four.local_world_size = Some(4);
        let e = check(&r, &four, &cpu(), gib(16)).unwrap_err().to_string();
        assert!(e.contains("x 4 ranks on this host"), "{e}");
    }
}
