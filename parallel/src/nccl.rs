//! `NcclComm`: a process group whose GPU buffers move through NCCL.
//!
//! Contract:
//! - Built collectively over a host group (MPI, TCP or local) of the same ranks: rank 0 makes the
//!   NCCL unique id, the host group broadcasts it (128 bytes as 32 i32), every rank joins with
//!   `ncclCommInitRank` on its own GPU. NCCL refuses two ranks on one GPU; the trainer rejects that
//!   layout before building one (use the host-staged path there).
//! - Host buffers (`Comm` trait: loss sums, norms, checkpoint gathers) go through the host group;
//!   device buffers go through the `device_*` methods, which queue NCCL work on the stream the
//!   communicator was built with. Ordering against other streams is the caller's: the CUDA
//!   engines take the addresses through cudarc's per-buffer events on this stream
//!   (zero/src/collectives_cuda.rs).
//! - Device collectives always call NCCL, also on a group of one (a copy), so a world of one runs
//!   the same NCCL path as a real job. Their bytes are counted with the ring formulas of
//!   `counters.rs`, like the host collectives.
//! - `is_available()` says whether libnccl can be loaded; building a communicator without it is an
//!   error, never a panic.

use std::sync::Arc;

use cudarc::driver::CudaStream;
use cudarc::nccl::{result as nccl, sys};

use crate::comm::buffer::{Buf, BufMut, ReduceOp};
use crate::comm::counters::{
    all_reduce_ring_bytes, scatter_gather_ring_bytes, CommCounters, OpKind,
};
use crate::comm::error::CommError;
use crate::comm::p2p::{OwnedBuf, PendingRecv, PendingSend};
use crate::comm::Comm;
use crate::Dtype;

/// Element types NCCL moves for the engines: fp32 (gradients, master weights) and bf16 (compute
/// weights).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceDtype {
    F32,
    Bf16,
}

impl DeviceDtype {
    fn nccl(self) -> sys::ncclDataType_t {
        match self {
            DeviceDtype::F32 => sys::ncclDataType_t::ncclFloat32,
            DeviceDtype::Bf16 => sys::ncclDataType_t::ncclBfloat16,
        }
    }
    pub fn size_bytes(self) -> usize {
        match self {
            DeviceDtype::F32 => 4,
            DeviceDtype::Bf16 => 2,
        }
    }
}

/// Whether libnccl can be loaded (cudarc looks for libnccl.so on the library path).
pub fn is_available() -> bool {
    // SAFETY: only probes whether the shared library loads.
    unsafe { sys::is_culib_present() }
}

pub struct NcclComm {
    host: Arc<dyn Comm>,
    name: String,
    comm: sys::ncclComm_t,
    stream: Arc<CudaStream>,
    counters: CommCounters,
}

// SAFETY: an NCCL communicator may be used from any thread as long as calls on it are not
// concurrent; ferrotron drives each communicator from the one training thread, and `Comm`
// collectives are documented as called in the same order by every rank, one at a time.
unsafe impl Send for NcclComm {}
unsafe impl Sync for NcclComm {}

fn setup_err(what: &str, e: impl std::fmt::Debug) -> CommError {
    CommError::Setup(format!("NCCL {what}: {e:?}"))
}

