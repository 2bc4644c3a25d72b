//! Checkpoint save/load: exact round trips, checkpoints written by several ranks with any split
//! read back by any other split (and by a tensor-parallel slice), version-1 (whole) checkpoints
//! still load, keep-last-K pruning, temporary directories ignored and cleaned, and clear errors
//! on damaged checkpoints.

mod checkpoint_support;

use checkpoint_support::*;
use ferrotron::checkpoint::save::{commit, write_shard};
use ferrotron::checkpoint::tensors::{write_sharded, StoreDtype, TensorRef};
use ferrotron::checkpoint::{
    self, latest, load, open_state, step_dirs, CheckpointMeta, OwnedState,
};
use ferrotron::error::Error;
use ferrotron::model::{ModelConfig, ParamLayout, Role, TensorSlice};
use ferrotron_zero::{FullState, OwnedShard, StatePart, StateSource};
use std::ops::Range;
use std::path::{Path, PathBuf};

fn round_trip(name: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, state) = save_fixture(tmp.path(), name, 7, 3);
    assert_eq!(dir, tmp.path().join("step-00000007"));
    for f in [
        "shard-00000-of-00001.safetensors",
        "shard-00000-of-00001.json",
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

/// One rank of a ZeRO-style split: unit u's block `rank` of `n` (units padded to a multiple of n).
struct RankPart<'a> {
    state: &'a FullState,
    rank: usize,
    n: usize,
}

impl RankPart<'_> {
    fn own(&self, u: usize) -> Range<usize> {
        let numel = self.state.master[u].len();
        let k = numel.div_ceil(self.n);
        (self.rank * k).min(numel)..((self.rank + 1) * k).min(numel)
    }
}

impl OwnedState for RankPart<'_> {
    fn owned_ranges(&self) -> Vec<Range<usize>> {
        (0..self.state.master.len()).map(|u| self.own(u)).collect()
    }
    fn for_each_owned(
        &mut self,
        f: &mut dyn FnMut(OwnedShard) -> ferrotron::error::Result<()>,
    ) -> ferrotron::error::Result<()> {
        for u in 0..self.state.master.len() {
            let r = self.own(u);
            if r.is_empty() {
                continue;
            }
            f(OwnedShard {
                unit: u,
                range: r.clone(),
                master: &self.state.master[u][r.clone()],
                exp_avg: &self.state.exp_avg[u][r.clone()],
                exp_avg_sq: &self.state.exp_avg_sq[u][r.clone()],
            })?;
        }
        Ok(())
    }
}

/// Plays `n` ranks saving `state` in-process: each writes its shard, rank 0 commits.
fn save_as_ranks(root: &Path, name: &str, state: &FullState, n: usize) -> PathBuf {
    let (cfg, layout, _) = fixture(name);
    let tmp = root.join(".tmp-step-00000003");
    std::fs::create_dir_all(&tmp).unwrap();
    for rank in 0..n {
        let mut part = RankPart { state, rank, n };
        write_shard(&tmp, rank, n, &layout, &mut part, &|_| true).unwrap();
    }
    let tok = gpt2_tokenizer();
    let ts = serde_json::json!({"k": [1, 2, 3]});
    let meta = CheckpointMeta {
        cfg: &cfg,
        layout: &layout,
        tokenizer: &tok,
        trainer_state: &ts,
        keep_last: 0,
    };
    let dest = root.join("step-00000003");
    commit(&tmp, &dest, root, 3, n, &meta).unwrap();
    dest
}

