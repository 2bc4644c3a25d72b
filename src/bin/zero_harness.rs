//! `ferrotron-zero-harness`: trains a tiny model for a few steps under each ZeRO stage and writes
//! what the equivalence, memory and communication tests compare (tests/zero_equivalence.rs).
//! A test program until `ferrotron train` exists; run it under mpirun (or alone, N = 1).
//!
//!   ferrotron-zero-harness (--model HF_DIR | --odd) --stages 0,1,2,3 --out PREFIX [--steps 10]
//!
//! Global batch per step: `ROWS` rows of `SEQ` random token ids from ChaCha8(seed + step), the same
//! for every N; dp rank r trains rows [r·ROWS/N, (r+1)·ROWS/N). Loss scale 1 / (global target
//! count), so the engines' dp SUM is the gradient of the global mean loss.
//! Writes, per stage s: PREFIX.s<s>.json on rank 0 (units, per-step loss, grad norm and dp bytes
//! by op), PREFIX.s<s>.r<rank>.mem.json per rank (MemoryReport + plan sizes), PREFIX.s<s>.bin on
//! rank 0 (final master weights, f32 LE, units concatenated).

use ferrotron::model::hf_import::load_units;
use ferrotron::model::{DeviceBatch, HostBatch, ModelConfig, Transformer};
use ferrotron_kernels::cpu::CpuBackend;
use ferrotron_parallel::{env, init_world, Comm, OpKind, ReduceOp, WorldOptions};
use ferrotron_zero::{build_engine, EngineGroups, ShardPlan, StepConfig, UnitWeights};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;

const ROWS: usize = 8;
const SEQ: usize = 16;
const SEED: u64 = 1234;

/// A Llama whose units divide neither 2 nor 4 (hidden 61, intermediate 97, vocab 301).
const ODD_CONFIG: &str = r#"{"model_type": "llama", "hidden_size": 61, "intermediate_size": 97,
 "vocab_size": 301, "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
 "head_dim": 16, "max_position_embeddings": 64, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
 "tie_word_embeddings": false, "attention_bias": false, "mlp_bias": false, "hidden_act": "silu"}"#;

