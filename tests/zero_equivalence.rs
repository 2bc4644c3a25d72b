//! ZeRO stages 1-3 against stage 0 under mpirun (CPU f32): per-step losses, final weights,
//! measured model-state bytes and dp communication bytes. Each model runs once per dp size
//! N in {1, 2, 4} (one process per N runs stages 0-3 in turn: `ferrotron-zero-harness`), and the
//! tests below read what it wrote. Models: tiny Llama (untied), tiny GPT-2 (tied), and an odd
//! Llama (hidden 61, intermediate 97, vocab 301) whose units divide neither 2 nor 4.
//! Acceptance: stages 1-3 equal stage 0 at the same N to <= 1e-5 relative (losses per step,
//! final weights per unit).

use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

const HARNESS: &str = env!("CARGO_BIN_EXE_ferrotron-zero-harness");
const TOL: f64 = 1e-5;
const P: u64 = 4; // compute copy (f32), stages 1-3
/// Stage 0 on the CPU keeps no compute copy: the model reads the whole f32 master.
const P0: u64 = 0;
const G: u64 = 4; // gradient (f32)
const K: u64 = 12; // master + m + v (f32)

struct Run {
    /// stage -> rank-0 report
    reports: HashMap<u8, Value>,
    /// stage -> final master weights
    weights: HashMap<u8, Vec<f32>>,
    /// stage -> per-rank memory files
    memory: HashMap<u8, Vec<Value>>,
}

struct ModelRuns {
    _dir: tempfile::TempDir,
    by_n: HashMap<usize, Run>,
}

/// One harness run at a time: the machine has two cores.
static SERIAL: Mutex<()> = Mutex::new(());

fn harness(n: usize, model: &[&str], prefix: &Path) {
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut args: Vec<String> = model.iter().map(|s| s.to_string()).collect();
    args.extend([
        "--stages".into(),
        "0,1,2,3".into(),
        "--out".into(),
        prefix.display().to_string(),
    ]);
    let out = if n == 1 {
        Command::new(HARNESS).args(&args).output()
    } else {
        Command::new("mpirun")
            .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
            .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
            .env("OMPI_MCA_btl_vader_single_copy_mechanism", "none")
            .args(["--oversubscribe", "-np", &n.to_string(), HARNESS])
            .args(&args)
            .output()
    }
    .expect("mpirun must be installed (openmpi-bin)");
    assert!(
        out.status.success(),
        "harness N={n} {model:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn read_run(prefix: &Path, n: usize) -> Run {
    let p = |s: String| PathBuf::from(format!("{}{s}", prefix.display()));
    let json = |path: PathBuf| -> Value {
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
    };
    let mut run = Run {
        reports: HashMap::new(),
        weights: HashMap::new(),
        memory: HashMap::new(),
    };
    for s in 0..4u8 {
        run.reports.insert(s, json(p(format!(".s{s}.json"))));
        let bytes = std::fs::read(p(format!(".s{s}.bin"))).unwrap();
        run.weights.insert(
            s,
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect(),
        );
        run.memory.insert(
            s,
            (0..n)
                .map(|r| json(p(format!(".s{s}.r{r}.mem.json"))))
                .collect(),
        );
    }
    run
}

fn model_runs(name: &str) -> &'static ModelRuns {
    static CACHE: OnceLock<Mutex<HashMap<String, &'static ModelRuns>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    let mut map = cache.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(r) = map.get(name) {
        return r;
    }
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/hf/");
    let dir_arg = format!("{fixtures}{name}");
    let model: Vec<&str> = if name == "odd" {
        vec!["--odd"]
    } else {
        vec!["--model", &dir_arg]
    };
    let dir = tempfile::tempdir().unwrap();
    let mut by_n = HashMap::new();
    for n in [1, 2, 4] {
        let prefix = dir.path().join(format!("n{n}"));
        harness(n, &model, &prefix);
        by_n.insert(n, read_run(&prefix, n));
    }
    let runs: &'static ModelRuns = Box::leak(Box::new(ModelRuns { _dir: dir, by_n }));
    map.insert(name.to_string(), runs);
    runs
}

fn losses(report: &Value) -> Vec<f64> {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["loss"].as_f64().unwrap())
        .collect()
}

/// max over steps of |a - b| / |b|.
fn loss_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / y.abs())
        .fold(0.0, f64::max)
}

/// ‖a - b‖ / ‖b‖ over each unit; the max over units.
fn weight_diff(a: &[f32], b: &[f32], units: &[(String, usize, usize)]) -> f64 {
    assert_eq!(a.len(), b.len());
    let mut at = 0;
    let mut worst = 0.0f64;
    for (_, numel, _) in units {
        let (mut num, mut den) = (0.0f64, 0.0f64);
        for i in at..at + numel {
            num += (a[i] as f64 - b[i] as f64).powi(2);
            den += (b[i] as f64).powi(2);
        }
        worst = worst.max((num / den.max(1e-30)).sqrt());
        at += numel;
    }
    worst
}

