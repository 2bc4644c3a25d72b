//! Issue 18: no rank ever holds the whole model. Every layout starts from the same bits (the
//! counter-based init), a checkpoint written by any layout resumes on any other, a distributed
//! checkpoint exports the same bytes as the same weights saved whole, and a rank killed during a
//! distributed save leaves the previous step loadable and exactly resumable.

mod common;
use common::*;
use std::path::{Path, PathBuf};

fn recipe() -> String {
    root()
        .join("tests/recipes/tiny-init.toml")
        .display()
        .to_string()
}

fn sets(out: &Path, extra: &[String]) -> Vec<String> {
    let mut v = vec![format!("train.out_dir={}", out.display())];
    v.extend_from_slice(extra);
    v
}

/// `n` ranks (1: a plain process) training `recipe()` with `extra` settings.
fn run(n: usize, out: &Path, extra: &[String]) -> std::process::Output {
    let args = train_args(&recipe(), &sets(out, extra));
    if n == 1 {
        ferrotron(&strs(&args))
    } else {
        mpirun(n, &strs(&args))
    }
}

fn run_ok(n: usize, out: &Path, extra: &[String], what: &str) {
    check(&run(n, out, extra), what);
}

/// Every logical tensor's master weights in the checkpoint directory `dir`, by name.
fn weights_of(dir: &Path) -> Vec<(String, Vec<u32>)> {
    let cfg = ferrotron::model::ModelConfig::from_file(&dir.join("config.json")).unwrap();
    let layout = ferrotron::model::ParamLayout::new(&cfg);
    let src = ferrotron::checkpoint::open_weights(dir, &cfg, &layout).unwrap();
    layout
        .tensors()
        .map(|(_, t)| {
            let mut v = vec![0.0f32; t.global_shape().iter().product()];
            src.fragments
                .read(ferrotron_zero::StatePart::Master, &t.name, 0, &mut v)
                .unwrap();
            (t.name.clone(), v.iter().map(|x| x.to_bits()).collect())
        })
        .collect()
}

fn step_dir(out: &Path, step: u64) -> PathBuf {
    out.join("checkpoints").join(format!("step-{step:08}"))
}

#[test]
fn every_layout_starts_from_the_same_bits() {
    let base = tempfile::tempdir().unwrap();
    let mut reference: Option<Vec<(String, Vec<u32>)>> = None;
    for (n, stages) in [(1, vec![0]), (2, vec![0, 1, 2, 3]), (4, vec![0, 1, 2, 3])] {
        for stage in stages {
            let out = base.path().join(format!("dp{n}-s{stage}"));
            run_ok(
                n,
                &out,
                &[
                    format!("parallel.zero_stage={stage}"),
                    "checkpoint.save_initial=true".into(),
                    "train.steps=1".into(),
                ],
                &format!("dp {n} stage {stage}"),
            );
            let w = weights_of(&step_dir(&out, 0));
            assert!(!w.is_empty());
            match &reference {
                None => reference = Some(w),
                Some(r) => assert!(
                    *r == w,
                    "dp {n} stage {stage}: initial weights differ from dp 1"
                ),
            }
        }
    }
}

#[test]
fn a_zero3_dp4_checkpoint_resumes_on_other_layouts() {
    let base = tempfile::tempdir().unwrap();
    let full = base.path().join("dp4-s3");
    run_ok(
        4,
        &full,
        &["parallel.zero_stage=3".into()],
        "uninterrupted dp 4 stage 3",
    );
    let want = losses(&full);
    assert_eq!(want.len(), 6);
    for (n, stage) in [(1, 0), (2, 1), (3, 2)] {
        let out = base.path().join(format!("dp{n}-s{stage}"));
        let ck = out.join("checkpoints");
        std::fs::create_dir_all(&ck).unwrap();
        let src = step_dir(&full, 3);
        let dst = ck.join("step-00000003");
        std::fs::create_dir(&dst).unwrap();
        for e in std::fs::read_dir(&src).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
        }
        let args = train_args(
            &recipe(),
            &sets(&out, &[format!("parallel.zero_stage={stage}")]),
        );
        let mut a = strs(&args);
        a.push("--resume");
        let o = if n == 1 { ferrotron(&a) } else { mpirun(n, &a) };
        check(&o, &format!("resume at dp {n} stage {stage}"));
        let got = losses(&out);
        assert_eq!(got.len(), 3, "dp {n} stage {stage}: steps 4-6");
        let d = max_rel(&got, &want[3..]);
        println!(
            "resume at dp {n} stage {stage}: losses {got:?} vs {:?}: max rel {d:.2e}",
            &want[3..]
        );
        assert!(
            d <= 1e-6,
            "dp {n} stage {stage}: {got:?} vs {:?}",
            &want[3..]
        );
    }
}

#[test]
fn a_distributed_checkpoint_exports_the_bytes_of_the_same_weights_saved_whole() {
    let base = tempfile::tempdir().unwrap();
    let out = base.path().join("dp4");
    run_ok(
        4,
        &out,
        &["parallel.zero_stage=3".into(), "train.steps=3".into()],
        "dp 4 stage 3",
    );
    let sharded = step_dir(&out, 3);
    // The same state, read whole into one process and saved by it.
    let cfg = ferrotron::model::ModelConfig::from_file(&sharded.join("config.json")).unwrap();
    let layout = ferrotron::model::ParamLayout::new(&cfg);
    let (state, trainer) = ferrotron::checkpoint::load(&sharded, &cfg, &layout).unwrap();
    let tok = ferrotron::tokenizer::Tokenizer::from_dir(&sharded).unwrap();
    let whole_root = base.path().join("whole");
    let whole =
        ferrotron::checkpoint::save(&whole_root, 3, &cfg, &layout, &state, &tok, &trainer, 0)
            .unwrap();
    assert!(std::fs::read_dir(&sharded)
        .unwrap()
        .any(|e| e.unwrap().file_name() == "shard-00003-of-00004.safetensors"));
    for dtype in ["f32", "bf16"] {
        let a = base.path().join(format!("hf-sharded-{dtype}"));
        let b = base.path().join(format!("hf-whole-{dtype}"));
        for (ck, to) in [(&sharded, &a), (&whole, &b)] {
            let args = [
                "export",
                ck.to_str().unwrap(),
                "--hf",
                to.to_str().unwrap(),
                "--dtype",
                dtype,
            ];
            check(&ferrotron(&args), "export");
        }
        let (x, y) = (
            std::fs::read(a.join("model.safetensors")).unwrap(),
            std::fs::read(b.join("model.safetensors")).unwrap(),
        );
        assert!(x == y, "{dtype}: exports differ");
    }
}
