//! Issue 13: one run per checkpoint directory, resume semantics, and the loss-spike guard.

mod common;
use common::*;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn recipe() -> String {
    root()
        .join("tests/recipes/tiny-dp.toml")
        .display()
        .to_string()
}

/// `ferrotron train tiny-dp.toml --set train.out_dir=OUT --set ...`
fn train(out: &Path, sets: &[&str], resume: bool) -> std::process::Output {
    let mut all = vec![format!("train.out_dir={}", out.display())];
    all.extend(sets.iter().map(|s| s.to_string()));
    let mut a = train_args(&recipe(), &all);
    if resume {
        a.push("--resume".into());
    }
    ferrotron(&strs(&a))
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn records(out: &Path) -> Vec<Value> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn step_names(ckpt: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(ckpt)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("step-"))
        .collect();
    v.sort();
    v
}

#[test]
fn a_second_run_on_a_locked_checkpoint_dir_exits_2_naming_the_first() {
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = tmp.path().join("shared-ckpt");
    let ck = format!("checkpoint.dir={}", ckpt.display());
    let a_out = tmp.path().join("a");
    let mut first = Command::new(bin())
        .args(train_args(
            &recipe(),
            &[
                format!("train.out_dir={}", a_out.display()),
                ck.clone(),
                "train.steps=1000000".into(),
                "checkpoint.every=0".into(),
            ],
        ))
        .current_dir(root())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while std::fs::read_to_string(a_out.join("metrics.jsonl")).map_or(0, |t| t.lines().count()) < 2
    {
        assert!(t0.elapsed().as_secs() < 60, "the first run did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let b_out = tmp.path().join("b");
    let second = train(&b_out, &[&ck, "train.steps=2"], false);
    let err = stderr(&second);
    println!("second run: {err}");
    assert_eq!(second.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("pid {}", first.id()))
            && err.contains("in use by another ferrotron run"),
        "{err}"
    );
    assert!(!b_out.exists(), "the refused run wrote nothing");
    assert!(first.try_wait().unwrap().is_none(), "the first run goes on");

    // Killed without releasing: the next run takes the stale lock over, and releases it.
    first.kill().unwrap();
    first.wait().unwrap();
    let lock = ckpt.join("ferrotron.lock");
    assert!(lock.exists(), "a killed run leaves its record");
    let third = train(&b_out, &[&ck, "train.steps=2"], false);
    check(&third, "run after a killed one");
    assert!(
        stderr(&third).contains(&format!("took over the stale lock of pid {}", first.id())),
        "{}",
        stderr(&third)
    );
    assert!(!lock.exists(), "released on exit");
    assert_eq!(step_names(&ckpt), vec!["step-00000002"]);
}

#[test]
fn resume_at_or_past_the_last_step_has_nothing_to_do() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path();
    check(&train(out, &["train.steps=4"], false), "4 steps");
    let metrics = std::fs::read(out.join("metrics.jsonl")).unwrap();
    for steps in ["train.steps=4", "train.steps=3"] {
        let again = train(out, &[steps], true);
        let said = String::from_utf8_lossy(&again.stdout);
        println!("{steps}: {said}");
        assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
        assert!(
            said.contains("nothing to do") && said.contains("step 4") && !said.contains("trained"),
            "{said}"
        );
        assert_eq!(std::fs::read(out.join("metrics.jsonl")).unwrap(), metrics);
        assert_eq!(step_names(&out.join("checkpoints")), vec!["step-00000004"]);
    }
}

