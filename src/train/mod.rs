//! `ferrotron train RECIPE.toml [--set k=v ...] [--resume]`: the training loop.
//!
//! Per optimizer step, on each data-parallel rank: take this rank's slice of the global batch
//! (the sampler draws the same global batch on every rank), run forward/backward per micro-batch
//! through the ZeRO engine's parameter store with dloss = 1 / (global target tokens), then let the
//! engine reduce, clip and step. The loss logged is the global mean over target tokens, so 1, 2
//! and 4 ranks with the same global batch log the same numbers.

mod batching;
mod checkpointing;
mod groups;
pub mod init;
pub mod metrics;
mod plan;
mod sampling;
pub mod schedule;
mod setup;
mod weights;

use crate::data::{eval_order, microbatches, rank_slice, Batch, Datasets};
use crate::error::{Error, Result};
use crate::model::{DeviceBatch, HostBatch, Transformer};
use crate::recipe::Recipe;
use crate::user;
use ferrotron_kernels::Backend;
use ferrotron_parallel::{Comm, OpKind, ReduceOp};
use ferrotron_zero::{Collectives, Engine, StepConfig};
use metrics::Metrics;
use serde_json::json;
use std::path::Path;
use std::time::Instant;

pub use setup::Setup;
pub use weights::unit_metas;

impl From<Batch> for HostBatch {
    fn from(b: Batch) -> Self {
        HostBatch {
            input_ids: b.input_ids,
            targets: b.targets,
            positions: b.positions,
            cu_seqlens: b.cu_seqlens,
        }
    }
}

pub(crate) fn comm_err(e: ferrotron_parallel::CommError) -> Error {
    Error::Internal(e.to_string())
}

/// Sum of `x` over the group (f64).
pub fn all_sum(comm: &dyn Comm, x: f64) -> Result<f64> {
    let mut v = [x];
    comm.all_reduce((&mut v[..]).into(), ReduceOp::Sum)
        .map_err(comm_err)?;
    Ok(v[0])
}

/// Runs the whole training; returns the exit code.
pub fn run(recipe_path: &Path, overrides: &[String], resume: bool) -> Result<i32> {
    let recipe = Recipe::load(recipe_path, overrides)?;
    if resume && !recipe.checkpoint.enabled {
        return Err(crate::user!(
            "{}: --resume needs checkpoints, and `checkpoint.enabled` = false turns them off",
            recipe_path.display()
        ));
    }
    let dist = ferrotron_parallel::env::detect_from_process().map_err(|e| crate::user!("{e}"))?;
    match (recipe.train.device.as_str(), recipe.precision()) {
        ("cuda", "bf16") => {
            let b = groups::open_gpu::<half::bf16>(&recipe, &dist)?;
            train(&b, recipe, resume, &dist)
        }
        ("cuda", _) => train(
            &groups::open_gpu::<f32>(&recipe, &dist)?,
            recipe,
            resume,
            &dist,
        ),
        _ => {
            let b =
                ferrotron_kernels::cpu::CpuBackend::<f32, ferrotron_kernels::cpu::Pooled>::pooled();
            train(&b, recipe, resume, &dist)
        }
    }
}

