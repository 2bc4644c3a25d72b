//! Issue 13: hang forensics. One of 4 ranks is frozen (SIGSTOP) in the middle of ZeRO-3 training;
//! the job must end within the collective timeout + 5 s with an error that names the frozen rank
//! as not having arrived, the operation and the group (MPI watchdog under mpirun; TCP receive
//! timeouts under `ferrotron launch`).

mod common;
use common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TIMEOUT_S: f64 = 5.0;
const VICTIM: usize = 2;

fn freeze_one_of_four(launcher: &str) {
    let out = tempfile::tempdir().unwrap();
    let args = tiny_dp_zero3_args(out.path(), TIMEOUT_S, &["train.steps=1000000"]);
    let (mut cmd, rank_var) = match launcher {
        "mpirun" => {
            let mut c = mpirun_command(4);
            c.arg(bin());
            (c, "OMPI_COMM_WORLD_RANK")
        }
        _ => {
            let mut c = Command::new(bin());
            c.args([
                "launch",
                "--nproc-per-node",
                "4",
                "--master-port",
                &free_port(),
                "--",
            ]);
            (c, "RANK")
        }
    };
    let mut child = cmd
        .args(&args)
        .current_dir(root())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Training runs once a few steps are logged; then freeze rank 2 wherever it is.
    let metrics = out.path().join("metrics.jsonl");
    let t0 = Instant::now();
    while std::fs::read_to_string(&metrics).map_or(0, |t| t.lines().count()) < 3 {
        assert!(
            t0.elapsed().as_secs() < 120,
            "{launcher}: training did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let victim = rank_pid(out.path(), rank_var, VICTIM).expect("rank 2 is running");
    // SAFETY: kill(2) on the pid just found; no memory is involved.
    unsafe { libc::kill(victim, libc::SIGSTOP) };
    let frozen_at = Instant::now();
    let mut ended = None;
    while frozen_at.elapsed().as_secs_f64() < TIMEOUT_S + 60.0 {
        if let Some(status) = child.try_wait().unwrap() {
            ended = Some((status, frozen_at.elapsed().as_secs_f64()));
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: as above; the frozen rank must not outlive the test, whatever happened.
    unsafe { libc::kill(victim, libc::SIGKILL) };
    if ended.is_none() {
        let _ = child.kill();
    }
    let stderr = child.wait_with_output().unwrap().stderr;
    let err = String::from_utf8_lossy(&stderr);
    let (status, took) = ended.unwrap_or_else(|| panic!("{launcher}: the job hangs\n{err}"));
    let named: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("timed out after 5 s") && l.contains("on group dp(pp=0,tp=0)"))
        .collect();
    println!(
        "{launcher}: job ended {took:.1} s after rank {VICTIM} froze ({status}); first report:\n{}",
        named.first().unwrap_or(&"none")
    );
    assert!(!status.success(), "{launcher}: {err}");
    assert!(
        took <= TIMEOUT_S + 5.0,
        "{launcher}: took {took:.1} s, more than the timeout + 5 s\n{err}"
    );
    assert!(!named.is_empty(), "{launcher}: no timeout report\n{err}");
    // Every report names the operation and the group. The first report ends the job; the
    // launcher then continues and kills every rank (mpirun and `ferrotron launch` send SIGCONT),
    // so a report still being composed can find the frozen rank thawed. Hence: some report names
    // rank 2 as the one that never answered, and no healthy rank's report calls another healthy
    // rank unresponsive. (Rank 2 itself, thawed while the others are being killed, may report
    // them as silent: that report is the victim's view of a job already ending, not a diagnosis.)
    let not_arrived = |line: &str| -> String {
        let tail = line.split("; not arrived: ").nth(1).unwrap_or("");
        tail.split("; waiting in it")
            .next()
            .unwrap_or("")
            .to_string()
    };
    assert!(
        named.iter().any(|l| not_arrived(l).contains(&format!(
            "world rank {VICTIM} (no answer to the status query"
        ))),
        "{launcher}: no report names the frozen rank\n{err}"
    );
    let by_victim = format!("timed out after 5 s (rank {VICTIM})");
    for line in named.iter().filter(|l| !l.contains(&by_victim)) {
        let op = ["all_gather", "reduce_scatter", "all_reduce"]
            .iter()
            .any(|op| line.contains(&format!("collective {op} on group dp(pp=0,tp=0)")));
        assert!(op, "{launcher}: the operation is not named\n{line}");
        for healthy in [0, 1, 3] {
            assert!(
                !line.contains(&format!("world rank {healthy} (no answer")),
                "{launcher}: healthy rank {healthy} is blamed\n{line}"
            );
        }
    }
}

#[test]
fn a_frozen_rank_is_named_under_mpirun() {
    freeze_one_of_four("mpirun");
}

#[test]
fn a_frozen_rank_is_named_under_launch() {
    freeze_one_of_four("launch");
}
