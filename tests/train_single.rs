//! Issue 3: one-process training end to end — metrics, exact resume, bad input.

mod common;
use common::*;
use std::path::Path;

fn recipe() -> String {
    root()
        .join("tests/recipes/tiny-dp.toml")
        .display()
        .to_string()
}

fn out_set(dir: &Path) -> String {
    format!("train.out_dir={}", dir.display())
}

#[test]
fn trains_and_writes_metrics() {
    let tmp = tempfile::tempdir().unwrap();
    let out = ferrotron(&[
        "train",
        &recipe(),
        "--set",
        &out_set(tmp.path()),
        "--set",
        "train.sample_every=5",
        "--set",
        "train.sample_prompt=\"ROMEO:\"",
        "--set",
        "train.sample_tokens=8",
    ]);
    check(&out, "train");
    let recs = step_records(tmp.path());
    assert_eq!(recs.len(), 10);
    for (i, r) in recs.iter().enumerate() {
        assert_eq!(r["step"].as_u64(), Some(i as u64 + 1));
        for k in [
            "loss",
            "lr",
            "grad_norm",
            "tokens",
            "tokens_per_s",
            "tflops_per_device",
        ] {
            assert!(
                r[k].as_f64().is_some_and(f64::is_finite),
                "step {}: `{k}` missing or not finite: {r}",
                i + 1
            );
        }
    }
    assert!(
        recs[0]["memory"].is_array(),
        "first step carries per-rank memory: {}",
        recs[0]
    );
    // Model FLOPs per token = tflops_per_device / tokens_per_s, the same every step (one rank).
    let fpt: Vec<f64> = recs
        .iter()
        .map(|r| {
            r["tflops_per_device"].as_f64().unwrap() * 1e12 / r["tokens_per_s"].as_f64().unwrap()
        })
        .collect();
    assert!(
        fpt.iter()
            .all(|f| (f / fpt[0] - 1.0).abs() < 1e-9 && *f > 0.0),
        "{fpt:?}"
    );
    let l = losses(tmp.path());
    assert!(l[9] < l[0], "loss falls over 10 steps: {l:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("global batch 8 sequences x 16 tokens = 128 tokens/step"),
        "{stdout}"
    );
}

#[test]
fn resumed_run_reproduces_the_uninterrupted_run_bitwise() {
    let full = tempfile::tempdir().unwrap();
    let set_ckpt = "checkpoint.every=5";
    check(
        &ferrotron(&[
            "train",
            &recipe(),
            "--set",
            &out_set(full.path()),
            "--set",
            set_ckpt,
            "--set",
            "checkpoint.keep_last=5",
        ]),
        "full run",
    );

    // The interrupted run: what the full run had on disk right after step 5.
    let cut = tempfile::tempdir().unwrap();
    let src = full.path().join("checkpoints/step-00000005");
    let dst = cut.path().join("checkpoints/step-00000005");
    copy_tree(&src, &dst);
    let out = ferrotron(&[
        "train",
        &recipe(),
        "--set",
        &out_set(cut.path()),
        "--set",
        set_ckpt,
        "--resume",
    ]);
    check(&out, "resumed run");
    let (a, b) = (losses(full.path()), losses(cut.path()));
    assert_eq!(b.len(), 5, "the resumed run does steps 6..10");
    assert_eq!(&a[5..], &b[..], "losses of steps 6..10 are bitwise equal");
    let (wa, wb) = (
        checkpoint_weights(&full.path().join("checkpoints")),
        checkpoint_weights(&cut.path().join("checkpoints")),
    );
    assert_eq!(wa, wb, "final weights are bitwise equal");
}

fn user_error(args: &[&str]) -> String {
    let out = ferrotron(args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "expected exit 2; stderr: {err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[test]
fn recipe_typo_names_the_key_and_the_closest_one() {
    let tmp = tempfile::tempdir().unwrap();
    let err = user_error(&[
        "train",
        &recipe(),
        "--set",
        &out_set(tmp.path()),
        "--set",
        "optim.warmup_step=3",
    ]);
    assert!(
        err.contains("unknown key `optim.warmup_step` (did you mean `optim.warmup_steps`?)"),
        "{err}"
    );
    assert!(
        !tmp.path().join("metrics.jsonl").exists(),
        "nothing written"
    );
}

#[test]
fn missing_data_file_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let err = user_error(&[
        "train",
        &recipe(),
        "--set",
        &out_set(tmp.path()),
        "--set",
        "data.path=tests/data/nope.txt",
    ]);
    assert!(err.contains("nope.txt"), "{err}");
}

#[test]
fn missing_recipe_is_named() {
    let err = user_error(&["train", "tests/recipes/does-not-exist.toml"]);
    assert!(err.contains("does-not-exist.toml"), "{err}");
}

#[test]
fn checkpoints_turned_off_write_none_and_refuse_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let off = [
        "--set",
        "checkpoint.enabled=false",
        "--set",
        "train.steps=3",
    ];
    let mut args = vec![
        "train".to_string(),
        recipe(),
        "--set".into(),
        out_set(tmp.path()),
    ];
    args.extend(off.iter().map(|s| s.to_string()));
    check(&ferrotron(&strs(&args)), "train without checkpoints");
    assert_eq!(step_records(tmp.path()).len(), 3);
    assert!(
        !tmp.path().join("checkpoints").exists(),
        "no checkpoint directory"
    );
    args.push("--resume".into());
    let err = user_error(&strs(&args));
    assert!(
        err.contains("--resume needs checkpoints") && err.contains("checkpoint.enabled"),
        "{err}"
    );
}

#[test]
fn diverging_loss_stops_and_keeps_the_last_good_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let out = ferrotron(&[
        "train",
        &recipe(),
        "--set",
        &out_set(tmp.path()),
        "--set",
        "optim.lr=1e30",
        "--set",
        "optim.warmup_steps=0",
        "--set",
        "optim.clip_norm=0",
        "--set",
        "checkpoint.every=1",
        "--set",
        "checkpoint.keep_last=10",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    assert!(err.contains("not finite") && err.contains("step "), "{err}");
    let bad_step: u64 = err
        .split("step ")
        .nth(1)
        .unwrap()
        .split(':')
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(bad_step >= 2, "the first step is finite: {err}");
    // Checkpoints exist for every step before the bad one and none for it; the last one loads.
    let ck = tmp.path().join("checkpoints");
    assert!(
        ck.join(format!("step-{:08}", bad_step - 1)).is_dir(),
        "{err}"
    );
    assert!(!ck.join(format!("step-{bad_step:08}")).exists());
    let kept = checkpoint_weights(&ck);
    assert!(
        !kept.is_empty() && kept.iter().all(|(_, v)| v.iter().all(|x| x.is_finite())),
        "the kept checkpoint loads and is finite"
    );
}