fn train<B: Collectives + 'static>(
    b: &B,
    recipe: Recipe,
    resume: bool,
    dist: &ferrotron_parallel::env::DistEnv,
) -> Result<i32> {
    let mut s = Setup::new(b, recipe, resume, dist)?;
    let r = s.recipe.clone();
    let (steps, global_batch, seq_len) = (r.train.steps, r.train.global_batch, s.seq_len);
    let mut m = if s.rank0 {
        Some(Metrics::open(
            &r.train.out_dir,
            resume,
            s.start_step,
            steps,
        )?)
    } else {
        None
    };
    let dp = s.comms.dp.clone();
    let flops_per_token = s.model.flops_per_token(seq_len);
    let mut tokens_seen = s.start_tokens;
    let started = Instant::now();
    let mut last_eval = None;
    for step in s.start_step + 1..=steps {
        let t0 = Instant::now();
        let global = s.sampler.next_global_batch(global_batch);
        let mine = rank_slice(&global, dp.rank(), dp.size())?;
        let batches: Vec<Batch> = microbatches(mine, s.micro_batch)?
            .into_iter()
            .map(|ids| s.data.train.batch(ids))
            .collect::<Result<_>>()?;
        let local_targets: usize = batches.iter().map(|b| b.n_target_tokens).sum();
        let global_targets = all_sum(&*dp, local_targets as f64)?;
        if global_targets == 0.0 {
            return Err(user!(
                "step {step}: the global batch holds no target tokens (every label is masked)"
            ));
        }
        let traffic_before = dp.counters().snapshot();
        s.engine.zero_grads(b)?;
        let mut loss_sum = 0.0;
        let mut saved_bytes = 0u64; // kept for backward, largest micro-batch (first step's record)
        for batch in batches {
            let dev = DeviceBatch::upload(b, &HostBatch::from(batch))?;
            let fwd = s.model.forward(b, &mut *s.engine, &dev)?;
            if step == s.start_step + 1 {
                let (act, acc) = fwd.saved_elements();
                saved_bytes =
                    saved_bytes.max(act as u64 * B::ACT_BYTES + acc as u64 * B::ACC_BYTES);
            }
            let (ls, dx) = s.model.head(
                b,
                &mut *s.engine,
                &dev,
                &fwd,
                Some(1.0 / global_targets),
                None,
            )?;
            s.model.backward(
                b,
                &mut *s.engine,
                &dev,
                &fwd,
                dx.expect("head returns dx with a grad scale"),
            )?;
            loss_sum += ls;
        }
        let lr = schedule::lr_at(&r.optim, step, steps);
        let o = &r.optim;
        let cfg = StepConfig {
            lr,
            beta1: o.beta1,
            beta2: o.beta2,
            eps: o.eps,
            weight_decay: o.weight_decay,
            clip_norm: (o.clip_norm > 0.0).then_some(o.clip_norm),
            step,
        };
        // The engine's traffic is measured around backward and step, excluding the loss sum.
        let traffic_backward = dp.counters().snapshot().since(&traffic_before);
        let loss = all_sum(&*dp, loss_sum)? / global_targets;
        if !loss.is_finite() {
            return Err(non_finite(
                step,
                "loss",
                loss,
                f64::NAN,
                &r.checkpoint_dir(),
            ));
        }
        let before_step = dp.counters().snapshot();
        let stats = s.engine.step(b, &cfg)?;
        let traffic_step = dp.counters().snapshot().since(&before_step);
        let sent = |k: OpKind| traffic_backward.op(k).bytes_sent + traffic_step.op(k).bytes_sent;
        if !stats.grad_norm.is_finite() {
            return Err(non_finite(
                step,
                "gradient norm",
                loss,
                stats.grad_norm,
                &r.checkpoint_dir(),
            ));
        }
        tokens_seen += (global_batch * seq_len) as u64;
        let dt = t0.elapsed().as_secs_f64();
        let tps = (global_batch * seq_len) as f64 / dt;
        // Model FLOPs per second per device (the MFU numerator; recomputation not counted).
        let tflops = tps * flops_per_token / s.comms.world.size() as f64 / 1e12;
        if let Some(m) = m.as_mut() {
            let mut rec = json!({
                "step": step, "loss": loss, "lr": lr, "grad_norm": stats.grad_norm, "tokens": tokens_seen,
                "tokens_per_s": tps, "tflops_per_device": tflops, "step_time_s": dt, "elapsed_s": started.elapsed().as_secs_f64(),
                "dp_bytes_sent": {
                    "all_reduce": sent(OpKind::AllReduce),
                    "reduce_scatter": sent(OpKind::ReduceScatter),
                    "all_gather": sent(OpKind::AllGather),
                },
            });
            if step == s.start_step + 1 {
                rec["memory"] = s.memory_table()?;
                rec["activations_bytes"] = json!(saved_bytes);
            }
            m.record(&rec)?;
            if step % r.train.log_every == 0 || step == steps {
                let ev = last_eval
                    .map(|e: f64| format!(" val {e:.4}"))
                    .unwrap_or_default();
                m.progress(step, &format!("step {step}/{steps} loss {loss:.4}{ev} lr {lr:.2e} gnorm {:.3} {tps:.0} tok/s", stats.grad_norm));
            }
        } else if step == s.start_step + 1 {
            s.memory_table()?;
        }
        let eval_now = r.train.eval_every > 0 && step % r.train.eval_every == 0;
        if eval_now || step == steps {
            let e = evaluate(
                b,
                &s.model,
                &mut *s.engine,
                &s.data,
                &*dp,
                s.micro_batch,
                r.train.eval_batches,
            )?;
            last_eval = e;
            if let (Some(m), Some(e)) = (m.as_mut(), e) {
                m.record(&json!({"step": step, "eval_loss": e}))?;
                m.println(&format!("step {step}: validation loss {e:.4}"));
            }
        }
        if r.train.sample_every > 0 && step % r.train.sample_every == 0 && step != steps {
            s.print_sample(b)?;
        }
        let ckpt_now = r.checkpoint.every > 0 && step % r.checkpoint.every == 0;
        if r.checkpoint.enabled && (ckpt_now || step == steps) {
            s.save_checkpoint(b, step, tokens_seen)?;
        }
    }
    if let Some(m) = &m {
        m.finish();
        println!(
            "trained {steps} steps, {tokens_seen} tokens in {:.1} s; final validation loss {}",
            started.elapsed().as_secs_f64(),
            last_eval
                .map(|e| format!("{e:.4}"))
                .unwrap_or_else(|| "n/a (no validation rows)".into())
        );
    }
    s.print_sample(b)?;
    Ok(0)
}

fn non_finite(step: u64, what: &str, loss: f64, gnorm: f64, ckpt: &Path) -> Error {
    user!(
        "step {step}: the {what} is not finite (loss {loss}, grad norm {gnorm}); training stopped before applying the update, the last good checkpoint in {} is kept",
        ckpt.display()
    )
}

/// Mean held-out loss over up to `max_batches` validation batches, split across the dp ranks.
pub fn evaluate<B: Backend>(
    b: &B,
    model: &Transformer,
    engine: &mut dyn Engine<B>,
    data: &Datasets,
    dp: &dyn Comm,
    rows: usize,
    max_batches: usize,
) -> Result<Option<f64>> {
    let order = eval_order(data.val.len(), rows, max_batches);
    if order.is_empty() {
        return Ok(None);
    }
    let (mut loss_sum, mut targets) = (0.0, 0.0);
    for (i, ids) in order.iter().enumerate() {
        if i % dp.size() != dp.rank() {
            continue;
        }
        let batch = data.val.batch(ids)?;
        targets += batch.n_target_tokens as f64;
        let dev = DeviceBatch::upload(b, &HostBatch::from(batch))?;
        let fwd = model.forward(b, engine, &dev)?;
        loss_sum += model.head(b, engine, &dev, &fwd, None, None)?.0;
    }
    let (loss_sum, targets) = (all_sum(dp, loss_sum)?, all_sum(dp, targets)?);
    Ok((targets > 0.0).then(|| loss_sum / targets))
}
