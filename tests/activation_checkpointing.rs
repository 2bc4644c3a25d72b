//! Full activation checkpointing (`train.activation_checkpointing = "full"`): forward keeps only
//! each block's input and backward recomputes the block from it.
//! - On every HF fixture model (Qwen3's saved pre-norm q/k and Mistral's window included), the
//!   loss and every gradient are the same bits as without it, and
//!   forward keeps exactly `Transformer::activation_elements` (it is the planner's figure), which
//!   with recomputation is the L + 1 block inputs alone.
//! - Through the trainer, with ZeRO stage 3 on 2 ranks (the recomputation runs while backward has
//!   the unit gathered), the per-step losses and final weights are the same bits as without it,
//!   and metrics.jsonl reports the smaller activation memory.

mod common;
use common::*;
use ferrotron::model::hf_import::load_units;
use ferrotron::model::{DeviceBatch, HostBatch, ModelConfig, ResidentStore, Transformer};
use ferrotron_kernels::cpu::CpuBackend;
use ferrotron_kernels::{Backend, Src};
use std::path::Path;

const MODELS: [&str; 6] = [
    "tiny-llama",
    "tiny-gpt2",
    "tiny-qwen2",
    "tiny-llama3",
    "tiny-qwen3",
    "tiny-mistral",
];

struct Pass {
    loss: f64,
    grads: Vec<Vec<u32>>,
    saved: (usize, usize),
    planned: (usize, usize),
}

/// One forward, head and backward of a fixed batch (2 rows of 24 tokens, one row with two
/// packed documents) on the fixture's weights.
fn pass(model_dir: &Path, recompute: bool) -> Pass {
    let cfg = ModelConfig::from_file(&model_dir.join("config.json")).unwrap();
    let model = Transformer::new(cfg).with_recompute(recompute);
    let units = load_units(model_dir, &model.cfg, &model.layout).unwrap();
    let b = CpuBackend::<f32>::new();
    let (rows, seq) = (2, 24);
    let vocab = model.cfg.vocab_size;
    let ids: Vec<i32> = (0..rows * seq)
        .map(|i| ((i * 7919 + 13) % vocab) as i32)
        .collect();
    let mut labels: Vec<i32> = ids[1..].to_vec();
    labels.push(-100);
    labels[seq - 1] = -100;
    let host = HostBatch::from_rows(&ids, &labels, rows, seq);
    let batch = DeviceBatch::upload(&b, &host).unwrap();
    let mut store = ResidentStore::<CpuBackend<f32>> {
        weights: units.iter().map(|u| b.upload_act(u).unwrap()).collect(),
        grads: units
            .iter()
            .map(|u| b.zeros_acc(u.len()).unwrap())
            .collect(),
    };
    let fwd = model.forward(&b, &mut store, &batch).unwrap();
    let saved = fwd.saved_elements();
    let scale = 1.0 / host.target_count() as f64;
    let (loss, dx) = model
        .head(&b, &mut store, &batch, &fwd, Some(scale), None)
        .unwrap();
    model
        .backward(&b, &mut store, &batch, &fwd, dx.unwrap())
        .unwrap();
    let grads = store
        .grads
        .iter()
        .map(|g| {
            b.download_acc(Src::all(g))
                .unwrap()
                .iter()
                .map(|x| x.to_bits())
                .collect()
        })
        .collect();
    Pass {
        loss,
        grads,
        saved,
        planned: model.activation_elements(rows * seq),
    }
}

#[test]
fn recomputed_blocks_give_the_same_gradient_bits_and_keep_only_block_inputs() {
    for name in MODELS {
        let dir = root().join("tests/fixtures/hf").join(name);
        let (keep, redo) = (pass(&dir, false), pass(&dir, true));
        assert_eq!(keep.loss.to_bits(), redo.loss.to_bits(), "{name}: loss");
        assert_eq!(keep.grads.len(), redo.grads.len());
        for (u, (a, b)) in keep.grads.iter().zip(&redo.grads).enumerate() {
            assert!(a == b, "{name}: gradient of unit {u} differs");
        }
        assert_eq!(keep.saved, keep.planned, "{name}: planned vs kept");
        assert_eq!(redo.saved, redo.planned, "{name}: planned vs kept");
        let cfg = ModelConfig::from_file(&dir.join("config.json")).unwrap();
        assert_eq!(
            redo.saved,
            ((cfg.layers + 1) * 48 * cfg.hidden, 0),
            "{name}"
        );
        println!(
            "{name}: activations kept for backward, elements (act, acc): none {:?}, full {:?}",
            keep.saved, redo.saved
        );
        assert!(
            redo.saved.0 * 4 < keep.saved.0,
            "{name}: recomputation saves memory"
        );
    }
}

fn run(out: &Path, checkpointing: &str) -> std::process::Output {
    let recipe = root().join("tests/recipes/tiny-dp.toml");
    let sets = [
        "model.hf_dir=tests/fixtures/hf/tiny-gpt2".to_string(),
        format!("train.out_dir={}", out.display()),
        "parallel.zero_stage=3".into(),
        format!("train.activation_checkpointing={checkpointing}"),
    ];
    mpirun(2, &strs(&train_args(&recipe.display().to_string(), &sets)))
}

#[test]
fn training_with_recomputation_under_zero_3_matches_bitwise() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    check(&run(a.path(), "none"), "none");
    check(&run(b.path(), "full"), "full");
    let (la, lb) = (losses(a.path()), losses(b.path()));
    assert_eq!(la.len(), 10);
    assert!(
        la.iter().zip(&lb).all(|(x, y)| x.to_bits() == y.to_bits()),
        "losses differ: {la:?} vs {lb:?}"
    );
    let (wa, wb) = (
        checkpoint_weights(&a.path().join("checkpoints")),
        checkpoint_weights(&b.path().join("checkpoints")),
    );
    assert_eq!(weights_rel(&wa, &wb), 0.0, "final weights differ");
    let mem = |d: &Path| step_records(d)[0]["activations_bytes"].as_u64().unwrap();
    let (ma, mb) = (mem(a.path()), mem(b.path()));
    println!("tiny-gpt2 ZeRO-3 x2: activations kept for backward {ma} B (none), {mb} B (full)");
    assert!(mb * 4 < ma, "{mb} vs {ma}");
}

#[test]
fn unknown_checkpointing_modes_are_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = root().join("tests/recipes/tiny-dp.toml");
    for (mode, needle) in [
        ("selective", "\"selective\" is not implemented"),
        ("some", "is not one of \"none\", \"full\""),
    ] {
        let sets = [
            format!("train.out_dir={}", tmp.path().display()),
            format!("train.activation_checkpointing={mode}"),
        ];
        let out = ferrotron(&strs(&train_args(&recipe.display().to_string(), &sets)));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(
            err.contains("train.activation_checkpointing") && err.contains(needle),
            "{err}"
        );
    }
}
