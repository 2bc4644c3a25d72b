//! Non-blocking point-to-point self-checks, run by every rank of a group (MPI under mpirun, TCP
//! with threads or processes): the multi-rank tests and `ferrotron-comm-selftest p2p` share them.
//!
//! - `check_p2p`: (1) the 1F1B steady state: every rank sends a large activation to the next
//!   rank and a large gradient to the previous one *before* receiving either (with blocking
//!   rendezvous sends both neighbours would wait for each other forever); (2) order: three
//!   messages on one tag, mixing `send` and `isend`, received by three receives posted at once
//!   and waited in reverse order, arrive in posting order; (3) `test` is false before the peer
//!   has sent (sequenced by a barrier) and becomes true without `wait`. Values are compared
//!   exactly and the send/recv byte counters against the exact message bytes.
//! - `blocking_exchange`: the same steady state with blocking sends (the deadlock the
//!   non-blocking calls avoid; the tests expect it to time out).

use crate::comm::counters::OpKind;
use crate::comm::Comm;
use crate::selftest::ensure;
use crate::Dtype;

/// Elements of the large messages: 16 MiB of f32, above MPI's eager limit and a socket buffer.
pub const LARGE: usize = 4 << 20;

fn pattern(from: usize, to: usize, salt: usize, len: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((from * 7919 + to * 104_729 + salt * 31 + i) % 65_521) as f32)
        .collect()
}

/// All three checks on `comm` (a group of at least two ranks); byte counters reset first.
pub fn check_p2p(comm: &dyn Comm) -> Result<(), String> {
    let (n, r) = (comm.size(), comm.rank());
    if n < 2 {
        return Ok(());
    }
    let e = |e: crate::CommError| e.to_string();
    comm.counters().reset();
    let (next, prev) = ((r + 1) % n, (r + n - 1) % n);
    let mut sent_bytes = 0u64;
    let mut received_bytes = 0u64;
    let mut sends = 0u64;
    let mut recvs = 0u64;

    // (1) Both neighbours send before they receive.
    let activation = pattern(r, next, 1, LARGE);
    let grad = pattern(r, prev, 2, LARGE);
    let s1 = comm.isend_owned(activation.into(), next, 10).map_err(e)?;
    let s2 = comm.isend((&grad[..]).into(), prev, 11).map_err(e)?;
    let r1 = comm.irecv(Dtype::F32, LARGE, prev, 10).map_err(e)?;
    let r2 = comm.irecv(Dtype::F32, LARGE, next, 11).map_err(e)?;
    let got_grad = r2.wait().map_err(e)?.into_f32().unwrap_or_default();
    let mut got_act = vec![0.0f32; LARGE];
    r1.wait_into((&mut got_act[..]).into()).map_err(e)?;
    s1.wait().map_err(e)?;
    s2.wait().map_err(e)?;
    ensure(got_act == pattern(prev, r, 1, LARGE), || {
        format!("steady state: wrong activation from rank {prev}")
    })?;
    ensure(got_grad == pattern(next, r, 2, LARGE), || {
        format!("steady state: wrong gradient from rank {next}")
    })?;
    sent_bytes += 2 * 4 * LARGE as u64;
    received_bytes += 2 * 4 * LARGE as u64;
    sends += 2;
    recvs += 2;

    // (2) In order on one tag, whatever the waiting order; blocking and non-blocking mixed.
    let small: Vec<Vec<f32>> = (0..3).map(|k| pattern(r, next, 10 + k, 1000 + k)).collect();
    let posted: Vec<_> = (0..3)
        .map(|k| comm.irecv(Dtype::F32, 1000 + k, prev, 12))
        .collect::<Result<_, _>>()
        .map_err(e)?;
    let first = comm.isend((&small[0][..]).into(), next, 12).map_err(e)?;
    comm.send((&small[1][..]).into(), next, 12).map_err(e)?;
    let third = comm.isend((&small[2][..]).into(), next, 12).map_err(e)?;
    let mut arrived: Vec<Vec<f32>> = Vec::new();
    for request in posted.into_iter().rev() {
        arrived.push(request.wait().map_err(e)?.into_f32().unwrap_or_default());
    }
    arrived.reverse();
    first.wait().map_err(e)?;
    third.wait().map_err(e)?;
    for (k, got) in arrived.iter().enumerate() {
        ensure(*got == pattern(prev, r, 10 + k, 1000 + k), || {
            format!("order: receive {k} from rank {prev} got another message")
        })?;
    }
    let small_bytes: u64 = (0..3).map(|k| 4 * (1000 + k) as u64).sum();
    sent_bytes += small_bytes;
    received_bytes += small_bytes;
    sends += 3;
    recvs += 3;

    // (3) test() before and after the peer's send.
    let mut pending = comm.irecv(Dtype::I32, 4, prev, 13).map_err(e)?;
    ensure(!pending.test().map_err(e)?, || {
        "test: a receive completed before its peer sent".into()
    })?;
    comm.barrier().map_err(e)?;
    let mut send = comm
        .isend((&[r as i32; 4][..]).into(), next, 13)
        .map_err(e)?;
    while !pending.test().map_err(e)? {
        std::thread::yield_now();
    }
    while !send.test().map_err(e)? {
        std::thread::yield_now();
    }
    let got = pending.wait().map_err(e)?;
    ensure(
        got == crate::comm::p2p::OwnedBuf::I32(vec![prev as i32; 4]),
        || format!("test: got {got:?}"),
    )?;
    sent_bytes += 16;
    received_bytes += 16;
    sends += 1;
    recvs += 1;

    let snap = comm.counters().snapshot();
    let (s, rv) = (snap.op(OpKind::Send), snap.op(OpKind::Recv));
    ensure(
        (s.calls, s.bytes_sent, s.bytes_received) == (sends, sent_bytes, 0),
        || format!("send counters {s:?}, expected {sends} calls, {sent_bytes} bytes"),
    )?;
    ensure(
        (rv.calls, rv.bytes_sent, rv.bytes_received) == (recvs, 0, received_bytes),
        || format!("recv counters {rv:?}, expected {recvs} calls, {received_bytes} bytes"),
    )?;
    comm.barrier().map_err(e)
}

/// The steady state of `check_p2p` (1) with blocking sends: both neighbours send first.
pub fn blocking_exchange(comm: &dyn Comm) -> Result<(), String> {
    let (n, r) = (comm.size(), comm.rank());
    let e = |e: crate::CommError| e.to_string();
    let (next, prev) = ((r + 1) % n, (r + n - 1) % n);
    let data = pattern(r, next, 1, LARGE);
    comm.send((&data[..]).into(), next, 10).map_err(e)?;
    let mut got = vec![0.0f32; LARGE];
    comm.recv((&mut got[..]).into(), prev, 10).map_err(e)
}