fn units(report: &Value) -> Vec<(String, usize, usize)> {
    report["units"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["name"].as_str().unwrap().to_string(),
                u["numel"].as_u64().unwrap() as usize,
                u["padded"].as_u64().unwrap() as usize,
            )
        })
        .collect()
}

fn check_equivalence(name: &str) {
    let runs = model_runs(name);
    let reference = &runs.by_n[&1];
    let ref_loss = losses(&reference.reports[&0]);
    let us = units(&reference.reports[&0]);
    for n in [2, 4] {
        let run = &runs.by_n[&n];
        for s in 0..4u8 {
            let l = losses(&run.reports[&s]);
            let same_n_loss = loss_diff(&l, &losses(&run.reports[&0]));
            let vs1_loss = loss_diff(&l, &ref_loss);
            let same_n_w = weight_diff(&run.weights[&s], &run.weights[&0], &us);
            let vs1_w = weight_diff(&run.weights[&s], &reference.weights[&0], &us);
            eprintln!(
                "{name} N={n} stage {s}: vs stage 0 at N={n}: loss {same_n_loss:.2e} weights {same_n_w:.2e}; vs stage 0 at N=1: loss {vs1_loss:.2e} weights {vs1_w:.2e}"
            );
            for (what, d) in [("loss", same_n_loss), ("weights", same_n_w)] {
                assert!(d <= TOL, "{name} N={n} stage {s}: {what} differ from stage 0 by {d:.3e} relative (tolerance {TOL:.0e})");
            }
            // Against one rank, even stage 0 differs: the dp sum adds the same terms in another
            // order (f32), and Adam's first steps amplify it where a gradient is tiny (embedding
            // rows). Looser bound; the ZeRO acceptance is the comparison at the same N above.
            for (what, d) in [("loss vs N=1", vs1_loss), ("weights vs N=1", vs1_w)] {
                assert!(
                    d <= 1e-4,
                    "{name} N={n} stage {s}: {what} differ by {d:.3e} relative"
                );
            }
        }
    }
    // The weights moved: the comparison is not of untouched initial weights.
    assert!(ref_loss.first() != ref_loss.last());
}

#[test]
fn zero_stages_match_stage0_tiny_llama() {
    check_equivalence("tiny-llama");
}

#[test]
fn zero_stages_match_stage0_tiny_gpt2() {
    check_equivalence("tiny-gpt2");
}

#[test]
fn zero_stages_match_stage0_odd_sizes_with_padding() {
    check_equivalence("odd");
    let runs = model_runs("odd");
    for n in [2, 4] {
        let us = units(&runs.by_n[&n].reports[&1]);
        assert!(
            us.iter().all(|(_, numel, _)| numel % n != 0),
            "every odd unit must need padding at N={n}: {us:?}"
        );
    }
}

/// Measured per-rank bytes against the ZeRO formulas (P = 4, G = 4, K = 12 on CPU f32).
#[test]
fn zero_memory_matches_formulas() {
    for name in ["tiny-llama", "tiny-gpt2", "odd"] {
        let runs = model_runs(name);
        for n in [1usize, 2, 4] {
            let run = &runs.by_n[&n];
            let us = units(&run.reports[&1]);
            let mut sizes: Vec<u64> = us.iter().map(|u| u.2 as u64).collect();
            sizes.sort_unstable_by(|a, b| b.cmp(a));
            for s in 0..4u8 {
                for m in &run.memory[&s] {
                    let get = |k: &str| m["memory"][k].as_u64().unwrap();
                    let (psi, psi_p, own_pad) = (
                        m["psi"].as_u64().unwrap(),
                        m["psi_padded"].as_u64().unwrap(),
                        m["own_padding"].as_u64().unwrap(),
                    );
                    let nn = n as u64;
                    let shard = psi_p / nn;
                    let (params, grads, opt) =
                        (get("parameters"), get("gradients"), get("optimizer_states"));
                    let state = params + grads + opt;
                    // Exact: the formula over padded units; and minus the padding: the formula over Ψ
                    // (Ψ/N taken as this rank's real elements).
                    let (expect_padded, expect_real) = match s {
                        0 => ((P0 + G + K) * psi, (P0 + G + K) * psi),
                        1 => (
                            (P + G) * psi_p + K * shard,
                            (P + G) * psi + K * (shard - own_pad),
                        ),
                        2 => (
                            P * psi_p + (G + K) * shard,
                            P * psi + (G + K) * (shard - own_pad),
                        ),
                        _ => ((P + G + K) * shard, (P + G + K) * (shard - own_pad)),
                    };
                    assert_eq!(
                        state, expect_padded,
                        "{name} N={n} stage {s} rank {}: {m}",
                        m["rank"]
                    );
                    assert_eq!(
                        state - get("padding"),
                        expect_real,
                        "{name} N={n} stage {s} rank {}: {m}",
                        m["rank"]
                    );
                    let formula = match s {
                        0 => (P + G + K) as f64 * psi as f64,
                        1 => (P + G) as f64 * psi as f64 + K as f64 * psi as f64 / n as f64,
                        2 => P as f64 * psi as f64 + (G + K) as f64 * psi as f64 / n as f64,
                        _ => (P + G + K) as f64 * psi as f64 / n as f64,
                    };
                    // Padding is below N elements per unit.
                    assert!(psi_p - psi < nn * us.len() as u64);
                    if m["rank"] == 0 {
                        eprintln!(
                            "{name} N={n} stage {s}: model state {state} B (formula {formula:.0} B, padding {} B); gathered peak {} B, grads in flight peak {} B, scratch {} B",
                            get("padding"), get("gathered_peak"), get("grads_in_flight_peak"), get("scratch_peak")
                        );
                    }
                    // Transients: at most three gathered units (stage 3), at most two full unit
                    // gradients in flight (stages 2-3: a tied table and one more unit).
                    let top = |k: usize| sizes.iter().take(k).sum::<u64>();
                    assert!(get("gathered_peak") <= P * top(3));
                    assert_eq!(get("gathered_peak") > 0, s == 3);
                    assert!(get("grads_in_flight_peak") <= G * top(2));
                    if s < 2 {
                        assert_eq!(get("grads_in_flight_peak"), 0);
                    }
                }
            }
        }
    }
}

