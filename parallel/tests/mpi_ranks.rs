//! Multi-rank tests of the MPI backend: each spawns `mpirun` running the self-test binary
//! (MPI is never initialised inside the test harness).

mod common;

use common::mpirun;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

fn assert_all_ok(out: &common::Outcome, np: usize, scenario: &str) {
    assert!(
        out.success,
        "stdout:\n{}\nstderr:\n{}",
        out.stdout, out.stderr
    );
    for rank in 0..np {
        let line = format!("ok: {scenario} rank {rank} of {np} (Mpi)");
        assert!(
            out.stdout.contains(&line),
            "missing {line:?} in\n{}",
            out.stdout
        );
    }
}

#[test]
fn mpi_collectives_values_and_counters_on_2_and_4_ranks() {
    for np in [2, 4] {
        let out = mpirun(np, &["collectives"], LIMIT);
        assert_all_ok(&out, np, "collectives");
    }
}

#[test]
fn mpi_mesh_groups_by_split_on_4_ranks() {
    for layout in [["1", "2", "2"], ["2", "2", "1"], ["1", "1", "4"]] {
        let mut args = vec!["mesh"];
        args.extend(layout);
        let out = mpirun(4, &args, LIMIT);
        assert_all_ok(&out, 4, "mesh");
    }
}

#[test]
fn mpi_rank_that_stops_answering_is_reported_and_the_job_ends() {
    let out = mpirun(3, &["hang", "--timeout-s", "3"], LIMIT);
    assert!(!out.success, "a stalled job must fail");
    assert!(
        out.stderr
            .contains("collective all_reduce on group world timed out after 3 s (rank 0)"),
        "stderr:\n{}",
        out.stderr
    );
    assert!(
        out.elapsed < Duration::from_secs(20),
        "took {:?}",
        out.elapsed
    );
}

#[test]
fn mpi_dead_rank_ends_the_job_within_30_s() {
    let out = mpirun(3, &["die", "--timeout-s", "20"], LIMIT);
    assert!(
        !out.success,
        "stdout:\n{}\nstderr:\n{}",
        out.stdout, out.stderr
    );
    assert!(
        out.elapsed < Duration::from_secs(30),
        "took {:?}",
        out.elapsed
    );
    assert!(!out.stdout.contains("ok: die"), "{}", out.stdout);
}
