//! The pipeline executor end to end on real process groups: every rank runs its schedule's
//! actions for one step of the toy model (src/pipeline/toy.rs) over the world as the pp group,
//! with non-blocking point-to-point, and checks (src/pipeline/selftest.rs) that its chunks'
//! weight gradients and the losses equal the one-process reference bit for bit, that the p2p
//! bytes are m activations + m gradients of 1 KiB per boundary (report and counters), and that
//! the peak of held activations equals the schedule's bound. Timed runs: tests/pipeline_timing.rs.

mod common;

use common::{assert_every_rank_ok, mpirun, tcp_ranks};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(120);

fn mpi_pipeline(np: usize, args: &[&str]) {
    let mut all = vec!["pipeline"];
    all.extend(args);
    let out = mpirun(np, &all, LIMIT);
    println!("{}", out.stdout);
    assert_every_rank_ok(std::slice::from_ref(&out), np, "pipeline", "Mpi");
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

/// The grouped mode (NCCL's calls: a run of sends and receives as one group, no tags) over MPI:
/// every schedule gives the reference bits and the same bytes; interleaved through its lists
/// with messages placed in rounds (pipeline/rounds.rs).
#[test]
fn mpi_grouped_point_to_point_matches_one_process() {
    mpi_pipeline(2, &["1f1b", "5", "1", "--grouped"]);
    mpi_pipeline(4, &["1f1b", "8", "1", "--grouped"]);
    mpi_pipeline(4, &["gpipe", "5", "1", "--grouped"]);
    mpi_pipeline(4, &["zb-h1", "7", "1", "--grouped"]);
    mpi_pipeline(2, &["interleaved", "4", "2", "--grouped"]);
    mpi_pipeline(4, &["interleaved", "9", "2", "--grouped"]);
}

#[test]
fn tcp_1f1b_and_interleaved_match_one_process() {
    for (np, args) in [(2, ["1f1b", "5", "1"]), (4, ["interleaved", "8", "2"])] {
        let mut all = vec!["pipeline"];
        all.extend(args);
        assert_every_rank_ok(&tcp_ranks(np, &all, LIMIT), np, "pipeline", "Tcp");
    }
}
