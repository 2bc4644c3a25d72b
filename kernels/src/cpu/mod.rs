//! CPU backend: the f32 reference the CUDA path is checked against, and (with T = f64) the
//! target of the finite-difference gradchecks. Multi-threaded: GEMM splits and the per-step
//! elementwise passes (AdamW, cross-entropy, activations) on a spin-waiting team (team.rs), the
//! rest with rayon; f32 GEMMs through our engine (sgemm/) on x86-64 CPUs with AVX-512 or
//! AVX2 + FMA, matrixmultiply elsewhere and for f64. Each op lives in
//! its own file as plain functions over slices; this file only maps the `Backend` trait onto
//! them. Buffers come from `M` (memory.rs): plain `Vec`s (`CpuBackend::<T>::new()`), or a
//! pool owned by the backend (`CpuBackend::<T, Pooled>::pooled()`, what training uses).

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
pub mod math;
pub mod memory;
pub mod rmsnorm;
pub mod rope;
pub mod sgemm;
pub mod simd;
pub mod team;
pub mod vocab_ce;
pub mod workspace;

pub use float::CpuFloat;
pub use memory::{HostMemory, Plain, PoolStats, Pooled};

use crate::backend::*;
use crate::Result;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};

/// The CPU backend with element type T for activations and accumulators alike, its buffers
/// from memory `M`.
#[derive(Default, Clone, Copy)]
pub struct CpuBackend<T: CpuFloat, M: HostMemory = Plain> {
    mem: M,
    _t: PhantomData<T>,
}

impl<T: CpuFloat> CpuBackend<T> {
    /// Buffers are plain `Vec<T>`.
    pub fn new() -> Self {
        CpuBackend {
            mem: Plain,
            _t: PhantomData,
        }
    }
}

impl<T: CpuFloat> CpuBackend<T, Pooled> {
    /// Buffers come from a pool this backend (and its clones) own.
    pub fn pooled() -> Self {
        CpuBackend {
            mem: Pooled::default(),
            _t: PhantomData,
        }
    }
    /// The pool's counters so far.
    pub fn pool_stats(&self) -> PoolStats {
        self.mem.stats()
    }
}

fn r<'a, E, B: Deref<Target = [E]>>(s: Src<'a, B>) -> &'a [E] {
    &s.buf[s.start..s.start + s.len]
}
fn w<'a, E, B: DerefMut<Target = [E]>>(d: Dst<'a, B>) -> &'a mut [E] {
    &mut d.buf[d.start..d.start + d.len]
}
impl<T: CpuFloat, M: HostMemory> CpuBackend<T, M> {
    /// A buffer of `len` elements written by `pack` (empty, and `pack` not called, when len is
    /// 0: the GEMM has no prepared form here).
    fn packed(&self, len: usize, pack: impl FnOnce(&mut [T])) -> M::Buf<T> {
        let mut out = self.mem.empty(len);
        if len > 0 {
            pack(&mut out);
        }
        out
    }
}

