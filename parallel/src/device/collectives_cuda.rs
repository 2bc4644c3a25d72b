//! `Collectives` for the CUDA backend (see collectives.rs for the four operations).
//!
//! NCCL path (the group is an `NcclComm`, built by `nccl_group` on a stream of its own): device
//! addresses go to NCCL, queued on the communication stream; cudarc's per-buffer events order
//! it against the compute stream (no host copy, no host synchronisation). Act buffers move as
//! bf16 (P = 2) or f32, Acc as f32.
//! Host-staged path (any other group: MPI, TCP, local): the region is downloaded, the host
//! collective runs on f32 values, and the result is uploaded. bf16 values are exact in f32, so
//! the staged gather is lossless; its counted bytes are those of the f32 host buffers.

use super::collectives::Collectives;
use super::{check_gather, check_scatter, comm_err};
use crate::{Comm, DeviceDtype, DeviceP2p, NcclComm, ReduceOp};
use cudarc::driver::{CudaSlice, DevicePtr, DevicePtrMut};
use ferrotron_kernels::backend::{AccDst, AccSrc, ActDst, ActSrc};
use ferrotron_kernels::cuda::{CudaAct, CudaBackend};
use ferrotron_kernels::{Backend, Dst, Error, Result, Src};
use std::sync::Arc;

fn act_dtype<A: CudaAct>() -> DeviceDtype {
    if std::mem::size_of::<A>() == 2 {
        DeviceDtype::Bf16
    } else {
        DeviceDtype::F32
    }
}

fn driver_err(e: impl std::fmt::Debug) -> Error {
    Error::Cuda(format!("host staging copy: {e:?}"))
}

/// The NCCL communicator of `comm`, if it is one and lives on the backend's GPU.
fn nccl_of<'c, A: CudaAct>(b: &CudaBackend<A>, comm: &'c dyn Comm) -> Result<Option<&'c NcclComm>> {
    match comm.nccl() {
        Some(n) if n.stream().context().cu_ctx() != b.context().cu_ctx() => {
            Err(Error::Unsupported(format!(
                "group {}: the NCCL communicator belongs to another GPU than the CUDA backend",
                comm.name()
            )))
        }
        other => Ok(other),
    }
}

fn upload_into<A: CudaAct, T: cudarc::driver::DeviceRepr>(
    b: &CudaBackend<A>,
    host: &[T],
    buf: &mut CudaSlice<T>,
    start: usize,
) -> Result<()> {
    let mut view = buf.slice_mut(start..start + host.len());
    b.stream().memcpy_htod(host, &mut view).map_err(driver_err)
}

fn upload_act_into<A: CudaAct>(
    b: &CudaBackend<A>,
    host: &[f32],
    dst: Dst<'_, CudaSlice<A>>,
) -> Result<()> {
    let v: Vec<A> = host.iter().map(|&x| A::from_f32(x)).collect();
    upload_into(b, &v, dst.buf, dst.start)
}

impl<A: CudaAct> Collectives for CudaBackend<A> {
    const ACT_BYTES: u64 = std::mem::size_of::<A>() as u64;
    const ACC_BYTES: u64 = 4;

    fn all_reduce_sum_acc(&self, comm: &dyn Comm, x: AccDst<'_, Self>) -> Result<()> {
        if let Some(n) = nccl_of(self, comm)? {
            let (p, _sync) = x.buf.device_ptr_mut(n.stream());
            // SAFETY: [start, start + len) lies inside the buffer (Dst checks it) on this GPU.
            return unsafe { n.device_all_reduce_sum(p + 4 * x.start as u64, x.len) }
                .map_err(comm_err);
        }
        let mut h = self.download_acc(x.as_src())?;
        comm.all_reduce((&mut h[..]).into(), ReduceOp::Sum)
            .map_err(comm_err)?;
        upload_into(self, &h, x.buf, x.start)
    }

