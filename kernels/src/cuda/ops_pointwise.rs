//! Pointwise ops: residual add, fp32 add/scale, SwiGLU, tanh-GELU, embedding, RoPE.
//! Shapes and math: see kernels/cuda/{elementwise,activations,embedding,rope}.cu.

use super::backend::{grid_for, CudaBackend, KArg::*};
use super::buffer::{check_len, Bound};
use super::dtype::CudaAct;
use crate::backend::{Dst, Gelu, Glu, Src};
use crate::{Error, Result};
use cudarc::driver::CudaSlice;
use std::sync::Arc;

type ASrc<'a, A> = Src<'a, CudaSlice<A>>;
type ADst<'a, A> = Dst<'a, CudaSlice<A>>;

impl<A: CudaAct> CudaBackend<A> {
    pub(crate) fn add_act(&self, mut x: ADst<'_, A>, y: ASrc<'_, A>) -> Result<()> {
        let n = x.len;
        check_len("add_inplace y", y.len, n)?;
        if n == 0 {
            return Ok(());
        }
        let mut bind = Bound::new(&self.stream);
        let args = [P(bind.w(&mut x)), P(bind.r(&y)), I64(n as i64)];
        self.launch("elementwise", &Self::kname("add_act"), grid_for(n), &args)
    }

    pub(crate) fn scale_act(&self, mut x: ADst<'_, A>, s: f64) -> Result<()> {
        let n = x.len;
        if n == 0 {
            return Ok(());
        }
        let mut bind = Bound::new(&self.stream);
        let args = [P(bind.w(&mut x)), F64(s), I64(n as i64)];
        self.launch("elementwise", &Self::kname("scale_act"), grid_for(n), &args)
    }

    /// x ← c·tanh(x / c) (elementwise.cu's softcap_act).
    pub(crate) fn softcap_act(&self, mut x: ADst<'_, A>, c: f64) -> Result<()> {
        let n = x.len;
        if n == 0 {
            return Ok(());
        }
        let mut bind = Bound::new(&self.stream);
        let args = [P(bind.w(&mut x)), F32(c as f32), I64(n as i64)];
        self.launch(
            "elementwise",
            &Self::kname("softcap_act"),
            grid_for(n),
            &args,
        )
    }

    /// dy *= 1 − (y / c)² (elementwise.cu's softcap_bwd_act).
    pub(crate) fn softcap_bwd_act(
        &self,
        mut dy: ADst<'_, A>,
        y: ASrc<'_, A>,
        c: f64,
    ) -> Result<()> {
        let n = dy.len;
        check_len("softcap_backward y", y.len, n)?;
        if n == 0 {
            return Ok(());
        }
        let mut bind = Bound::new(&self.stream);
        let args = [
            P(bind.w(&mut dy)),
            P(bind.r(&y)),
            F32(c as f32),
            I64(n as i64),
        ];
        self.launch(
            "elementwise",
            &Self::kname("softcap_bwd_act"),
            grid_for(n),
            &args,
        )
    }

    pub(crate) fn add_f32(
        &self,
        mut x: Dst<'_, CudaSlice<f32>>,
        y: Src<'_, CudaSlice<f32>>,
    ) -> Result<()> {
        let n = x.len;
        check_len("add_acc y", y.len, n)?;
        if n == 0 {
            return Ok(());
        }
        let mut bind = Bound::new(&self.stream);
        let args = [P(bind.w(&mut x)), P(bind.r(&y)), I64(n as i64)];
        self.launch("elementwise", "add_acc", grid_for(n), &args)
    }

    pub(crate) fn scale_f32(&self, mut x: Dst<'_, CudaSlice<f32>>, s: f64) -> Result<()> {
        let n = x.len;
        if n == 0 {
            return Ok(());
        }
        let mut bind = Bound::new(&self.stream);
        let args = [P(bind.w(&mut x)), F64(s), I64(n as i64)];
        self.launch("elementwise", "scale_acc", grid_for(n), &args)
    }

