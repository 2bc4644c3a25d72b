//! The `Backend` trait on `CudaBackend<A>`: a thin mapping onto the ops_*.rs methods.
//! Host data crosses as f32 (Act is converted to/from A on the host) and i32.

use super::backend::{cuda_err, CudaBackend};
use super::buffer::Bound;
use super::dtype::CudaAct;
use super::ops_norms::NormInput;
use crate::backend::*;
use crate::Result;
use cudarc::driver::CudaSlice;

type S<'a, T> = Src<'a, CudaSlice<T>>;
type D<'a, T> = Dst<'a, CudaSlice<T>>;

impl<A: CudaAct> Backend for CudaBackend<A> {
    type Act = CudaSlice<A>;
    type Acc = CudaSlice<f32>;
    type Idx = CudaSlice<i32>;

    /// 2^28 (512 MiB in bf16; 5,341 rows of GPT-2's vocabulary, 2,093 of Llama 3's): on an
    /// H200 2^24 left the head at 35-40% of a step (GPT-2 124M, Llama-1B shape): dW_head's
    /// product ran at 84-90 TFLOP/s over 130-333 rows (each chunk reads and writes the fp32
    /// dW_head, 1 GB for Llama 3's vocabulary) against 600-800 for the blocks' products, and
    /// the cross-entropy ran one block per row on as few rows (docs/gpu-runs/h200-2026-12-04.md).
    const LOGITS_CHUNK_ELEMS: usize = 1 << 28;
    /// 64: rows of 50,257 bf16 logits (GPT-2) are 100,514 bytes, not a multiple of 16, and the
    /// head's products over them ran at 94-145 TFLOP/s on the H200 against 700-860 over Llama 3's
    /// 128,256 (docs/gpu-runs/h200-2026-12-04.md); PyTorch's GPT-2 baselines pad to 50,304.
    const LOGITS_ROW_ALIGN: usize = 64;

    fn name(&self) -> String {
        format!("cuda:{}-{}", self.ctx.ordinal(), A::NAME)
    }
    fn synchronize(&self) -> Result<()> {
        self.stream
            .synchronize()
            .map_err(|e| cuda_err("synchronize", e))
    }
    fn set_profiling(&self, on: bool) -> Result<()> {
        self.profiler.set(on);
        Ok(())
    }
    fn take_profile(&self) -> Result<Vec<KernelTime>> {
        self.profiler.take()
    }

    fn zeros_act(&self, n: usize) -> Result<CudaSlice<A>> {
        self.zeros(n)
    }
    fn zeros_acc(&self, n: usize) -> Result<CudaSlice<f32>> {
        self.zeros(n)
    }
    fn empty_act(&self, n: usize) -> Result<CudaSlice<A>> {
        self.empty(n)
    }
    fn empty_acc(&self, n: usize) -> Result<CudaSlice<f32>> {
        self.empty(n)
    }
    fn upload_act(&self, host: &[f32]) -> Result<CudaSlice<A>> {
        let h: Vec<A> = host.iter().map(|&x| A::from_f32(x)).collect();
        self.upload(&h)
    }
    fn upload_acc(&self, host: &[f32]) -> Result<CudaSlice<f32>> {
        self.upload(host)
    }
    fn upload_idx(&self, host: &[i32]) -> Result<CudaSlice<i32>> {
        self.upload(host)
    }
    fn download_act(&self, src: S<'_, A>) -> Result<Vec<f32>> {
        Ok(self.download(src)?.into_iter().map(A::to_f32).collect())
    }
    fn download_acc(&self, src: S<'_, f32>) -> Result<Vec<f32>> {
        self.download(src)
    }
    fn fill_zero_act(&self, dst: D<'_, A>) -> Result<()> {
        self.fill_zero(dst)
    }
    fn fill_zero_acc(&self, dst: D<'_, f32>) -> Result<()> {
        self.fill_zero(dst)
    }
    fn copy_acc(&self, src: S<'_, f32>, dst: D<'_, f32>) -> Result<()> {
        self.copy_f32(src, dst)
    }
    fn acc_to_act(&self, src: S<'_, f32>, dst: D<'_, A>) -> Result<()> {
        self.cast_acc_to_act(src, dst)
    }
    fn copy_columns(
        &self,
        src: S<'_, A>,
        src_cols: usize,
        src_col0: usize,
        dst: D<'_, A>,
        dst_cols: usize,
        dst_col0: usize,
        rows: usize,
        width: usize,
        accumulate: bool,
    ) -> Result<()> {
        self.copy_cols(
            src, src_cols, src_col0, dst, dst_cols, dst_col0, rows, width, accumulate,
        )
    }