    fn reduce_scatter_sum_acc(
        &self,
        comm: &dyn Comm,
        input: AccSrc<'_, Self>,
        out: AccDst<'_, Self>,
    ) -> Result<()> {
        check_scatter(comm, input.len, out.len)?;
        if let Some(n) = nccl_of(self, comm)? {
            let (pi, _s1) = input.buf.device_ptr(n.stream());
            let (po, _s2) = out.buf.device_ptr_mut(n.stream());
            // SAFETY: both regions are inside their buffers; distinct buffers do not overlap.
            return unsafe {
                n.device_reduce_scatter_sum(
                    pi + 4 * input.start as u64,
                    po + 4 * out.start as u64,
                    out.len,
                )
            }
            .map_err(comm_err);
        }
        let h = self.download_acc(input)?;
        let mut o = vec![0.0f32; out.len];
        comm.reduce_scatter((&h[..]).into(), (&mut o[..]).into(), ReduceOp::Sum)
            .map_err(comm_err)?;
        upload_into(self, &o, out.buf, out.start)
    }

    fn all_gather_act(
        &self,
        comm: &dyn Comm,
        input: ActSrc<'_, Self>,
        out: ActDst<'_, Self>,
    ) -> Result<()> {
        check_gather(comm, input.len, out.len)?;
        if let Some(n) = nccl_of(self, comm)? {
            let es = std::mem::size_of::<A>() as u64;
            let (pi, _s1) = input.buf.device_ptr(n.stream());
            let (po, _s2) = out.buf.device_ptr_mut(n.stream());
            // SAFETY: both regions are inside their buffers on this GPU.
            return unsafe {
                n.device_all_gather(
                    pi + es * input.start as u64,
                    po + es * out.start as u64,
                    input.len,
                    act_dtype::<A>(),
                )
            }
            .map_err(comm_err);
        }
        let h = self.download_act(input)?;
        let mut o = vec![0.0f32; out.len];
        comm.all_gather((&h[..]).into(), (&mut o[..]).into())
            .map_err(comm_err)?;
        upload_act_into(self, &o, out)
    }

    fn all_gather_act_in_place(&self, comm: &dyn Comm, buf: &mut CudaSlice<A>) -> Result<()> {
        let (size, rank, len) = (comm.size(), comm.rank(), buf.len());
        if !len.is_multiple_of(size) {
            return Err(Error::Unsupported(format!(
                "all_gather on group {}: buffer of {len} elements is not a multiple of the group size {size}",
                comm.name()
            )));
        }
        let k = len / size;
        if let Some(n) = nccl_of(self, comm)? {
            let es = std::mem::size_of::<A>() as u64;
            let (p, _s) = buf.device_ptr_mut(n.stream());
            // SAFETY: in-place NCCL all-gather: the input is block `rank` of the output.
            return unsafe {
                n.device_all_gather(p + es * (rank * k) as u64, p, k, act_dtype::<A>())
            }
            .map_err(comm_err);
        }
        let mut h = self.download_act(Src::all(buf))?;
        comm.all_gather_in_place((&mut h[..]).into())
            .map_err(comm_err)?;
        upload_act_into(self, &h, Dst::all(buf))
    }

    fn all_reduce_sum_act(&self, comm: &dyn Comm, x: ActDst<'_, Self>) -> Result<()> {
        if let Some(n) = nccl_of(self, comm)? {
            let es = std::mem::size_of::<A>() as u64;
            let (p, _sync) = x.buf.device_ptr_mut(n.stream());
            // SAFETY: [start, start + len) lies inside the buffer (Dst checks it) on this GPU.
            return unsafe {
                n.device_all_reduce(
                    p + es * x.start as u64,
                    x.len,
                    act_dtype::<A>(),
                    ReduceOp::Sum,
                )
            }
            .map_err(comm_err);
        }
        let mut h = self.download_act(x.as_src())?;
        comm.all_reduce((&mut h[..]).into(), ReduceOp::Sum)
            .map_err(comm_err)?;
        upload_act_into(self, &h, x)
    }

    fn reduce_scatter_sum_act(
        &self,
        comm: &dyn Comm,
        input: ActSrc<'_, Self>,
        out: ActDst<'_, Self>,
    ) -> Result<()> {
        check_scatter(comm, input.len, out.len)?;
        if let Some(n) = nccl_of(self, comm)? {
            let es = std::mem::size_of::<A>() as u64;
            let (pi, _s1) = input.buf.device_ptr(n.stream());
            let (po, _s2) = out.buf.device_ptr_mut(n.stream());
            // SAFETY: both regions are inside their buffers; distinct buffers do not overlap.
            return unsafe {
                n.device_reduce_scatter(
                    pi + es * input.start as u64,
                    po + es * out.start as u64,
                    out.len,
                    act_dtype::<A>(),
                )
            }
            .map_err(comm_err);
        }
        let h = self.download_act(input)?;
        let mut o = vec![0.0f32; out.len];
        comm.reduce_scatter((&h[..]).into(), (&mut o[..]).into(), ReduceOp::Sum)
            .map_err(comm_err)?;
        upload_act_into(self, &o, out)
    }

