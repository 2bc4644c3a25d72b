//! CPU backend: the f32 reference the CUDA path is checked against, and (with T = f64) the
//! target of the finite-difference gradchecks. Multi-threaded with rayon; GEMMs through
//! matrixmultiply. Each op lives in its own file as plain functions over slices; this file
//! only maps the `Backend` trait onto them.

pub mod activation;
pub mod adamw;
pub mod attention;
pub mod cross_entropy;
pub mod elementwise;
pub mod embedding;
pub mod float;
pub mod gemm;
pub mod layernorm;
pub mod linear;
pub mod rmsnorm;
pub mod rope;
pub mod vocab_ce;

pub use float::CpuFloat;

use crate::backend::*;
use crate::Result;
use std::marker::PhantomData;

/// The CPU backend with element type T for activations and accumulators alike.
#[derive(Default, Clone, Copy)]
pub struct CpuBackend<T: CpuFloat>(PhantomData<T>);

impl<T: CpuFloat> CpuBackend<T> {
    pub fn new() -> Self {
        CpuBackend(PhantomData)
    }
}

fn r<'a, E>(s: Src<'a, Vec<E>>) -> &'a [E] {
    &s.buf[s.start..s.start + s.len]
}
fn w<'a, E>(d: Dst<'a, Vec<E>>) -> &'a mut [E] {
    &mut d.buf[d.start..d.start + d.len]
}
/// The weight and (optional) bias gradient regions as two disjoint slices.
fn split_grads<E>(g: WeightGrads<'_, Vec<E>>) -> (&mut [E], Option<&mut [E]>) {
    let (ws, wl) = g.w;
    let all = g.buf.as_mut_slice();
    match g.b {
        None => (&mut all[ws..ws + wl], None),
        Some((bs, bl)) if bs >= ws + wl => {
            let (lo, hi) = all.split_at_mut(bs);
            (&mut lo[ws..ws + wl], Some(&mut hi[..bl]))
        }
        Some((bs, bl)) => {
            let (lo, hi) = all.split_at_mut(ws);
            (&mut hi[..wl], Some(&mut lo[bs..bs + bl]))
        }
    }
}

fn cast_in<T: CpuFloat>(host: &[f32]) -> Vec<T> {
    host.iter().map(|&x| T::from_f64c(x as f64)).collect()
}
fn cast_out<T: CpuFloat>(s: &[T]) -> Vec<f32> {
    s.iter().map(|&x| x.to_f64c() as f32).collect()
}

impl<T: CpuFloat> Backend for CpuBackend<T> {
    type Act = Vec<T>;
    type Acc = Vec<T>;
    type Idx = Vec<i32>;

