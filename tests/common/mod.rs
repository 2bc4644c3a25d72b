//! Helpers for end-to-end tests: run the ferrotron binary (alone, under mpirun, or under
//! `ferrotron launch`), read metrics.jsonl and checkpoint weights.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root: `FERROTRON_REPO` when set (a prebuilt test executable run on another
/// machine, e.g. by scripts/gpu-check.sh), else the source tree it was built from.
pub fn root() -> PathBuf {
    std::env::var_os("FERROTRON_REPO")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// The ferrotron binary: `FERROTRON_BIN` when set, else the one cargo built beside the test.
pub fn bin() -> PathBuf {
    std::env::var_os("FERROTRON_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_ferrotron")))
}

/// `train RECIPE --set S1 --set S2 ...`.
pub fn train_args(recipe: &str, sets: &[String]) -> Vec<String> {
    let mut a = vec!["train".to_string(), recipe.to_string()];
    for s in sets {
        a.push("--set".into());
        a.push(s.clone());
    }
    a
}

pub fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// `ferrotron <args>` in the repository root.
pub fn ferrotron(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .current_dir(root())
        .output()
        .expect("ferrotron runs")
}

/// `train tests/recipes/tiny-dp.toml` with ZeRO-3, no checkpoints, the given collective timeout
/// and output directory, then `extra` sets: the multi-rank failure tests' run.
pub fn tiny_dp_zero3_args(
    out: &Path,
    timeout_s: impl std::fmt::Display,
    extra: &[&str],
) -> Vec<String> {
    let recipe = root().join("tests/recipes/tiny-dp.toml");
    let mut sets = vec![
        format!("train.out_dir={}", out.display()),
        "parallel.zero_stage=3".into(),
        format!("parallel.collective_timeout_s={timeout_s}"),
        "checkpoint.enabled=false".into(),
    ];
    sets.extend(extra.iter().map(|s| s.to_string()));
    train_args(&recipe.display().to_string(), &sets)
}

/// `mpirun -np N` (oversubscribed, unbound, allowed as root) in the repository root, ready for
/// the program and its arguments.
pub fn mpirun_command(n: usize) -> Command {
    let mut c = Command::new("mpirun");
    c.args([
        "-np",
        &n.to_string(),
        "--oversubscribe",
        "--bind-to",
        "none",
    ])
    .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
    .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    .env("OMPI_MCA_btl_vader_single_copy_mechanism", "none")
    .current_dir(root());
    c
}

/// `mpirun -np N ferrotron <args>`.
pub fn mpirun(n: usize, args: &[&str]) -> Output {
    mpirun_command(n)
        .arg(bin())
        .args(args)
        .output()
        .expect("mpirun runs")
}

pub fn check(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({:?})\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The records of `<out_dir>/metrics.jsonl` that hold `key`.
pub fn metric_records(out_dir: &Path, key: &str) -> Vec<serde_json::Value> {
    let text =
        std::fs::read_to_string(out_dir.join("metrics.jsonl")).expect("metrics.jsonl exists");
    text.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("metrics line is JSON"))
        .filter(|v| v.get(key).is_some())
        .collect()
}

/// Per-step records (those with a `loss`) of `<out_dir>/metrics.jsonl`.
pub fn step_records(out_dir: &Path) -> Vec<serde_json::Value> {
    metric_records(out_dir, "loss")
}

/// Evaluation records (`eval_loss`, `eval_rows`, `eval_tokens`) of `<out_dir>/metrics.jsonl`.
pub fn eval_records(out_dir: &Path) -> Vec<serde_json::Value> {
    metric_records(out_dir, "eval_loss")
}

/// Copies the file tree `src` to `dst` (directories created).
pub fn copy_tree(src: &Path, dst: &Path) {
    if src.is_dir() {
        std::fs::create_dir_all(dst).unwrap();
        for e in std::fs::read_dir(src).unwrap() {
            let e = e.unwrap();
            copy_tree(&e.path(), &dst.join(e.file_name()));
        }
    } else {
        std::fs::copy(src, dst).unwrap();
    }
}

pub fn losses(out_dir: &Path) -> Vec<f64> {
    step_records(out_dir)
        .iter()
        .map(|v| v["loss"].as_f64().unwrap())
        .collect()
}

/// Every logical tensor's master weights in the latest checkpoint under `ckpt_root` (whatever
/// layout wrote it), by name, as f32.
pub fn checkpoint_weights(ckpt_root: &Path) -> Vec<(String, Vec<f32>)> {
    let last = ferrotron::checkpoint::latest(ckpt_root)
        .expect("checkpoint dir readable")
        .expect("a checkpoint was written");
    let cfg = ferrotron::model::ModelConfig::from_file(&last.join("config.json")).unwrap();
    let layout = ferrotron::model::ParamLayout::new(&cfg);
    let src = ferrotron::checkpoint::open_weights(&last, &cfg, &layout).unwrap();
    let mut out: Vec<(String, Vec<f32>)> = layout
        .tensors()
        .map(|(_, t)| {
            let mut v = vec![0.0f32; t.global_shape().iter().product()];
            src.fragments
                .read(ferrotron_zero::StatePart::Master, &t.name, 0, &mut v)
                .unwrap();
            (t.name.clone(), v)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// max over i of |a_i − b_i| / max(|b_i|, 1e-3·max|b|) — a per-element relative difference.
pub fn max_rel(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / y.abs().max(1e-12))
        .fold(0.0, f64::max)
}

/// ‖a − b‖ / ‖b‖ over all tensors of two weight sets with the same names.
pub fn weights_rel(a: &[(String, Vec<f32>)], b: &[(String, Vec<f32>)]) -> f64 {
    assert_eq!(a.len(), b.len());
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for ((na, va), (nb, vb)) in a.iter().zip(b) {
        assert_eq!(na, nb);
        for (x, y) in va.iter().zip(vb) {
            num += (*x as f64 - *y as f64).powi(2);
            den += (*y as f64).powi(2);
        }
    }
    (num / den).sqrt()
}

/// A TCP port that was free a moment ago (the OS picks it), for a launcher's rendezvous store, so
/// tests running at the same time do not collide on the default 29500.
pub fn free_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().unwrap().port().to_string()
}

/// The pid of the `ferrotron train` process whose command line mentions `out` and whose
/// environment holds `rank_var=rank` (RANK under `ferrotron launch`, OMPI_COMM_WORLD_RANK under
/// mpirun).
pub fn rank_pid(out: &Path, rank_var: &str, rank: usize) -> Option<i32> {
    let needle = out.display().to_string();
    for e in std::fs::read_dir("/proc").ok()? {
        let p = e.ok()?.path();
        let Ok(pid) = p.file_name()?.to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmd = std::fs::read(p.join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if !cmd.contains(&needle) || cmd.contains(" launch ") || !cmd.contains(" train ") {
            continue;
        }
        if cmd.starts_with("mpirun") || cmd.contains("/mpirun ") {
            continue;
        }
        let env = std::fs::read(p.join("environ")).unwrap_or_default();
        if env
            .split(|&b| b == 0)
            .any(|kv| kv == format!("{rank_var}={rank}").as_bytes())
        {
            return Some(pid);
        }
    }
    None
}
