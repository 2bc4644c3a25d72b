//! The element types of the CPU reference: f32 (training) and f64 (finite-difference checks).

use num_traits::{Float, FromPrimitive, ToPrimitive};

pub trait CpuFloat:
    Float
    + FromPrimitive
    + ToPrimitive
    + Default
    + Send
    + Sync
    + std::fmt::Debug
    + std::iter::Sum
    + 'static
{
    const NAME: &'static str;
    fn from_f64c(x: f64) -> Self {
        <Self as FromPrimitive>::from_f64(x).unwrap()
    }
    fn to_f64c(self) -> f64 {
        ToPrimitive::to_f64(&self).unwrap()
    }
    /// C[m, n] = alpha · A[m, k] · B[k, n] + beta · C, all addressed by (row, col) strides.
    #[allow(clippy::too_many_arguments)]
    fn gemm(
        m: usize,
        k: usize,
        n: usize,
        alpha: Self,
        a: &[Self],
        rsa: isize,
        csa: isize,
        b: &[Self],
        rsb: isize,
        csb: isize,
        beta: Self,
        c: &mut [Self],
        rsc: isize,
        csc: isize,
    );
}

impl CpuFloat for f32 {
    const NAME: &'static str = "f32";
    fn gemm(
        m: usize,
        k: usize,
        n: usize,
        alpha: f32,
        a: &[f32],
        rsa: isize,
        csa: isize,
        b: &[f32],
        rsb: isize,
        csb: isize,
        beta: f32,
        c: &mut [f32],
        rsc: isize,
        csc: isize,
    ) {
        // SAFETY: callers pass slices that cover every addressed element (checked in gemm.rs).
        unsafe {
            matrixmultiply::sgemm(
                m,
                k,
                n,
                alpha,
                a.as_ptr(),
                rsa,
                csa,
                b.as_ptr(),
                rsb,
                csb,
                beta,
                c.as_mut_ptr(),
                rsc,
                csc,
            )
        }
    }
}

impl CpuFloat for f64 {
    const NAME: &'static str = "f64";
    fn gemm(
        m: usize,
        k: usize,
        n: usize,
        alpha: f64,
        a: &[f64],
        rsa: isize,
        csa: isize,
        b: &[f64],
        rsb: isize,
        csb: isize,
        beta: f64,
        c: &mut [f64],
        rsc: isize,
        csc: isize,
    ) {
        // SAFETY: as above.
        unsafe {
            matrixmultiply::dgemm(
                m,
                k,
                n,
                alpha,
                a.as_ptr(),
                rsa,
                csa,
                b.as_ptr(),
                rsb,
                csb,
                beta,
                c.as_mut_ptr(),
                rsc,
                csc,
            )
        }
    }
}