    fn name(&self) -> String {
        format!("cpu-{}", T::NAME)
    }
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }

    fn zeros_act(&self, n: usize) -> Result<Vec<T>> {
        Ok(vec![T::zero(); n])
    }
    fn zeros_acc(&self, n: usize) -> Result<Vec<T>> {
        Ok(vec![T::zero(); n])
    }
    fn upload_act(&self, host: &[f32]) -> Result<Vec<T>> {
        Ok(cast_in(host))
    }
    fn upload_acc(&self, host: &[f32]) -> Result<Vec<T>> {
        Ok(cast_in(host))
    }
    fn upload_idx(&self, host: &[i32]) -> Result<Vec<i32>> {
        Ok(host.to_vec())
    }
    fn download_act(&self, src: Src<'_, Vec<T>>) -> Result<Vec<f32>> {
        Ok(cast_out(r(src)))
    }
    fn download_acc(&self, src: Src<'_, Vec<T>>) -> Result<Vec<f32>> {
        Ok(cast_out(r(src)))
    }
    fn fill_zero_act(&self, dst: Dst<'_, Vec<T>>) -> Result<()> {
        w(dst).fill(T::zero());
        Ok(())
    }
    fn fill_zero_acc(&self, dst: Dst<'_, Vec<T>>) -> Result<()> {
        w(dst).fill(T::zero());
        Ok(())
    }
    fn copy_acc(&self, src: Src<'_, Vec<T>>, dst: Dst<'_, Vec<T>>) -> Result<()> {
        w(dst).copy_from_slice(r(src));
        Ok(())
    }
    fn acc_to_act(&self, src: Src<'_, Vec<T>>, dst: Dst<'_, Vec<T>>) -> Result<()> {
        w(dst).copy_from_slice(r(src));
        Ok(())
    }
    fn copy_columns(
        &self,
        src: Src<'_, Vec<T>>,
        src_cols: usize,
        src_col0: usize,
        dst: Dst<'_, Vec<T>>,
        dst_cols: usize,
        dst_col0: usize,
        rows: usize,
        width: usize,
        accumulate: bool,
    ) -> Result<()> {
        elementwise::copy_columns(
            r(src),
            src_cols,
            src_col0,
            w(dst),
            dst_cols,
            dst_col0,
            rows,
            width,
            accumulate,
        );
        Ok(())
    }

    fn embedding_forward(
        &self,
        ids: Src<'_, Vec<i32>>,
        table: Src<'_, Vec<T>>,
        out: Dst<'_, Vec<T>>,
        n: usize,
        d: usize,
    ) -> Result<()> {
        embedding::forward(r(ids), r(table), w(out), n, d);
        Ok(())
    }
    fn embedding_backward(
        &self,
        ids: Src<'_, Vec<i32>>,
        dout: Src<'_, Vec<T>>,
        dtable: Dst<'_, Vec<T>>,
        n: usize,
        d: usize,
    ) -> Result<()> {
        embedding::backward(r(ids), r(dout), w(dtable), n, d);
        Ok(())
    }

    fn linear_forward(
        &self,
        x: Src<'_, Vec<T>>,
        wt: Src<'_, Vec<T>>,
        b: Option<Src<'_, Vec<T>>>,
        y: Dst<'_, Vec<T>>,
        dims: LinearDims,
    ) -> Result<()> {
        linear::forward(r(x), r(wt), b.map(r), w(y), dims);
        Ok(())
    }
    fn linear_backward(
        &self,
        x: Src<'_, Vec<T>>,
        wt: Src<'_, Vec<T>>,
        dy: Src<'_, Vec<T>>,
        dx: Option<Dst<'_, Vec<T>>>,
        grads: WeightGrads<'_, Vec<T>>,
        dims: LinearDims,
    ) -> Result<()> {
        let (dw, db) = split_grads(grads);
        linear::backward(r(x), r(wt), r(dy), dx.map(w), dw, db, dims);
        Ok(())
    }

    fn rmsnorm_forward(
        &self,
        x: Src<'_, Vec<T>>,
        wt: Src<'_, Vec<T>>,
        y: Dst<'_, Vec<T>>,
        rstd: Dst<'_, Vec<T>>,
        n: usize,
        d: usize,
        eps: f64,
    ) -> Result<()> {
        rmsnorm::forward(r(x), r(wt), w(y), w(rstd), n, d, eps);
        Ok(())
    }
    fn rmsnorm_backward(
        &self,
        x: Src<'_, Vec<T>>,
        wt: Src<'_, Vec<T>>,
        rstd: Src<'_, Vec<T>>,
        dy: Src<'_, Vec<T>>,
        dx: Dst<'_, Vec<T>>,
        dw: Dst<'_, Vec<T>>,
        n: usize,
        d: usize,
    ) -> Result<()> {
        rmsnorm::backward(r(x), r(wt), r(rstd), r(dy), w(dx), w(dw), n, d);
        Ok(())
    }
    fn layernorm_forward(
        &self,
        x: Src<'_, Vec<T>>,
        wt: Src<'_, Vec<T>>,
        b: Src<'_, Vec<T>>,
        y: Dst<'_, Vec<T>>,
        mean: Dst<'_, Vec<T>>,
        rstd: Dst<'_, Vec<T>>,
        n: usize,
        d: usize,
        eps: f64,
    ) -> Result<()> {
        layernorm::forward(r(x), r(wt), r(b), w(y), w(mean), w(rstd), n, d, eps);
        Ok(())
    }
    fn layernorm_backward(
        &self,
        x: Src<'_, Vec<T>>,
        wt: Src<'_, Vec<T>>,
        mean: Src<'_, Vec<T>>,
        rstd: Src<'_, Vec<T>>,
        dy: Src<'_, Vec<T>>,
        dx: Dst<'_, Vec<T>>,
        grads: WeightGrads<'_, Vec<T>>,
        n: usize,
        d: usize,
    ) -> Result<()> {
        let (dw, db) = split_grads(grads);
        let db = db.expect("layernorm_backward needs a bias-gradient region");
        layernorm::backward(r(x), r(wt), r(mean), r(rstd), r(dy), w(dx), dw, db, n, d);
        Ok(())
    }

    fn residual_rmsnorm_forward(
        &self,
        h: Dst<'_, Vec<T>>,
        y: Src<'_, Vec<T>>,
        wt: Src<'_, Vec<T>>,
        out: Dst<'_, Vec<T>>,
        rstd: Dst<'_, Vec<T>>,
        n: usize,
        d: usize,
        eps: f64,
    ) -> Result<()> {
        rmsnorm::residual_forward(w(h), r(y), r(wt), w(out), w(rstd), n, d, eps);
        Ok(())
    }
    fn residual_layernorm_forward(
        &self,
        h: Dst<'_, Vec<T>>,
        y: Src<'_, Vec<T>>,
        wt: Src<'_, Vec<T>>,
        b: Src<'_, Vec<T>>,
        out: Dst<'_, Vec<T>>,
        mean: Dst<'_, Vec<T>>,
        rstd: Dst<'_, Vec<T>>,
        n: usize,
        d: usize,
        eps: f64,
    ) -> Result<()> {
        layernorm::residual_forward(w(h), r(y), r(wt), r(b), w(out), w(mean), w(rstd), n, d, eps);
        Ok(())
    }

    fn rope_forward(
        &self,
        x: Dst<'_, Vec<T>>,
        pos: Src<'_, Vec<i32>>,
        n: usize,
        heads: usize,
        head_dim: usize,
        inv_freq: &[f64],
    ) -> Result<()> {
        rope::forward(w(x), r(pos), n, heads, head_dim, inv_freq);
        Ok(())
    }
    fn rope_backward(
        &self,
        dx: Dst<'_, Vec<T>>,
        pos: Src<'_, Vec<i32>>,
        n: usize,
        heads: usize,
        head_dim: usize,
        inv_freq: &[f64],
    ) -> Result<()> {
        rope::backward(w(dx), r(pos), n, heads, head_dim, inv_freq);
        Ok(())
    }

    fn attention_forward(
        &self,
        q: Src<'_, Vec<T>>,
        k: Src<'_, Vec<T>>,
        v: Src<'_, Vec<T>>,
        o: Dst<'_, Vec<T>>,
        lse: Dst<'_, Vec<T>>,
        cu_seqlens: Src<'_, Vec<i32>>,
        dims: &AttnDims,
    ) -> Result<()> {
        attention::forward(r(q), r(k), r(v), w(o), w(lse), r(cu_seqlens), dims);
        Ok(())
    }
    fn attention_backward(
        &self,
        q: Src<'_, Vec<T>>,
        k: Src<'_, Vec<T>>,
        v: Src<'_, Vec<T>>,
        o: Src<'_, Vec<T>>,
        dout: Src<'_, Vec<T>>,
        lse: Src<'_, Vec<T>>,
        dq: Dst<'_, Vec<T>>,
        dk: Dst<'_, Vec<T>>,
        dv: Dst<'_, Vec<T>>,
        cu_seqlens: Src<'_, Vec<i32>>,
        dims: &AttnDims,
    ) -> Result<()> {
        attention::backward(
            r(q),
            r(k),
            r(v),
            r(o),
            r(dout),
            r(lse),
            w(dq),
            w(dk),
            w(dv),
            r(cu_seqlens),
            dims,
        );
        Ok(())
    }

    fn swiglu_forward(
        &self,
        gate: Src<'_, Vec<T>>,
        up: Src<'_, Vec<T>>,
        out: Dst<'_, Vec<T>>,
    ) -> Result<()> {
        activation::swiglu_forward(r(gate), r(up), w(out));
        Ok(())
    }
    fn swiglu_backward(
        &self,
        gate: Src<'_, Vec<T>>,
        up: Src<'_, Vec<T>>,
        dout: Src<'_, Vec<T>>,
        dgate: Dst<'_, Vec<T>>,
        dup: Dst<'_, Vec<T>>,
    ) -> Result<()> {
        activation::swiglu_backward(r(gate), r(up), r(dout), w(dgate), w(dup));
        Ok(())
    }
    fn gelu_forward(&self, x: Src<'_, Vec<T>>, y: Dst<'_, Vec<T>>) -> Result<()> {
        activation::gelu_forward(r(x), w(y));
        Ok(())
    }
    fn gelu_backward(
        &self,
        x: Src<'_, Vec<T>>,
        dy: Src<'_, Vec<T>>,
        dx: Dst<'_, Vec<T>>,
    ) -> Result<()> {
        activation::gelu_backward(r(x), r(dy), w(dx));
        Ok(())
    }
    fn add_inplace(&self, x: Dst<'_, Vec<T>>, y: Src<'_, Vec<T>>) -> Result<()> {
        elementwise::add(w(x), r(y));
        Ok(())
    }

    fn cross_entropy(
        &self,
        logits: Src<'_, Vec<T>>,
        targets: Src<'_, Vec<i32>>,
        losses: Dst<'_, Vec<T>>,
        dlogits: Option<Dst<'_, Vec<T>>>,
        n: usize,
        v: usize,
        grad_scale: f64,
    ) -> Result<()> {
        cross_entropy::forward_backward(
            r(logits),
            r(targets),
            w(losses),
            dlogits.map(w),
            n,
            v,
            grad_scale,
        );
        Ok(())
    }

    fn cross_entropy_stats(
        &self,
        logits: Src<'_, Vec<T>>,
        targets: Src<'_, Vec<i32>>,
        stats: Dst<'_, Vec<T>>,
        d: VocabSlice,
    ) -> Result<()> {
        vocab_ce::stats(r(logits), r(targets), w(stats), d.n, d.v, d.valid, d.start);
        Ok(())
    }

    fn cross_entropy_finish(
        &self,
        logits: Src<'_, Vec<T>>,
        targets: Src<'_, Vec<i32>>,
        all: Src<'_, Vec<T>>,
        parts: usize,
        losses: Dst<'_, Vec<T>>,
        dlogits: Option<Dst<'_, Vec<T>>>,
        dims: VocabSlice,
        grad_scale: f64,
    ) -> Result<()> {
        vocab_ce::finish(
            r(logits),
            r(targets),
            r(all),
            parts,
            w(losses),
            dlogits.map(w),
            dims.n,
            dims.v,
            dims.valid,
            dims.start,
            grad_scale,
        );
        Ok(())
    }

    fn sum(&self, x: Src<'_, Vec<T>>) -> Result<f64> {
        Ok(elementwise::sum(r(x)))
    }
    fn sum_squares(&self, x: Src<'_, Vec<T>>) -> Result<f64> {
        Ok(elementwise::sum_squares(r(x)))
    }
    fn scale_acc(&self, x: Dst<'_, Vec<T>>, s: f64) -> Result<()> {
        elementwise::scale(w(x), s);
        Ok(())
    }
    fn add_acc(&self, x: Dst<'_, Vec<T>>, y: Src<'_, Vec<T>>) -> Result<()> {
        elementwise::add(w(x), r(y));
        Ok(())
    }
    fn adamw_multi_step(
        &self,
        groups: Vec<AdamWGroup<'_, Vec<T>>>,
        h: &AdamWStep,
        grad_scale: f64,
    ) -> Result<()> {
        for grp in groups {
            grp.check()?;
            let AdamWGroup {
                param,
                grad,
                m,
                v,
                pieces,
            } = grp;
            let (p, g, m, v) = (w(param), r(grad), w(m), w(v));
            for (s, l, decay) in pieces {
                let hp = AdamWStep {
                    weight_decay: if decay { h.weight_decay } else { 0.0 },
                    ..*h
                };
                let e = s + l;
                adamw::step(
                    &mut p[s..e],
                    &g[s..e],
                    &mut m[s..e],
                    &mut v[s..e],
                    &hp,
                    grad_scale,
                );
            }
        }
        Ok(())
    }
}
