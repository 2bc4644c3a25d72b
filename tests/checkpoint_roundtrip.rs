//! Checkpoint save/load: exact round trips (single file and sharded), keep-last-K pruning,
//! temporary directories ignored and cleaned, and clear errors on damaged checkpoints.

mod checkpoint_support;

use checkpoint_support::*;
use ferrotron::checkpoint::tensors::{write_sharded, StoreDtype, TensorRef};
use ferrotron::checkpoint::{self, latest, load, save_with, step_dirs, SaveOptions};
use ferrotron::error::Error;
use ferrotron::model::{ModelConfig, ParamLayout};

fn round_trip(name: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, state) = save_fixture(tmp.path(), name, 7, 3);
    assert_eq!(dir, tmp.path().join("step-00000007"));
    for f in [
        "model.safetensors",
        "optimizer.safetensors",
        "config.json",
        "tokenizer.json",
        "trainer_state.json",
    ] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    let (cfg, layout, _) = fixture(name);
    let (loaded, ts) = load(&dir, &cfg, &layout).unwrap();
    assert_eq!(bits(&loaded.master), bits(&state.master));
    assert_eq!(bits(&loaded.exp_avg), bits(&state.exp_avg));
    assert_eq!(bits(&loaded.exp_avg_sq), bits(&state.exp_avg_sq));
    assert_eq!(
        ts,
        serde_json::json!({"step": 7, "tokens": 7000, "sampler": {"epoch": 0, "pos": 7}})
    );
    assert_eq!(checkpoint::load::read_step(&dir).unwrap(), 7);
    // The saved config.json reads back as the same model.
    assert_eq!(
        ModelConfig::from_file(&dir.join("config.json"))
            .unwrap()
            .to_hf_json(),
        cfg.to_hf_json()
    );
    // The tokenizer saved with it encodes like the original.
    let tok = ferrotron::tokenizer::Tokenizer::from_dir(&dir).unwrap();
    assert_eq!(
        tok.encode("Hello world").unwrap(),
        gpt2_tokenizer().encode("Hello world").unwrap()
    );
}

#[test]
fn save_load_round_trip_is_bitwise_gpt2() {
    round_trip("tiny-gpt2");
}

#[test]
fn save_load_round_trip_is_bitwise_llama() {
    round_trip("tiny-llama");
}

#[test]
fn sharded_checkpoint_round_trips_bitwise() {
    let tmp = tempfile::tempdir().unwrap();
    let (cfg, layout, units) = fixture("tiny-llama");
    let state = state_of(&units, 0.5);
    let opts = SaveOptions {
        keep_last: 0,
        shard_bytes: 100_000,
    };
    let ts = serde_json::json!({"k": [1, 2, 3]});
    let dir = save_with(
        tmp.path(),
        3,
        &cfg,
        &layout,
        &state,
        &gpt2_tokenizer(),
        &ts,
        &opts,
    )
    .unwrap();
    assert!(dir.join("model.safetensors.index.json").is_file());
    assert!(dir.join("optimizer.safetensors.index.json").is_file());
    assert!(!dir.join("model.safetensors").exists());
    let shards = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("model-")
        })
        .count();
    assert!(shards > 2, "expected several model shards, got {shards}");
    let (loaded, back) = load(&dir, &cfg, &layout).unwrap();
    assert_eq!(back, ts);
    assert_eq!(bits(&loaded.master), bits(&state.master));
    assert_eq!(bits(&loaded.exp_avg), bits(&state.exp_avg));
    assert_eq!(bits(&loaded.exp_avg_sq), bits(&state.exp_avg_sq));
}

#[test]
fn keep_last_k_prunes_oldest_and_ignores_temp_dirs() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    assert_eq!(latest(root).unwrap(), None);
    assert_eq!(latest(&root.join("absent")).unwrap(), None);
    for step in 1..=5 {
        save_fixture(root, "tiny-gpt2", step * 10, 2);
    }
    let steps: Vec<u64> = step_dirs(root)
        .unwrap()
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(steps, vec![40, 50]);
    // A crash mid-save leaves a temp dir (and maybe a partial step dir without trainer_state.json):
    // neither is a checkpoint.
    let stale = root.join(".tmp-step-00000099");
    std::fs::create_dir(&stale).unwrap();
    std::fs::write(stale.join("model.safetensors"), b"partial").unwrap();
    std::fs::create_dir(root.join("step-00000098")).unwrap();
    assert_eq!(latest(root).unwrap(), Some(root.join("step-00000050")));
    // The next save removes the stale temp dir.
    save_fixture(root, "tiny-gpt2", 60, 2);
    assert!(!stale.exists());
    let names: Vec<String> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.starts_with(".tmp")), "{names:?}");
    assert_eq!(latest(root).unwrap(), Some(root.join("step-00000060")));
}

