//! Device buffers of the CUDA backend: `CudaSlice<T>` is a [`Buffer`]; regions (`Src`/`Dst`)
//! become raw device addresses (`u64`, what the kernels take) with `src_ptr` / `dst_ptr`.
//! All work of a backend runs on its one stream, so no cross-stream events are needed.

use crate::backend::{Buffer, Dst, Src, WeightGrads};
use crate::{Error, Result};
use cudarc::driver::{CudaSlice, CudaStream, DevicePtr};

impl<T> Buffer for CudaSlice<T> {
    fn len(&self) -> usize {
        CudaSlice::len(self)
    }
}

fn base<T>(buf: &CudaSlice<T>, stream: &CudaStream) -> u64 {
    let (p, _record) = buf.device_ptr(stream);
    p
}

/// Device address of the first element of a read region.
pub fn src_ptr<T>(s: &Src<'_, CudaSlice<T>>, stream: &CudaStream) -> u64 {
    base(s.buf, stream) + (s.start * std::mem::size_of::<T>()) as u64
}

/// Device address of the first element of a write region.
pub fn dst_ptr<T>(d: &Dst<'_, CudaSlice<T>>, stream: &CudaStream) -> u64 {
    base(d.buf, stream) + (d.start * std::mem::size_of::<T>()) as u64
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

/// A device region as a raw address and length (elements of fp32).
#[derive(Clone, Copy, Debug)]
pub struct RawRegion {
    pub ptr: u64,
    pub len: usize,
}

/// The weight and optional bias gradient regions of a [`WeightGrads`] borrow.
pub fn weight_grads(
    g: &WeightGrads<'_, CudaSlice<f32>>,
    stream: &CudaStream,
) -> (RawRegion, Option<RawRegion>) {
    let b0 = base(g.buf, stream);
    let at = |(start, len): (usize, usize)| RawRegion {
        ptr: b0 + (start * 4) as u64,
        len,
    };
    (at(g.w), g.b.map(at))
}