    fn embedding_forward(
        &self,
        ids: S<'_, i32>,
        table: S<'_, A>,
        out: D<'_, A>,
        n: usize,
        d: usize,
    ) -> Result<()> {
        self.embed_fwd(ids, table, out, n, d)
    }
    fn embedding_backward(
        &self,
        ids: S<'_, i32>,
        dout: S<'_, A>,
        dtable: D<'_, f32>,
        n: usize,
        d: usize,
    ) -> Result<()> {
        self.embed_bwd(ids, dout, dtable, n, d)
    }

    fn linear_forward(
        &self,
        x: S<'_, A>,
        w: S<'_, A>,
        b: Option<S<'_, A>>,
        y: D<'_, A>,
        dims: LinearDims,
    ) -> Result<()> {
        self.lin_fwd(x, w, b, y, dims)
    }
    fn linear_backward(
        &self,
        x: S<'_, A>,
        w: S<'_, A>,
        dy: S<'_, A>,
        dx: Option<D<'_, A>>,
        mut grads: WeightGrads<'_, CudaSlice<f32>>,
        dims: LinearDims,
    ) -> Result<()> {
        let mut bind = Bound::new(&self.stream);
        let (dw, db) = bind.grads(&mut grads);
        self.lin_bwd(x, w, dy, dx, dw, db, dims)
    }

    fn rmsnorm_forward(
        &self,
        x: S<'_, A>,
        w: S<'_, A>,
        y: D<'_, A>,
        rstd: D<'_, f32>,
        n: usize,
        d: usize,
        eps: f64,
        w_offset: f64,
    ) -> Result<()> {
        self.rms_fwd(NormInput::Plain(x), w, y, rstd, n, d, (eps, w_offset))
    }
    fn rmsnorm_backward(
        &self,
        x: S<'_, A>,
        w: S<'_, A>,
        rstd: S<'_, f32>,
        dy: S<'_, A>,
        dx: D<'_, A>,
        dw: D<'_, f32>,
        n: usize,
        d: usize,
        w_offset: f64,
    ) -> Result<()> {
        self.rms_bwd(x, w, rstd, dy, dx, dw, n, d, w_offset)
    }
    fn layernorm_forward(
        &self,
        x: S<'_, A>,
        w: S<'_, A>,
        b: S<'_, A>,
        y: D<'_, A>,
        mean: D<'_, f32>,
        rstd: D<'_, f32>,
        n: usize,
        d: usize,
        eps: f64,
    ) -> Result<()> {
        self.ln_fwd(NormInput::Plain(x), w, b, y, mean, rstd, n, d, eps)
    }
    fn layernorm_backward(
        &self,
        x: S<'_, A>,
        w: S<'_, A>,
        mean: S<'_, f32>,
        rstd: S<'_, f32>,
        dy: S<'_, A>,
        dx: D<'_, A>,
        mut grads: WeightGrads<'_, CudaSlice<f32>>,
        n: usize,
        d: usize,
    ) -> Result<()> {
        let mut bind = Bound::new(&self.stream);
        let (dw, db) = bind.grads(&mut grads);
        let db = db.ok_or_else(|| {
            crate::Error::Unsupported("layernorm_backward needs a bias-gradient region".into())
        })?;
        self.ln_bwd(x, w, mean, rstd, dy, dx, dw, db, n, d)
    }

    fn residual_rmsnorm_forward(
        &self,
        h: D<'_, A>,
        y: S<'_, A>,
        w: S<'_, A>,
        out: D<'_, A>,
        rstd: D<'_, f32>,
        n: usize,
        d: usize,
        eps: f64,
        w_offset: f64,
    ) -> Result<()> {
        let norm = (eps, w_offset);
        self.rms_fwd(NormInput::Residual { h, y }, w, out, rstd, n, d, norm)
    }
    fn residual_layernorm_forward(
        &self,
        h: D<'_, A>,
        y: S<'_, A>,
        w: S<'_, A>,
        b: S<'_, A>,
        out: D<'_, A>,
        mean: D<'_, f32>,
        rstd: D<'_, f32>,
        n: usize,
        d: usize,
        eps: f64,
    ) -> Result<()> {
        self.ln_fwd(
            NormInput::Residual { h, y },
            w,
            b,
            out,
            mean,
            rstd,
            n,
            d,
            eps,
        )
    }

    fn rope_forward(
        &self,
        x: D<'_, A>,
        pos: S<'_, i32>,
        n: usize,
        heads: usize,
        head_dim: usize,
        inv_freq: &[f64],
        scale: f64,
    ) -> Result<()> {
        self.rope(x, pos, n, heads, head_dim, inv_freq, scale, 1.0)
    }
    fn rope_backward(
        &self,
        dx: D<'_, A>,
        pos: S<'_, i32>,
        n: usize,
        heads: usize,
        head_dim: usize,
        inv_freq: &[f64],
        scale: f64,
    ) -> Result<()> {
        self.rope(dx, pos, n, heads, head_dim, inv_freq, scale, -1.0)
    }