#[test]
fn a_checkpoint_written_by_several_ranks_reads_back_on_any_split() {
    let tmp = tempfile::tempdir().unwrap();
    let (cfg, layout, units) = fixture("tiny-llama");
    let state = state_of(&units, 0.5);
    let dir = save_as_ranks(tmp.path(), "tiny-llama", &state, 3);
    let shards = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|e| {
            let n = e.as_ref().unwrap().file_name();
            let n = n.to_string_lossy();
            n.starts_with("shard-") && n.ends_with(".safetensors")
        })
        .count();
    assert_eq!(shards, 3);
    // Whole, as one process.
    let (loaded, back) = load(&dir, &cfg, &layout).unwrap();
    assert_eq!(back, serde_json::json!({"k": [1, 2, 3]}));
    assert_eq!(bits(&loaded.master), bits(&state.master));
    assert_eq!(bits(&loaded.exp_avg), bits(&state.exp_avg));
    assert_eq!(bits(&loaded.exp_avg_sq), bits(&state.exp_avg_sq));
    // Any range, as the ranks of another split read it.
    let (src, _) = open_state(&dir, &cfg, &layout).unwrap();
    for (u, w) in state.exp_avg_sq.iter().enumerate() {
        for n in [2, 4, 5] {
            for r in 0..n {
                let k = w.len().div_ceil(n);
                let range = (r * k).min(w.len())..((r + 1) * k).min(w.len());
                let mut out = vec![f32::NAN; range.len()];
                src.fill(StatePart::ExpAvgSq, u, range.clone(), &mut out)
                    .unwrap();
                assert_eq!(out, w[range], "unit {u}, rank {r} of {n}");
            }
        }
    }
}

#[test]
fn a_tensor_parallel_slice_reads_its_columns_of_a_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let (cfg, layout, units) = fixture("tiny-gpt2");
    let state = state_of(&units, 0.25);
    let dir = save_as_ranks(tmp.path(), "tiny-gpt2", &state, 2);
    // A layout whose block-0 c_attn [D, 3D] is part 1 of 2 (three column blocks).
    let u = layout.block_unit(0);
    let qkv = layout.units[u].tensor(Role::Qkv).clone();
    let full = &state.master[u][qkv.offset..qkv.offset + qkv.numel()];
    let mut sliced = layout.clone();
    let slice = TensorSlice::strided(&qkv.shape, 1, 3, 2, 1);
    {
        let t = sliced.units[u]
            .tensors
            .iter_mut()
            .find(|t| t.role == Role::Qkv)
            .unwrap();
        t.shape = slice.local_shape.clone();
        t.slice = slice.clone();
    }
    let (src, _) = open_state(&dir, &cfg, &sliced).unwrap();
    let mut local = vec![0.0; slice.local_numel()];
    src.fill(
        StatePart::Master,
        u,
        qkv.offset..qkv.offset + local.len(),
        &mut local,
    )
    .unwrap();
    let (d, cols) = (qkv.shape[0], qkv.shape[1]);
    let w = cols / 6;
    for row in 0..d {
        for blk in 0..3 {
            for c in 0..w {
                assert_eq!(
                    local[row * 3 * w + blk * w + c],
                    full[row * cols + blk * 2 * w + w + c]
                );
            }
        }
    }
}

fn refs(v: &[(String, Vec<usize>, Vec<f32>)]) -> Vec<TensorRef<'_>> {
    v.iter()
        .map(|(n, s, d)| TensorRef {
            name: n.clone(),
            shape: s.clone(),
            data: d,
        })
        .collect()
}

/// Writes `state` as a version-1 checkpoint (whole tensors, HF names) by hand.
fn save_v1(dir: &Path, name: &str, state: &FullState) {
    let (cfg, layout, _) = fixture(name);
    std::fs::create_dir_all(dir).unwrap();
    let views = |part: &[Vec<f32>], prefix: &str| -> Vec<(String, Vec<usize>, Vec<f32>)> {
        layout
            .tensors()
            .map(|(u, t)| {
                (
                    format!("{prefix}{}", t.name),
                    t.shape.clone(),
                    part[u][t.offset..t.offset + t.numel()].to_vec(),
                )
            })
            .collect()
    };
    let model = views(&state.master, "");
    write_sharded(dir, "model", &refs(&model), StoreDtype::F32, u64::MAX).unwrap();
    let mut moments = views(&state.exp_avg, "exp_avg.");
    moments.extend(views(&state.exp_avg_sq, "exp_avg_sq."));
    write_sharded(dir, "optimizer", &refs(&moments), StoreDtype::F32, 200_000).unwrap();
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string(&cfg.to_hf_json()).unwrap(),
    )
    .unwrap();
    let ts = serde_json::json!({"format": "ferrotron-checkpoint", "version": 1, "step": 9, "trainer": {"step": 9}});
    std::fs::write(dir.join("trainer_state.json"), ts.to_string()).unwrap();
}

