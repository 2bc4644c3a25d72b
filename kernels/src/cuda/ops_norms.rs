//! RMSNorm / LayerNorm launches (math in kernels/cuda/norms.cu), the residual add fused with
//! either norm's forward, and the linear-bias column sum.
//! Row kernels: grid N, one block per row. Column kernels: grid (ceil(D / 256), chunks), each
//! thread sums one column over ~64 rows and atomically adds into the fp32 gradient.
//! The fused residual kernels use the same row config as the plain norms, so their reductions
//! run in the same order and give the same bits as add_inplace + norm.

use super::backend::{CudaBackend, KArg, KArg::*, BLOCK};
use super::buffer::{check_len, Bound, RawRegion};
use super::dtype::CudaAct;
use crate::backend::{Dst, Src};
use crate::Result;
use cudarc::driver::{CudaSlice, LaunchConfig};

type ASrc<'a, A> = Src<'a, CudaSlice<A>>;
type ADst<'a, A> = Dst<'a, CudaSlice<A>>;
type FSrc<'a> = Src<'a, CudaSlice<f32>>;
type FDst<'a> = Dst<'a, CudaSlice<f32>>;

const ROWS_PER_CHUNK: usize = 64;

fn rows_cfg(n: usize, d: usize) -> LaunchConfig {
    let threads = d.next_multiple_of(32).clamp(32, 1024) as u32;
    LaunchConfig {
        grid_dim: (n as u32, 1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Config and rows-per-chunk argument of a column-reduction kernel over [n, d].
fn cols_cfg(n: usize, d: usize) -> (LaunchConfig, KArg) {
    let chunks = n.div_ceil(ROWS_PER_CHUNK).clamp(1, 65535);
    let rpc = n.div_ceil(chunks);
    let cfg = LaunchConfig {
        grid_dim: (d.div_ceil(BLOCK as usize) as u32, chunks as u32, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    };
    (cfg, I64(rpc as i64))
}

/// The input of a norm forward: x, or the residual stream h, updated first by h += y.
pub(crate) enum NormInput<'a, A> {
    Plain(ASrc<'a, A>),
    Residual { h: ADst<'a, A>, y: ASrc<'a, A> },
}

impl<'a, A> NormInput<'a, A> {
    fn op_name(&self, norm: &str) -> String {
        match self {
            NormInput::Plain(_) => norm.to_string(),
            NormInput::Residual { .. } => format!("residual_{norm}"),
        }
    }
    fn check_len(&self, op: &str, want: usize) -> Result<()> {
        match self {
            NormInput::Plain(x) => check_len(&format!("{op} x"), x.len, want),
            NormInput::Residual { h, y } => {
                check_len(&format!("{op} h"), h.len, want)?;
                check_len(&format!("{op} y"), y.len, want)
            }
        }
    }
    /// The kernel (`plain`, or `residual_` + `plain`) and its leading arguments.
    fn bind<'b>(&'b mut self, bind: &mut Bound<'b>, plain: &str) -> (String, Vec<KArg>)
    where
        'a: 'b,
    {
        match self {
            NormInput::Plain(x) => (plain.to_string(), vec![P(bind.r(x))]),
            NormInput::Residual { h, y } => (
                format!("residual_{plain}"),
                vec![P(bind.w(h)), P(bind.r(y))],
            ),
        }
    }
}

impl<A: CudaAct> CudaBackend<A> {
    /// y = rmsnorm(x), or with a residual input h += y_res first and x = the updated h (see
    /// `Backend::residual_rmsnorm_forward`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn rms_fwd(
        &self,
        mut x: NormInput<'_, A>,
        w: ASrc<'_, A>,
        mut y: ADst<'_, A>,
        mut rstd: FDst<'_>,
        n: usize,
        d: usize,
        (eps, w_offset): (f64, f64),
    ) -> Result<()> {
        let op = x.op_name("rmsnorm");
        x.check_len(&op, n * d)?;
        for (what, have, want) in [("w", w.len, d), ("y", y.len, n * d), ("rstd", rstd.len, n)] {
            check_len(&format!("{op} {what}"), have, want)?;
        }
        if n * d == 0 {
            return Ok(());
        }
        let mut bind = Bound::new(&self.stream);
        let (kernel, mut args) = x.bind(&mut bind, "rmsnorm_fwd");
        args.extend([
            P(bind.r(&w)),
            P(bind.w(&mut y)),
            P(bind.w(&mut rstd)),
            I32(d as i32),
            F32(eps as f32),
            F32(w_offset as f32),
        ]);
        self.launch("norms", &Self::kname(&kernel), rows_cfg(n, d), &args)
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn rms_bwd(
        &self,
        x: ASrc<'_, A>,
        w: ASrc<'_, A>,
        rstd: FSrc<'_>,
        dy: ASrc<'_, A>,
        mut dx: ADst<'_, A>,
        mut dw: FDst<'_>,
        n: usize,
        d: usize,
        w_offset: f64,
    ) -> Result<()> {
        for (what, have, want) in [
            ("x", x.len, n * d),
            ("w", w.len, d),
            ("rstd", rstd.len, n),
            ("dy", dy.len, n * d),
            ("dx", dx.len, n * d),
            ("dw", dw.len, d),
        ] {
            check_len(&format!("rmsnorm_backward {what}"), have, want)?;
        }
        if n * d == 0 {
            return Ok(());
        }
        let mut bind = Bound::new(&self.stream);
        let (px, pr, pdy) = (bind.r(&x), bind.r(&rstd), bind.r(&dy));
        let args = [
            P(px),
            P(bind.r(&w)),
            P(pr),
            P(pdy),
            P(bind.w(&mut dx)),
            I32(d as i32),
            F32(w_offset as f32),
        ];
        self.launch(
            "norms",
            &Self::kname("rmsnorm_bwd_dx"),
            rows_cfg(n, d),
            &args,
        )?;
        let (cfg, rpc) = cols_cfg(n, d);
        let args = [
            P(px),
            P(pr),
            P(pdy),
            P(bind.w(&mut dw)),
            I64(n as i64),
            I32(d as i32),
            rpc,
        ];
        self.launch("norms", &Self::kname("rmsnorm_bwd_dw"), cfg, &args)
    }

    /// y = layernorm(x), or with a residual input h += y_res first and x = the updated h (see
    /// `Backend::residual_layernorm_forward`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn ln_fwd(
        &self,
        mut x: NormInput<'_, A>,
        w: ASrc<'_, A>,
        b: ASrc<'_, A>,
        mut y: ADst<'_, A>,
        mut mean: FDst<'_>,
        mut rstd: FDst<'_>,
        n: usize,
        d: usize,
        eps: f64,
    ) -> Result<()> {
        let op = x.op_name("layernorm");
        x.check_len(&op, n * d)?;
        for (what, have, want) in [
            ("w", w.len, d),
            ("b", b.len, d),
            ("y", y.len, n * d),
            ("mean", mean.len, n),
            ("rstd", rstd.len, n),
        ] {
            check_len(&format!("{op} {what}"), have, want)?;
        }
        if n * d == 0 {
            return Ok(());
        }
        let mut bind = Bound::new(&self.stream);
        let (kernel, mut args) = x.bind(&mut bind, "layernorm_fwd");
        args.extend([
            P(bind.r(&w)),
            P(bind.r(&b)),
            P(bind.w(&mut y)),
            P(bind.w(&mut mean)),
            P(bind.w(&mut rstd)),
            I32(d as i32),
            F32(eps as f32),
        ]);
        self.launch("norms", &Self::kname(&kernel), rows_cfg(n, d), &args)
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn ln_bwd(
        &self,
        x: ASrc<'_, A>,
        w: ASrc<'_, A>,
        mean: FSrc<'_>,
        rstd: FSrc<'_>,
        dy: ASrc<'_, A>,
        mut dx: ADst<'_, A>,
        dw: RawRegion,
        db: RawRegion,
        n: usize,
        d: usize,
    ) -> Result<()> {
        for (what, have, want) in [
            ("x", x.len, n * d),
            ("w", w.len, d),
            ("mean", mean.len, n),
            ("rstd", rstd.len, n),
            ("dy", dy.len, n * d),
            ("dx", dx.len, n * d),
            ("dw", dw.len, d),
            ("db", db.len, d),
        ] {
            check_len(&format!("layernorm_backward {what}"), have, want)?;
        }
        if n * d == 0 {
            return Ok(());
        }
        let mut bind = Bound::new(&self.stream);
        let (px, pm, pr, pdy) = (bind.r(&x), bind.r(&mean), bind.r(&rstd), bind.r(&dy));
        let args = [
            P(px),
            P(bind.r(&w)),
            P(pm),
            P(pr),
            P(pdy),
            P(bind.w(&mut dx)),
            I32(d as i32),
        ];
        self.launch(
            "norms",
            &Self::kname("layernorm_bwd_dx"),
            rows_cfg(n, d),
            &args,
        )?;
        let (cfg, rpc) = cols_cfg(n, d);
        let args = [
            P(px),
            P(pm),
            P(pr),
            P(pdy),
            P(dw.ptr),
            P(db.ptr),
            I64(n as i64),
            I32(d as i32),
            rpc,
        ];
        self.launch("norms", &Self::kname("layernorm_bwd_dwdb"), cfg, &args)
    }

    /// db[c] += Σ_n dy[n, c] over dy [n, d].
    pub(crate) fn column_sum(
        &self,
        dy: ASrc<'_, A>,
        db: RawRegion,
        n: usize,
        d: usize,
    ) -> Result<()> {
        check_len("linear_backward dy", dy.len, n * d)?;
        check_len("linear_backward db", db.len, d)?;
        if n * d == 0 {
            return Ok(());
        }
        let (cfg, rpc) = cols_cfg(n, d);
        let mut bind = Bound::new(&self.stream);
        let args = [P(bind.r(&dy)), P(db.ptr), I64(n as i64), I32(d as i32), rpc];
        self.launch("norms", &Self::kname("column_sum"), cfg, &args)
    }
}
