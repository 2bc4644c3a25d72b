//! Linear layers through cuBLASLt (gemm.rs), row-major tensors mapped onto column-major cuBLAS:
//! a row-major [R, C] matrix is column-major [C, R] with ld = C.
//!   forward   y[N,O] = x[N,I]·Wᵀ (+ b)      as  yᵀ[O,N] = op(W)·xᵀ,  bias epilogue (length O)
//!             OutIn W [O,I] = cm [I,O] -> op = T, lda = I;   InOut W [I,O] = cm [O,I] -> N, lda = O
//!   backward  dx[N,I] += dy[N,O]·W           as  dxᵀ[I,N] = op(W)·dyᵀ, beta = 1
//!             OutIn: cm [I,O] -> N, lda = I;   InOut: cm [O,I] -> T, lda = O
//!             dW (fp32, beta = 1, in W's layout):
//!             OutIn dW[O,I] += dyᵀ·x  as  dWcm[I,O] = xᵀ[I,N]·dy[N,O]  (A = x cm N, B = dy cm T)
//!             InOut dW[I,O] += xᵀ·dy  as  dWcm[O,I] = dyᵀ[O,N]·x[N,I]  (A = dy cm N, B = x cm T)
//!             db[O] += Σ_n dy[n]  (column_sum kernel, fp32)

use super::backend::CudaBackend;
use super::buffer::{check_len, Bound, RawRegion};
use super::dtype::CudaAct;
use super::gemm::Gemm;
use crate::backend::{Dst, LinearDims, Src, WeightLayout};
use crate::Result;
use cudarc::cublaslt::sys::cudaDataType_t;
use cudarc::driver::CudaSlice;

type ASrc<'a, A> = Src<'a, CudaSlice<A>>;
type ADst<'a, A> = Dst<'a, CudaSlice<A>>;

impl<A: CudaAct> CudaBackend<A> {
    pub(crate) fn lin_fwd(
        &self,
        x: ASrc<'_, A>,
        w: ASrc<'_, A>,
        b: Option<ASrc<'_, A>>,
        mut y: ADst<'_, A>,
        d: LinearDims,
    ) -> Result<()> {
        let (n, i, o) = (d.n, d.inp, d.out);
        check_len("linear x", x.len, n * i)?;
        check_len("linear w", w.len, i * o)?;
        check_len("linear y", y.len, n * o)?;
        if let Some(b) = &b {
            check_len("linear b", b.len, o)?;
        }
        if n * o == 0 {
            return Ok(());
        }
        if i == 0 {
            return Err(crate::Error::Unsupported(
                "CUDA linear with zero input features".into(),
            ));
        }
        let mut bind = Bound::new(&self.stream);
        let (transa, lda) = match d.layout {
            WeightLayout::OutIn => (true, i),
            WeightLayout::InOut => (false, o),
        };
        let g = Gemm {
            transa,
            transb: false,
            m: o as u64,
            n: n as u64,
            k: i as u64,
            a: bind.r(&w),
            lda: lda as i64,
            b: bind.r(&x),
            ldb: i as i64,
            d: bind.w(&mut y),
            ldd: o as i64,
            ab_type: A::BLAS_TYPE,
            d_type: A::BLAS_TYPE,
            alpha: 1.0,
            beta: 0.0,
            bias: b.as_ref().map(|bs| bind.r(bs)),
        };
        self.gemm("fwd", &g)
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn lin_bwd(
        &self,
        x: ASrc<'_, A>,
        w: ASrc<'_, A>,
        dy: ASrc<'_, A>,
        mut dx: Option<ADst<'_, A>>,
        dw: RawRegion,
        db: Option<RawRegion>,
        d: LinearDims,
    ) -> Result<()> {
        let (n, i, o) = (d.n, d.inp, d.out);
        check_len("linear_backward x", x.len, n * i)?;
        check_len("linear_backward w", w.len, i * o)?;
        check_len("linear_backward dy", dy.len, n * o)?;
        check_len("linear_backward dw", dw.len, i * o)?;
        let mut bind = Bound::new(&self.stream);
        let (px, pw, pdy) = (bind.r(&x), bind.r(&w), bind.r(&dy));
        if let Some(dx) = &mut dx {
            check_len("linear_backward dx", dx.len, n * i)?;
            let (transa, lda) = match d.layout {
                WeightLayout::OutIn => (false, i),
                WeightLayout::InOut => (true, o),
            };
            self.gemm(
                "dx",
                &Gemm {
                    transa,
                    transb: false,
                    m: i as u64,
                    n: n as u64,
                    k: o as u64,
                    a: pw,
                    lda: lda as i64,
                    b: pdy,
                    ldb: o as i64,
                    d: bind.w(dx),
                    ldd: i as i64,
                    ab_type: A::BLAS_TYPE,
                    d_type: A::BLAS_TYPE,
                    alpha: 1.0,
                    beta: 1.0,
                    bias: None,
                },
            )?;
        }
        let (m_, n_, a, lda, b, ldb) = match d.layout {
            WeightLayout::OutIn => (i, o, px, i, pdy, o),
            WeightLayout::InOut => (o, i, pdy, o, px, i),
        };
        self.gemm(
            "dw",
            &Gemm {
                transa: false,
                transb: true,
                m: m_ as u64,
                n: n_ as u64,
                k: n as u64,
                a,
                lda: lda as i64,
                b,
                ldb: ldb as i64,
                d: dw.ptr,
                ldd: m_ as i64,
                ab_type: A::BLAS_TYPE,
                d_type: cudaDataType_t::CUDA_R_32F,
                alpha: 1.0,
                beta: 1.0,
                bias: None,
            },
        )?;
        if let Some(db) = db {
            self.column_sum(dy, db, n, o)?;
        }
        Ok(())
    }
}
