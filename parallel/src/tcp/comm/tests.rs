//! TCP backend tests: threads on 127.0.0.1 act as ranks of one world.

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::TcpComm;
use crate::comm::Comm;
use crate::mesh::Mesh;
use crate::selftest::{check_collectives, check_mesh};
use crate::selftest_p2p::check_p2p;
use crate::ReduceOp;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs `body` on `n` ranks (threads) and returns their results in rank order.
fn on_ranks<T: Send + 'static>(
    n: usize,
    collective_timeout: Duration,
    body: impl Fn(Arc<dyn Comm>) -> T + Send + Sync + 'static,
) -> Vec<T> {
    let port = free_port();
    let body = Arc::new(body);
    let handles: Vec<_> = (0..n)
        .map(|rank| {
            let body = Arc::clone(&body);
            thread::spawn(move || {
                let comm = TcpComm::connect_world(
                    "127.0.0.1",
                    port,
                    rank,
                    n,
                    Duration::from_secs(10),
                    collective_timeout,
                )
                .unwrap();
                body(Arc::new(comm))
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

#[test]
fn collectives_and_counters_on_2_3_and_4_ranks() {
    for n in [2, 3, 4] {
        for result in on_ranks(n, Duration::from_secs(10), |c| check_collectives(&*c)) {
            result.unwrap();
        }
    }
}

#[test]
fn mesh_groups_from_splits_on_8_ranks() {
    for (pp, dp, tp) in [(2, 2, 2), (1, 4, 2), (2, 1, 4)] {
        let mesh = Mesh::new(8, pp, dp, tp).unwrap();
        for result in on_ranks(8, Duration::from_secs(10), move |c| check_mesh(c, mesh)) {
            result.unwrap();
        }
    }
}

#[test]
fn a_rank_that_stops_answering_makes_the_others_fail_naming_group_and_op() {
    let results = on_ranks(3, Duration::from_millis(1500), |c| {
        if c.rank() == 1 {
            thread::sleep(Duration::from_secs(4));
            return Ok(Duration::ZERO);
        }
        let start = Instant::now();
        let mut x = [1.0f32];
        c.all_reduce((&mut x[..]).into(), ReduceOp::Sum)
            .map(|_| start.elapsed())
            .map_err(|e| (e.to_string(), start.elapsed()))
    });
    let (msg, took) = results[0].clone().unwrap_err();
    assert!(
        msg.starts_with("collective all_reduce on group world timed out after 1.5 s (rank 0)"),
        "{msg}"
    );
    assert!(msg.contains("world rank 1"), "{msg}");
    assert!(took < Duration::from_secs(4), "{took:?}");
    assert!(results[2].is_err());
}

#[test]
fn a_rank_that_exits_makes_the_others_fail_naming_the_peer() {
    let results = on_ranks(2, Duration::from_secs(20), |c| {
        if c.rank() == 1 {
            drop(c); // closes rank 1's connections, as a dead process would
            return String::new();
        }
        let mut x = [1.0f32];
        let start = Instant::now();
        let err = c
            .all_reduce((&mut x[..]).into(), ReduceOp::Sum)
            .unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(5));
        err.to_string()
    });
    assert!(
        results[0].contains("world rank 1 closed its connection"),
        "{}",
        results[0]
    );
}

#[test]
fn nonblocking_p2p_on_2_and_4_ranks() {
    for n in [2, 4] {
        for result in on_ranks(n, Duration::from_secs(20), |c| check_p2p(&*c)) {
            result.unwrap();
        }
    }
}

#[test]
fn pipeline_executor_over_thread_ranks_matches_one_process() {
    for (n, name, m, v) in [
        (2, "1f1b", 3, 1),
        (4, "interleaved", 6, 2),
        (3, "zb-h1", 4, 1),
    ] {
        for result in on_ranks(n, Duration::from_secs(20), move |c| {
            crate::pipeline::selftest::check_pipeline(&*c, name, m, v, None, &Default::default())
        }) {
            result.unwrap();
        }
    }
}
