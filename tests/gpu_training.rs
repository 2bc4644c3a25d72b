//! Issue 6 acceptance on the GPU machine (ignored elsewhere; scripts/gpu-check.sh runs them from
//! prebuilt executables with FERROTRON_REPO / FERROTRON_BIN pointing at the copied tree):
//! - check-hf on every HF fixture on CUDA (Llama, GPT-2, Qwen2, Llama 3.x, Qwen3, Mistral with a
//!   sliding window) and the other families' var-* fixtures: f32 within 1e-4, bf16 within 2e-2
//!   (every quantity; on the Gemma and OLMo-2 fixtures 1.5 times PyTorch's own bf16 error);
//! - 50 quickstart steps in bf16 on the GPU track the CPU f32 loss curve within 2% per step;
//! - ZeRO stages 1-3 with 2 ranks on the one GPU (mpirun, host-staged collectives) match stage 0;
//! - NCCL at world size 1 runs the same training as the host-staged path;
//! - (issue 15) NCCL point-to-point groups move device buffers (a group of one, to itself);
//! - (issue 15) pp 2 with both stages on the one GPU (boundary tensors host-staged over MPI,
//!   tagged and grouped) matches pp 1 in f32, untied (tiny-llama) and tied (tiny-gpt2);
//! - (issue 13) the preflight stops a model that cannot fit, naming the GPU's free memory;
//! - (issue 16) `train.profile_steps` writes a kernel profile that names the model's matmuls
//!   with their FLOP rates and leaves the training unchanged.
//!
//! Each prints a `GPU-TRAIN` line with its figures.

mod common;
use common::*;
use ferrotron::check_hf;
use ferrotron_kernels::cuda::CudaBackend;
use std::path::Path;

const NEEDS_GPU: &str = "needs a CUDA GPU";
const MODELS: [&str; 6] = [
    "tiny-llama",
    "tiny-gpt2",
    "tiny-qwen2",
    "tiny-llama3",
    "tiny-qwen3",
    "tiny-mistral",
];

/// Fixtures of the families that run the rotary op partially and with an attention factor
/// (Phi-3), skip it (SmolLM3's NoPE layer) or scale activations (Granite), and Gemma's (1 + w
/// norms, GeGLU, sandwich norms, attention and logit softcaps, per-layer-type rotary tables) and
/// OLMo-2's (no input norms, q/k norms over the whole projection): check-hf on CUDA too.
const MORE_FAMILIES: [&str; 9] = [
    "var-phi3",
    "var-phi3-longrope",
    "var-phi3-longrope-long",
    "var-smollm3",
    "var-granite",
    "var-gemma",
    "var-gemma2",
    "var-gemma3",
    "var-olmo2",
];

/// PyTorch's own bf16 error on the fixtures where it exceeds issue 6's 2e-2: the worst relative
/// gradient error against the fixture's reference of transformers' model run in bf16, the larger
/// of torch.autocast(bf16) over the f32 model (an f32 residual stream) and the model cast to
/// bf16 (bf16 activations throughout, as ferrotron's bf16 mode keeps them):
/// `python3 scripts/reference_norm_precision.py --torch-bf16 | --torch-bf16-pure DIR`
/// (transformers 5.24, torch 2.11, CPU). var-gemma 2.05e-2 / 2.38e-2, var-gemma2 5.13e-2 /
/// 7.28e-2, var-gemma3 6.03e-2 / 1.01e-1, var-olmo2 6.42e-2 / 5.75e-2. These fixtures draw
/// their norm weights wide (Gemma's 1 + w, sandwich and OLMo-2's output norms), which bf16
/// rounding of the activations feels; ferrotron's bf16 on them is held to 1.5 times PyTorch's
/// (on the H200, 2026-12-04: var-gemma 2.12e-2, var-gemma2 9.08e-2; on the fixtures within
/// 2e-2, ferrotron's error is 0.88-1.0 times the cast model's: tiny-llama 1.02e-2 against
/// 1.17e-2, tiny-qwen3 1.56e-2 against 1.56e-2).
const TORCH_BF16_WORST: [(&str, f64); 4] = [
    ("var-gemma", 2.38e-2),
    ("var-gemma2", 7.28e-2),
    ("var-gemma3", 1.01e-1),
    ("var-olmo2", 6.42e-2),
];

