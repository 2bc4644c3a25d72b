//! cuBLASLt matrix products for `linear_*`: D = alpha·op(A)·op(B) + beta·C with C = D, in
//! cuBLAS's column-major convention (a row-major [R, C] matrix is a column-major [C, R] one).
//! Operands A/B are f32 or bf16, D is the activation type or fp32 (weight gradients accumulate
//! into the fp32 Acc buffer with beta = 1); the compute type is always CUBLAS_COMPUTE_32F (fp32
//! accumulation, no TF32), so the f32 path matches the CPU reference to rounding.
//! The heuristic is told each pointer's real alignment (regions start anywhere in a flat unit).
//! Optional epilogue: bias (length m, the row count of column-major D) added to every column.

use crate::{Error, Result};
use cudarc::cublas::sys::cublasOperation_t;
use cudarc::cublaslt::result as lt;
use cudarc::cublaslt::sys::{
    self, cublasComputeType_t, cublasLtEpilogue_t, cublasLtMatmulDescAttributes_t as DescAttr,
    cublasLtMatmulPreferenceAttributes_t as PrefAttr, cudaDataType_t,
};
use cudarc::driver::{CudaSlice, CudaStream, DevicePtr};
use std::collections::HashMap;
use std::ffi::c_void;
use std::mem::size_of;
use std::sync::{Arc, Mutex};

const WORKSPACE_BYTES: usize = 32 << 20;

/// A cuBLASLt handle with its workspace, bound to one stream.
pub struct Blas {
    handle: sys::cublasLtHandle_t,
    workspace: CudaSlice<u8>,
    stream: Arc<CudaStream>,
    /// The heuristic's choice per problem (shape, types, bias, alignments): asked once.
    algos: Mutex<HashMap<AlgoKey, sys::cublasLtMatmulAlgo_t>>,
}

type AlgoKey = (bool, bool, [u64; 3], [i64; 3], [u32; 2], bool, [u32; 3]);

// SAFETY: the handle is only used with the backend's one stream; cuBLASLt handles may be used
// from any thread.
unsafe impl Send for Blas {}
unsafe impl Sync for Blas {}

impl Drop for Blas {
    fn drop(&mut self) {
        // SAFETY: created by cublasLtCreate, destroyed once.
        let _ = unsafe { lt::destroy_handle(self.handle) };
    }
}

/// One product; pointers are device addresses, leading dimensions in elements.
#[derive(Clone, Copy, Debug)]
pub struct Gemm {
    pub transa: bool,
    pub transb: bool,
    pub m: u64,
    pub n: u64,
    pub k: u64,
    pub a: u64,
    pub lda: i64,
    pub b: u64,
    pub ldb: i64,
    pub d: u64,
    pub ldd: i64,
    pub ab_type: cudaDataType_t,
    pub d_type: cudaDataType_t,
    pub alpha: f32,
    pub beta: f32,
    /// Bias of `d_type`, length m.
    pub bias: Option<u64>,
}

fn err(what: &str, e: impl std::fmt::Debug) -> Error {
    Error::Cuda(format!("cuBLASLt {what}: {e:?}"))
}

fn alignment(ptr: u64) -> u32 {
    (1u64 << ptr.trailing_zeros().min(8)) as u32
}

struct Layout(sys::cublasLtMatrixLayout_t);
impl Drop for Layout {
    fn drop(&mut self) {
        // SAFETY: created by create_matrix_layout.
        let _ = unsafe { lt::destroy_matrix_layout(self.0) };
    }
}
struct Desc(sys::cublasLtMatmulDesc_t);
impl Drop for Desc {
    fn drop(&mut self) {
        // SAFETY: created by create_matmul_desc.
        let _ = unsafe { lt::destroy_matmul_desc(self.0) };
    }
}
struct Pref(sys::cublasLtMatmulPreference_t);
impl Drop for Pref {
    fn drop(&mut self) {
        // SAFETY: created by create_matmul_pref.
        let _ = unsafe { lt::destroy_matmul_pref(self.0) };
    }
}

unsafe fn set_desc<T>(d: &Desc, attr: DescAttr, v: &T) -> Result<()> {
    lt::set_matmul_desc_attribute(d.0, attr, v as *const T as *const c_void, size_of::<T>())
        .map_err(|e| err("desc attribute", e))
}
unsafe fn set_pref<T>(p: &Pref, attr: PrefAttr, v: &T) -> Result<()> {
    lt::set_matmul_pref_attribute(p.0, attr, v as *const T as *const c_void, size_of::<T>())
        .map_err(|e| err("preference", e))
}

