//! Issue 6, on any machine: the GPU settings of a recipe are checked before anything runs.
//! `train.precision = "bf16"` needs CUDA; `parallel.gpu_comm` is "nccl" or "host-staged"; and
//! `train.device = "cuda"` where no NVIDIA driver exists is one sentence and exit code 2, never a
//! panic (on a machine with a GPU the same run must train instead).

mod common;
use common::*;

/// tests/recipes/tiny-dp.toml with extra `--set`s; returns (exit code, stderr).
fn run(out: &std::path::Path, sets: &[&str]) -> (Option<i32>, String) {
    let mut all = vec![format!("train.out_dir={}", out.display())];
    all.extend(sets.iter().map(|s| s.to_string()));
    let recipe = root().join("tests/recipes/tiny-dp.toml");
    let args = train_args(&recipe.display().to_string(), &all);
    let o = ferrotron(&strs(&args));
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn assert_user_error(sets: &[&str], needle: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let (code, err) = run(tmp.path(), sets);
    assert_eq!(code, Some(2), "{sets:?}: expected exit 2; stderr: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains(needle), "{sets:?}: {err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(
        !tmp.path().join("metrics.jsonl").exists(),
        "nothing written"
    );
}

#[test]
fn bf16_on_the_cpu_is_rejected_with_the_reason() {
    assert_user_error(
        &["train.precision=bf16"],
        "`train.precision` = \"bf16\" needs `train.device` = \"cuda\"",
    );
}

#[test]
fn unknown_precision_and_gpu_comm_are_named() {
    assert_user_error(
        &["train.device=cuda", "train.precision=fp8"],
        "`train.precision` = \"fp8\" is not one of \"f32\", \"bf16\"",
    );
    assert_user_error(
        &["parallel.gpu_comm=gloo"],
        "`parallel.gpu_comm` = \"gloo\" is not one of \"nccl\", \"host-staged\"",
    );
    assert_user_error(
        &["train.device=tpu"],
        "`train.device` = \"tpu\" is not one of \"cpu\", \"cuda\"",
    );
}

#[test]
fn cuda_without_a_driver_is_one_sentence_not_a_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let (code, err) = run(tmp.path(), &["train.device=cuda"]);
    if ferrotron_kernels::cuda::device::driver_present() {
        assert_eq!(
            code,
            Some(0),
            "a machine with a driver trains on the GPU: {err}"
        );
        assert_eq!(step_records(tmp.path()).len(), 10);
    } else {
        assert_eq!(code, Some(2), "expected exit 2; stderr: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(
            err.contains("train.device = \"cuda\"") && err.contains("no NVIDIA driver"),
            "{err}"
        );
        assert!(
            !tmp.path().join("metrics.jsonl").exists(),
            "nothing written"
        );
    }
}