    fn attention_forward(
        &self,
        q: S<'_, A>,
        k: S<'_, A>,
        v: S<'_, A>,
        o: D<'_, A>,
        lse: D<'_, f32>,
        cu_seqlens: S<'_, i32>,
        dims: &AttnDims,
    ) -> Result<()> {
        self.attn_fwd(q, k, v, o, lse, cu_seqlens, dims)
    }
    fn attention_backward(
        &self,
        q: S<'_, A>,
        k: S<'_, A>,
        v: S<'_, A>,
        o: S<'_, A>,
        dout: S<'_, A>,
        lse: S<'_, f32>,
        dq: D<'_, A>,
        dk: D<'_, A>,
        dv: D<'_, A>,
        cu_seqlens: S<'_, i32>,
        dims: &AttnDims,
    ) -> Result<()> {
        self.attn_bwd(q, k, v, o, dout, lse, dq, dk, dv, cu_seqlens, dims)
    }

    fn glu_forward(&self, kind: Glu, gate: S<'_, A>, up: S<'_, A>, out: D<'_, A>) -> Result<()> {
        self.glu_fwd(kind, gate, up, out)
    }
    fn glu_backward(
        &self,
        kind: Glu,
        gate: S<'_, A>,
        up: S<'_, A>,
        dout: S<'_, A>,
        dgate: D<'_, A>,
        dup: D<'_, A>,
    ) -> Result<()> {
        self.glu_bwd(kind, gate, up, dout, dgate, dup)
    }
    fn gelu_forward(&self, kind: Gelu, x: S<'_, A>, y: D<'_, A>) -> Result<()> {
        self.gelu_fwd(kind, x, y)
    }
    fn gelu_backward(&self, kind: Gelu, x: S<'_, A>, dy: S<'_, A>, dx: D<'_, A>) -> Result<()> {
        self.gelu_bwd(kind, x, dy, dx)
    }
    fn add_inplace(&self, x: D<'_, A>, y: S<'_, A>) -> Result<()> {
        self.add_act(x, y)
    }
    fn scale_inplace(&self, x: D<'_, A>, s: f64) -> Result<()> {
        self.scale_act(x, s)
    }
    fn softcap_inplace(&self, x: D<'_, A>, c: f64) -> Result<()> {
        self.softcap_act(x, c)
    }
    fn softcap_backward(&self, dy: D<'_, A>, y: S<'_, A>, c: f64) -> Result<()> {
        self.softcap_bwd_act(dy, y, c)
    }

    fn cross_entropy(
        &self,
        logits: S<'_, A>,
        targets: S<'_, i32>,
        losses: D<'_, f32>,
        dlogits: Option<D<'_, A>>,
        n: usize,
        v: usize,
        grad_scale: f64,
    ) -> Result<()> {
        self.xent(logits, targets, losses, dlogits, n, v, grad_scale)
    }

    fn cross_entropy_in_place(
        &self,
        logits: D<'_, A>,
        targets: S<'_, i32>,
        losses: D<'_, f32>,
        n: usize,
        v: usize,
        grad_scale: Option<f64>,
    ) -> Result<()> {
        self.xent_in_place(logits, targets, losses, n, v, grad_scale)
    }
    fn cross_entropy_stats(
        &self,
        logits: S<'_, A>,
        targets: S<'_, i32>,
        stats: D<'_, f32>,
        dims: VocabSlice,
    ) -> Result<()> {
        self.xent_stats(logits, targets, stats, dims)
    }
    fn cross_entropy_finish(
        &self,
        logits: S<'_, A>,
        targets: S<'_, i32>,
        all: S<'_, f32>,
        parts: usize,
        losses: D<'_, f32>,
        dlogits: Option<D<'_, A>>,
        dims: VocabSlice,
        grad_scale: f64,
    ) -> Result<()> {
        self.xent_finish(
            logits, targets, all, parts, losses, dlogits, dims, grad_scale,
        )
    }

    fn sum(&self, x: S<'_, f32>) -> Result<f64> {
        self.reduce_f32(x, false)
    }
    fn sum_squares(&self, x: S<'_, f32>) -> Result<f64> {
        self.reduce_f32(x, true)
    }
    fn sum_squares_many(&self, xs: &[S<'_, f32>]) -> Result<f64> {
        self.reduce_many_f32(xs, true)
    }
    fn scale_acc(&self, x: D<'_, f32>, s: f64) -> Result<()> {
        self.scale_f32(x, s)
    }
    fn add_acc(&self, x: D<'_, f32>, y: S<'_, f32>) -> Result<()> {
        self.add_f32(x, y)
    }
    fn adamw_multi_step(
        &self,
        groups: Vec<AdamWGroup<'_, CudaSlice<f32>>>,
        h: &AdamWStep,
        grad_scale: f64,
    ) -> Result<()> {
        self.adamw_multi(groups, h, grad_scale)
    }
}