#[test]
fn resume_with_another_global_batch_continues_tokens_data_and_schedule_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path();
    check(&train(out, &["train.steps=4"], false), "4 steps of 8 rows");
    let resumed = train(
        out,
        &[
            "train.steps=6",
            "train.global_batch=4",
            "checkpoint.keep_last=5",
        ],
        true,
    );
    check(&resumed, "resume with 4 rows per step");
    let err = stderr(&resumed);
    assert!(
        err.contains("train.global_batch = 4 differs from the checkpoint's 8"),
        "{err}"
    );
    let steps: Vec<Value> = records(out)
        .into_iter()
        .filter(|r| r.get("loss").is_some())
        .collect();
    let tokens: Vec<u64> = steps
        .iter()
        .map(|r| r["tokens"].as_u64().unwrap())
        .collect();
    // 4 steps x 8 rows x 16 tokens, then 4 rows per step.
    assert_eq!(tokens, vec![128, 256, 384, 512, 576, 640]);
    // Data: the sampler continues where 4 x 8 rows left it: 8 rows later it is at row 40.
    let ts: Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("checkpoints/step-00000006/trainer_state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(ts["trainer"]["sampler"]["cursor"], 40, "{ts}");
    assert_eq!(ts["trainer"]["tokens"], 640);
    // Schedule in steps: the same learning rates as a fresh 6-step run at steps 5 and 6.
    let fresh = tmp.path().join("fresh");
    check(
        &train(
            &fresh,
            &[
                "train.steps=6",
                "train.global_batch=4",
                "checkpoint.enabled=false",
            ],
            false,
        ),
        "fresh",
    );
    let lr = |v: &[Value]| -> Vec<f64> {
        v.iter()
            .filter(|r| r.get("loss").is_some())
            .map(|r| r["lr"].as_f64().unwrap())
            .collect()
    };
    assert_eq!(lr(&records(out))[4..], lr(&records(&fresh))[4..]);
}

#[test]
fn kill_and_resume_keeps_one_metrics_record_per_step() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path();
    let mut run = Command::new(bin())
        .args(train_args(
            &recipe(),
            &[
                format!("train.out_dir={}", out.display()),
                "train.steps=1000000".into(),
                "checkpoint.every=4".into(),
                "train.eval_every=2".into(),
            ],
        ))
        .current_dir(root())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let losses_logged = || {
        std::fs::read_to_string(out.join("metrics.jsonl"))
            .map_or(0, |t| t.lines().filter(|l| l.contains("\"loss\"")).count())
    };
    let t0 = Instant::now();
    while losses_logged() < 7 {
        assert!(t0.elapsed().as_secs() < 60, "training did not start");
        std::thread::sleep(Duration::from_millis(5));
    }
    run.kill().unwrap();
    run.wait().unwrap();
    let logged = losses_logged();
    let resumed = train(
        out,
        &["train.steps=14", "checkpoint.every=4", "train.eval_every=2"],
        true,
    );
    check(&resumed, "resume after kill -9");
    let recs = records(out);
    let steps = |key: &str| -> Vec<u64> {
        recs.iter()
            .filter(|r| r.get(key).is_some())
            .map(|r| r["step"].as_u64().unwrap())
            .collect()
    };
    println!(
        "killed after {logged} logged steps; {}",
        stderr(&resumed)
            .lines()
            .find(|l| l.contains("dropped"))
            .unwrap_or("nothing dropped")
    );
    assert_eq!(steps("loss"), (1..=14).collect::<Vec<_>>());
    assert_eq!(
        steps("eval_loss"),
        (1..=7).map(|i| 2 * i).collect::<Vec<_>>()
    );
}

#[test]
fn the_spike_guard_stops_lr_10_and_keeps_the_checkpoint_before_the_spike() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path();
    // Off by default: lr = 10 runs to the end, however high the loss goes.
    let unguarded = tmp.path().join("unguarded");
    check(
        &train(
            &unguarded,
            &["optim.lr=10", "train.steps=6", "checkpoint.enabled=false"],
            false,
        ),
        "lr 10, no guard",
    );
    let high = records(&unguarded)
        .iter()
        .filter_map(|r| r["loss"].as_f64())
        .fold(0.0, f64::max);
    let sets = [
        "optim.lr=10",
        "train.steps=30",
        "checkpoint.every=1",
        "checkpoint.keep_last=1",
        "train.spike_guard=3",
    ];
    let guarded = train(out, &sets, false);
    let err = stderr(&guarded);
    println!(
        "unguarded peak loss {high:.1}; guarded: {}",
        err.lines().last().unwrap_or("")
    );
    assert_eq!(guarded.status.code(), Some(2), "{err}");
    assert!(
        err.contains("is more than train.spike_guard = 3 times the running mean"),
        "{err}"
    );
    let spike: u64 = err
        .split("error: step ")
        .nth(1)
        .unwrap()
        .split(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let before = format!("step-{:08}", spike - 1);
    let ckpt = out.join("checkpoints");
    assert_eq!(step_names(&ckpt), vec![before.clone()]);
    assert!(err.contains(&before), "{err}");
    // The logged steps end before the spike: its update was never applied.
    let logged: Vec<u64> = records(out)
        .iter()
        .filter(|r| r.get("loss").is_some())
        .map(|r| r["step"].as_u64().unwrap())
        .collect();
    assert_eq!(logged.last(), Some(&(spike - 1)));
    // Resumed with a sane lr and keep_last = 1: later saves never prune the pre-spike checkpoint.
    let steps = format!("train.steps={}", spike + 3);
    let resumed = train(
        out,
        &[
            "optim.lr=1e-3",
            &steps,
            "checkpoint.every=1",
            "checkpoint.keep_last=1",
        ],
        true,
    );
    check(&resumed, "resume before the spike with a lower lr");
    assert_eq!(
        step_names(&ckpt),
        vec![before, format!("step-{:08}", spike + 3)]
    );
}

