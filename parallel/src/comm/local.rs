//! `LocalComm`: the group of one. Always available, needs no MPI; every collective is a no-op
//! (or a copy from input to output), handled by the provided methods of `Comm`. The backend hooks
//! are unreachable for size 1 except send/recv, which the trait rejects (no peer exists).

use std::sync::Arc;

use super::buffer::{Buf, BufMut, ReduceOp};
use super::counters::CommCounters;
use super::error::CommError;
use super::Comm;

/// A process group holding only this process.
pub struct LocalComm {
    name: String,
    counters: CommCounters,
}

impl LocalComm {
    pub fn new() -> Self {
        Self::named("world")
    }

    pub fn named(name: &str) -> Self {
        LocalComm {
            name: name.to_string(),
            counters: CommCounters::new(),
        }
    }
}

impl Default for LocalComm {
    fn default() -> Self {
        Self::new()
    }
}

fn unreachable_on_one(op: &'static str, group: &str) -> CommError {
    CommError::invalid(op, group, "a group of one has no peer")
}

impl Comm for LocalComm {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn counters(&self) -> &CommCounters {
        &self.counters
    }
    fn backend_all_reduce(&self, _: BufMut<'_>, _: ReduceOp) -> Result<(), CommError> {
        Ok(())
    }
    fn backend_reduce_scatter(
        &self,
        input: Buf<'_>,
        mut output: BufMut<'_>,
        _: ReduceOp,
    ) -> Result<(), CommError> {
        output.copy_from(input);
        Ok(())
    }
    fn backend_all_gather(&self, input: Buf<'_>, mut output: BufMut<'_>) -> Result<(), CommError> {
        output.copy_from(input);
        Ok(())
    }
    fn backend_broadcast(&self, _: BufMut<'_>, _: usize) -> Result<(), CommError> {
        Ok(())
    }
    fn backend_send(&self, _: Buf<'_>, _: usize, _: u32) -> Result<(), CommError> {
        Err(unreachable_on_one("send", &self.name))
    }
    fn backend_recv(&self, _: BufMut<'_>, _: usize, _: u32) -> Result<(), CommError> {
        Err(unreachable_on_one("recv", &self.name))
    }
    fn backend_barrier(&self) -> Result<(), CommError> {
        Ok(())
    }
    fn backend_split(&self, _: u32, _: u32, name: &str) -> Result<Arc<dyn Comm>, CommError> {
        Ok(Arc::new(LocalComm::named(name)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::comm::counters::OpKind;

    #[test]
    fn every_collective_is_a_no_op_or_copy_on_a_group_of_one() {
        let comm: Arc<dyn Comm> = Arc::new(LocalComm::new());
        let mut x = vec![1.0f32, 2.0, 3.0];
        comm.all_reduce((&mut x[..]).into(), ReduceOp::Avg).unwrap();
        assert_eq!(x, vec![1.0, 2.0, 3.0]);
        let mut out = vec![0.0f32; 3];
        comm.reduce_scatter((&x[..]).into(), (&mut out[..]).into(), ReduceOp::Sum)
            .unwrap();
        assert_eq!(out, x);
        let mut gathered = vec![0i32; 2];
        comm.all_gather((&[7i32, 8][..]).into(), (&mut gathered[..]).into())
            .unwrap();
        assert_eq!(gathered, vec![7, 8]);
        comm.broadcast((&mut x[..]).into(), 0).unwrap();
        comm.barrier().unwrap();
        let sub = comm.split(3, 0, "tp").unwrap();
        assert_eq!((sub.rank(), sub.size(), sub.name()), (0, 1, "tp"));
        let snap = comm.counters().snapshot();
        assert_eq!(snap.total_sent(), 0);
        assert_eq!(snap.total_received(), 0);
        assert_eq!(snap.op(OpKind::AllReduce).calls, 1);
        assert_eq!(snap.op(OpKind::Split).calls, 1);
    }

    #[test]
    fn bad_arguments_are_errors_naming_group_and_op() {
        let comm = LocalComm::named("dp");
        let mut out = [0.0f32; 2];
        let err = comm
            .reduce_scatter(
                (&[1.0f32; 3][..]).into(),
                (&mut out[..]).into(),
                ReduceOp::Sum,
            )
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("reduce_scatter on group dp:"), "{err}");
        let err = comm
            .send((&[1.0f32][..]).into(), 0, 0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("itself"), "{err}");
        let mut ints = [1i32];
        let err = comm
            .all_reduce((&mut ints[..]).into(), ReduceOp::Avg)
            .unwrap_err()
            .to_string();
        assert!(err.contains("average of i32"), "{err}");
        let err = comm
            .broadcast((&mut ints[..]).into(), 1)
            .unwrap_err()
            .to_string();
        assert!(err.contains("root 1 is not a rank"), "{err}");
    }
}