/// Per-step bytes sent by each rank on the dp group, by operation, against the formulas.
#[test]
fn zero_communication_matches_formulas() {
    for name in ["tiny-llama", "tiny-gpt2", "odd"] {
        let runs = model_runs(name);
        for n in [2u64, 4] {
            let run = &runs.by_n[&(n as usize)];
            let us = units(&run.reports[&1]);
            let tied = run.reports[&1]["tied"].as_bool().unwrap();
            let psi: u64 = us.iter().map(|u| u.1 as u64).sum();
            let psi_p: u64 = us.iter().map(|u| u.2 as u64).sum();
            let ring = |bytes: u64| (n - 1) * bytes / n;
            let norm_ar = 2 * (n - 1) * 8 / n; // the one-f64 all-reduce of Σ g²
                                               // Stage 3 gathers: blocks twice (forward, backward), the final norm and an untied head
                                               // once (forward and backward back to back), the embedding once, twice when tied.
            let uses = |u: &str| match u {
                "final_norm" | "lm_head" => 1,
                "embedding" => 1 + u64::from(tied),
                _ => 2,
            };
            let gathered: u64 = us.iter().map(|u| uses(&u.0) * u.2 as u64).sum();
            for s in 0..4u8 {
                for step in run.reports[&s]["steps"].as_array().unwrap() {
                    let get = |k: &str| step[k].as_u64().unwrap();
                    let (rs, ag, ar, total) = (
                        get("reduce_scatter"),
                        get("all_gather"),
                        get("all_reduce"),
                        get("total"),
                    );
                    let formula = match s {
                        0 => 2.0 * 4.0 * psi as f64 * (n - 1) as f64 / n as f64,
                        1 | 2 => 2.0 * 4.0 * psi as f64 * (n - 1) as f64 / n as f64,
                        _ => 3.0 * 4.0 * psi as f64 * (n - 1) as f64 / n as f64,
                    };
                    match s {
                        0 => {
                            let ar_expect: u64 =
                                us.iter().map(|u| 2 * (n - 1) * 4 * u.1 as u64 / n).sum();
                            assert_eq!((rs, ag, ar), (0, 0, ar_expect), "{name} N={n} stage 0");
                        }
                        1 | 2 => assert_eq!(
                            (rs, ag, ar),
                            (ring(4 * psi_p), ring(4 * psi_p), norm_ar),
                            "{name} N={n} stage {s}"
                        ),
                        _ => assert_eq!(
                            (rs, ag, ar),
                            (ring(4 * psi_p), ring(4 * gathered), norm_ar),
                            "{name} N={n} stage 3"
                        ),
                    }
                    let ratio = total as f64 / formula;
                    if step["step"] == 1 {
                        eprintln!("{name} N={n} stage {s}: {total} B per step per rank = {ratio:.4} x formula ({formula:.0} B)");
                    }
                    if s < 3 || tied {
                        assert!(
                            (ratio - 1.0).abs() <= 0.01,
                            "{name} N={n} stage {s}: {total} B vs formula {formula:.0} B"
                        );
                    } else {
                        // Untied head: the final norm and head (one fused forward+backward pass) and
                        // the embedding (its backward reads no weights) are gathered once, so the
                        // exact count asserted above is below 3Ψ (zero/README.md, "Stage 3 and the
                        // paper's 3Ψ"); never above it.
                        assert!(
                            ratio <= 1.0 && ratio > 2.0 / 3.0,
                            "{name} N={n} stage 3: {total} B vs 3Ψ {formula:.0} B"
                        );
                    }
                }
            }
        }
    }
}
