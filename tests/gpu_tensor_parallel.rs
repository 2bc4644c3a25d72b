//! Issue 14 on the GPU machine (ignored elsewhere; scripts/gpu-check.sh runs it from a prebuilt
//! executable with FERROTRON_REPO / FERROTRON_BIN pointing at the copied tree):
//! - tp 2 with two ranks on the one GPU (mpirun, host-staged tp and dp collectives) trains the
//!   tiny Llama, GPT-2 and Qwen2 as tp 1 does on the GPU: in f32 within the CPU test's 1e-5 (losses
//!   and final weights), in bf16 within 2e-2 per step (the bf16 bound of check-hf and of the
//!   quickstart-vs-CPU curve: a tp rank's partial sums round to bf16 where the whole GEMM did not);
//! - `check-hf --tp 2 [--sequence-parallel] --device cuda` on every fixture within the 1-rank
//!   CUDA bounds (f32 1e-4, bf16 2e-2).
//!
//! Each prints a `GPU-TRAIN` line with its figures.

mod common;
use common::*;
use std::path::Path;

const MODELS: [&str; 3] = ["tiny-llama", "tiny-gpt2", "tiny-qwen2"];
const FIXTURES: [&str; 6] = [
    "tiny-llama",
    "tiny-gpt2",
    "tiny-qwen2",
    "tiny-llama3",
    "tiny-qwen3",
    "tiny-mistral",
];

fn args(model: &str, out: &Path, precision: &str, tp: usize, sp: bool) -> Vec<String> {
    let recipe = root().join("tests/recipes/tiny-dp.toml");
    let sets = vec![
        format!("model.hf_dir=tests/fixtures/hf/{model}"),
        format!("train.out_dir={}", out.display()),
        "train.device=cuda".into(),
        "parallel.gpu_comm=host-staged".into(),
        format!("train.precision=\"{precision}\""),
        format!("parallel.tp={tp}"),
        format!("parallel.sequence_parallel={sp}"),
    ];
    train_args(&recipe.display().to_string(), &sets)
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn tp_2_with_two_ranks_on_one_gpu_matches_tp_1() {
    for model in MODELS {
        for (precision, tol) in [("f32", 1e-5), ("bf16", 2e-2)] {
            let one = tempfile::tempdir().unwrap();
            check(
                &ferrotron(&strs(&args(model, one.path(), precision, 1, false))),
                "tp 1 on the GPU",
            );
            let (l1, w1) = (
                losses(one.path()),
                checkpoint_weights(&one.path().join("checkpoints")),
            );
            for sp in [false, true] {
                let two = tempfile::tempdir().unwrap();
                let a = args(model, two.path(), precision, 2, sp);
                check(&mpirun(2, &strs(&a)), "tp 2, 2 ranks on one GPU");
                let dl = max_rel(&losses(two.path()), &l1);
                let dw = weights_rel(&checkpoint_weights(&two.path().join("checkpoints")), &w1);
                println!(
                    "GPU-TRAIN {model} {precision} tp 2{} (2 ranks on one GPU, host-staged) vs tp 1: loss rel diff {dl:.2e}, final weights rel diff {dw:.2e} (bound {tol:.0e})",
                    if sp { " SP" } else { "" }
                );
                assert!(
                    dl <= tol,
                    "{model} {precision} sp {sp}: losses differ by {dl:.2e}"
                );
                assert!(
                    dw <= tol,
                    "{model} {precision} sp {sp}: weights differ by {dw:.2e}"
                );
            }
        }
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn check_hf_with_tp_2_on_cuda() {
    for model in FIXTURES {
        for dtype in ["f32", "bf16"] {
            for sp in [false, true] {
                let dir = root()
                    .join("tests/fixtures/hf")
                    .join(model)
                    .display()
                    .to_string();
                let mut a = vec![
                    "check-hf", &dir, "--device", "cuda", "--dtype", dtype, "--tp", "2",
                ];
                if sp {
                    a.push("--sequence-parallel");
                }
                let out = mpirun(2, &a);
                check(
                    &out,
                    &format!("check-hf {model} cuda {dtype} --tp 2 sp {sp}"),
                );
                let text = String::from_utf8_lossy(&out.stdout);
                println!(
                    "GPU-TRAIN check-hf {model} cuda-{dtype} tp 2{}: {}",
                    if sp { " SP" } else { "" },
                    text.lines().last().unwrap_or_default()
                );
            }
        }
    }
}