impl Blas {
    pub fn new(stream: Arc<CudaStream>) -> Result<Self> {
        let handle = lt::create_handle().map_err(|e| err("create handle", e))?;
        let workspace = stream
            .alloc_zeros::<u8>(WORKSPACE_BYTES)
            .map_err(|e| err("workspace", e))?;
        Ok(Blas {
            handle,
            workspace,
            stream,
            algos: Mutex::new(HashMap::new()),
        })
    }

    pub fn matmul(&self, g: &Gemm) -> Result<()> {
        if g.m == 0 || g.n == 0 || (g.k == 0 && g.beta == 1.0 && g.bias.is_none()) {
            return Ok(());
        }
        let (a_rows, a_cols) = if g.transa { (g.k, g.m) } else { (g.m, g.k) };
        let (b_rows, b_cols) = if g.transb { (g.n, g.k) } else { (g.k, g.n) };
        let la = Layout(
            lt::create_matrix_layout(g.ab_type, a_rows, a_cols, g.lda)
                .map_err(|e| err("layout A", e))?,
        );
        let lb = Layout(
            lt::create_matrix_layout(g.ab_type, b_rows, b_cols, g.ldb)
                .map_err(|e| err("layout B", e))?,
        );
        let ld = Layout(
            lt::create_matrix_layout(g.d_type, g.m, g.n, g.ldd).map_err(|e| err("layout D", e))?,
        );
        let desc = Desc(
            lt::create_matmul_desc(
                cublasComputeType_t::CUBLAS_COMPUTE_32F,
                cudaDataType_t::CUDA_R_32F,
            )
            .map_err(|e| err("matmul desc", e))?,
        );
        let op = |t: bool| {
            if t {
                cublasOperation_t::CUBLAS_OP_T
            } else {
                cublasOperation_t::CUBLAS_OP_N
            }
        };
        let pref = Pref(lt::create_matmul_pref().map_err(|e| err("preference", e))?);
        // SAFETY: attribute values have the types cuBLASLt documents for them.
        unsafe {
            set_desc(&desc, DescAttr::CUBLASLT_MATMUL_DESC_TRANSA, &op(g.transa))?;
            set_desc(&desc, DescAttr::CUBLASLT_MATMUL_DESC_TRANSB, &op(g.transb))?;
            if let Some(bias) = g.bias {
                set_desc(
                    &desc,
                    DescAttr::CUBLASLT_MATMUL_DESC_EPILOGUE,
                    &cublasLtEpilogue_t::CUBLASLT_EPILOGUE_BIAS,
                )?;
                set_desc(&desc, DescAttr::CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias)?;
                set_desc(
                    &desc,
                    DescAttr::CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE,
                    &g.d_type,
                )?;
            }
            set_pref(
                &pref,
                PrefAttr::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                &WORKSPACE_BYTES,
            )?;
            set_pref(
                &pref,
                PrefAttr::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
                &alignment(g.a),
            )?;
            set_pref(
                &pref,
                PrefAttr::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                &alignment(g.b),
            )?;
            set_pref(
                &pref,
                PrefAttr::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
                &alignment(g.d),
            )?;
            set_pref(
                &pref,
                PrefAttr::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
                &alignment(g.d),
            )?;
        }
        let (ws, _rec) = self.workspace.device_ptr(&self.stream);
        // SAFETY: every pointer addresses a live device region the caller sized for these
        // dimensions; the workspace belongs to this handle and stream.
        unsafe {
            let key: AlgoKey = (
                g.transa,
                g.transb,
                [g.m, g.n, g.k],
                [g.lda, g.ldb, g.ldd],
                [g.ab_type as u32, g.d_type as u32],
                g.bias.is_some(),
                [alignment(g.a), alignment(g.b), alignment(g.d)],
            );
            let cached = self.algos.lock().ok().and_then(|m| m.get(&key).copied());
            let algo = match cached {
                Some(a) => a,
                None => {
                    let heur = lt::get_matmul_algo_heuristic(
                        self.handle,
                        desc.0,
                        la.0,
                        lb.0,
                        ld.0,
                        ld.0,
                        pref.0,
                    )
                    .map_err(|e| err(&format!("no algorithm for {g:?}"), e))?;
                    if let Ok(mut m) = self.algos.lock() {
                        m.insert(key, heur.algo);
                    }
                    heur.algo
                }
            };
            lt::matmul(
                self.handle,
                desc.0,
                &g.alpha as *const f32 as *const c_void,
                &g.beta as *const f32 as *const c_void,
                g.a as *const c_void,
                la.0,
                g.b as *const c_void,
                lb.0,
                g.d as *const c_void,
                ld.0,
                g.d as *mut c_void,
                ld.0,
                &algo,
                ws as *mut c_void,
                WORKSPACE_BYTES,
                self.stream.cu_stream() as sys::cudaStream_t,
            )
            .map_err(|e| err("matmul", e))
        }
    }
}
