//! Issue 13 acceptance: the bad-input suite. Every case of tests/bad_inputs/cases.toml (recipes,
//! config.json, weights, datasets, tokenizers, checkpoints, the command line) is run as its own
//! `ferrotron` process in a fresh directory, and must:
//! - exit with the case's code (2 for user input unless the case says otherwise), never by a
//!   signal (abort, segfault) and never with 101 or "panicked" (a Rust panic);
//! - name the file or key the case gives, in its error;
//! - finish within `CASE_TIMEOUT` (no hang);
//! - leave the case directory as it found it, the token cache aside: no output directory,
//!   checkpoint, metrics file or lock left behind, nothing modified (no half-written output).
//!
//! Case format: see the header of cases.toml. Cases run in parallel on up to 4 workers; all
//! failures are collected and reported together, with counts per category and the run time.

mod common;
use common::*;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

const CASE_TIMEOUT: Duration = Duration::from_secs(90);

#[derive(serde::Deserialize)]
struct Suite {
    base_recipe: String,
    case: Vec<Case>,
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Case {
    id: String,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    random_init: Option<String>,
    #[serde(default)]
    checkpoint: bool,
    #[serde(default)]
    recipe: Option<String>,
    #[serde(default)]
    recipe_sub: Vec<(String, String)>,
    #[serde(default)]
    recipe_add: Option<String>,
    #[serde(default)]
    mkdir: Vec<String>,
    #[serde(default)]
    write: Vec<(String, String)>,
    #[serde(default)]
    write_hex: Vec<(String, String)>,
    #[serde(default)]
    json: Vec<(String, String, String)>,
    #[serde(default)]
    st: Vec<(String, String, String)>,
    #[serde(default)]
    truncate: Vec<(String, u64)>,
    #[serde(default)]
    remove: Vec<String>,
    #[serde(default)]
    set: Vec<String>,
    #[serde(default)]
    resume: bool,
    #[serde(default)]
    args: Option<Vec<String>>,
    #[serde(default = "two")]
    exit: i32,
    names: String,
}

fn two() -> i32 {
    2
}

/// Shared inputs made once: a checkpoint of the base recipe (1 step, tiny-llama).
struct Base {
    recipe: String,
    checkpoint: PathBuf,
}

fn fill(s: &str, dir: &Path) -> String {
    s.replace("{root}", &root().display().to_string())
        .replace("{dir}", &dir.display().to_string())
}

/// Sets or deletes ("__delete__") `key` (a/b/c) in the JSON file `file` to `value` (JSON text).
fn edit_json(file: &Path, key: &str, value: &str) {
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    let mut cur = &mut v;
    let parts: Vec<&str> = key.split('/').collect();
    for p in &parts[..parts.len() - 1] {
        let next = match p.parse::<usize>() {
            Ok(i) if cur.is_array() => cur.get_mut(i),
            _ => cur.get_mut(*p),
        };
        cur = next.unwrap_or_else(|| panic!("{}: no {p}", file.display()));
    }
    let last = parts[parts.len() - 1];
    let obj = cur.as_object_mut().unwrap();
    if value == "__delete__" {
        obj.remove(last);
    } else {
        obj.insert(last.to_string(), serde_json::from_str(value).unwrap());
    }
    std::fs::write(file, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

/// Rewrites the safetensors file `file` with tensor `name` changed by `op`: "drop", "f16" (half
/// its bytes, labelled F16: a valid tensor of another dtype), "i32" (its bytes labelled I32),
/// "shape" (one more row), "add" (an extra tensor), "nan" (filled with NaN).
fn edit_safetensors(file: &Path, op: &str, name: &str) {
    use safetensors::tensor::{Dtype, TensorView};
    let bytes = std::fs::read(file).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.dtype(), v.shape().to_vec(), v.data().to_vec()))
        .collect();
    let i = out.iter().position(|t| t.0 == name);
    match (op, i) {
        ("drop", Some(i)) => {
            out.remove(i);
        }
        ("f16", Some(i)) => {
            let t = &mut out[i];
            t.1 = Dtype::F16;
            t.3.truncate(t.3.len() / 2);
        }
        ("i32", Some(i)) => out[i].1 = Dtype::I32,
        ("shape", Some(i)) => {
            let t = &mut out[i];
            let row: usize = t.2[1..].iter().product::<usize>() * 4;
            t.2[0] += 1;
            t.3.extend(std::iter::repeat_n(0u8, row));
        }
        ("add", _) => out.push((name.to_string(), Dtype::F32, vec![2], vec![0u8; 8])),
        ("nan", Some(i)) => {
            let t = &mut out[i];
            t.3 = f32::NAN
                .to_le_bytes()
                .iter()
                .copied()
                .cycle()
                .take(t.3.len())
                .collect();
        }
        _ => panic!("{}: cannot {op} tensor {name}", file.display()),
    }
    let views: Vec<(String, TensorView)> = out
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    std::fs::write(file, safetensors::tensor::serialize(views, None).unwrap()).unwrap();
}

/// Every path under `dir` (except the token cache) with its size and modification time.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (u64, Option<SystemTime>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p == dir.join("cache") {
                continue;
            }
            let m = std::fs::symlink_metadata(&p).unwrap();
            // Files by size and modification time; directories by existence (a directory's
            // own mtime changes when a lock file comes and goes inside it).
            let stamp = if m.is_dir() {
                (0, None)
            } else {
                (m.len(), m.modified().ok())
            };
            out.insert(p.strip_prefix(dir).unwrap().to_path_buf(), stamp);
            if m.is_dir() {
                stack.push(p);
            }
        }
    }
    out
}

