//! The pipeline executor end to end on real process groups: every rank runs its schedule's
//! actions for one step of the toy model (src/pipeline/toy.rs) over the world as the pp group,
//! with non-blocking point-to-point, and checks (src/pipeline/selftest.rs) that its chunks'
//! weight gradients and the losses equal the one-process reference bit for bit, that the p2p
//! bytes are m activations + m gradients of 1 KiB per boundary (report and counters), and that
//! the peak of held activations equals the schedule's bound. Timed runs (every call stretched
//! to t_f = 40 ms, t_b = 80 ms) also check the measured idle fraction against the formula.

mod common;

use common::{mpirun, tcp_ranks};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(120);

fn mpi_pipeline(np: usize, args: &[&str]) {
    let mut all = vec!["pipeline"];
    all.extend(args);
    let out = mpirun(np, &all, LIMIT);
    assert!(
        out.success,
        "{args:?} on {np} ranks\nstdout:\n{}\nstderr:\n{}",
        out.stdout, out.stderr
    );
    for rank in 0..np {
        let line = format!("ok: pipeline rank {rank} of {np} (Mpi)");
        assert!(
            out.stdout.contains(&line),
            "missing {line:?} in\n{}",
            out.stdout
        );
        assert!(
            out.stdout.contains(&format!("rank {rank}: {} ", args[0])),
            "{}",
            out.stdout
        );
    }
    println!("{}", out.stdout);
}

#[test]
fn mpi_1f1b_on_2_and_4_ranks_matches_one_process() {
    mpi_pipeline(2, &["1f1b", "5", "1"]);
    mpi_pipeline(4, &["1f1b", "8", "1"]);
}

#[test]
fn mpi_interleaved_v2_on_2_and_4_ranks_matches_one_process() {
    mpi_pipeline(2, &["interleaved", "4", "2"]);
    // m = 5 is not a multiple of p = 4: the remainder rides in the first group.
    mpi_pipeline(4, &["interleaved", "5", "2"]);
}

#[test]
fn mpi_gpipe_and_zero_bubble_on_4_ranks_match_one_process() {
    mpi_pipeline(4, &["gpipe", "5", "1"]);
    mpi_pipeline(4, &["zb-h1", "8", "1"]);
}

#[test]
fn mpi_timed_steps_idle_what_the_formula_says() {
    mpi_pipeline(4, &["1f1b", "8", "1", "--stage-ms", "40"]);
    mpi_pipeline(4, &["interleaved", "8", "2", "--stage-ms", "40"]);
}

#[test]
fn tcp_1f1b_and_interleaved_match_one_process() {
    for (np, args) in [(2, ["1f1b", "5", "1"]), (4, ["interleaved", "8", "2"])] {
        let mut all = vec!["pipeline"];
        all.extend(args);
        for (rank, out) in tcp_ranks(np, &all, LIMIT).iter().enumerate() {
            assert!(
                out.success,
                "{args:?} rank {rank}: {}\n{}",
                out.stdout, out.stderr
            );
            assert!(
                out.stdout
                    .contains(&format!("ok: pipeline rank {rank} of {np} (Tcp)")),
                "{}",
                out.stdout
            );
        }
    }
}