#[test]
fn version_1_checkpoints_still_load() {
    let tmp = tempfile::tempdir().unwrap();
    let (cfg, layout, units) = fixture("tiny-llama");
    let state = state_of(&units, 2.0);
    let dir = tmp.path().join("step-00000009");
    save_v1(&dir, "tiny-llama", &state);
    assert!(dir.join("optimizer.safetensors.index.json").is_file());
    let (loaded, ts) = load(&dir, &cfg, &layout).unwrap();
    assert_eq!(ts, serde_json::json!({"step": 9}));
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
    std::fs::write(stale.join("shard-00000-of-00002.safetensors"), b"partial").unwrap();
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
    let (cfg, layout, units) = fixture("tiny-gpt2");

    // A version-1 checkpoint with one moment of the wrong shape.
    let v1 = tmp.path().join("v1");
    let mut state = state_of(&units, 1.0);
    save_v1(&v1, "tiny-gpt2", &state);
    let name = "transformer.h.0.ln_1.weight";
    let ln = layout.units[1]
        .tensors
        .iter()
        .find(|t| t.name == name)
        .unwrap();
    state.exp_avg[1].remove(ln.offset);
    let bad = v1.join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    for f in ["model.safetensors", "config.json", "trainer_state.json"] {
        std::fs::copy(v1.join(f), bad.join(f)).unwrap();
    }
    let mut t: Vec<TensorRef> = Vec::new();
    let short = vec![0.0f32; ln.numel() - 1];
    let exp_avg_sq = state_of(&units, 1.0).exp_avg_sq;
    for (prefix, part) in [("exp_avg.", &state.exp_avg), ("exp_avg_sq.", &exp_avg_sq)] {
        for (u, spec) in layout.tensors() {
            let n = format!("{prefix}{}", spec.name);
            if n == format!("exp_avg.{name}") {
                t.push(TensorRef {
                    name: n,
                    shape: vec![ln.numel() - 1],
                    data: &short,
                });
            } else {
                let off = if u == 1 && prefix == "exp_avg." && spec.offset > ln.offset {
                    spec.offset - 1
                } else {
                    spec.offset
                };
                t.push(TensorRef {
                    name: n,
                    shape: spec.shape.clone(),
                    data: &part[u][off..off + spec.numel()],
                });
            }
        }
    }
    write_sharded(&bad, "optimizer", &t, StoreDtype::F32, u64::MAX).unwrap();
    let m = user_err(load(&bad, &cfg, &layout));
    assert!(
        m.contains("optimizer.safetensors") && m.contains(name) && m.contains("shape"),
        "{m}"
    );

    // A truncated shard file.
    let (dir, _) = save_fixture(&tmp.path().join("a"), "tiny-gpt2", 1, 0);
    let shard = dir.join("shard-00000-of-00001.safetensors");
    let bytes = std::fs::read(&shard).unwrap();
    std::fs::write(&shard, &bytes[..bytes.len() / 2]).unwrap();
    let m = user_err(load(&dir, &cfg, &layout));
    assert!(
        m.contains("shard-00000-of-00001.safetensors") && m.contains("not a valid safetensors"),
        "{m}"
    );

    // A rank's files missing.
    let many = save_as_ranks(
        &tmp.path().join("m"),
        "tiny-gpt2",
        &state_of(&units, 0.0),
        3,
    );
    std::fs::remove_file(many.join("shard-00001-of-00003.json")).unwrap();
    let m = user_err(load(&many, &cfg, &layout));
    assert!(m.contains("shard-00001-of-00003 is missing"), "{m}");

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
