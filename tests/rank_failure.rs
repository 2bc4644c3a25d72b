//! One rank failing alone ends the whole job at once, with its error, under mpirun: the other
//! ranks are waiting in a collective for it, and without an abort they would wait until the
//! collective timeout (MPI_Finalize on the failed rank waits for them too).
//!
//! The failure is one node's: rank 1's copy of the data is missing (its data.path names a file
//! that is not there), so it stops while setting up, after the process groups are open, while
//! rank 0 goes on into its first collective. (A failed checkpoint write is not such a case: the
//! ranks agree on the save's outcome, and every rank stops with its own error.)

mod common;
use common::*;
use std::time::{Duration, Instant};

/// Far above what the abort takes, far below the hang it prevents.
const TIMEOUT_S: u64 = 120;

#[test]
fn a_rank_that_fails_alone_ends_the_job_with_its_error() {
    let out = tempfile::tempdir().unwrap();
    let args = tiny_dp_zero3_args(out.path(), TIMEOUT_S, &[]);
    // Rank 1 only: a data file that is not there.
    let script = r#"if [ "$OMPI_COMM_WORLD_RANK" = 1 ]; then exec "$@" --set data.path=tests/data/missing-on-this-node.txt; fi; exec "$@""#;
    let started = Instant::now();
    let o = mpirun_command(2)
        .args(["bash", "-c", script, "rank"])
        .arg(bin())
        .args(&args)
        .output()
        .expect("mpirun runs");
    let took = started.elapsed();
    let err = String::from_utf8_lossy(&o.stderr);
    println!(
        "ended after {:.1} s, {:?}\n{err}",
        took.as_secs_f64(),
        o.status
    );
    assert!(!o.status.success(), "the job must fail: {err}");
    assert!(
        err.contains("error: rank 1: ") && err.contains("missing-on-this-node.txt"),
        "rank 1 names itself and its error: {err}"
    );
    assert_eq!(o.status.code(), Some(2), "a user error's exit code: {err}");
    assert!(
        !err.contains("watchdog") && !err.contains("did not complete"),
        "the job ended by the abort, not the collective timeout: {err}"
    );
    assert!(
        took < Duration::from_secs(TIMEOUT_S / 2),
        "the job took {took:?}: rank 0 waited for the timeout"
    );
}