/// The weight and (optional) bias gradient regions as two disjoint slices.
fn split_grads<E, B: DerefMut<Target = [E]>>(
    g: WeightGrads<'_, B>,
) -> (&mut [E], Option<&mut [E]>) {
    let (ws, wl) = g.w;
    let all = &mut g.buf[..];
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

/// host cast to T, in a buffer from `mem`.
fn upload<T: CpuFloat, M: HostMemory>(mem: &M, host: &[f32]) -> M::Buf<T> {
    let mut b = mem.empty::<T>(host.len());
    b.iter_mut()
        .zip(host)
        .for_each(|(d, &x)| *d = T::from_f64c(x as f64));
    b
}
fn cast_out<T: CpuFloat>(s: &[T]) -> Vec<f32> {
    s.iter().map(|&x| x.to_f64c() as f32).collect()
}

impl<T: CpuFloat, M: HostMemory> Backend for CpuBackend<T, M> {
    type Act = M::Buf<T>;
    type Acc = M::Buf<T>;
    type Idx = M::Buf<i32>;
    const LOGITS_CHUNK_ROW_MULTIPLE: usize = sgemm::PANEL_ROWS;

    fn name(&self) -> String {
        format!("cpu-{}", T::NAME)
    }
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }

    fn zeros_act(&self, n: usize) -> Result<Self::Act> {
        Ok(self.mem.zeros(n))
    }
    fn zeros_acc(&self, n: usize) -> Result<Self::Acc> {
        Ok(self.mem.zeros(n))
    }
    fn empty_act(&self, n: usize) -> Result<Self::Act> {
        Ok(self.mem.empty(n))
    }
    fn empty_acc(&self, n: usize) -> Result<Self::Acc> {
        Ok(self.mem.empty(n))
    }
    fn upload_act(&self, host: &[f32]) -> Result<Self::Act> {
        Ok(upload(&self.mem, host))
    }
    fn upload_acc(&self, host: &[f32]) -> Result<Self::Acc> {
        Ok(upload(&self.mem, host))
    }
    fn upload_idx(&self, host: &[i32]) -> Result<Self::Idx> {
        let mut b = self.mem.empty::<i32>(host.len());
        b.copy_from_slice(host);
        Ok(b)
    }
    fn download_act(&self, src: Src<'_, Self::Act>) -> Result<Vec<f32>> {
        Ok(cast_out(r(src)))
    }
    fn download_acc(&self, src: Src<'_, Self::Act>) -> Result<Vec<f32>> {
        Ok(cast_out(r(src)))
    }
    fn fill_zero_act(&self, dst: Dst<'_, Self::Act>) -> Result<()> {
        team::fill(w(dst), T::zero());
        Ok(())
    }
    fn fill_zero_acc(&self, dst: Dst<'_, Self::Act>) -> Result<()> {
        team::fill(w(dst), T::zero());
        Ok(())
    }
    fn release_zero_acc(&self, dst: Dst<'_, Self::Act>) -> Result<()> {
        memory::release_zero(w(dst), T::zero());
        Ok(())
    }
    fn copy_acc(&self, src: Src<'_, Self::Act>, dst: Dst<'_, Self::Act>) -> Result<()> {
        w(dst).copy_from_slice(r(src));
        Ok(())
    }
    fn acc_to_act(&self, src: Src<'_, Self::Act>, dst: Dst<'_, Self::Act>) -> Result<()> {
        w(dst).copy_from_slice(r(src));
        Ok(())
    }
    fn acc_as_act(acc: &[Self::Acc]) -> Option<&[Self::Act]> {
        Some(acc)
    }
    fn copy_columns(
        &self,
        src: Src<'_, Self::Act>,
        src_cols: usize,
        src_col0: usize,
        dst: Dst<'_, Self::Act>,
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
        ids: Src<'_, Self::Idx>,
        table: Src<'_, Self::Act>,
        out: Dst<'_, Self::Act>,
        n: usize,
        d: usize,
    ) -> Result<()> {
        embedding::forward(r(ids), r(table), w(out), n, d);
        Ok(())
    }
    fn embedding_backward(
        &self,
        ids: Src<'_, Self::Idx>,
        dout: Src<'_, Self::Act>,
        dtable: Dst<'_, Self::Act>,
        n: usize,
        d: usize,
    ) -> Result<()> {
        embedding::backward(r(ids), r(dout), w(dtable), n, d);
        Ok(())
    }

    fn linear_forward(
        &self,
        x: Src<'_, Self::Act>,
        wt: Src<'_, Self::Act>,
        b: Option<Src<'_, Self::Act>>,
        y: Dst<'_, Self::Act>,
        dims: LinearDims,
    ) -> Result<()> {
        linear::forward(r(x), r(wt), b.map(r), w(y), dims);
        Ok(())
    }
    fn prepare_linear_weight(&self, wt: Src<'_, Self::Act>, dims: LinearDims) -> Result<Self::Act> {
        let len = linear::prepared_len::<T>(dims);
        Ok(self.packed(len, |out| linear::prepare_weight(r(wt), dims, out)))
    }
    fn linear_forward_prepared(
        &self,
        x: Src<'_, Self::Act>,
        wt: Src<'_, Self::Act>,
        prepared: Src<'_, Self::Act>,
        b: Option<Src<'_, Self::Act>>,
        y: Dst<'_, Self::Act>,
        dims: LinearDims,
    ) -> Result<()> {
        if prepared.len == 0 {
            linear::forward(r(x), r(wt), b.map(r), w(y), dims);
        } else {
            linear::forward_prepared(r(x), r(prepared), b.map(r), w(y), dims);
        }
        Ok(())
    }
    fn linear_backward(
        &self,
        x: Src<'_, Self::Act>,
        wt: Src<'_, Self::Act>,
        dy: Src<'_, Self::Act>,
        dx: Option<Dst<'_, Self::Act>>,
        grads: WeightGrads<'_, Self::Acc>,
        dims: LinearDims,
    ) -> Result<()> {
        let (dw, db) = split_grads(grads);
        linear::backward(r(x), r(wt), r(dy), dx.map(w), dw, db, dims);
        Ok(())
    }
    fn prepare_linear_weight_dx(
        &self,
        wt: Src<'_, Self::Act>,
        dims: LinearDims,
    ) -> Result<Self::Act> {
        let len = linear::prepared_dx_len::<T>(dims);
        Ok(self.packed(len, |out| linear::prepare_weight_dx(r(wt), dims, out)))
    }
    fn linear_backward_prepared(
        &self,
        x: Src<'_, Self::Act>,
        wt: Src<'_, Self::Act>,
        prepared_dx: Src<'_, Self::Act>,
        dy: Src<'_, Self::Act>,
        dx: Option<Dst<'_, Self::Act>>,
        grads: WeightGrads<'_, Self::Acc>,
        dims: LinearDims,
    ) -> Result<()> {
        let (dw, db) = split_grads(grads);
        let prepared = (prepared_dx.len > 0).then(|| r(prepared_dx));
        linear::backward_prepared(r(x), r(wt), prepared, r(dy), dx.map(w), dw, db, dims);
        Ok(())
    }

    fn rmsnorm_forward(
        &self,
        x: Src<'_, Self::Act>,
        wt: Src<'_, Self::Act>,
        y: Dst<'_, Self::Act>,
        rstd: Dst<'_, Self::Act>,
        n: usize,
        d: usize,
        eps: f64,
        w_offset: f64,
    ) -> Result<()> {
        rmsnorm::forward(
            r(x),
            r(wt),
            w(y),
            w(rstd),
            n,
            d,
            rmsnorm::Params { eps, w_offset },
        );
        Ok(())
    }
    fn rmsnorm_backward(
        &self,
        x: Src<'_, Self::Act>,
        wt: Src<'_, Self::Act>,
        rstd: Src<'_, Self::Act>,
        dy: Src<'_, Self::Act>,
        dx: Dst<'_, Self::Act>,
        dw: Dst<'_, Self::Act>,
        n: usize,
        d: usize,
        w_offset: f64,
    ) -> Result<()> {
        rmsnorm::backward(r(x), r(wt), r(rstd), r(dy), w(dx), w(dw), n, d, w_offset);
        Ok(())
    }
    fn layernorm_forward(
        &self,
        x: Src<'_, Self::Act>,
        wt: Src<'_, Self::Act>,
        b: Src<'_, Self::Act>,
        y: Dst<'_, Self::Act>,
        mean: Dst<'_, Self::Act>,
        rstd: Dst<'_, Self::Act>,
        n: usize,
        d: usize,
        eps: f64,
    ) -> Result<()> {
        layernorm::forward(r(x), r(wt), r(b), w(y), w(mean), w(rstd), n, d, eps);
        Ok(())
    }
    fn layernorm_backward(
        &self,
        x: Src<'_, Self::Act>,
        wt: Src<'_, Self::Act>,
        mean: Src<'_, Self::Act>,
        rstd: Src<'_, Self::Act>,
        dy: Src<'_, Self::Act>,
        dx: Dst<'_, Self::Act>,
        grads: WeightGrads<'_, Self::Acc>,
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
        h: Dst<'_, Self::Act>,
        y: Src<'_, Self::Act>,
        wt: Src<'_, Self::Act>,
        out: Dst<'_, Self::Act>,
        rstd: Dst<'_, Self::Act>,
        n: usize,
        d: usize,
        eps: f64,
        w_offset: f64,
    ) -> Result<()> {
        let norm = rmsnorm::Params { eps, w_offset };
        rmsnorm::residual_forward(w(h), r(y), r(wt), w(out), w(rstd), n, d, norm);
        Ok(())
    }
    fn residual_layernorm_forward(
        &self,
        h: Dst<'_, Self::Act>,
        y: Src<'_, Self::Act>,
        wt: Src<'_, Self::Act>,
        b: Src<'_, Self::Act>,
        out: Dst<'_, Self::Act>,
        mean: Dst<'_, Self::Act>,
        rstd: Dst<'_, Self::Act>,
        n: usize,
        d: usize,
        eps: f64,
    ) -> Result<()> {
        layernorm::residual_forward(w(h), r(y), r(wt), r(b), w(out), w(mean), w(rstd), n, d, eps);
        Ok(())
    }

    fn rope_forward(
        &self,
        x: Dst<'_, Self::Act>,
        pos: Src<'_, Self::Idx>,
        n: usize,
        heads: usize,
        head_dim: usize,
        inv_freq: &[f64],
        scale: f64,
    ) -> Result<()> {
        rope::forward(w(x), r(pos), n, heads, head_dim, inv_freq, scale);
        Ok(())
    }
    fn rope_backward(
        &self,
        dx: Dst<'_, Self::Act>,
        pos: Src<'_, Self::Idx>,
        n: usize,
        heads: usize,
        head_dim: usize,
        inv_freq: &[f64],
        scale: f64,
    ) -> Result<()> {
        rope::backward(w(dx), r(pos), n, heads, head_dim, inv_freq, scale);
        Ok(())
    }

    fn attention_forward(
        &self,
        q: Src<'_, Self::Act>,
        k: Src<'_, Self::Act>,
        v: Src<'_, Self::Act>,
        o: Dst<'_, Self::Act>,
        lse: Dst<'_, Self::Act>,
        cu_seqlens: Src<'_, Self::Idx>,
        dims: &AttnDims,
    ) -> Result<()> {
        attention::forward(r(q), r(k), r(v), w(o), w(lse), r(cu_seqlens), dims);
        Ok(())
    }
    fn attention_backward(
        &self,
        q: Src<'_, Self::Act>,
        k: Src<'_, Self::Act>,
        v: Src<'_, Self::Act>,
        o: Src<'_, Self::Act>,
        dout: Src<'_, Self::Act>,
        lse: Src<'_, Self::Act>,
        dq: Dst<'_, Self::Act>,
        dk: Dst<'_, Self::Act>,
        dv: Dst<'_, Self::Act>,
        cu_seqlens: Src<'_, Self::Idx>,
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

    fn glu_forward(
        &self,
        kind: Glu,
        gate: Src<'_, Self::Act>,
        up: Src<'_, Self::Act>,
        out: Dst<'_, Self::Act>,
    ) -> Result<()> {
        activation::glu_forward(kind, r(gate), r(up), w(out));
        Ok(())
    }
    fn glu_backward(
        &self,
        kind: Glu,
        gate: Src<'_, Self::Act>,
        up: Src<'_, Self::Act>,
        dout: Src<'_, Self::Act>,
        dgate: Dst<'_, Self::Act>,
        dup: Dst<'_, Self::Act>,
    ) -> Result<()> {
        activation::glu_backward(kind, r(gate), r(up), r(dout), w(dgate), w(dup));
        Ok(())
    }
    fn gelu_forward(&self, kind: Gelu, x: Src<'_, Self::Act>, y: Dst<'_, Self::Act>) -> Result<()> {
        activation::gelu_forward(kind, r(x), w(y));
        Ok(())
    }
    fn gelu_backward(
        &self,
        kind: Gelu,
        x: Src<'_, Self::Act>,
        dy: Src<'_, Self::Act>,
        dx: Dst<'_, Self::Act>,
    ) -> Result<()> {
        activation::gelu_backward(kind, r(x), r(dy), w(dx));
        Ok(())
    }
    fn add_inplace(&self, x: Dst<'_, Self::Act>, y: Src<'_, Self::Act>) -> Result<()> {
        elementwise::add(w(x), r(y));
        Ok(())
    }
    fn scale_inplace(&self, x: Dst<'_, Self::Act>, s: f64) -> Result<()> {
        elementwise::scale(w(x), s);
        Ok(())
    }
    fn softcap_inplace(&self, x: Dst<'_, Self::Act>, c: f64) -> Result<()> {
        elementwise::softcap(w(x), c);
        Ok(())
    }
    fn softcap_backward(
        &self,
        dy: Dst<'_, Self::Act>,
        y: Src<'_, Self::Act>,
        c: f64,
    ) -> Result<()> {
        elementwise::softcap_backward(w(dy), r(y), c);
        Ok(())
    }

    fn cross_entropy(
        &self,
        logits: Src<'_, Self::Act>,
        targets: Src<'_, Self::Idx>,
        losses: Dst<'_, Self::Act>,
        dlogits: Option<Dst<'_, Self::Act>>,
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
        logits: Src<'_, Self::Act>,
        targets: Src<'_, Self::Idx>,
        stats: Dst<'_, Self::Act>,
        d: VocabSlice,
    ) -> Result<()> {
        vocab_ce::stats(r(logits), r(targets), w(stats), d.n, d.v, d.valid, d.start);
        Ok(())
    }

    fn cross_entropy_finish(
        &self,
        logits: Src<'_, Self::Act>,
        targets: Src<'_, Self::Idx>,
        all: Src<'_, Self::Act>,
        parts: usize,
        losses: Dst<'_, Self::Act>,
        dlogits: Option<Dst<'_, Self::Act>>,
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

    fn cross_entropy_in_place(
        &self,
        logits: Dst<'_, Self::Act>,
        targets: Src<'_, Self::Idx>,
        losses: Dst<'_, Self::Act>,
        n: usize,
        v: usize,
        grad_scale: Option<f64>,
    ) -> Result<()> {
        cross_entropy::in_place(w(logits), r(targets), w(losses), n, v, grad_scale);
        Ok(())
    }

    fn sum(&self, x: Src<'_, Self::Act>) -> Result<f64> {
        Ok(elementwise::sum(r(x)))
    }
    fn sum_squares(&self, x: Src<'_, Self::Act>) -> Result<f64> {
        Ok(elementwise::sum_squares(r(x)))
    }
    fn scale_acc(&self, x: Dst<'_, Self::Act>, s: f64) -> Result<()> {
        elementwise::scale(w(x), s);
        Ok(())
    }
    fn add_acc(&self, x: Dst<'_, Self::Act>, y: Src<'_, Self::Act>) -> Result<()> {
        elementwise::add(w(x), r(y));
        Ok(())
    }
    fn adamw_multi_step(
        &self,
        groups: Vec<AdamWGroup<'_, Self::Acc>>,
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
