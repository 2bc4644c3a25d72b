//! Store tests: threads on 127.0.0.1 act as ranks.

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::{StoreClient, StoreServer};

const T: Duration = Duration::from_secs(5);

#[test]
fn set_then_get_and_get_waits_for_a_later_set() {
    let server = StoreServer::bind("127.0.0.1", 0).unwrap();
    let port = server.port();
    let waiter = thread::spawn(move || {
        let c = StoreClient::connect("127.0.0.1", port, T).unwrap();
        c.get("late", T).unwrap()
    });
    let c = StoreClient::connect("127.0.0.1", port, T).unwrap();
    c.set("a", b"alpha").unwrap();
    assert_eq!(c.get("a", T).unwrap(), b"alpha");
    thread::sleep(Duration::from_millis(200));
    c.set("late", b"value").unwrap();
    assert_eq!(waiter.join().unwrap(), b"value");
    assert_eq!(c.add("n", 2).unwrap(), 2);
    assert_eq!(c.add("n", 3).unwrap(), 5);
}

#[test]
fn get_of_a_missing_key_times_out_with_the_key_named() {
    let server = StoreServer::bind("127.0.0.1", 0).unwrap();
    let c = StoreClient::connect("127.0.0.1", server.port(), T).unwrap();
    let start = Instant::now();
    let err = c.get("never", Duration::from_millis(300)).unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(3));
    assert!(
        err.to_string()
            .contains("key never was not set within 0.3 s"),
        "{err}"
    );
}

#[test]
fn barrier_releases_all_ranks_only_when_all_arrived() {
    let server = StoreServer::bind("127.0.0.1", 0).unwrap();
    let port = server.port();
    let arrived = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let ranks: Vec<_> = (0..4)
        .map(|rank| {
            let arrived = Arc::clone(&arrived);
            thread::spawn(move || {
                let c = StoreClient::connect("127.0.0.1", port, T).unwrap();
                thread::sleep(Duration::from_millis(100 * rank));
                arrived.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                c.barrier("start", 4, T).unwrap();
                arrived.load(std::sync::atomic::Ordering::SeqCst)
            })
        })
        .collect();
    for r in ranks {
        assert_eq!(r.join().unwrap(), 4);
    }
}

#[test]
fn barrier_with_a_missing_rank_times_out() {
    let server = StoreServer::bind("127.0.0.1", 0).unwrap();
    let c = StoreClient::connect("127.0.0.1", server.port(), T).unwrap();
    let err = c.barrier("b", 2, Duration::from_millis(300)).unwrap_err();
    assert!(err.to_string().contains("not all 2 ranks arrived"), "{err}");
}

#[test]
fn clients_retry_until_the_server_comes_up() {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = probe.local_addr().unwrap().port();
    drop(probe);
    let client = thread::spawn(move || StoreClient::connect("127.0.0.1", port, T).map(|_| ()));
    thread::sleep(Duration::from_millis(300));
    let _server = StoreServer::bind("127.0.0.1", port).unwrap();
    client.join().unwrap().unwrap();
    let err = StoreClient::connect("127.0.0.1", 1, Duration::from_millis(200))
        .err()
        .unwrap();
    assert!(err
        .to_string()
        .contains("could not reach the rendezvous store at 127.0.0.1:1"));
}