/// Builds the case's directory; returns the argv.
fn prepare(case: &Case, base: &Base, dir: &Path) -> Vec<String> {
    let mut recipe = case.recipe.clone().unwrap_or_else(|| base.recipe.clone());
    for (from, to) in &case.recipe_sub {
        assert!(
            recipe.contains(from.as_str()),
            "{}: recipe has no {from:?}",
            case.id
        );
        recipe = recipe.replace(from.as_str(), to);
    }
    if let Some(add) = &case.recipe_add {
        recipe += add;
    }
    let hf = root().join("tests/fixtures/hf");
    if let Some(m) = &case.model {
        std::fs::create_dir_all(dir.join("model")).unwrap();
        for f in ["config.json", "model.safetensors"] {
            std::fs::copy(hf.join(m).join(f), dir.join("model").join(f)).unwrap();
        }
        recipe = recipe.replace(
            "hf_dir = \"{root}/tests/fixtures/hf/tiny-llama\"",
            "hf_dir = \"{dir}/model\"",
        );
    }
    if let Some(m) = &case.random_init {
        std::fs::copy(hf.join(m).join("config.json"), dir.join("config.json")).unwrap();
        recipe = recipe.replace(
            "hf_dir = \"{root}/tests/fixtures/hf/tiny-llama\"",
            "config = \"{dir}/config.json\"",
        );
    }
    if case.checkpoint {
        copy_tree(&base.checkpoint, &dir.join("out/checkpoints/step-00000001"));
    }
    std::fs::write(dir.join("recipe.toml"), fill(&recipe, dir)).unwrap();
    let at = |f: &str| dir.join(fill(f, dir));
    for f in &case.remove {
        let p = at(f);
        if p.is_dir() {
            std::fs::remove_dir_all(p).unwrap();
        } else {
            std::fs::remove_file(p).unwrap();
        }
    }
    for d in &case.mkdir {
        std::fs::create_dir_all(at(d)).unwrap();
    }
    for (f, text) in &case.write {
        let p = at(f);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, fill(text, dir)).unwrap();
    }
    for (f, hex) in &case.write_hex {
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        std::fs::write(at(f), bytes).unwrap();
    }
    for (f, key, value) in &case.json {
        edit_json(&at(f), key, value);
    }
    for (f, op, name) in &case.st {
        edit_safetensors(&at(f), op, name);
    }
    for (f, n) in &case.truncate {
        let file = std::fs::OpenOptions::new().write(true).open(at(f)).unwrap();
        file.set_len(*n).unwrap();
    }
    let mut argv = match &case.args {
        Some(a) => a.iter().map(|s| fill(s, dir)).collect(),
        None => vec![
            "train".to_string(),
            dir.join("recipe.toml").display().to_string(),
        ],
    };
    for s in &case.set {
        argv.push("--set".into());
        argv.push(fill(s, dir));
    }
    if case.resume {
        argv.push("--resume".into());
    }
    argv
}