/// The spike guard's running mean survives a resume: trainer_state.json keeps it, and after a
/// run of 3 steps resumed to 6 the saved mean is the exponential mean of all six logged losses,
/// as one uninterrupted run gives (a mean restarted at the resume would be seeded by step 4).
#[test]
fn the_spike_guards_running_mean_continues_across_a_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path();
    let sets = |steps: &'static str| ["train.spike_guard=100", steps, "checkpoint.every=3"];
    check(&train(out, &sets("train.steps=3"), false), "3 steps");
    check(&train(out, &sets("train.steps=6"), true), "resumed to 6");
    let losses: Vec<f64> = records(out)
        .iter()
        .filter_map(|r| r["loss"].as_f64())
        .collect();
    assert_eq!(losses.len(), 6);
    let ema = |n: usize| {
        losses[1..n]
            .iter()
            .fold(losses[0], |m, &l| (1.0 - 0.1) * m + 0.1 * l)
    };
    let saved = |step: u64| -> f64 {
        let path = out.join(format!("checkpoints/step-{step:08}/trainer_state.json"));
        let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        v["trainer"]["loss_mean"].as_f64().expect("loss_mean kept")
    };
    let restarted = losses[4..6]
        .iter()
        .fold(losses[3], |m, &l| (1.0 - 0.1) * m + 0.1 * l);
    println!(
        "saved mean at step 3 {:.6}, step 6 {:.6}; over all six losses {:.6}; restarted at the resume it would be {restarted:.6}",
        saved(3),
        saved(6),
        ema(6)
    );
    assert_eq!(saved(3), ema(3));
    assert_eq!(saved(6), ema(6));
    assert_ne!(saved(6), restarted);
}

/// Runs `ferrotron ARGS` with stdout and stderr piped and both read ends closed at once, as when
/// the reader of `ferrotron … | head` has gone; returns the exit status.
fn run_with_closed_output(args: &[String]) -> std::process::ExitStatus {
    let mut child = Command::new(bin())
        .args(args)
        .current_dir(root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    drop(child.stderr.take());
    child.wait().unwrap()
}

#[test]
fn a_run_whose_output_reader_has_gone_still_trains_to_the_end() {
    let tmp = tempfile::tempdir().unwrap();
    let sets = |out: &Path| {
        vec![
            format!("train.out_dir={}", out.display()),
            "train.log_every=1".into(),
            "checkpoint.every=5".into(),
        ]
    };
    let alone = tmp.path().join("alone");
    let status = run_with_closed_output(&train_args(&recipe(), &sets(&alone)));
    assert!(status.success(), "one rank, closed output: {status}");
    assert_eq!(
        records(&alone)
            .iter()
            .filter(|r| r.get("loss").is_some())
            .count(),
        10
    );
    assert!(!step_names(&alone.join("checkpoints")).is_empty());

    let launched = tmp.path().join("launched");
    let mut args: Vec<String> = ["launch", "--nproc-per-node", "2", "--master-port"]
        .map(String::from)
        .to_vec();
    args.push(free_port());
    args.push("--".into());
    args.extend(train_args(&recipe(), &sets(&launched)));
    let status = run_with_closed_output(&args);
    assert!(
        status.success(),
        "ferrotron launch, closed output: {status}"
    );
    assert_eq!(
        records(&launched)
            .iter()
            .filter(|r| r.get("loss").is_some())
            .count(),
        10
    );
}
