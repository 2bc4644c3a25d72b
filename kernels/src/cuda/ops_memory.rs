//! Memory ops: allocation (zeroed, or left as is for buffers an op overwrites), upload/download (host side is f32 or i32; Act converts to/from A on
//! the host), zero fills, fp32 copies, the fp32 -> A cast (compute copy of master weights) and
//! column-block copies (split/merge of fused QKV).

use super::backend::{cuda_err, grid_for, CudaBackend, KArg::*};
use super::buffer::{check_len, Bound};
use super::dtype::CudaAct;
use crate::backend::{Dst, Src};
use crate::Result;
use cudarc::driver::{result as drv, CudaSlice, DeviceRepr, ValidAsZeroBits};

impl<A: CudaAct> CudaBackend<A> {
    pub(crate) fn zeros<T: DeviceRepr + ValidAsZeroBits>(&self, n: usize) -> Result<CudaSlice<T>> {
        self.stream
            .alloc_zeros::<T>(n)
            .map_err(|e| cuda_err("cudaMalloc", e))
    }

    /// n elements left as they are (`Backend::empty_*`: the caller overwrites every one
    /// before reading it), stream-ordered from the pool without a memset.
    pub(crate) fn empty<T: DeviceRepr>(&self, n: usize) -> Result<CudaSlice<T>> {
        // SAFETY: the contract of `Backend::empty_act` / `empty_acc`: nothing reads an element
        // before an op has written it.
        unsafe { self.stream.alloc::<T>(n) }.map_err(|e| cuda_err("cudaMalloc", e))
    }

    pub(crate) fn upload<T: DeviceRepr + ValidAsZeroBits>(
        &self,
        host: &[T],
    ) -> Result<CudaSlice<T>> {
        if host.is_empty() {
            return self.zeros(0);
        }
        self.stream
            .clone_htod(host)
            .map_err(|e| cuda_err("host-to-device copy", e))
    }

    pub(crate) fn download<T: DeviceRepr + Default + Clone>(
        &self,
        src: Src<'_, CudaSlice<T>>,
    ) -> Result<Vec<T>> {
        let mut out = vec![T::default(); src.len];
        if src.len == 0 {
            return Ok(out);
        }
        let view = src.buf.slice(src.start..src.start + src.len);
        self.stream
            .memcpy_dtoh(&view, &mut out)
            .map_err(|e| cuda_err("device-to-host copy", e))?;
        self.stream
            .synchronize()
            .map_err(|e| cuda_err("synchronize", e))?;
        Ok(out)
    }

    pub(crate) fn fill_zero<T>(&self, mut dst: Dst<'_, CudaSlice<T>>) -> Result<()> {
        if dst.len == 0 {
            return Ok(());
        }
        let bytes = dst.len * std::mem::size_of::<T>();
        let mut bind = Bound::new(&self.stream);
        let p = bind.w(&mut dst);
        self.ctx
            .bind_to_thread()
            .map_err(|e| cuda_err("bind context", e))?;
        // SAFETY: [p, p + bytes) is the region `dst` names inside a live allocation.
        unsafe { drv::memset_d8_async(p, 0, bytes, self.stream.cu_stream()) }
            .map_err(|e| cuda_err("memset", e))
    }

    pub(crate) fn copy_f32(
        &self,
        src: Src<'_, CudaSlice<f32>>,
        mut dst: Dst<'_, CudaSlice<f32>>,
    ) -> Result<()> {
        check_len("copy_acc dst", dst.len, src.len)?;
        if src.len == 0 {
            return Ok(());
        }
        let mut bind = Bound::new(&self.stream);
        let (s, d) = (bind.r(&src), bind.w(&mut dst));
        self.ctx
            .bind_to_thread()
            .map_err(|e| cuda_err("bind context", e))?;
        // SAFETY: both regions are live and hold src.len f32s.
        unsafe { drv::memcpy_dtod_async(d, s, src.len * 4, self.stream.cu_stream()) }
            .map_err(|e| cuda_err("copy", e))
    }

    pub(crate) fn cast_acc_to_act(
        &self,
        src: Src<'_, CudaSlice<f32>>,
        mut dst: Dst<'_, CudaSlice<A>>,
    ) -> Result<()> {
        check_len("acc_to_act dst", dst.len, src.len)?;
        if src.len == 0 {
            return Ok(());
        }
        let mut bind = Bound::new(&self.stream);
        let args = [P(bind.r(&src)), P(bind.w(&mut dst)), I64(src.len as i64)];
        self.launch(
            "elementwise",
            &Self::kname("cast_acc"),
            grid_for(src.len),
            &args,
        )
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn copy_cols(
        &self,
        src: Src<'_, CudaSlice<A>>,
        src_cols: usize,
        src_col0: usize,
        mut dst: Dst<'_, CudaSlice<A>>,
        dst_cols: usize,
        dst_col0: usize,
        rows: usize,
        width: usize,
        accumulate: bool,
    ) -> Result<()> {
        if rows == 0 || width == 0 {
            return Ok(());
        }
        check_len(
            "copy_columns src",
            src.len,
            (rows - 1) * src_cols + src_col0 + width,
        )?;
        check_len(
            "copy_columns dst",
            dst.len,
            (rows - 1) * dst_cols + dst_col0 + width,
        )?;
        let mut bind = Bound::new(&self.stream);
        let args = [
            P(bind.r(&src)),
            I64(src_cols as i64),
            I64(src_col0 as i64),
            P(bind.w(&mut dst)),
            I64(dst_cols as i64),
            I64(dst_col0 as i64),
            I64(rows as i64),
            I64(width as i64),
            I32(accumulate as i32),
        ];
        self.launch(
            "elementwise",
            &Self::kname("copy_columns"),
            grid_for(rows * width),
            &args,
        )
    }
}