/// Runs one case; Err(why) when it fails the contract.
fn run_case(case: &Case, base: &Base) -> Result<Duration, String> {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let argv = prepare(case, base, dir);
    let before = snapshot(dir);
    let t0 = Instant::now();
    let mut child = Command::new(bin())
        .args(&argv)
        .current_dir(dir)
        .env_remove("RANK")
        .env_remove("OMPI_COMM_WORLD_RANK")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t0.elapsed() > CASE_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "hang: still running after {CASE_TIMEOUT:?} ({argv:?})"
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let took = t0.elapsed();
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    let show = || {
        format!(
            "argv {argv:?}\nstderr: {stderr}\nstdout tail: {}",
            stdout.lines().last().unwrap_or("")
        )
    };
    let Some(code) = status.code() else {
        return Err(format!("killed by a signal ({status})\n{}", show()));
    };
    if code == 101 || stderr.contains("panicked") {
        return Err(format!("panic (exit {code})\n{}", show()));
    }
    if code != case.exit {
        return Err(format!("exit {code}, expected {}\n{}", case.exit, show()));
    }
    let names = fill(&case.names, dir);
    if !stderr.contains(&names) {
        return Err(format!("the error does not name {names:?}\n{}", show()));
    }
    if std::env::var_os("BAD_INPUTS_SHOW").is_some() {
        println!(
            "{} [exit {code}]: {}",
            case.id,
            stderr.trim_end().replace('\n', " / ")
        );
    }
    let after = snapshot(dir);
    if after != before {
        let changed: Vec<_> = after
            .iter()
            .filter(|(p, m)| before.get(*p) != Some(m))
            .map(|(p, _)| p.display().to_string())
            .chain(
                before
                    .keys()
                    .filter(|p| !after.contains_key(*p))
                    .map(|p| format!("-{}", p.display())),
            )
            .collect();
        return Err(format!("left or changed files: {changed:?}\n{}", show()));
    }
    Ok(took)
}

#[test]
fn every_bad_input_gets_a_clean_exit_naming_what_is_wrong() {
    let started = Instant::now();
    let text = std::fs::read_to_string(root().join("tests/bad_inputs/cases.toml")).unwrap();
    let suite: Suite = toml::from_str(&text).unwrap();
    let mut ids = std::collections::HashSet::new();
    for c in &suite.case {
        assert!(ids.insert(c.id.as_str()), "duplicate case id {}", c.id);
    }

    // The base recipe trains (so every case fails for its own reason), and its checkpoint is
    // what the checkpoint cases damage.
    let base_dir = tempfile::tempdir().unwrap();
    std::fs::write(
        base_dir.path().join("recipe.toml"),
        fill(&suite.base_recipe, base_dir.path()),
    )
    .unwrap();
    check(
        &Command::new(bin())
            .args(["train", "recipe.toml"])
            .current_dir(base_dir.path())
            .output()
            .unwrap(),
        "the base recipe",
    );
    let base = Base {
        recipe: suite.base_recipe.clone(),
        checkpoint: base_dir.path().join("out/checkpoints/step-00000001"),
    };
    assert!(base.checkpoint.join("trainer_state.json").is_file());

    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(2, 4);
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(usize, Result<Duration, String>)>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(case) = suite.case.get(i) else { break };
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    run_case(case, &base)
                }))
                .unwrap_or_else(|_| Err("the harness failed to build this case".into()));
                results.lock().unwrap().push((i, r));
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|r| r.0);

    let mut by_category: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut slowest = (Duration::ZERO, "");
    for (i, r) in &results {
        let case = &suite.case[*i];
        let category = case.id.split('/').next().unwrap();
        let e = by_category.entry(category).or_default();
        e.0 += 1;
        match r {
            Ok(t) => {
                if t.as_secs_f64() > 2.0 {
                    println!("slow case {}: {:.1} s", case.id, t.as_secs_f64());
                }
                if *t > slowest.0 {
                    slowest = (*t, &case.id);
                }
            }
            Err(why) => {
                e.1 += 1;
                failures.push(format!("{}: {why}", case.id));
            }
        }
    }
    let counts: Vec<String> = by_category
        .iter()
        .map(|(c, (n, f))| {
            format!(
                "{c} {n}{}",
                if *f > 0 {
                    format!(" ({f} failed)")
                } else {
                    String::new()
                }
            )
        })
        .collect();
    println!(
        "{} cases ({}) on {workers} workers in {:.1} s; slowest {} ({:.2} s)",
        suite.case.len(),
        counts.join(", "),
        started.elapsed().as_secs_f64(),
        slowest.1,
        slowest.0.as_secs_f64()
    );
    assert!(suite.case.len() >= 120, "only {} cases", suite.case.len());
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n\n{}",
        failures.len(),
        suite.case.len(),
        failures.join("\n\n")
    );
}
