//! Issue 18: per-rank memory follows the ZeRO formula from the first byte to the last. A 31.5 M
//! parameter Llama at ZeRO-3 on 4 ranks: every phase's peak RSS (measured through the OS, see
//! src/train/rss.rs) stays within 1.25 × ((P+G+K)Ψ/4 + activations + gathered peak) + 300 MB
//! (CPU f32: P+G+K = 20 bytes) during init, training steps, save, sample and resume; and export
//! of the distributed checkpoint peaks at about its largest tensor plus buffers.

mod common;
use common::*;
use serde_json::Value;
use std::path::Path;

/// Tied Llama, d 512, 8 layers: 31.5 M parameters (embedding 8192 x 512 = 4.2 M).
const CONFIG: &str = r#"{
  "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 8192,
  "hidden_size": 512, "intermediate_size": 1536, "num_hidden_layers": 8,
  "num_attention_heads": 8, "num_key_value_heads": 8, "max_position_embeddings": 64,
  "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "hidden_act": "silu",
  "tie_word_embeddings": true
}"#;

fn args(config: &Path, out: &Path, steps: u64) -> Vec<String> {
    let recipe = root().join("tests/recipes/tiny-init.toml");
    train_args(
        &recipe.display().to_string(),
        &[
            format!("model.config={}", config.display()),
            format!("train.out_dir={}", out.display()),
            format!("train.steps={steps}"),
            "train.global_batch=4".into(),
            "train.sample_prompt=\"To be\"".into(),
            "train.sample_tokens=4".into(),
            "checkpoint.every=2".into(),
            "parallel.zero_stage=3".into(),
        ],
    )
}

fn records(out: &Path) -> Vec<Value> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Peak RSS (bytes) of a child process, from wait4's rusage (which also reaps it).
#[allow(clippy::zombie_processes)]
fn peak_rss_of(cmd: &mut std::process::Command) -> (i32, u64) {
    let child = cmd.spawn().expect("starts");
    let mut status = 0;
    // SAFETY: wait4 on our own child; rusage is plain data.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut ru) };
    assert_eq!(pid, child.id() as i32);
    (libc::WEXITSTATUS(status), ru.ru_maxrss as u64 * 1024)
}

#[test]
fn every_phase_of_a_zero3_run_stays_within_the_formula() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("config.json");
    std::fs::write(&config, CONFIG).unwrap();
    let out = tmp.path().join("run");
    check(&mpirun(4, &strs(&args(&config, &out, 2))), "train");
    let mut a = args(&config, &out, 3);
    a.push("--resume".into());
    check(&mpirun(4, &strs(&a)), "resume");

    let recs = records(&out);
    let first = recs
        .iter()
        .find(|r| r.get("memory").is_some())
        .expect("the first step's record");
    let psi = 31_526_400.0f64;
    let mut checked = 0;
    for rank in 0..4 {
        let mem = &first["memory"][rank];
        let gathered = mem["gathered_peak"].as_f64().unwrap();
        let act = first["activations_bytes"].as_f64().unwrap();
        let bound = 1.25 * (20.0 * psi / 4.0 + act + gathered) + 300e6;
        for r in recs.iter().filter_map(|r| r.get("rss_peak_bytes")) {
            for (phase, per_rank) in r.as_object().unwrap() {
                let peak = per_rank[rank].as_f64().unwrap();
                println!(
                    "rank {rank} {phase:7}: peak {:6.1} MB, bound {:6.1} MB",
                    peak / 1e6,
                    bound / 1e6
                );
                assert!(
                    peak > 0.0 && peak <= bound,
                    "rank {rank} {phase}: {peak} > {bound}"
                );
                checked += 1;
            }
        }
    }
    // init, step, save, sample (first run); resume, step, save, sample (second).
    assert!(checked >= 4 * 8, "{checked} phase figures");

    // Export streams tensor by tensor: about the largest tensor (the 16.8 MB embedding) plus
    // buffers, far below the 126 MB model.
    let (code, peak) = peak_rss_of(
        std::process::Command::new(bin())
            .arg("export")
            .arg(out.join("checkpoints"))
            .arg("--hf")
            .arg(tmp.path().join("hf"))
            .stdout(std::process::Stdio::null()),
    );
    assert_eq!(code, 0);
    let largest = 8192.0 * 512.0 * 4.0;
    println!(
        "export: peak {:.1} MB, largest tensor {:.1} MB",
        peak as f64 / 1e6,
        largest / 1e6
    );
    assert!(
        (peak as f64) < largest + 64e6,
        "export peaked at {peak} bytes"
    );
}
