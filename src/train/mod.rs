//! `ferrotron train RECIPE.toml [--set k=v ...] [--resume]`: the training loop.
//!
//! Per optimizer step, on each data-parallel rank: take this rank's slice of the global batch
//! (the sampler draws the same global batch on every rank), run forward/backward per micro-batch
//! through the ZeRO engine's parameter store with dloss = 1 / (global target tokens), then let the
//! engine reduce, clip and step. The loss logged is the global mean over target tokens, so 1, 2
//! and 4 ranks with the same global batch log the same numbers.

mod batching;
mod checkpointing;
pub mod eval;
mod finite;
mod groups;
pub mod init;
pub mod kernel_profile;
pub mod metrics;
mod pipeline;
mod plan;
pub mod preflight;
mod resume;
pub mod rss;
mod sampling;
pub mod schedule;
mod setup;
pub mod spike;
mod weights;

use crate::checkpoint::lock::CheckpointLock;
use crate::data::{microbatches, rank_slice, Batch};
use crate::error::{Error, Result};
use crate::model::HostBatch;
use crate::recipe::Recipe;
use crate::user;
use ferrotron_parallel::{Comm, OpKind, ReduceOp};
use ferrotron_zero::{Collectives, StepConfig};
use metrics::{traffic_json, Metrics};
use serde_json::json;
use std::path::Path;
use std::time::Instant;

pub use eval::evaluate;
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
    if let Some(code) = resume::nothing_to_do(&recipe, resume, dist.rank == 0)? {
        return Ok(code);
    }
    let host = preflight::host_available();
    if recipe.train.device != "cuda" {
        let cpu = preflight::Device::cpu::<ferrotron_kernels::cpu::CpuBackend<f32>>();
        preflight::check(&recipe, &dist, &cpu, host.clone())?;
    }
    // One run per checkpoint directory: world rank 0 locks it before anything is written; the
    // guard lives until this function returns, whatever it returns.
    let _lock = match dist.rank == 0 && recipe.checkpoint.enabled {
        true => Some(CheckpointLock::acquire(&recipe.checkpoint_dir())?),
        false => None,
    };
    let (result, world) = match (recipe.train.device.as_str(), recipe.precision()) {
        ("cuda", "bf16") => {
            let b = groups::open_gpu::<half::bf16>(&recipe, &dist)?;
            preflight::check(&recipe, &dist, &preflight::Device::cuda(&b, &dist)?, host)?;
            open_and_train(&b, recipe, resume, &dist)?
        }
        ("cuda", _) => {
            let b = groups::open_gpu::<f32>(&recipe, &dist)?;
            preflight::check(&recipe, &dist, &preflight::Device::cuda(&b, &dist)?, host)?;
            open_and_train(&b, recipe, resume, &dist)?
        }
        _ => {
            let b =
                ferrotron_kernels::cpu::CpuBackend::<f32, ferrotron_kernels::cpu::Pooled>::pooled();
            ferrotron_kernels::cpu::team::set_spin(cpu_team_spin(&dist));
            open_and_train(&b, recipe, resume, &dist)?
        }
    };
    match result {
        // One rank's error must end the job: the other ranks may be waiting in a collective
        // for this one, and MPI_Finalize would wait for them (until the collective timeout).
        // Every rank that fails says why; the checkpoint lock is released first.
        Err(e) if world.size() > 1 => {
            drop(_lock);
            crate::error::print_error_line(format!("rank {}: {e}", world.rank()));
            world.abort(e.exit_code())
        }
        other => other,
    }
}

/// Opens the process groups and trains; the world comes back with the result, still open, so a
/// failed rank can end the job (`run`).
fn open_and_train<B: Collectives + 'static>(
    b: &B,
    recipe: Recipe,
    resume: bool,
    dist: &ferrotron_parallel::env::DistEnv,
) -> Result<(Result<i32>, std::sync::Arc<dyn Comm>)> {
    let comms = groups::open(b, &recipe, dist)?;
    let world = comms.world.clone();
    Ok((train(b, recipe, resume, comms), world))
}

