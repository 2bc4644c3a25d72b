//! Collective self-checks, run on any `Comm` by every rank of a group: the multi-rank tests
//! (MPI under mpirun, TCP with threads or processes) and the `ferrotron-comm-selftest` binary
//! share them. Each check computes what every rank must receive from the ranks' known inputs
//! and compares exactly (the inputs are small integers, so float sums are exact), and checks the
//! byte counters against the ring formulas of `counters.rs`.

use crate::comm::counters::{OpKind, OpTraffic};
use crate::comm::Comm;
use crate::mesh::{Axis, Mesh};
use crate::mesh_comms::MeshComms;
use crate::ReduceOp;
use std::sync::Arc;

/// Ok when `cond` holds, else the message (shared by the self-check modules).
pub(crate) fn ensure(cond: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(what())
    }
}

/// Values and counters of every collective on `comm`.
pub fn check_collectives(comm: &dyn Comm) -> Result<(), String> {
    let (n, r) = (comm.size(), comm.rank());
    let e = |e: crate::CommError| e.to_string();

    let mut x: Vec<f32> = (0..6).map(|i| ((r + 1) * (i + 1)) as f32).collect();
    comm.all_reduce((&mut x[..]).into(), ReduceOp::Sum)
        .map_err(e)?;
    let expect: Vec<f32> = (0..6).map(|i| ((i + 1) * n * (n + 1) / 2) as f32).collect();
    ensure(x == expect, || {
        format!("all_reduce sum f32: got {x:?}, expected {expect:?}")
    })?;

    let mut y = vec![r as f64 * 2.0; 3];
    comm.all_reduce((&mut y[..]).into(), ReduceOp::Avg)
        .map_err(e)?;
    let avg = (n - 1) as f64;
    ensure(y == vec![avg; 3], || {
        format!("all_reduce avg f64: got {y:?}, expected {avg}")
    })?;

    let mut z = [r as i32, -(r as i32)];
    comm.all_reduce((&mut z[..]).into(), ReduceOp::Max)
        .map_err(e)?;
    ensure(z == [n as i32 - 1, 0], || {
        format!("all_reduce max i32: got {z:?}")
    })?;

    let k = 3;
    let input: Vec<f32> = (0..n * k).map(|j| (r * 100 + j) as f32).collect();
    let mut shard = vec![0.0f32; k];
    comm.reduce_scatter((&input[..]).into(), (&mut shard[..]).into(), ReduceOp::Sum)
        .map_err(e)?;
    let expect: Vec<f32> = (0..k)
        .map(|i| (100 * n * (n - 1) / 2 + n * (r * k + i)) as f32)
        .collect();
    ensure(shard == expect, || {
        format!("reduce_scatter: got {shard:?}, expected {expect:?}")
    })?;

    let mine = [r as i32 * 10, r as i32 * 10 + 1];
    let mut all = vec![0i32; 2 * n];
    comm.all_gather((&mine[..]).into(), (&mut all[..]).into())
        .map_err(e)?;
    let expect: Vec<i32> = (0..n)
        .flat_map(|q| [q as i32 * 10, q as i32 * 10 + 1])
        .collect();
    ensure(all == expect, || {
        format!("all_gather: got {all:?}, expected {expect:?}")
    })?;

    let mut in_place = vec![-1.0f32; 2 * n];
    in_place[2 * r] = r as f32;
    in_place[2 * r + 1] = -(r as f32);
    comm.all_gather_in_place((&mut in_place[..]).into())
        .map_err(e)?;
    let expect: Vec<f32> = (0..n).flat_map(|q| [q as f32, -(q as f32)]).collect();
    ensure(in_place == expect, || {
        format!("all_gather_in_place: got {in_place:?}")
    })?;

    let root = n - 1;
    let mut b = if r == root {
        vec![42.5f64, -1.0]
    } else {
        vec![0.0; 2]
    };
    comm.broadcast((&mut b[..]).into(), root).map_err(e)?;
    ensure(b == vec![42.5, -1.0], || format!("broadcast: got {b:?}"))?;

    if n > 1 {
        let (next, prev) = ((r + 1) % n, (r + n - 1) % n);
        let out = [r as f32; 4];
        let mut got = [0.0f32; 4];
        if r % 2 == 0 {
            comm.send((&out[..]).into(), next, 7).map_err(e)?;
            comm.recv((&mut got[..]).into(), prev, 7).map_err(e)?;
        } else {
            comm.recv((&mut got[..]).into(), prev, 7).map_err(e)?;
            comm.send((&out[..]).into(), next, 7).map_err(e)?;
        }
        ensure(got == [prev as f32; 4], || {
            format!("send/recv ring: got {got:?} from {prev}")
        })?;
    }
    comm.barrier().map_err(e)?;
    check_counters(comm)
}