#[test]
fn pruning_never_removes_the_checkpoint_just_written() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    for step in [10, 20] {
        save_fixture(root, "tiny-gpt2", step, 2);
    }
    // A run resumed from an older checkpoint saves a lower step number.
    let (dir, _) = save_fixture(root, "tiny-gpt2", 5, 2);
    assert!(dir.join("trainer_state.json").is_file());
    let steps: Vec<u64> = step_dirs(root)
        .unwrap()
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(steps, vec![5, 20]);
}

#[test]
fn saving_a_step_again_replaces_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (cfg, layout, units) = fixture("tiny-gpt2");
    let tok = gpt2_tokenizer();
    let a = state_of(&units, 1.0);
    let b = state_of(&units, 2.0);
    checkpoint::save(
        tmp.path(),
        5,
        &cfg,
        &layout,
        &a,
        &tok,
        &serde_json::json!("a"),
        0,
    )
    .unwrap();
    let dir = checkpoint::save(
        tmp.path(),
        5,
        &cfg,
        &layout,
        &b,
        &tok,
        &serde_json::json!("b"),
        0,
    )
    .unwrap();
    let (loaded, ts) = load(&dir, &cfg, &layout).unwrap();
    assert_eq!(ts, serde_json::json!("b"));
    assert_eq!(bits(&loaded.exp_avg), bits(&b.exp_avg));
}

fn user_err<T: std::fmt::Debug>(r: Result<T, Error>) -> String {
    match r {
        Err(Error::User(m)) => m,
        other => panic!("expected a user error, got {other:?}"),
    }
}

#[test]
fn damaged_checkpoints_give_errors_naming_file_and_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, state) = save_fixture(tmp.path(), "tiny-gpt2", 1, 0);
    let (cfg, layout, _) = fixture("tiny-gpt2");

    // Every moment present, one with the wrong shape.
    let name = "exp_avg.transformer.h.0.ln_1.weight";
    let bad = vec![0.0f32; 3];
    let mut t: Vec<TensorRef> = Vec::new();
    for (prefix, part) in [
        ("exp_avg.", &state.exp_avg),
        ("exp_avg_sq.", &state.exp_avg_sq),
    ] {
        for (u, spec) in layout.tensors() {
            let n = format!("{prefix}{}", spec.name);
            let data = &part[u][spec.offset..spec.offset + spec.numel()];
            t.push(if n == name {
                TensorRef {
                    name: n,
                    shape: vec![3],
                    data: &bad,
                }
            } else {
                TensorRef {
                    name: n,
                    shape: spec.shape.clone(),
                    data,
                }
            });
        }
    }
    std::fs::remove_file(dir.join("optimizer.safetensors")).unwrap();
    write_sharded(&dir, "optimizer", &t, StoreDtype::F32, u64::MAX).unwrap();
    let m = user_err(load(&dir, &cfg, &layout));
    assert!(
        m.contains("optimizer.safetensors") && m.contains(name) && m.contains("shape"),
        "{m}"
    );

    // A truncated model file.
    let model = dir.join("model.safetensors");
    let bytes = std::fs::read(&model).unwrap();
    std::fs::write(&model, &bytes[..bytes.len() / 2]).unwrap();
    let m = user_err(load(&dir, &cfg, &layout));
    assert!(
        m.contains("model.safetensors") && m.contains("not a valid safetensors"),
        "{m}"
    );

    // A config for another model.
    let (dir2, _) = save_fixture(&tmp.path().join("b"), "tiny-gpt2", 1, 0);
    let mut other = cfg.clone();
    other.layers = 3;
    let m = user_err(load(&dir2, &other, &ParamLayout::new(&other)));
    assert!(m.contains("config.json") && m.contains("n_layer"), "{m}");

    // Not a checkpoint at all.
    let m = user_err(load(tmp.path(), &cfg, &layout));
    assert!(m.contains("trainer_state.json"), "{m}");
    let m = user_err(checkpoint::resolve(&tmp.path().join("nope")));
    assert!(m.contains("does not exist"), "{m}");
}
