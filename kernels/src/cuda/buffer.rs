//! Device buffers of the CUDA backend: `CudaSlice<T>` is a [`Buffer`]; regions (`Src`/`Dst`)
//! become raw device addresses (`u64`, what the kernels take) through a [`Bound`], which keeps
//! cudarc's stream-synchronisation guards alive until the launch is queued. So when another
//! stream exists (cudarc then tracks events per buffer), a kernel waits for earlier writes of
//! what it reads and writes, and its own reads/writes are recorded after it is queued.

use crate::backend::{Buffer, Dst, Src, WeightGrads};
use crate::{Error, Result};
use cudarc::driver::{CudaSlice, CudaStream, DevicePtr, DevicePtrMut, SyncOnDrop};

impl<T> Buffer for CudaSlice<T> {
    fn len(&self) -> usize {
        CudaSlice::len(self)
    }
}

/// The regions of one launch (or one cuBLASLt call). Drop it after the launch.
pub struct Bound<'a> {
    stream: &'a CudaStream,
    guards: Vec<SyncOnDrop<'a>>,
}

impl<'a> Bound<'a> {
    pub fn new(stream: &'a CudaStream) -> Self {
        Bound {
            stream,
            guards: Vec::with_capacity(8),
        }
    }

    /// Address of the first element of a region that the launch reads.
    pub fn r<T>(&mut self, s: &Src<'a, CudaSlice<T>>) -> u64 {
        let (p, g) = s.buf.device_ptr(self.stream);
        self.guards.push(g);
        p + (s.start * std::mem::size_of::<T>()) as u64
    }

    /// Address of the first element of a region that the launch writes (and may read).
    pub fn w<T>(&mut self, d: &'a mut Dst<'_, CudaSlice<T>>) -> u64 {
        let off = (d.start * std::mem::size_of::<T>()) as u64;
        let (p, g) = d.buf.device_ptr_mut(self.stream);
        self.guards.push(g);
        p + off
    }

    /// Addresses of the weight and optional bias gradient regions of a [`WeightGrads`].
    pub fn grads(
        &mut self,
        g: &'a mut WeightGrads<'_, CudaSlice<f32>>,
    ) -> (RawRegion, Option<RawRegion>) {
        let (w, b) = (g.w, g.b);
        let (p, guard) = g.buf.device_ptr_mut(self.stream);
        self.guards.push(guard);
        let at = |(start, len): (usize, usize)| RawRegion {
            ptr: p + (start * 4) as u64,
            len,
        };
        (at(w), b.map(at))
    }
}

/// A device region as a raw address and length (elements of fp32).
#[derive(Clone, Copy, Debug)]
pub struct RawRegion {
    pub ptr: u64,
    pub len: usize,
}

/// `Err` unless a region holds at least `want` elements (so no kernel reads or writes past it).
pub fn check_len(what: &str, have: usize, want: usize) -> Result<()> {
    if have >= want {
        Ok(())
    } else {
        Err(Error::Unsupported(format!(
            "{what}: region of {have} elements, expected at least {want}"
        )))
    }
}