/// Byte counters after one call of each kind against the ring formulas.
fn check_counters(comm: &dyn Comm) -> Result<(), String> {
    let (n, r) = (comm.size() as u64, comm.rank());
    let e = |e: crate::CommError| e.to_string();
    comm.counters().reset();
    let len = 1000 * n as usize;
    let mut full = vec![1.0f32; len];
    comm.all_reduce((&mut full[..]).into(), ReduceOp::Sum)
        .map_err(e)?;
    let mut shard = vec![0.0f32; len / n as usize];
    comm.reduce_scatter((&full[..]).into(), (&mut shard[..]).into(), ReduceOp::Sum)
        .map_err(e)?;
    comm.all_gather((&shard[..]).into(), (&mut full[..]).into())
        .map_err(e)?;
    comm.broadcast((&mut shard[..]).into(), 0).map_err(e)?;
    let bytes = 4 * len as u64;
    let snap = comm.counters().snapshot();
    let ring = |b: u64| OpTraffic {
        calls: 1,
        bytes_sent: b,
        bytes_received: b,
    };
    let checks = [
        (OpKind::AllReduce, ring(2 * (n - 1) * bytes / n)),
        (OpKind::ReduceScatter, ring((n - 1) * bytes / n)),
        (OpKind::AllGather, ring((n - 1) * bytes / n)),
    ];
    for (kind, expect) in checks {
        let got = snap.op(kind);
        ensure(got == expect, || {
            format!("{} counters: got {got:?}, expected {expect:?}", kind.name())
        })?;
    }
    let shard_bytes = 4 * shard.len() as u64;
    let bcast = snap.op(OpKind::Broadcast);
    let expect_recv = if r == 0 { 0 } else { shard_bytes };
    let expect_sent = if n == 1 || r as u64 == n - 1 {
        0
    } else {
        shard_bytes
    };
    ensure(
        bcast.bytes_received == expect_recv && bcast.bytes_sent == expect_sent,
        || format!("broadcast counters: got {bcast:?}"),
    )?;
    comm.counters().reset();
    ensure(comm.counters().snapshot().total_sent() == 0, || {
        "reset left bytes".into()
    })
}

/// Builds the mesh groups from `world` and checks that each group holds exactly the ranks the
/// mesh says, in order (all_gather of world ranks), and that a sum over it matches.
pub fn check_mesh(world: Arc<dyn Comm>, mesh: Mesh) -> Result<(), String> {
    let rank = world.rank();
    let comms = MeshComms::build(world, mesh).map_err(|e| e.to_string())?;
    for axis in [Axis::Tp, Axis::Dp, Axis::Pp] {
        let group = comms.group(axis);
        let members = mesh.group_members(rank, axis);
        ensure(
            group.size() == members.len() && group.rank() == mesh.index_on(rank, axis),
            || {
                format!(
                    "{} group: rank {} of {}, expected {members:?}",
                    axis.name(),
                    group.rank(),
                    group.size()
                )
            },
        )?;
        let mut got = vec![0i32; members.len()];
        group
            .all_gather((&[rank as i32][..]).into(), (&mut got[..]).into())
            .map_err(|e| e.to_string())?;
        let expect: Vec<i32> = members.iter().map(|&m| m as i32).collect();
        ensure(got == expect, || {
            format!("{}: gathered {got:?}, expected {expect:?}", group.name())
        })?;
        let mut sum = [rank as f64];
        group
            .all_reduce((&mut sum[..]).into(), ReduceOp::Sum)
            .map_err(|e| e.to_string())?;
        let expect: usize = members.iter().sum();
        ensure(sum[0] == expect as f64, || {
            format!("{}: sum {} expected {expect}", group.name(), sum[0])
        })?;
    }
    comms.world.barrier().map_err(|e| e.to_string())
}