    /// out = act(gate)·up (activations.cu's glu_fwd, `kind` as `glu_code`).
    pub(crate) fn glu_fwd(
        &self,
        kind: Glu,
        gate: ASrc<'_, A>,
        up: ASrc<'_, A>,
        mut out: ADst<'_, A>,
    ) -> Result<()> {
        let n = out.len;
        check_len("glu gate", gate.len, n)?;
        check_len("glu up", up.len, n)?;
        if n == 0 {
            return Ok(());
        }
        let mut bind = Bound::new(&self.stream);
        let args = [
            P(bind.r(&gate)),
            P(bind.r(&up)),
            P(bind.w(&mut out)),
            I64(n as i64),
            I32(glu_code(kind)),
        ];
        self.launch("activations", &Self::kname("glu_fwd"), grid_for(n), &args)
    }

    pub(crate) fn glu_bwd(
        &self,
        kind: Glu,
        gate: ASrc<'_, A>,
        up: ASrc<'_, A>,
        dout: ASrc<'_, A>,
        mut dgate: ADst<'_, A>,
        mut dup: ADst<'_, A>,
    ) -> Result<()> {
        let n = gate.len;
        for (what, len) in [
            ("up", up.len),
            ("dout", dout.len),
            ("dgate", dgate.len),
            ("dup", dup.len),
        ] {
            check_len(&format!("glu_backward {what}"), len, n)?;
        }
        if n == 0 {
            return Ok(());
        }
        let mut bind = Bound::new(&self.stream);
        let args = [
            P(bind.r(&gate)),
            P(bind.r(&up)),
            P(bind.r(&dout)),
            P(bind.w(&mut dgate)),
            P(bind.w(&mut dup)),
            I64(n as i64),
            I32(glu_code(kind)),
        ];
        self.launch("activations", &Self::kname("glu_bwd"), grid_for(n), &args)
    }

    /// The kernel of a GELU `kind` (activations.cu): `gelu` (tanh) or `gelu_erf`.
    fn gelu_kernel(kind: Gelu, pass: &str) -> String {
        let base = match kind {
            Gelu::Tanh => "gelu",
            Gelu::Erf => "gelu_erf",
        };
        Self::kname(&format!("{base}_{pass}"))
    }

    pub(crate) fn gelu_fwd(&self, kind: Gelu, x: ASrc<'_, A>, mut y: ADst<'_, A>) -> Result<()> {
        check_len("gelu y", y.len, x.len)?;
        if x.len == 0 {
            return Ok(());
        }
        let mut bind = Bound::new(&self.stream);
        let args = [P(bind.r(&x)), P(bind.w(&mut y)), I64(x.len as i64)];
        self.launch(
            "activations",
            &Self::gelu_kernel(kind, "fwd"),
            grid_for(x.len),
            &args,
        )
    }

    pub(crate) fn gelu_bwd(
        &self,
        kind: Gelu,
        x: ASrc<'_, A>,
        dy: ASrc<'_, A>,
        mut dx: ADst<'_, A>,
    ) -> Result<()> {
        check_len("gelu_backward dy", dy.len, x.len)?;
        check_len("gelu_backward dx", dx.len, x.len)?;
        if x.len == 0 {
            return Ok(());
        }
        let mut bind = Bound::new(&self.stream);
        let args = [
            P(bind.r(&x)),
            P(bind.r(&dy)),
            P(bind.w(&mut dx)),
            I64(x.len as i64),
        ];
        self.launch(
            "activations",
            &Self::gelu_kernel(kind, "bwd"),
            grid_for(x.len),
            &args,
        )
    }