fn train<B: Collectives + 'static>(
    b: &B,
    recipe: Recipe,
    resume: bool,
    comms: ferrotron_parallel::MeshComms,
) -> Result<i32> {
    let mut rss = rss::PhasePeaks::new();
    let mut s = Setup::new(b, recipe, resume, comms)?;
    rss.end(if s.start_step > 0 { "resume" } else { "init" });
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
    if r.checkpoint.save_initial && s.start_step == 0 {
        s.save_checkpoint(b, 0, 0, None)?;
        rss.end("save");
    }
    let dp = s.comms.dp.clone();
    let flops_per_token = s.model.flops_per_token(seq_len);
    let mut tokens_seen = s.start_tokens;
    let mut spikes = spike::SpikeGuard::new(r.train.spike_guard, s.start_loss_mean);
    let started = Instant::now();
    let mut last_eval = None;
    let mut profile = kernel_profile::KernelProfile::new(r.train.profile_steps, steps);
    for step in s.start_step + 1..=steps {
        if let Some(p) = profile.as_mut() {
            p.before_step(b, step)?;
        }
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
        let tp_before = s.tp.comm.counters().snapshot();
        s.engine.zero_grads(b)?;
        let mut loss_sum = 0.0;
        let mut saved_bytes = 0u64; // kept for backward, largest micro-batch (first step's record)
        let mut pp_step = None;
        if let Some(p) = &s.pipeline {
            // The schedule's forwards and backwards; loss_sum is the last stage's, on every stage.
            let r = p.train_step(
                b,
                &s.model,
                &mut *s.engine,
                &s.tp,
                batches,
                1.0 / global_targets,
            )?;
            (loss_sum, saved_bytes) = (r.loss_sum, r.largest_activation_bytes);
            pp_step = Some(r);
        } else {
            for batch in batches {
                let dev = s.model.upload_batch(b, &HostBatch::from(batch))?;
                let fwd = s.model.forward_tp(b, &mut *s.engine, &dev, &s.tp)?;
                if step == s.start_step + 1 {
                    let (act, acc) = fwd.saved_elements();
                    saved_bytes =
                        saved_bytes.max(act as u64 * B::ACT_BYTES + acc as u64 * B::ACC_BYTES);
                }
                let (ls, dx) = s.model.head_tp(
                    b,
                    &mut *s.engine,
                    &dev,
                    &fwd,
                    Some(1.0 / global_targets),
                    None,
                    &s.tp,
                )?;
                s.model.backward_tp(
                    b,
                    &mut *s.engine,
                    &dev,
                    &fwd,
                    dx.expect("head returns dx with a grad scale"),
                    &s.tp,
                )?;
                loss_sum += ls;
            }
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
        let tp_model = s.tp.comm.counters().snapshot().since(&tp_before);
        let loss = all_sum(&*dp, loss_sum)? / global_targets;
        if !loss.is_finite() {
            return Err(non_finite(
                step,
                "loss",
                loss,
                f64::NAN,
                &r.checkpoint_dir(),
                s.rank0,
            ));
        }
        if let Some(mean) = spikes.check(loss) {
            return Err(spike_stop(step, loss, mean, &r, s.rank0));
        }
        let before_step = dp.counters().snapshot();
        let tp_before_step = s.tp.comm.counters().snapshot();
        let stats = s.engine.step(b, &cfg)?;
        let traffic_step = dp.counters().snapshot().since(&before_step);
        let tp_step = s.tp.comm.counters().snapshot().since(&tp_before_step);
        let sent = |k: OpKind| traffic_backward.op(k).bytes_sent + traffic_step.op(k).bytes_sent;
        if !stats.grad_norm.is_finite() {
            return Err(non_finite(
                step,
                "gradient norm",
                loss,
                stats.grad_norm,
                &r.checkpoint_dir(),
                s.rank0,
            ));
        }
        let pp_record = match &pp_step {
            Some(r) => Some(pipeline::metrics_record(&*s.comms.world, r)?),
            None => None,
        };
        tokens_seen += (global_batch * seq_len) as u64;
        if let Some(p) = &profile {
            p.end_step(b, step)?;
        }
        let dt = t0.elapsed().as_secs_f64();
        if let Some(p) = profile.as_mut() {
            p.add_wall(step, dt);
        }
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
            if let Some(pp) = pp_record {
                rec["pp"] = pp;
            }
            if s.tp.comm.size() > 1 {
                // The model's regions (forward, head, backward of every micro-batch) and the
                // optimizer step's sums of replicated partial gradients, apart.
                rec["tp_traffic"] =
                    json!({"model": traffic_json(&tp_model), "step": traffic_json(&tp_step)});
            }
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
        rss.end("step");
        if step == steps {
            if let Some(p) = profile.take() {
                if let Some(text) = p.finish(b, &r.train.out_dir, s.rank0)? {
                    if let Some(m) = &m {
                        let head: Vec<&str> = text.lines().take(24).collect();
                        m.println(&head.join("\n"));
                    }
                }
            }
        }
        let eval_now = r.train.eval_every > 0 && step % r.train.eval_every == 0;
        if eval_now || step == steps {
            let e = s.evaluate(b)?;
            last_eval = e.map(|e| e.loss);
            if let (Some(m), Some(e)) = (m.as_mut(), e) {
                m.record(&json!({"step": step, "eval_loss": e.loss, "eval_rows": e.rows, "eval_tokens": e.tokens}))?;
                m.println(&format!("step {step}: validation loss {:.4}", e.loss));
            }
            rss.end("eval");
        }
        if r.train.sample_every > 0 && step % r.train.sample_every == 0 && step != steps {
            s.print_sample(b)?;
            rss.end("sample");
        }
        let ckpt_now = r.checkpoint.every > 0 && step % r.checkpoint.every == 0;
        if r.checkpoint.enabled && (ckpt_now || step == steps) {
            s.save_checkpoint(b, step, tokens_seen, spikes.mean())?;
            rss.end("save");
        }
    }
    if let Some(m) = &m {
        m.finish();
        crate::outln!(
            "trained {steps} steps, {tokens_seen} tokens in {:.1} s; final validation loss {}",
            started.elapsed().as_secs_f64(),
            last_eval
                .map(|e| format!("{e:.4}"))
                .unwrap_or_else(|| "n/a (no validation rows)".into())
        );
    }
    s.print_sample(b)?;
    rss.end("sample");
    let peaks = rss_table(&*s.comms.world, &rss)?;
    if let Some(m) = m.as_mut() {
        // Stamped with the run's last step, so a later resume keeps it (metrics.rs).
        m.record(&json!({ "step": steps, "rss_peak_bytes": peaks }))?;
    }
    Ok(0)
}

/// Every rank's peak RSS per phase (bytes), as {phase: [rank 0, rank 1, …]}. Collective.
fn rss_table(world: &dyn Comm, rss: &rss::PhasePeaks) -> Result<serde_json::Value> {
    const PHASES: [&str; 6] = ["init", "resume", "step", "eval", "sample", "save"];
    let mine: Vec<f64> = PHASES
        .iter()
        .map(|p| {
            rss.all()
                .iter()
                .find(|(k, _)| k == p)
                .map_or(0.0, |(_, v)| *v as f64)
        })
        .collect();
    let mut all = vec![0.0f64; mine.len() * world.size()];
    world
        .all_gather((&mine[..]).into(), (&mut all[..]).into())
        .map_err(comm_err)?;
    let mut table = serde_json::Map::new();
    for (i, p) in PHASES.iter().enumerate() {
        let per_rank: Vec<u64> = all.chunks(PHASES.len()).map(|r| r[i] as u64).collect();
        if per_rank.iter().any(|&v| v > 0) {
            table.insert((*p).into(), json!(per_rank));
        }
    }
    Ok(serde_json::Value::Object(table))
}

fn non_finite(step: u64, what: &str, loss: f64, gnorm: f64, ckpt: &Path, rank0: bool) -> Error {
    let kept = match rank0 {
        true => crate::checkpoint::prune::mark_divergence(
            ckpt,
            step,
            loss,
            &format!("non-finite {what}"),
        ),
        false => Ok(None),
    };
    user!(
        "step {step}: the {what} is not finite (loss {loss}, grad norm {gnorm}); training stopped before applying the update, {}",
        kept_text(kept, ckpt)
    )
}

/// The loss-spike guard fired (see spike.rs).
fn spike_stop(step: u64, loss: f64, mean: f64, r: &Recipe, rank0: bool) -> Error {
    let ckpt = r.checkpoint_dir();
    let kept = match rank0 && r.checkpoint.enabled {
        true => crate::checkpoint::prune::mark_divergence(&ckpt, step, loss, "loss spike"),
        false => Ok(None),
    };
    user!(
        "step {step}: the loss {loss:.4} is more than train.spike_guard = {} times the running mean {mean:.4} of the previous steps; training stopped before applying the update (exit code 2), {}",
        r.train.spike_guard,
        kept_text(kept, &ckpt)
    )
}

fn kept_text(kept: Result<Option<std::path::PathBuf>>, ckpt: &Path) -> String {
    match kept {
        Ok(Some(dir)) => format!(
            "and the last checkpoint before it, {}, will not be pruned (delete {} to allow it)",
            dir.display(),
            ckpt.join(crate::checkpoint::prune::DIVERGENCE_MARKER)
                .display()
        ),
        Ok(None) => format!(
            "and the last good checkpoint in {} (if any) is kept",
            ckpt.display()
        ),
        Err(e) => format!("and marking the last good checkpoint failed: {e}"),
    }
}

/// How long the CPU GEMM team's idle helpers spin (kernels/src/cpu/team.rs): the default when
/// this machine's ranks, with their threads, fit its cores; zero (park at once) when they
/// oversubscribe it, where a spinning helper would take time from another rank.
fn cpu_team_spin(dist: &ferrotron_parallel::env::DistEnv) -> std::time::Duration {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let local = dist.local_world_size.unwrap_or(1).max(1);
    if local * rayon::current_num_threads() <= cores {
        ferrotron_kernels::cpu::team::DEFAULT_SPIN
    } else {
        std::time::Duration::ZERO
    }
}
