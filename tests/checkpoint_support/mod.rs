//! Shared helpers for the checkpoint, export and sample tests: fixture models with the GPT-2
//! tokenizer, a deterministic full state, and a CPU forward that returns all logits.
#![allow(dead_code)]

use ferrotron::model::hf_import::load_units;
use ferrotron::model::{
    DeviceBatch, HostBatch, ModelConfig, ParamLayout, ResidentStore, Transformer,
};
use ferrotron::tokenizer::Tokenizer;
use ferrotron_kernels::cpu::CpuBackend;
use ferrotron_kernels::Backend;
use ferrotron_zero::FullState;
use std::path::{Path, PathBuf};

pub fn fixture_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hf")
        .join(name)
}

pub fn gpt2_tokenizer() -> Tokenizer {
    Tokenizer::from_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/gpt2")).unwrap()
}

/// Config, layout and weights of a fixture model.
pub fn fixture(name: &str) -> (ModelConfig, ParamLayout, Vec<Vec<f32>>) {
    let dir = fixture_dir(name);
    let cfg = ModelConfig::from_file(&dir.join("config.json")).unwrap();
    let layout = ParamLayout::new(&cfg);
    let units = load_units(&dir, &cfg, &layout).unwrap();
    (cfg, layout, units)
}

/// A full state whose moments are distinct, non-trivial functions of the weights and of `salt`.
pub fn state_of(units: &[Vec<f32>], salt: f32) -> FullState {
    let exp_avg = units
        .iter()
        .map(|u| {
            u.iter()
                .enumerate()
                .map(|(i, w)| w * 0.1 + salt + i as f32 * 1e-7)
                .collect()
        })
        .collect();
    let exp_avg_sq = units
        .iter()
        .map(|u| u.iter().map(|w| w * w + salt * 1e-3 + 1e-9).collect())
        .collect();
    FullState {
        master: units.to_vec(),
        exp_avg,
        exp_avg_sq,
    }
}

/// Bitwise equality of two per-unit buffers.
pub fn bits(a: &[Vec<f32>]) -> Vec<Vec<u32>> {
    a.iter()
        .map(|u| u.iter().map(|x| x.to_bits()).collect())
        .collect()
}

/// Deterministic token ids below `vocab`.
pub fn ids(n: usize, vocab: usize) -> Vec<i32> {
    (0..n).map(|i| ((i * 7919 + 13) % vocab) as i32).collect()
}

/// Logits [rows * seq, V] of `rows` rows of `ids` on the CPU backend, f32.
pub fn logits(cfg: &ModelConfig, units: &[Vec<f32>], ids: &[i32], rows: usize) -> Vec<f32> {
    let model = Transformer::new(cfg.clone());
    let b = CpuBackend::<f32>::new();
    let seq = ids.len() / rows;
    let host = HostBatch::from_rows(ids, &vec![-100; ids.len()], rows, seq);
    let batch = DeviceBatch::upload(&b, &host).unwrap();
    let mut store = ResidentStore::<CpuBackend<f32>> {
        weights: units.iter().map(|u| b.upload_act(u).unwrap()).collect(),
        grads: units.iter().map(|_| b.zeros_acc(0).unwrap()).collect(),
    };
    let fwd = model.forward(&b, &mut store, &batch).unwrap();
    let mut out = Vec::new();
    model
        .head(&b, &mut store, &batch, &fwd, None, Some(&mut out))
        .unwrap();
    out
}

/// Saves a fixture checkpoint at `root/step-<step>` with the GPT-2 tokenizer.
pub fn save_fixture(root: &Path, name: &str, step: u64, keep: usize) -> (PathBuf, FullState) {
    let (cfg, layout, units) = fixture(name);
    let state = state_of(&units, step as f32);
    let ts = serde_json::json!({"step": step, "tokens": step * 1000, "sampler": {"epoch": 0, "pos": step}});
    let dir = ferrotron::checkpoint::save(
        root,
        step,
        &cfg,
        &layout,
        &state,
        &gpt2_tokenizer(),
        &ts,
        keep,
    )
    .unwrap();
    (dir, state)
}
