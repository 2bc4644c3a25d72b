//! `ferrotron sample MODEL --prompt TEXT [--max-new-tokens N] [--temperature T] [--top-k K]
//! [--seed S]`: text generation on the CPU backend, to look at what a model learned.
//!
//! MODEL is a HF model directory (an export, or any HF checkpoint with tokenizer files), a
//! checkpoint step directory, or a checkpoint root (its newest step). The prompt is encoded with
//! the tokenizer's special tokens (a Llama-style BOS is added); an empty prompt starts from BOS
//! (or EOS, as GPT-2 does). Each new token recomputes the full forward over the sequence so far
//! (no KV cache), truncated to the model's last `max_positions` tokens. Temperature 0 (or top-k 1)
//! is greedy: the first index of the largest logit. Otherwise logits / T over the top-k ids
//! (k = 0: all) are softmaxed and sampled with ChaCha8 seeded by `seed`, so a seed reproduces a
//! sample exactly. Generation stops at EOS (the tokenizer's, and every eos id of the model's
//! generation_config.json or config.json; not printed) or after `max_new_tokens`.

use crate::checkpoint;
use crate::error::Result;
use crate::model::{HostBatch, ModelConfig, ParamStore, ResidentStore, Transformer};
use crate::tokenizer::Tokenizer;
use crate::user;
use ferrotron_kernels::cpu::CpuBackend;
use ferrotron_kernels::Backend;
use ferrotron_parallel::{NoTp, TpComm};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};

/// How to pick tokens.
#[derive(Clone, Debug, PartialEq)]
pub struct SampleOptions {
    pub max_new_tokens: usize,
    /// 0: greedy.
    pub temperature: f32,
    /// Sample among the k most likely ids (0: all).
    pub top_k: usize,
    pub seed: u64,
}

impl Default for SampleOptions {
    fn default() -> Self {
        SampleOptions {
            max_new_tokens: 64,
            temperature: 0.0,
            top_k: 0,
            seed: 0,
        }
    }
}

