//! Host buffers that cross the `Comm` trait, and the reductions applied to them.
//!
//! Contract: a collective takes `Buf` (read-only) and/or `BufMut` (written) views of host
//! memory, tagged with their element type. The enums are `#[non_exhaustive]` so that the NCCL
//! backend and the host-staged MPI backend can add device-buffer variants later without breaking
//! callers; a backend that cannot move a variant returns `CommError::Unsupported`.
//! Element types: f32, f64, i32. Reductions: sum, average (sum / group size, floats only),
//! max, min.

/// Element type of a communicated buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    F32,
    F64,
    I32,
}

impl Dtype {
    pub fn size_bytes(self) -> usize {
        match self {
            Dtype::F32 | Dtype::I32 => 4,
            Dtype::F64 => 8,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::F64 => "f64",
            Dtype::I32 => "i32",
        }
    }
}

/// How `all_reduce` and `reduce_scatter` combine the contributions of the ranks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceOp {
    Sum,
    /// Sum divided by the group size (f32 and f64 only).
    Avg,
    Max,
    Min,
}

impl ReduceOp {
    pub fn name(self) -> &'static str {
        match self {
            ReduceOp::Sum => "sum",
            ReduceOp::Avg => "avg",
            ReduceOp::Max => "max",
            ReduceOp::Min => "min",
        }
    }
}