    pub(crate) fn embed_fwd(
        &self,
        ids: Src<'_, CudaSlice<i32>>,
        table: ASrc<'_, A>,
        mut out: ADst<'_, A>,
        n: usize,
        d: usize,
    ) -> Result<()> {
        check_len("embedding ids", ids.len, n)?;
        check_len("embedding out", out.len, n * d)?;
        if n * d == 0 {
            return Ok(());
        }
        let mut bind = Bound::new(&self.stream);
        let v = (table.len / d) as i64;
        let args = [
            P(bind.r(&ids)),
            P(bind.r(&table)),
            P(bind.w(&mut out)),
            I64(n as i64),
            I64(d as i64),
            I64(v),
        ];
        self.launch(
            "embedding",
            &Self::kname("embedding_fwd"),
            grid_for(n * d),
            &args,
        )
    }

    pub(crate) fn embed_bwd(
        &self,
        ids: Src<'_, CudaSlice<i32>>,
        dout: ASrc<'_, A>,
        mut dtable: Dst<'_, CudaSlice<f32>>,
        n: usize,
        d: usize,
    ) -> Result<()> {
        check_len("embedding_backward ids", ids.len, n)?;
        check_len("embedding_backward dout", dout.len, n * d)?;
        if n * d == 0 {
            return Ok(());
        }
        let mut bind = Bound::new(&self.stream);
        let v = (dtable.len / d) as i64;
        let args = [
            P(bind.r(&ids)),
            P(bind.r(&dout)),
            P(bind.w(&mut dtable)),
            I64(n as i64),
            I64(d as i64),
            I64(v),
        ];
        self.launch(
            "embedding",
            &Self::kname("embedding_bwd"),
            grid_for(n * d),
            &args,
        )
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn rope(
        &self,
        mut x: ADst<'_, A>,
        pos: Src<'_, CudaSlice<i32>>,
        n: usize,
        heads: usize,
        head_dim: usize,
        inv_freq: &[f64],
        scale: f64,
        sign: f32,
    ) -> Result<()> {
        check_len("rope x", x.len, n * heads * head_dim)?;
        check_len("rope pos", pos.len, n)?;
        let half = inv_freq.len();
        if half == 0 || 2 * half > head_dim {
            return Err(Error::Unsupported(format!(
                "rope: a frequency table of {} entries for head_dim {head_dim}",
                inv_freq.len()
            )));
        }
        let total = n * heads * half;
        if total == 0 {
            return Ok(());
        }
        let table = self.rope_table(inv_freq)?;
        let mut bind = Bound::new(&self.stream);
        let args = [
            P(bind.w(&mut x)),
            P(bind.r(&pos)),
            P(bind.r(&Src::all(&*table))),
            I64(n as i64),
            I32(heads as i32),
            I32(head_dim as i32),
            I32(half as i32),
            F64(scale),
            F32(sign),
        ];
        self.launch("rope", &Self::kname("rope"), grid_for(total), &args)
    }

    /// The device copy of a rotary frequency table: uploaded on first use, then kept for the
    /// backend's lifetime (a model has one table; its upload is ordered on the stream).
    fn rope_table(&self, inv_freq: &[f64]) -> Result<Arc<CudaSlice<f64>>> {
        let key: Vec<u64> = inv_freq.iter().map(|f| f.to_bits()).collect();
        let mut tables = self
            .rope_tables
            .lock()
            .map_err(|_| Error::Cuda("rope table cache poisoned".into()))?;
        if let Some((_, t)) = tables.iter().find(|(k, _)| *k == key) {
            return Ok(t.clone());
        }
        let t = Arc::new(self.upload(inv_freq)?);
        tables.push((key, t.clone()));
        Ok(t)
    }
}

/// The `kind` argument of activations.cu's glu kernels: 0 silu, 1 tanh GELU, 2 exact GELU.
fn glu_code(kind: Glu) -> i32 {
    match kind {
        Glu::Silu => 0,
        Glu::Gelu(Gelu::Tanh) => 1,
        Glu::Gelu(Gelu::Erf) => 2,
    }
}