/// Command-line arguments of `ferrotron sample`.
#[derive(clap::Args, Debug)]
pub struct SampleArgs {
    /// A HF model directory, a checkpoint step directory, or a checkpoint root.
    pub model: PathBuf,
    /// Text to continue.
    #[arg(long)]
    pub prompt: String,
    /// Stop after this many new tokens (or at EOS).
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: usize,
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Sample among the K most likely tokens (0 = all).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Seed of the sampling RNG (ChaCha8): a seed reproduces a sample.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// A model ready to sample from.
pub struct LoadedModel {
    pub model: Transformer,
    pub weights: Vec<Vec<f32>>,
    pub tokenizer: Tokenizer,
}

/// Runs `ferrotron sample`: prints the prompt and its continuation.
pub fn run_cli(args: &SampleArgs) -> Result<i32> {
    let m = load_model(&args.model)?;
    let opts = SampleOptions {
        max_new_tokens: args.max_new_tokens,
        temperature: args.temperature,
        top_k: args.top_k,
        seed: args.seed,
    };
    let text = generate(&m.model, &m.weights, &m.tokenizer, &args.prompt, &opts)?;
    crate::outln!("{}{}", args.prompt, text);
    Ok(0)
}

/// Loads MODEL (see the module comment): config, f32 weights and tokenizer.
pub fn load_model(path: &Path) -> Result<LoadedModel> {
    if !path.exists() {
        return Err(user!("model directory {} does not exist", path.display()));
    }
    let dir = if path.join("config.json").is_file() {
        path.to_path_buf()
    } else if checkpoint::latest(path)?.is_some() {
        checkpoint::resolve(path)?
    } else {
        return Err(user!(
            "{} is not a model: it holds no config.json and no step-* checkpoint directory",
            path.display()
        ));
    };
    let cfg = ModelConfig::from_file(&dir.join("config.json"))?;
    crate::train::preflight::check_weights_fit(&cfg, &dir.join("config.json"))?;
    let model = Transformer::new(cfg);
    let weights = checkpoint::open_weights(&dir, &model.cfg, &model.layout)?
        .read_all(ferrotron_zero::StatePart::Master)?;
    let tokenizer = Tokenizer::from_dir(&dir)?;
    Ok(LoadedModel {
        model,
        weights,
        tokenizer,
    })
}

/// The continuation of `prompt` (text only, without the prompt and without EOS).
pub fn generate(
    model: &Transformer,
    weights: &[Vec<f32>],
    tokenizer: &Tokenizer,
    prompt: &str,
    opts: &SampleOptions,
) -> Result<String> {
    let b = CpuBackend::<f32>::new();
    let mut store = resident(&b, weights)?;
    generate_with(&b, model, &mut store, &NoTp, tokenizer, prompt, opts)
}

/// Every unit's weights resident on `b` (no gradients: inference only).
fn resident<B: Backend>(b: &B, weights: &[Vec<f32>]) -> Result<ResidentStore<B>> {
    Ok(ResidentStore {
        weights: weights
            .iter()
            .map(|u| b.upload_act(u))
            .collect::<ferrotron_kernels::Result<_>>()?,
        grads: weights
            .iter()
            .map(|_| b.zeros_acc(0))
            .collect::<ferrotron_kernels::Result<_>>()?,
    })
}

/// `generate` through any parameter store and tensor-parallel group (e.g. a ZeRO engine: every
/// rank of its groups must call it, with the same arguments; each gets the same text).
#[allow(clippy::too_many_arguments)]
pub fn generate_with<B: Backend, S: ParamStore<B> + ?Sized>(
    b: &B,
    model: &Transformer,
    store: &mut S,
    tp: &dyn TpComm<B>,
    tokenizer: &Tokenizer,
    prompt: &str,
    opts: &SampleOptions,
) -> Result<String> {
    let logits_of = |window: &[u32]| last_logits(b, model, store, tp, window);
    generate_by(&model.cfg, tokenizer, prompt, opts, logits_of)
}

/// `generate_with` with the last position's logits of a window of ids from `logits_of` (a
/// pipeline computes them over several ranks).
pub fn generate_by(
    cfg: &ModelConfig,
    tokenizer: &Tokenizer,
    prompt: &str,
    opts: &SampleOptions,
    logits_of: impl FnMut(&[u32]) -> Result<Vec<f32>>,
) -> Result<String> {
    let mut ids = tokenizer.encode_with_special(prompt, true)?;
    if ids.is_empty() {
        let start = tokenizer
            .bos_id()
            .or(tokenizer.eos_id())
            .or(cfg.bos_token_id);
        ids.push(start.ok_or_else(|| {
            user!("the prompt is empty and the tokenizer has no BOS or EOS token to start from")
        })?);
    }
    let vocab = cfg.vocab_size;
    if let Some(&bad) = ids.iter().find(|&&t| t as usize >= vocab) {
        let tok = tokenizer.id_to_token(bad).unwrap_or_default();
        return Err(user!(
            "the prompt has token {bad} ({tok:?}), outside the model's vocabulary of {vocab} ids"
        ));
    }
    // the tokenizer's eos and every stop id the model declares (generation_config.json's list)
    let mut stop: Vec<u32> = tokenizer.eos_id().into_iter().collect();
    stop.extend(crate::hf_files::eos_ids(cfg));
    stop.dedup();
    let new = generate_ids_by(cfg.max_positions, &ids, &stop, opts, logits_of)?;
    let body: Vec<u32> = new.iter().copied().filter(|t| !stop.contains(t)).collect();
    let prefix = tokenizer.decode(&ids)?;
    let full = tokenizer.decode(&[ids.as_slice(), body.as_slice()].concat())?;
    match full.strip_prefix(&prefix) {
        Some(rest) => Ok(rest.to_string()),
        None => tokenizer.decode(&body),
    }
}

/// Generates up to `opts.max_new_tokens` ids after `prompt`; stops after an id in `stop` (which
/// is included in the result). `weights` holds one f32 buffer per unit of `model.layout`.
pub fn generate_ids(
    model: &Transformer,
    weights: &[Vec<f32>],
    prompt: &[u32],
    stop: &[u32],
    opts: &SampleOptions,
) -> Result<Vec<u32>> {
    let b = CpuBackend::<f32>::new();
    let mut store = resident(&b, weights)?;
    generate_ids_with(&b, model, &mut store, &NoTp, prompt, stop, opts)
}

/// `generate_ids` through any parameter store and tensor-parallel group.
pub fn generate_ids_with<B: Backend, S: ParamStore<B> + ?Sized>(
    b: &B,
    model: &Transformer,
    store: &mut S,
    tp: &dyn TpComm<B>,
    prompt: &[u32],
    stop: &[u32],
    opts: &SampleOptions,
) -> Result<Vec<u32>> {
    let logits_of = |window: &[u32]| last_logits(b, model, store, tp, window);
    generate_ids_by(model.cfg.max_positions, prompt, stop, opts, logits_of)
}

/// `generate_ids_with` over the last `max_positions` ids, with logits from `logits_of`.
pub fn generate_ids_by(
    max_positions: usize,
    prompt: &[u32],
    stop: &[u32],
    opts: &SampleOptions,
    mut logits_of: impl FnMut(&[u32]) -> Result<Vec<f32>>,
) -> Result<Vec<u32>> {
    if !(opts.temperature >= 0.0 && opts.temperature.is_finite()) {
        return Err(user!(
            "--temperature must be a finite number >= 0, got {}",
            opts.temperature
        ));
    }
    if prompt.is_empty() {
        return Err(user!("the prompt has no tokens"));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let mut seq: Vec<u32> = prompt.to_vec();
    let mut out = Vec::new();
    for _ in 0..opts.max_new_tokens {
        let window = &seq[seq.len().saturating_sub(max_positions)..];
        let logits = logits_of(window)?;
        let next = pick(&logits, opts.temperature, opts.top_k, &mut rng);
        seq.push(next);
        out.push(next);
        if stop.contains(&next) {
            break;
        }
    }
    Ok(out)
}

/// Logits [V] at the last position of `ids` (one sequence, positions from 0).
pub fn last_logits<B: Backend, S: ParamStore<B> + ?Sized>(
    b: &B,
    model: &Transformer,
    store: &mut S,
    tp: &dyn TpComm<B>,
    ids: &[u32],
) -> Result<Vec<f32>> {
    let n = ids.len();
    let ids32: Vec<i32> = ids.iter().map(|&t| t as i32).collect();
    let host = HostBatch::from_rows(&ids32, &vec![-100; n], 1, n);
    let batch = model.upload_batch(b, &host)?;
    let fwd = model.forward_tp(b, store, &batch, tp)?;
    let mut logits = Vec::with_capacity(n * model.cfg.vocab_size);
    model.head_tp(b, store, &batch, &fwd, None, Some(&mut logits), tp)?;
    let v = model.cfg.vocab_size;
    Ok(logits[(n - 1) * v..n * v].to_vec())
}

/// Picks the next id from `logits` (see the module comment).
pub fn pick(logits: &[f32], temperature: f32, top_k: usize, rng: &mut ChaCha8Rng) -> u32 {
    if temperature == 0.0 || top_k == 1 {
        return argmax(logits);
    }
    let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
    if top_k > 0 && top_k < idx.len() {
        idx.select_nth_unstable_by(top_k - 1, |&a, &b| {
            logits[b as usize].total_cmp(&logits[a as usize])
        });
        idx.truncate(top_k);
        idx.sort_unstable();
    }
    let max = idx
        .iter()
        .map(|&i| logits[i as usize])
        .fold(f32::NEG_INFINITY, f32::max);
    let w: Vec<f64> = idx
        .iter()
        .map(|&i| (((logits[i as usize] - max) / temperature) as f64).exp())
        .collect();
    let mut u = rng.random::<f64>() * w.iter().sum::<f64>();
    for (&i, &wi) in idx.iter().zip(&w) {
        if u < wi {
            return i;
        }
        u -= wi;
    }
    *idx.last().expect("logits are not empty")
}

/// The first index of the largest value.
pub fn argmax(xs: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in xs.iter().enumerate() {
        if x > xs[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pick_samples_the_softmax_of_the_top_k() {
        let logits = [0.0, 2f32.ln(), 4f32.ln(), 0.5];
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut counts = [0usize; 4];
        let n = 20_000;
        for _ in 0..n {
            counts[pick(&logits, 1.0, 2, &mut rng) as usize] += 1;
        }
        assert_eq!(
            (counts[0], counts[3]),
            (0, 0),
            "only the top 2 may be drawn"
        );
        let p2 = counts[2] as f64 / n as f64;
        assert!((p2 - 4.0 / 6.0).abs() < 0.02, "p(2) = {p2}");
        assert_eq!(pick(&logits, 0.0, 0, &mut rng), 2);
        assert_eq!(argmax(&[1.0, 3.0, 3.0]), 1, "ties go to the first index");
    }
}