fn main() {
    if let Err(e) = run() {
        eprintln!("ferrotron-zero-harness: {e}");
        std::process::exit(1);
    }
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = PathBuf::from(arg(&args, "--out").ok_or("--out PREFIX is required")?);
    let steps: u64 = arg(&args, "--steps")
        .map_or(Ok(10), |s| s.parse())
        .map_err(|_| "--steps needs a number")?;
    let stages: Vec<u8> = arg(&args, "--stages")
        .unwrap_or_else(|| "0,1,2,3".into())
        .split(',')
        .map(|s| s.parse().map_err(|_| format!("bad stage `{s}`")))
        .collect::<Result<_, _>>()?;
    let (cfg, init) = match arg(&args, "--model") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            let cfg =
                ModelConfig::from_file(&dir.join("config.json")).map_err(|e| e.to_string())?;
            let layout = Transformer::new(cfg.clone()).layout;
            let units = load_units(&dir, &cfg, &layout).map_err(|e| e.to_string())?;
            (cfg, units)
        }
        None if args.iter().any(|a| a == "--odd") => {
            let cfg =
                ModelConfig::from_json_str(ODD_CONFIG, "odd config").map_err(|e| e.to_string())?;
            let units = random_init(&Transformer::new(cfg.clone()));
            (cfg, units)
        }
        None => return Err("give --model HF_DIR or --odd".into()),
    };
    let model = Transformer::new(cfg);
    let metas = ferrotron::train::unit_metas(&model.layout, false);

    let dist = env::detect_from_process()?;
    let world = init_world(&dist, &WorldOptions::default()).map_err(|e| e.to_string())?;
    let dp: Arc<dyn Comm> = world.clone();
    let (rank, n) = (dp.rank(), dp.size());
    if ROWS % n != 0 {
        return Err(format!("{ROWS} rows do not split over {n} ranks"));
    }
    let rows = rank * ROWS / n..(rank + 1) * ROWS / n;
    let b = CpuBackend::<f32>::new();
    let vocab = model.cfg.vocab_size as u32;

    for &stage in &stages {
        let mut engine = build_engine(
            stage,
            &b,
            EngineGroups::data_parallel(dp.clone()),
            metas.clone(),
            &UnitWeights(&init),
        )
        .map_err(|e| e.to_string())?;
        let plan = ShardPlan::new(metas.clone(), n, rank).map_err(|e| e.to_string())?;
        let mut step_rows = Vec::new();
        for step in 1..=steps {
            let mut rng = ChaCha8Rng::seed_from_u64(SEED + step);
            let ids: Vec<i32> = (0..ROWS * SEQ)
                .map(|_| rng.random_range(0..vocab) as i32)
                .collect();
            let global = HostBatch::from_rows(&ids, &ids, ROWS, SEQ);
            let local_ids = &ids[rows.start * SEQ..rows.end * SEQ];
            let host = HostBatch::from_rows(local_ids, local_ids, rows.len(), SEQ);
            let batch = DeviceBatch::upload(&b, &host).map_err(|e| e.to_string())?;
            let scale = 1.0 / global.target_count() as f64;

            let before = dp.counters().snapshot();
            engine.zero_grads(&b).map_err(|e| e.to_string())?;
            let fwd = model
                .forward(&b, &mut engine, &batch)
                .map_err(|e| e.to_string())?;
            let (loss_sum, dx) = model
                .head(&b, &mut engine, &batch, &fwd, Some(scale), None)
                .map_err(|e| e.to_string())?;
            let dx = dx.ok_or("head returned no dx")?;
            model
                .backward(&b, &mut engine, &batch, &fwd, dx)
                .map_err(|e| e.to_string())?;
            let sc = StepConfig {
                lr: 3e-3,
                beta1: 0.9,
                beta2: 0.95,
                eps: 1e-8,
                weight_decay: 0.1,
                clip_norm: Some(1.0),
                step,
            };
            let stats = engine.step(&b, &sc).map_err(|e| e.to_string())?;
            let traffic = dp.counters().snapshot().since(&before);

            let mut loss = [loss_sum];
            dp.all_reduce((&mut loss[..]).into(), ReduceOp::Sum)
                .map_err(|e| e.to_string())?;
            let sent = |k| traffic.op(k).bytes_sent;
            step_rows.push(json!({
                "step": step, "loss": loss[0] * scale, "grad_norm": stats.grad_norm, "clip": stats.clip_factor,
                "reduce_scatter": sent(OpKind::ReduceScatter), "all_gather": sent(OpKind::AllGather),
                "all_reduce": sent(OpKind::AllReduce), "total": traffic.total_sent(),
            }));
        }
        let mem = engine.memory();
        let mem_json = json!({
            "stage": stage, "rank": rank, "n": n, "memory": mem, "psi": plan.psi(),
            "psi_padded": plan.psi_padded(), "own_padding": plan.own_padding(),
        });
        std::fs::write(
            format!("{}.s{stage}.r{rank}.mem.json", out.display()),
            mem_json.to_string(),
        )
        .map_err(|e| e.to_string())?;
        let state = engine.full_state(&b).map_err(|e| e.to_string())?;
        if rank == 0 {
            let units: Vec<_> = metas
                .iter()
                .zip(&plan.padded)
                .map(|(u, p)| json!({"name": u.name, "numel": u.numel, "padded": p}))
                .collect();
            let report = json!({"stage": stage, "n": n, "tied": model.cfg.tie_embeddings, "units": units, "steps": step_rows});
            std::fs::write(
                format!("{}.s{stage}.json", out.display()),
                report.to_string(),
            )
            .map_err(|e| e.to_string())?;
            let bytes: Vec<u8> = state
                .master
                .iter()
                .flatten()
                .flat_map(|x| x.to_le_bytes())
                .collect();
            std::fs::write(format!("{}.s{stage}.bin", out.display()), bytes)
                .map_err(|e| e.to_string())?;
        }
    }
    drop(dp);
    drop(world);
    Ok(())
}

/// Fixed-seed initialisation: norm weights 1, everything else uniform in [-0.05, 0.05).
fn random_init(model: &Transformer) -> Vec<Vec<f32>> {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    model
        .layout
        .units
        .iter()
        .map(|u| {
            let mut w = vec![0.0f32; u.numel];
            for t in &u.tensors {
                let norm = t.role.is_norm_weight();
                for x in &mut w[t.offset..t.offset + t.numel()] {
                    *x = if norm {
                        1.0
                    } else {
                        rng.random_range(-0.05..0.05)
                    };
                }
            }
            w
        })
        .collect()
}
