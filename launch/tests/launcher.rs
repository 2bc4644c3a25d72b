//! Launcher tests: `ferrotron-launch` starting `sh -c` ranks.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const LAUNCH: &str = env!("CARGO_BIN_EXE_ferrotron-launch");

fn free_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port().to_string()
}

fn launch(nproc: usize, script: &str) -> (Output, Duration) {
    let start = Instant::now();
    let out = Command::new(LAUNCH)
        .args([
            "--nproc-per-node",
            &nproc.to_string(),
            "--master-port",
            &free_port(),
        ])
        .args(["--", "sh", "-c", script])
        .output()
        .unwrap();
    (out, start.elapsed())
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn every_output_line_is_prefixed_with_its_rank_and_ranks_get_torchrun_variables() {
    let (out, _) = launch(
        2,
        r#"echo "hello $RANK of $WORLD_SIZE local $LOCAL_RANK/$LOCAL_WORLD_SIZE at $MASTER_ADDR"; echo "warn $RANK" >&2; printf 'no newline'"#,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for r in 0..2 {
        let hello = format!("[rank {r}] hello {r} of 2 local {r}/2 at 127.0.0.1\n");
        assert!(stdout.contains(&hello), "{stdout}");
        assert!(
            stdout.contains(&format!("[rank {r}] no newline\n")),
            "{stdout}"
        );
        assert!(text(&out.stderr).contains(&format!("[rank {r}] warn {r}\n")));
    }
    assert_eq!(stdout.lines().count(), 4, "{stdout}");
}

#[test]
fn a_failing_rank_stops_the_others_and_the_launcher_names_it() {
    let (out, took) = launch(
        3,
        r#"if [ "$RANK" = 1 ]; then sleep 0.3; exit 3; fi; sleep 60"#,
    );
    assert_eq!(out.status.code(), Some(3));
    let stderr = text(&out.stderr);
    assert!(
        stderr
            .contains("ferrotron launch: rank 1 exited with exit code 3; stopping the other ranks"),
        "{stderr}"
    );
    assert!(stderr.contains("rank 0: SIGTERM"), "{stderr}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
}

#[test]
fn a_rank_that_ignores_sigterm_is_killed_within_10_s() {
    let (out, took) = launch(
        2,
        r#"if [ "$RANK" = 1 ]; then sleep 0.3; exit 5; fi; trap "" TERM; sleep 60"#,
    );
    assert_eq!(out.status.code(), Some(5));
    assert!(
        text(&out.stderr).contains("rank 0: SIGKILL"),
        "{}",
        text(&out.stderr)
    );
    assert!(took < Duration::from_secs(10), "took {took:?}");
}

#[test]
fn sigterm_to_the_launcher_is_forwarded_to_every_rank() {
    let mut child = Command::new(LAUNCH)
        .args(["--nproc-per-node", "2", "--master-port", &free_port(), "--"])
        .args([
            "sh",
            "-c",
            r#"trap 'echo "got TERM"; exit 0' TERM; echo ready; while :; do sleep 0.05; done"#,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let _ = tx.send(line.unwrap());
        }
    });
    let mut ready = 0;
    while ready < 2 {
        let line = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("ranks start");
        ready += line.ends_with("ready") as usize;
    }
    let start = Instant::now();
    // SAFETY: plain kill(2) on the launcher we started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(status.code(), Some(128 + 15));
    let rest: Vec<String> = rx.iter().collect(); // until the launcher's stdout closes
    for r in 0..2 {
        let line = format!("[rank {r}] got TERM");
        assert!(rest.contains(&line), "{rest:?}");
    }
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(
        stderr.contains("received SIGTERM; forwarding it to all ranks"),
        "{stderr}"
    );
}

#[test]
fn invalid_arguments_exit_2_with_a_sentence() {
    let out = Command::new(LAUNCH)
        .args(["--nproc-per-node", "0", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr).trim(),
        "ferrotron-launch: invalid launch arguments: --nproc-per-node must be at least 1"
    );
}