impl NcclComm {
    /// Collective over `host`: every rank calls it with the stream of its own GPU.
    pub fn new(host: Arc<dyn Comm>, stream: Arc<CudaStream>) -> Result<Self, CommError> {
        if !is_available() {
            return Err(CommError::Setup(
                "NCCL requested but libnccl.so was not found on the library path (install NCCL, or set parallel.gpu_comm = \"host-staged\")".into(),
            ));
        }
        let mut id = [0i32; 32];
        if host.rank() == 0 {
            let uid = nccl::get_uniqueid().map_err(|e| setup_err("unique id", e))?;
            for (dst, chunk) in id.iter_mut().zip(uid.internal.chunks(4)) {
                let b: Vec<u8> = chunk.iter().map(|&c| c as u8).collect();
                *dst = i32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        host.broadcast(BufMut::I32(&mut id), 0)?;
        let mut internal = [0 as std::ffi::c_char; 128];
        for (i, word) in id.iter().enumerate() {
            for (j, byte) in word.to_ne_bytes().iter().enumerate() {
                internal[4 * i + j] = *byte as std::ffi::c_char;
            }
        }
        stream
            .context()
            .bind_to_thread()
            .map_err(|e| setup_err("binding the GPU", e))?;
        let mut comm = std::mem::MaybeUninit::uninit();
        // SAFETY: `comm` is written by ncclCommInitRank before it is read; rank < size.
        let comm = unsafe {
            nccl::comm_init_rank(
                comm.as_mut_ptr(),
                host.size() as i32,
                sys::ncclUniqueId { internal },
                host.rank() as i32,
            )
            .map_err(|e| setup_err("ncclCommInitRank", e))?;
            comm.assume_init()
        };
        Ok(NcclComm {
            name: format!("{}[nccl]", host.name()),
            host,
            comm,
            stream,
            counters: CommCounters::new(),
        })
    }

    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    fn dev_err(&self, op: &'static str, e: impl std::fmt::Debug) -> CommError {
        CommError::Transport {
            op,
            group: self.name.clone(),
            rank: self.rank(),
            reason: format!("NCCL: {e:?}"),
        }
    }

    /// In-place sum over the group of `count` f32 at device address `buf`.
    ///
    /// # Safety
    /// `buf` must address `count` live f32 on this communicator's GPU, not used concurrently.
    pub unsafe fn device_all_reduce_sum(&self, buf: u64, count: usize) -> Result<(), CommError> {
        self.device_all_reduce(buf, count, DeviceDtype::F32, crate::ReduceOp::Sum)
    }

    /// In-place reduction (sum or max) over the group of `count` elements of `dtype` at `buf`.
    ///
    /// # Safety
    /// `buf` must address `count` live elements of `dtype` on this communicator's GPU.
    pub unsafe fn device_all_reduce(
        &self,
        buf: u64,
        count: usize,
        dtype: DeviceDtype,
        op: crate::ReduceOp,
    ) -> Result<(), CommError> {
        let nop = match op {
            crate::ReduceOp::Sum => sys::ncclRedOp_t::ncclSum,
            crate::ReduceOp::Max => sys::ncclRedOp_t::ncclMax,
            crate::ReduceOp::Min => sys::ncclRedOp_t::ncclMin,
            crate::ReduceOp::Avg => sys::ncclRedOp_t::ncclAvg,
        };
        nccl::all_reduce(
            buf as *const _,
            buf as *mut _,
            count,
            dtype.nccl(),
            nop,
            self.comm,
            self.stream.cu_stream() as _,
        )
        .map_err(|e| self.dev_err("all_reduce", e))?;
        let moved = all_reduce_ring_bytes((count * dtype.size_bytes()) as u64, self.size() as u64);
        self.counters.record(OpKind::AllReduce, moved, moved);
        Ok(())
    }

    /// Sum over the group of `size * count` f32 at `input`; this rank's block (`count`) to `output`.
    ///
    /// # Safety
    /// Both addresses must be live device f32 regions of those lengths; they must not overlap.
    pub unsafe fn device_reduce_scatter_sum(
        &self,
        input: u64,
        output: u64,
        count: usize,
    ) -> Result<(), CommError> {
        self.device_reduce_scatter(input, output, count, DeviceDtype::F32)
    }

    /// `device_reduce_scatter_sum` for elements of `dtype`.
    ///
    /// # Safety
    /// Both addresses must be live device regions of `dtype` with those lengths, not overlapping.
    pub unsafe fn device_reduce_scatter(
        &self,
        input: u64,
        output: u64,
        count: usize,
        dtype: DeviceDtype,
    ) -> Result<(), CommError> {
        nccl::reduce_scatter(
            input as *const _,
            output as *mut _,
            count,
            dtype.nccl(),
            sys::ncclRedOp_t::ncclSum,
            self.comm,
            self.stream.cu_stream() as _,
        )
        .map_err(|e| self.dev_err("reduce_scatter", e))?;
        let total = (count * self.size() * dtype.size_bytes()) as u64;
        let moved = scatter_gather_ring_bytes(total, self.size() as u64);
        self.counters.record(OpKind::ReduceScatter, moved, moved);
        Ok(())
    }

    /// Concatenates every rank's `count` elements at `input` into `output` (`size * count`), in
    /// rank order. `input` may be block `rank()` of `output` (in place).
    ///
    /// # Safety
    /// Both addresses must be live device regions of `dtype` with those lengths.
    pub unsafe fn device_all_gather(
        &self,
        input: u64,
        output: u64,
        count: usize,
        dtype: DeviceDtype,
    ) -> Result<(), CommError> {
        nccl::all_gather(
            input as *const _,
            output as *mut _,
            count,
            dtype.nccl(),
            self.comm,
            self.stream.cu_stream() as _,
        )
        .map_err(|e| self.dev_err("all_gather", e))?;
        let total = (count * self.size() * dtype.size_bytes()) as u64;
        let moved = scatter_gather_ring_bytes(total, self.size() as u64);
        self.counters.record(OpKind::AllGather, moved, moved);
        Ok(())
    }
}

impl Drop for NcclComm {
    fn drop(&mut self) {
        // SAFETY: the communicator was initialised in `new` and is destroyed once. Errors at
        // teardown cannot be acted on.
        unsafe {
            let _ = nccl::comm_destroy(self.comm);
        }
    }
}

/// Host buffers go through the host group; the bytes are counted here as well as there.
impl Comm for NcclComm {
    fn rank(&self) -> usize {
        self.host.rank()
    }
    fn size(&self) -> usize {
        self.host.size()
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn counters(&self) -> &CommCounters {
        &self.counters
    }
    fn nccl(&self) -> Option<&NcclComm> {
        Some(self)
    }
    fn abort(&self, code: i32) -> ! {
        self.host.abort(code)
    }
    fn backend_all_reduce(&self, buf: BufMut<'_>, op: ReduceOp) -> Result<(), CommError> {
        self.host.backend_all_reduce(buf, op)
    }
    fn backend_reduce_scatter(
        &self,
        input: Buf<'_>,
        output: BufMut<'_>,
        op: ReduceOp,
    ) -> Result<(), CommError> {
        self.host.backend_reduce_scatter(input, output, op)
    }
    fn backend_all_gather(&self, input: Buf<'_>, output: BufMut<'_>) -> Result<(), CommError> {
        self.host.backend_all_gather(input, output)
    }
    fn backend_broadcast(&self, buf: BufMut<'_>, root: usize) -> Result<(), CommError> {
        self.host.backend_broadcast(buf, root)
    }
    fn backend_send(&self, buf: Buf<'_>, dest: usize, tag: u32) -> Result<(), CommError> {
        self.host.backend_send(buf, dest, tag)
    }
    fn backend_recv(&self, buf: BufMut<'_>, src: usize, tag: u32) -> Result<(), CommError> {
        self.host.backend_recv(buf, src, tag)
    }
    fn backend_barrier(&self) -> Result<(), CommError> {
        self.host.backend_barrier()
    }
    fn backend_split(&self, color: u32, key: u32, name: &str) -> Result<Arc<dyn Comm>, CommError> {
        let host = self.host.split(color, key, name)?;
        Ok(Arc::new(NcclComm::new(host, self.stream.clone())?))
    }
    fn backend_isend(
        &self,
        data: OwnedBuf,
        dest: usize,
        tag: u32,
    ) -> Result<Box<dyn PendingSend + '_>, CommError> {
        self.host.backend_isend(data, dest, tag)
    }
    fn backend_irecv(
        &self,
        dtype: Dtype,
        len: usize,
        src: usize,
        tag: u32,
    ) -> Result<Box<dyn PendingRecv + '_>, CommError> {
        self.host.backend_irecv(dtype, len, src, tag)
    }
}

mod p2p;
pub use p2p::DeviceP2p;