/// A read-only host buffer.
#[non_exhaustive]
#[derive(Clone, Copy, Debug)]
pub enum Buf<'a> {
    F32(&'a [f32]),
    F64(&'a [f64]),
    I32(&'a [i32]),
}

/// A writable host buffer.
#[non_exhaustive]
#[derive(Debug)]
pub enum BufMut<'a> {
    F32(&'a mut [f32]),
    F64(&'a mut [f64]),
    I32(&'a mut [i32]),
}

impl<'a> Buf<'a> {
    pub fn dtype(&self) -> Dtype {
        match self {
            Buf::F32(_) => Dtype::F32,
            Buf::F64(_) => Dtype::F64,
            Buf::I32(_) => Dtype::I32,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Buf::F32(s) => s.len(),
            Buf::F64(s) => s.len(),
            Buf::I32(s) => s.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn byte_len(&self) -> usize {
        self.len() * self.dtype().size_bytes()
    }

    /// The raw bytes, in native byte order.
    pub fn as_bytes(&self) -> &'a [u8] {
        match *self {
            Buf::F32(s) => bytemuck::cast_slice(s),
            Buf::F64(s) => bytemuck::cast_slice(s),
            Buf::I32(s) => bytemuck::cast_slice(s),
        }
    }
}

impl BufMut<'_> {
    pub fn dtype(&self) -> Dtype {
        self.as_buf().dtype()
    }

    pub fn len(&self) -> usize {
        self.as_buf().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn byte_len(&self) -> usize {
        self.as_buf().byte_len()
    }

    /// A read-only view of the same memory.
    pub fn as_buf(&self) -> Buf<'_> {
        match self {
            BufMut::F32(s) => Buf::F32(s),
            BufMut::F64(s) => Buf::F64(s),
            BufMut::I32(s) => Buf::I32(s),
        }
    }

    /// A shorter-lived writable view of the same memory.
    pub fn reborrow(&mut self) -> BufMut<'_> {
        match self {
            BufMut::F32(s) => BufMut::F32(s),
            BufMut::F64(s) => BufMut::F64(s),
            BufMut::I32(s) => BufMut::I32(s),
        }
    }

    /// Elements `start..end` as a writable view.
    pub fn slice_mut(&mut self, start: usize, end: usize) -> BufMut<'_> {
        match self {
            BufMut::F32(s) => BufMut::F32(&mut s[start..end]),
            BufMut::F64(s) => BufMut::F64(&mut s[start..end]),
            BufMut::I32(s) => BufMut::I32(&mut s[start..end]),
        }
    }

    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        match self {
            BufMut::F32(s) => bytemuck::cast_slice_mut(s),
            BufMut::F64(s) => bytemuck::cast_slice_mut(s),
            BufMut::I32(s) => bytemuck::cast_slice_mut(s),
        }
    }

    /// Copies `src` (same type and length) into this buffer.
    pub fn copy_from(&mut self, src: Buf<'_>) {
        self.as_bytes_mut().copy_from_slice(src.as_bytes());
    }

    /// Divides every element by `n` (the last step of an average).
    pub(crate) fn divide_by(&mut self, n: usize) {
        match self {
            BufMut::F32(s) => s.iter_mut().for_each(|x| *x /= n as f32),
            BufMut::F64(s) => s.iter_mut().for_each(|x| *x /= n as f64),
            BufMut::I32(_) => {}
        }
    }

    /// Combines `other` (raw bytes of the same type and length) into this buffer elementwise.
    /// `Avg` accumulates a sum; the caller divides at the end.
    pub(crate) fn combine_bytes(&mut self, other: &[u8], op: ReduceOp) {
        fn apply<T: bytemuck::Pod + PartialOrd + std::ops::AddAssign>(
            acc: &mut [T],
            other: &[u8],
            op: ReduceOp,
        ) {
            let other = other
                .chunks_exact(std::mem::size_of::<T>())
                .map(bytemuck::pod_read_unaligned::<T>);
            for (a, b) in acc.iter_mut().zip(other) {
                match op {
                    ReduceOp::Sum | ReduceOp::Avg => *a += b,
                    ReduceOp::Max => {
                        if b > *a {
                            *a = b
                        }
                    }
                    ReduceOp::Min => {
                        if b < *a {
                            *a = b
                        }
                    }
                }
            }
        }
        match self {
            BufMut::F32(s) => apply(s, other, op),
            BufMut::F64(s) => apply(s, other, op),
            BufMut::I32(s) => apply(s, other, op),
        }
    }
}

/// Rejects reductions that are not defined for a type (the average of integers).
pub(crate) fn check_reduce_op(dtype: Dtype, op: ReduceOp) -> Result<(), String> {
    if op == ReduceOp::Avg && dtype == Dtype::I32 {
        return Err("the average of i32 buffers is not defined; reduce with Sum and divide".into());
    }
    Ok(())
}

impl<'a> From<&'a [f32]> for Buf<'a> {
    fn from(s: &'a [f32]) -> Self {
        Buf::F32(s)
    }
}
impl<'a> From<&'a [f64]> for Buf<'a> {
    fn from(s: &'a [f64]) -> Self {
        Buf::F64(s)
    }
}
impl<'a> From<&'a [i32]> for Buf<'a> {
    fn from(s: &'a [i32]) -> Self {
        Buf::I32(s)
    }
}
impl<'a> From<&'a mut [f32]> for BufMut<'a> {
    fn from(s: &'a mut [f32]) -> Self {
        BufMut::F32(s)
    }
}
impl<'a> From<&'a mut [f64]> for BufMut<'a> {
    fn from(s: &'a mut [f64]) -> Self {
        BufMut::F64(s)
    }
}
impl<'a> From<&'a mut [i32]> for BufMut<'a> {
    fn from(s: &'a mut [i32]) -> Self {
        BufMut::I32(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combine_sums_max_and_min_elementwise() {
        let mut a = vec![1.0f32, 5.0, -2.0];
        let b = [2.0f32, 3.0, -1.0];
        BufMut::F32(&mut a).combine_bytes(bytemuck::cast_slice(&b), ReduceOp::Sum);
        assert_eq!(a, vec![3.0, 8.0, -3.0]);
        BufMut::F32(&mut a).combine_bytes(bytemuck::cast_slice(&b), ReduceOp::Max);
        assert_eq!(a, vec![3.0, 8.0, -1.0]);
        let mut c = vec![4i32, -7];
        BufMut::I32(&mut c).combine_bytes(bytemuck::cast_slice(&[1i32, -9]), ReduceOp::Min);
        assert_eq!(c, vec![1, -9]);
    }

    #[test]
    fn byte_lengths_follow_the_element_type() {
        assert_eq!(Buf::F64(&[1.0, 2.0]).byte_len(), 16);
        assert_eq!(Buf::I32(&[1, 2, 3]).byte_len(), 12);
        assert!(check_reduce_op(Dtype::I32, ReduceOp::Avg).is_err());
        assert!(check_reduce_op(Dtype::F32, ReduceOp::Avg).is_ok());
    }
}
