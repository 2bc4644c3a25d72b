//! Spawning the self-test binary on several ranks, under mpirun or as TCP ranks.

#![allow(dead_code)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const SELFTEST: &str = env!("CARGO_BIN_EXE_ferrotron-comm-selftest");

pub struct Outcome {
    pub success: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

fn finish(mut child: std::process::Child, limit: Duration, start: Instant) -> Outcome {
    // Drain the pipes on threads so a chatty child cannot block.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut out, &mut s).ok();
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut err, &mut s).ok();
        s
    });
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > limit {
            child.kill().ok();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Outcome {
        success: status.success(),
        code: status.code(),
        stdout: out_t.join().unwrap(),
        stderr: err_t.join().unwrap(),
        elapsed: start.elapsed(),
    }
}

/// `mpirun -np N ferrotron-comm-selftest ARGS`, killed after `limit`.
pub fn mpirun(np: usize, args: &[&str], limit: Duration) -> Outcome {
    let start = Instant::now();
    let child = Command::new("mpirun")
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("OMPI_MCA_btl_vader_single_copy_mechanism", "none")
        .args(["--oversubscribe", "-np", &np.to_string(), SELFTEST])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mpirun must be installed (openmpi-bin)");
    finish(child, limit, start)
}

/// N TCP ranks started with torchrun's variables; returns each rank's outcome.
pub fn tcp_ranks(np: usize, args: &[&str], limit: Duration) -> Vec<Outcome> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let start = Instant::now();
    let children: Vec<_> = (0..np)
        .map(|rank| {
            Command::new(SELFTEST)
                .args(args)
                .env("RANK", rank.to_string())
                .env("LOCAL_RANK", rank.to_string())
                .env("WORLD_SIZE", np.to_string())
                .env("LOCAL_WORLD_SIZE", np.to_string())
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", port.to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    children
        .into_iter()
        .map(|c| finish(c, limit, start))
        .collect()
}

/// Asserts that the job succeeded and every rank printed "ok: SCENARIO rank R of NP (BACKEND)".
pub fn assert_every_rank_ok(outs: &[Outcome], np: usize, scenario: &str, backend: &str) {
    for out in outs {
        assert!(
            out.success,
            "stdout:\n{}\nstderr:\n{}",
            out.stdout, out.stderr
        );
    }
    let stdout: String = outs.iter().map(|o| o.stdout.as_str()).collect();
    for rank in 0..np {
        let line = format!("ok: {scenario} rank {rank} of {np} ({backend})");
        assert!(stdout.contains(&line), "missing {line:?} in\n{stdout}");
    }
}
