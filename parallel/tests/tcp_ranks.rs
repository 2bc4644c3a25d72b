//! Multi-process tests of the TCP backend: ranks started with torchrun's variables, as
//! `ferrotron launch` starts them.

mod common;

use common::tcp_ranks;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn tcp_processes_run_collectives_and_mesh_splits() {
    for out in tcp_ranks(2, &["collectives"], LIMIT) {
        assert!(out.success, "{}\n{}", out.stdout, out.stderr);
        assert!(out.stdout.contains("(Tcp)"), "{}", out.stdout);
    }
    for out in tcp_ranks(4, &["mesh", "2", "1", "2"], LIMIT) {
        assert!(out.success, "{}\n{}", out.stdout, out.stderr);
    }
}

#[test]
fn tcp_dead_rank_makes_the_others_exit_naming_it() {
    let outs = tcp_ranks(3, &["die", "--timeout-s", "20"], LIMIT);
    for (rank, out) in outs.iter().enumerate() {
        assert!(!out.success, "rank {rank} must fail");
        assert!(
            out.elapsed < Duration::from_secs(30),
            "rank {rank} took {:?}",
            out.elapsed
        );
    }
    assert!(
        outs[0]
            .stderr
            .contains("world rank 1 closed its connection"),
        "{}",
        outs[0].stderr
    );
}