    fn all_gather_acc(
        &self,
        comm: &dyn Comm,
        input: AccSrc<'_, Self>,
        out: AccDst<'_, Self>,
    ) -> Result<()> {
        check_gather(comm, input.len, out.len)?;
        if let Some(n) = nccl_of(self, comm)? {
            let (pi, _s1) = input.buf.device_ptr(n.stream());
            let (po, _s2) = out.buf.device_ptr_mut(n.stream());
            // SAFETY: both regions are inside their buffers on this GPU.
            return unsafe {
                n.device_all_gather(
                    pi + 4 * input.start as u64,
                    po + 4 * out.start as u64,
                    input.len,
                    DeviceDtype::F32,
                )
            }
            .map_err(comm_err);
        }
        let h = self.download_acc(input)?;
        let mut o = vec![0.0f32; out.len];
        comm.all_gather((&h[..]).into(), (&mut o[..]).into())
            .map_err(comm_err)?;
        upload_into(self, &o, out.buf, out.start)
    }

    fn nccl_group(&self, host: Arc<dyn Comm>) -> Result<Arc<dyn Comm>> {
        // NCCL gets its own stream: buffers allocated from here on carry cudarc's read/write
        // events, so a collective waits for the kernels that produced its input, and a kernel
        // waits for the collective that produced what it reads (stage 3's prefetched gather
        // of the next unit runs while the current unit computes).
        let stream = self
            .stream()
            .fork()
            .map_err(|e| Error::Cuda(format!("creating the NCCL stream: {e}")))?;
        let n = NcclComm::new(host, stream).map_err(comm_err)?;
        Ok(Arc::new(n))
    }

    fn p2p_group_act(
        &self,
        comm: &dyn Comm,
        sends: Vec<(CudaSlice<A>, usize)>,
        recvs: &[(usize, usize)],
    ) -> Result<Vec<CudaSlice<A>>> {
        let Some(n) = nccl_of(self, comm)? else {
            return super::p2p::host_staged(self, comm, sends, recvs);
        };
        let dtype = act_dtype::<A>();
        let mut received = recvs
            .iter()
            .map(|&(len, _)| self.empty_act(len))
            .collect::<Result<Vec<_>>>()?;
        // The receive buffers were allocated in the compute stream's order: the NCCL stream
        // starts after what the compute stream has queued (the kernels that wrote the sends
        // are among it, so this costs no overlap).
        n.stream()
            .join(self.stream())
            .map_err(|e| Error::Cuda(format!("ordering the NCCL stream after compute: {e}")))?;
        let mut ops = Vec::with_capacity(sends.len() + recvs.len());
        // The guards record cudarc's events on the NCCL stream when they drop, after the group
        // is queued: sends read their buffers, receives write theirs (p2p.rs).
        let mut guards = Vec::with_capacity(ops.capacity());
        for (buf, peer) in &sends {
            let (ptr, guard) = buf.device_ptr(n.stream());
            ops.push(DeviceP2p::Send {
                buf: ptr,
                count: buf.len(),
                dtype,
                peer: *peer,
            });
            guards.push(guard);
        }
        for (buf, &(len, peer)) in received.iter_mut().zip(recvs) {
            let (ptr, guard) = buf.device_ptr_mut(n.stream());
            ops.push(DeviceP2p::Recv {
                buf: ptr,
                count: len,
                dtype,
                peer,
            });
            guards.push(guard);
        }
        // SAFETY: every address is a live buffer of `count` elements on this GPU, held until
        // the group is queued (`sends` and `received` outlive the call; a send buffer dropped
        // after it is freed behind the read event recorded here); receive buffers are fresh
        // and distinct.
        unsafe { n.device_send_recv(&ops) }.map_err(comm_err)?;
        drop(guards);
        Ok(received)
    }
}