fn check_hf_on_cuda<A: ferrotron_kernels::cuda::CudaAct>(dtype: &str, default_tol: f64) {
    let b = CudaBackend::<A>::new(0).expect(NEEDS_GPU);
    // every fixture runs; the ones over their bound are listed at the end
    let mut over = Vec::new();
    for model in MODELS.into_iter().chain(MORE_FAMILIES) {
        let torch = TORCH_BF16_WORST.iter().find(|(m, _)| *m == model);
        let tol = match (dtype, torch) {
            ("bf16", Some((_, t))) => default_tol.max(1.5 * t),
            _ => default_tol,
        };
        let dir = root().join("tests/fixtures/hf").join(model);
        let report = check_hf::run(&b, &dir).expect("check-hf runs");
        let worst = report
            .rows
            .iter()
            .max_by(|a, b| a.rel_err.total_cmp(&b.rel_err))
            .unwrap();
        println!(
            "GPU-TRAIN check-hf {model} cuda-{dtype}: {} quantities, logits {:.2e}, loss {:.2e}, grads {:.2e}, adamw {:.2e}; worst {} {:.2e} (bound {tol:.2e})",
            report.rows.len(),
            report.max_err_of("logits"),
            report.max_err_of("loss"),
            report.max_err_of("grad."),
            report.max_err_of("adamw1."),
            worst.name,
            worst.rel_err
        );
        if worst.rel_err > tol {
            over.push(format!(
                "{model} cuda-{dtype}: {} relative error {:.3e} > {tol:.3e}",
                worst.name, worst.rel_err
            ));
            continue;
        }
        // The command itself: exit 0 and every quantity within its default bound.
        let fixture = format!("tests/fixtures/hf/{model}");
        let tol_arg = format!("{tol:e}");
        let out = ferrotron(&[
            "check-hf", &fixture, "--device", "cuda", "--dtype", dtype, "--tol", &tol_arg,
        ]);
        check(
            &out,
            &format!("ferrotron check-hf {fixture} --device cuda --dtype {dtype}"),
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let summary = stdout.lines().last().unwrap_or_default();
        let n = report.rows.len();
        assert!(
            summary.starts_with(&format!("{n} of {n} quantities within {tol:.1e}")),
            "check-hf {model} {dtype}: {summary}"
        );
        println!("GPU-TRAIN ferrotron check-hf {fixture} --device cuda --dtype {dtype}: exit 0, {summary}");
    }
    assert!(over.is_empty(), "over the bound:\n{}", over.join("\n"));
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn check_hf_cuda_f32_within_1e4() {
    check_hf_on_cuda::<f32>("f32", 1e-4);
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn check_hf_cuda_bf16_within_2e2_or_torch_own_bf16_error() {
    check_hf_on_cuda::<half::bf16>("bf16", 2e-2);
}

fn tokens_per_s(out: &Path) -> f64 {
    let r = step_records(out);
    let v: Vec<f64> = r
        .iter()
        .skip(r.len() / 2)
        .filter_map(|x| x["tokens_per_s"].as_f64())
        .collect();
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// The quickstart model and recipe for 50 steps with `optim.lr = 1e-3` (the recipe's 3e-3 peaks at
/// step 40 on 8-sequence batches, where the run turns chaotic: on the H100, CUDA f32 — bitwise
/// equal to the CPU for 37 steps — drifted 1.7% from it by step 48, and bf16 runs of the same
/// build landed 1.8% and 3.2% off, so a per-step bound there measures the chaos, not the
/// precision; see docs/gpu-runs). At 1e-3, CUDA f32 must stay within 0.1% of the CPU and bf16
/// within the 2% per step.
#[test]
#[ignore = "needs a CUDA GPU"]
fn quickstart_50_steps_in_bf16_track_the_cpu_curve() {
    let data = root().join("data-cache/shakespeare");
    assert!(
        data.exists(),
        "the quickstart data is missing: run scripts/fetch-data.sh (or carry data-cache/)"
    );
    let run = |device: &str, precision: &str, out: &Path| {
        let sets = vec![
            "train.steps=50".to_string(),
            "optim.lr=1e-3".into(),
            "train.eval_every=0".into(),
            "checkpoint.every=0".into(),
            format!("train.device={device}"),
            format!("train.precision={precision}"),
            format!("train.out_dir={}", out.display()),
        ];
        check(
            &ferrotron(&strs(&train_args("recipes/quickstart.toml", &sets))),
            &format!("{device} {precision}"),
        );
        losses(out)
    };
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let cpu = run("cpu", "f32", dirs[0].path());
    let f32s = run("cuda", "f32", dirs[1].path());
    let bf16s = run("cuda", "bf16", dirs[2].path());
    assert_eq!(cpu.len(), 50);
    let worst = |other: &[f64]| {
        assert_eq!(other.len(), 50);
        cpu.iter()
            .zip(other)
            .map(|(x, y)| (y - x).abs() / x.abs())
            .enumerate()
            .fold(
                (0, 0.0f64),
                |m, (i, r)| if r > m.1 { (i + 1, r) } else { m },
            )
    };
    let ((sf, wf), (sb, wb)) = (worst(&f32s), worst(&bf16s));
    println!(
        "GPU-TRAIN quickstart 50 steps (lr 1e-3): cpu f32 loss {:.4} -> {:.4}; cuda f32 max per-step rel diff {:.3}% (step {sf}, bound 0.1%); cuda bf16 {:.4} -> {:.4}, max {:.3}% (step {sb}, bound 2%); tokens/s cpu {:.0}, cuda f32 {:.0}, cuda bf16 {:.0}",
        cpu[0],
        cpu[49],
        100.0 * wf,
        bf16s[0],
        bf16s[49],
        100.0 * wb,
        tokens_per_s(dirs[0].path()),
        tokens_per_s(dirs[1].path()),
        tokens_per_s(dirs[2].path())
    );
    for i in 0..50 {
        println!(
            "GPU-CURVE step {} cpu {:.5} cuda-f32 {:.5} cuda-bf16 {:.5}",
            i + 1,
            cpu[i],
            f32s[i],
            bf16s[i]
        );
    }
    assert!(
        wf <= 1e-3,
        "step {sf}: f32 loss off the CPU curve by {:.3}%",
        100.0 * wf
    );
    assert!(
        wb <= 0.02,
        "step {sb}: bf16 loss off the CPU curve by {:.2}%",
        100.0 * wb
    );
}

fn tiny_args(model: &str, out: &Path, stage: u8, gpu_comm: &str, extra: &[&str]) -> Vec<String> {
    let recipe = root().join("tests/recipes/tiny-dp.toml");
    let mut sets = vec![
        format!("model.hf_dir=tests/fixtures/hf/{model}"),
        format!("train.out_dir={}", out.display()),
        format!("parallel.zero_stage={stage}"),
        "train.device=cuda".into(),
        format!("parallel.gpu_comm={gpu_comm}"),
    ];
    sets.extend(extra.iter().map(|s| s.to_string()));
    train_args(&recipe.display().to_string(), &sets)
}

/// Two layouts, each held to the CPU test's 1e-5:
/// - f32 with 2 micro-batches per rank: stage 2-3 reduce each micro-batch's gradient and sum the
///   shards, stage 0-1 sum the micro-batches and reduce once; the orders differ by fp32 round-off.
/// - bf16 with one micro-batch per rank: the same sums in the same order, so the stages agree
///   exactly. (bf16 with several micro-batches is not held to 1e-5: the fp32 round-off of the
///   different summation order flips the bf16 rounding of the odd compute weight, a 2^-8 change.)
#[test]
#[ignore = "needs a CUDA GPU"]
fn zero_stages_with_two_ranks_on_one_gpu_match_stage_0() {
    let layouts: [(&str, &[&str]); 2] = [
        (
            "f32, 2 micro-batches",
            &["train.precision=\"f32\"", "train.micro_batch=2"],
        ),
        (
            "bf16, 1 micro-batch",
            &["train.precision=\"bf16\"", "train.micro_batch=4"],
        ),
    ];
    for model in MODELS {
        for (name, extra) in layouts {
            let base = tempfile::tempdir().unwrap();
            let args = tiny_args(model, base.path(), 0, "host-staged", extra);
            check(&mpirun(2, &strs(&args)), "stage 0, 2 ranks");
            let (l0, w0) = (
                losses(base.path()),
                checkpoint_weights(&base.path().join("checkpoints")),
            );
            assert_eq!(l0.len(), 10);
            for stage in [1, 2, 3] {
                let out = tempfile::tempdir().unwrap();
                let args = tiny_args(model, out.path(), stage, "host-staged", extra);
                check(&mpirun(2, &strs(&args)), &format!("stage {stage}, 2 ranks"));
                let dl = max_rel(&losses(out.path()), &l0);
                let dw = weights_rel(&checkpoint_weights(&out.path().join("checkpoints")), &w0);
                println!(
                    "GPU-TRAIN {model} {name}: stage {stage} vs stage 0, 2 ranks on one GPU (host-staged MPI): loss rel diff {dl:.2e}, final weights rel diff {dw:.2e}"
                );
                assert!(
                    dl <= 1e-5,
                    "{model} {name} stage {stage}: losses differ by {dl:.2e}"
                );
                assert!(
                    dw <= 1e-5,
                    "{model} {name} stage {stage}: weights differ by {dw:.2e}"
                );
            }
        }
    }
}

/// Issue 15 on the GPU: two pipeline stages of one block each, both ranks on the one GPU; f32,
/// two micro-batches per step. Boundary tensors go both ways the trainer has without NCCL
/// (which refuses two ranks on one GPU): tagged (downloaded, sent over MPI as f32) and grouped
/// (`parallel.pp_p2p = "grouped"`: the device-buffer path of `Collectives::p2p_group_act`,
/// host-staged here; over NCCL it needs two GPUs).
#[test]
#[ignore = "needs a CUDA GPU"]
fn pipeline_two_stages_on_one_gpu_match_one_stage() {
    for model in ["tiny-llama", "tiny-gpt2"] {
        let extra = ["train.precision=\"f32\"", "train.micro_batch=4"];
        let one = tempfile::tempdir().unwrap();
        let args = tiny_args(model, one.path(), 0, "host-staged", &extra);
        check(&ferrotron(&strs(&args)), "pp 1");
        for p2p in ["tagged", "grouped"] {
            let two = tempfile::tempdir().unwrap();
            let mut extra = extra.to_vec();
            extra.push("parallel.pp=2");
            let mode = format!("parallel.pp_p2p={p2p}");
            extra.push(&mode);
            let args = tiny_args(model, two.path(), 0, "host-staged", &extra);
            check(&mpirun(2, &strs(&args)), &format!("pp 2, 2 ranks, {p2p}"));
            let (a, b) = (losses(one.path()), losses(two.path()));
            assert_eq!((a.len(), b.len()), (10, 10));
            let dl = max_rel(&b, &a);
            let dw = weights_rel(
                &checkpoint_weights(&two.path().join("checkpoints")),
                &checkpoint_weights(&one.path().join("checkpoints")),
            );
            println!(
                "GPU-TRAIN {model} f32: pp 2 (2 ranks on one GPU, {p2p} point-to-point, host-staged) vs pp 1: loss rel diff {dl:.2e}, final weights rel diff {dw:.2e}"
            );
            assert!(dl <= 1e-5, "{model} {p2p}: losses {b:?} vs {a:?}");
            assert!(dw <= 1e-5, "{model} {p2p}: weights differ by {dw:.2e}");
        }
    }
}

/// Issue 15: the pipeline's device point-to-point (`Collectives::p2p_group_act` over NCCL, the
/// grouped mode's transport) on the one GPU. Two ranks of one NCCL group cannot share a GPU, so
/// a group of one sends to itself: two buffers out and two in, as one ncclGroupStart/End, in
/// f32 and bf16. What arrives must be what was sent, bit for bit, and the group's counters must
/// say the message bytes in the compute precision.
#[test]
#[ignore = "needs a CUDA GPU"]
fn nccl_point_to_point_group_moves_device_buffers() {
    use ferrotron_kernels::cuda::CudaAct;
    use ferrotron_kernels::{Backend, Src};
    use ferrotron_parallel::{Comm, LocalComm, OpKind};
    use ferrotron_zero::Collectives;
    use std::sync::Arc;
    fn round_trip<A: CudaAct>(what: &str) {
        let b = CudaBackend::<A>::new(0).expect("a CUDA device");
        let host: Arc<dyn Comm> = Arc::new(LocalComm::named("pp"));
        let pp = b.nccl_group(host).expect("an NCCL group of one");
        // Values exact in bf16: small integers and halves.
        let x: Vec<f32> = (0..3000).map(|i| (i % 97) as f32 * 0.5 - 20.0).collect();
        let y: Vec<f32> = (0..1500).map(|i| (i % 13) as f32 - 6.0).collect();
        let sends = vec![
            (b.upload_act(&x).unwrap(), 0),
            (b.upload_act(&y).unwrap(), 0),
        ];
        let got = b
            .p2p_group_act(&*pp, sends, &[(x.len(), 0), (y.len(), 0)])
            .expect("the group runs");
        assert_eq!(got.len(), 2);
        let back: Vec<Vec<f32>> = got
            .iter()
            .map(|g| b.download_act(Src::all(g)).unwrap())
            .collect();
        assert_eq!(back[0], x, "{what}: first buffer");
        assert_eq!(back[1], y, "{what}: second buffer");
        let bytes = (x.len() + y.len()) as u64 * std::mem::size_of::<A>() as u64;
        let sent = pp.counters().snapshot().op(OpKind::Send).bytes_sent;
        println!("GPU-TRAIN NCCL p2p group {what}: 2 sends + 2 receives to self, {sent} bytes sent (expected {bytes}), values bit for bit");
        assert_eq!(sent, bytes, "{what}: bytes counted");
    }
    round_trip::<f32>("f32");
    round_trip::<half::bf16>("bf16");
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn nccl_at_world_size_1_runs_the_same_training() {
    for stage in [0, 3] {
        let (staged, nccl) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let a = ferrotron(&strs(&tiny_args(
            "tiny-llama",
            staged.path(),
            stage,
            "host-staged",
            &[],
        )));
        check(&a, "host-staged");
        let b = ferrotron(&strs(&tiny_args(
            "tiny-llama",
            nccl.path(),
            stage,
            "nccl",
            &[],
        )));
        check(&b, "nccl");
        let plan = String::from_utf8_lossy(&b.stdout);
        assert!(
            plan.contains("gpu comm nccl"),
            "the run does not report an NCCL data-parallel group:\n{plan}"
        );
        let dl = max_rel(&losses(nccl.path()), &losses(staged.path()));
        let dw = weights_rel(
            &checkpoint_weights(&nccl.path().join("checkpoints")),
            &checkpoint_weights(&staged.path().join("checkpoints")),
        );
        println!(
            "GPU-TRAIN nccl world 1 stage {stage} vs host-staged: loss rel diff {dl:.2e}, weights rel diff {dw:.2e}"
        );
        assert!(
            dl <= 1e-6 && dw <= 1e-6,
            "NCCL run differs: losses {dl:.2e}, weights {dw:.2e}"
        );
    }
}

/// The model's attention on the GPU runs our FlashAttention kernels when the head dim is 64 or
/// 128: the quickstart model with 2 heads of 64 (tests/data/gpt-quickstart-dh64.json) takes that
/// path (asserted through the backend's dispatch rule) and its bf16 loss curve stays within 2% of
/// the CPU's for 30 steps at lr 1e-3.
#[test]
#[ignore = "needs a CUDA GPU"]
fn flash_attention_model_tracks_the_cpu_curve() {
    let b = CudaBackend::<half::bf16>::new(0).expect(NEEDS_GPU);
    let dims = ferrotron_kernels::AttnDims {
        tokens: 8 * 128,
        heads: 2,
        kv_heads: 2,
        head_dim: 64,
        segments: 8,
        max_seqlen: 128,
        causal: true,
        scale: 0.125,
        window: None,
        softcap: None,
    };
    assert!(
        b.uses_flash_attention(&dims, &[0, 0, 0]).unwrap(),
        "the Dh-64 model's attention would not take the FlashAttention path"
    );
    drop(b);
    let run = |device: &str, out: &Path| {
        let sets = vec![
            "model.config=tests/data/gpt-quickstart-dh64.json".to_string(),
            "train.steps=30".into(),
            "optim.lr=1e-3".into(),
            "train.eval_every=0".into(),
            "checkpoint.every=0".into(),
            format!("train.device={device}"),
            format!("train.out_dir={}", out.display()),
        ];
        check(
            &ferrotron(&strs(&train_args("recipes/quickstart.toml", &sets))),
            device,
        );
        losses(out)
    };
    let (c, g) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (cpu, gpu) = (run("cpu", c.path()), run("cuda", g.path()));
    assert_eq!((cpu.len(), gpu.len()), (30, 30));
    let worst = cpu
        .iter()
        .zip(&gpu)
        .map(|(x, y)| (y - x).abs() / x.abs())
        .fold(0.0f64, f64::max);
    println!(
        "GPU-TRAIN Dh-64 quickstart model (FlashAttention path), 30 steps: cpu f32 {:.4} -> {:.4}, cuda bf16 {:.4} -> {:.4}, max per-step rel diff {:.3}% (bound 2%); tokens/s cuda {:.0}",
        cpu[0],
        cpu[29],
        gpu[0],
        gpu[29],
        100.0 * worst,
        tokens_per_s(g.path())
    );
    assert!(
        worst <= 0.02,
        "bf16 FlashAttention model off the CPU curve by {:.2}%",
        100.0 * worst
    );
}

/// Full activation checkpointing on the GPU: the recomputed forward uses the same deterministic
/// kernels as the first (GEMMs, FlashAttention/attention forward, norms), so a run with it
/// differs from one without only by the run-to-run atomicAdd order of the backward: losses held
/// to 1e-6, final weights to 1e-5 as the ZeRO comparisons (Adam turns round-off in gradient
/// elements near zero, such as Qwen2's key biases, into whole-lr steps: 2.4e-6 on the H200), and
/// it keeps less activation memory.
#[test]
#[ignore = "needs a CUDA GPU"]
fn activation_checkpointing_on_the_gpu_trains_the_same() {
    for model in MODELS {
        let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
        for (dir, mode) in dirs.iter().zip(["none", "full"]) {
            let ac = format!("train.activation_checkpointing={mode}");
            let args = tiny_args(
                model,
                dir.path(),
                0,
                "nccl",
                &["train.precision=\"f32\"", &ac],
            );
            check(&ferrotron(&strs(&args)), mode);
        }
        let (a, b) = (dirs[0].path(), dirs[1].path());
        let dl = max_rel(&losses(b), &losses(a));
        let dw = weights_rel(
            &checkpoint_weights(&b.join("checkpoints")),
            &checkpoint_weights(&a.join("checkpoints")),
        );
        let mem = |d: &Path| step_records(d)[0]["activations_bytes"].as_u64().unwrap();
        println!(
            "GPU-TRAIN {model} activation checkpointing full vs none (cuda f32): loss rel diff {dl:.2e}, weights rel diff {dw:.2e}; activations kept {} B vs {} B",
            mem(b),
            mem(a)
        );
        assert!(
            dl <= 1e-6 && dw <= 1e-5,
            "{model}: losses {dl:.2e}, weights {dw:.2e}"
        );
        assert!(mem(b) * 4 < mem(a));
    }
}

/// Issue 13 on the GPU: the preflight reads the GPU's free memory (CUDA mem_get_info) and stops a
/// model that cannot fit before allocating, naming that figure and the config key.
#[test]
#[ignore = "needs a CUDA GPU"]
fn preflight_names_the_gpus_free_memory_for_a_model_that_cannot_fit() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg_path = tmp.path().join("config.json");
    let mut cfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/fixtures/hf/tiny-llama/config.json")).unwrap(),
    )
    .unwrap();
    cfg["num_hidden_layers"] = serde_json::json!(1_000_000);
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    // tests/recipes/tiny-dp.toml, random init from that config instead of the fixture's weights.
    let recipe = tmp.path().join("r.toml");
    let text = std::fs::read_to_string(root().join("tests/recipes/tiny-dp.toml"))
        .unwrap()
        .replace(
            "hf_dir = \"tests/fixtures/hf/tiny-llama\"",
            &format!("config = \"{}\"", cfg_path.display()),
        );
    std::fs::write(&recipe, text).unwrap();
    let sets = [
        format!("train.out_dir={}", tmp.path().join("out").display()),
        "train.device=cuda".into(),
    ];
    let t0 = std::time::Instant::now();
    let out = ferrotron(&strs(&train_args(&recipe.display().to_string(), &sets)));
    let err = String::from_utf8_lossy(&out.stderr);
    println!(
        "GPU-TRAIN preflight in {:.1} s: {}",
        t0.elapsed().as_secs_f64(),
        err.trim()
    );
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("free on CUDA device 0") && err.contains("num_hidden_layers = 1000000"),
        "{err}"
    );
    assert!(!tmp.path().join("out").exists(), "nothing written");
}

/// Issue 16's profiling mode: the last 3 of 10 steps timed per kernel with CUDA events. The
/// profile names the forward, dx and dW matmuls with a FLOP rate, its summed kernel time fits in
/// the steps' wall time, and the run trains as one without it (f32; the backward's atomicAdd
/// order aside, held to 1e-6 as the other GPU comparisons).
#[test]
#[ignore = "needs a CUDA GPU"]
fn kernel_profile_names_the_matmuls_and_leaves_training_unchanged() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    for (dir, n) in dirs.iter().zip(["0", "3"]) {
        let p = format!("train.profile_steps={n}");
        let args = tiny_args(
            "tiny-llama",
            dir.path(),
            0,
            "nccl",
            &["train.precision=\"f32\"", &p],
        );
        check(&ferrotron(&strs(&args)), &p);
    }
    let (plain, profiled) = (dirs[0].path(), dirs[1].path());
    assert!(!plain.join("profile.md").exists());
    let text = std::fs::read_to_string(profiled.join("profile.md")).expect("profile.md written");
    for kind in ["| gemm fwd ", "| gemm dx ", "| gemm dw "] {
        let row = text
            .lines()
            .find(|l| l.starts_with(kind))
            .unwrap_or_else(|| panic!("no {kind} row in\n{text}"));
        // TFLOP/s has one decimal: the tiny model's matmuls (0.1-2 MFLOP per call, spans of a
        // few µs) show 0.0 or 0.1. A counted rate is a number (an op without counted FLOPs
        // leaves the column empty), so the figure must parse, not be positive.
        let tflops: f64 = row
            .trim_end_matches('|')
            .rsplit('|')
            .next()
            .unwrap()
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("no TFLOP/s figure in {row}"));
        assert!(tflops.is_finite() && tflops >= 0.0, "{row}");
    }
    let summary = text
        .lines()
        .find(|l| l.contains("GPU busy"))
        .expect("summary line");
    let busy: f64 = summary
        .rsplit("GPU busy ")
        .next()
        .unwrap()
        .trim_end_matches('%')
        .parse()
        .unwrap();
    let dl = max_rel(&losses(profiled), &losses(plain));
    println!("GPU-TRAIN kernel profile (tiny-llama, cuda f32, 3 steps): {summary}; loss rel diff vs unprofiled {dl:.2e}");
    assert!(busy > 0.0 && busy <= 100.5, "{summary}");
    assert!(dl <= 1e-6, "losses differ by {dl:.2e}");
}
