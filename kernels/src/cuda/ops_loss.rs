//! Fused cross-entropy (kernels/cuda/cross_entropy.cu: one block per row, online logsumexp, no
//! fp32 logits buffer) and the fp64-accumulated reductions Σx, Σx² (kernels/cuda/reduce.cu: one
//! partial per block, summed on the host).

use super::backend::{cuda_err, CudaBackend, KArg::*, BLOCK};
use super::buffer::{check_len, Bound};
use super::dtype::CudaAct;
use crate::backend::{Dst, Src, VocabSlice};
use crate::{Error, Result};
use cudarc::driver::{CudaSlice, LaunchConfig};

const REDUCE_BLOCKS: usize = 1024;
const CE_THREADS: u32 = 512;

impl<A: CudaAct> CudaBackend<A> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn xent(
        &self,
        logits: Src<'_, CudaSlice<A>>,
        targets: Src<'_, CudaSlice<i32>>,
        mut losses: Dst<'_, CudaSlice<f32>>,
        mut dlogits: Option<Dst<'_, CudaSlice<A>>>,
        n: usize,
        v: usize,
        grad_scale: f64,
    ) -> Result<()> {
        Self::xent_lens(logits.len, targets.len, losses.len, n, v)?;
        if let Some(d) = &dlogits {
            check_len("cross_entropy dlogits", d.len, n * v)?;
        }
        if n == 0 || v == 0 {
            return self.fill_zero(losses);
        }
        let mut bind = Bound::new(&self.stream);
        let dl = dlogits.as_mut().map(|d| bind.w(d));
        let (x, t, l) = (bind.r(&logits), bind.r(&targets), bind.w(&mut losses));
        self.xent_launch([x, t, l], dl, n, v, grad_scale)
    }

    /// `xent` with dlogits written over the logits (the kernel reads a row whole, and the
    /// target's logit, before it writes any of it), or no gradient without a scale.
    pub(crate) fn xent_in_place(
        &self,
        mut logits: Dst<'_, CudaSlice<A>>,
        targets: Src<'_, CudaSlice<i32>>,
        mut losses: Dst<'_, CudaSlice<f32>>,
        n: usize,
        v: usize,
        grad_scale: Option<f64>,
    ) -> Result<()> {
        Self::xent_lens(logits.len, targets.len, losses.len, n, v)?;
        if n == 0 || v == 0 {
            return self.fill_zero(losses);
        }
        let mut bind = Bound::new(&self.stream);
        let x = bind.w(&mut logits);
        let (t, l) = (bind.r(&targets), bind.w(&mut losses));
        let dl = grad_scale.map(|_| x);
        self.xent_launch([x, t, l], dl, n, v, grad_scale.unwrap_or(0.0))
    }

    fn xent_lens(logits: usize, targets: usize, losses: usize, n: usize, v: usize) -> Result<()> {
        check_len("cross_entropy logits", logits, n * v)?;
        check_len("cross_entropy targets", targets, n)?;
        check_len("cross_entropy losses", losses, n)
    }

    /// The cross_entropy kernel on device addresses [logits, targets, losses] and, when a
    /// gradient is wanted, dlogits (which may be the logits).
    fn xent_launch(
        &self,
        [x, t, l]: [u64; 3],
        dlogits: Option<u64>,
        n: usize,
        v: usize,
        grad_scale: f64,
    ) -> Result<()> {
        let args = [
            P(x),
            P(t),
            P(l),
            P(dlogits.unwrap_or(0)),
            I32(dlogits.is_some() as i32),
            I64(v as i64),
            F32(grad_scale as f32),
        ];
        let k = Self::kname("cross_entropy");
        self.launch("cross_entropy", &k, Self::xent_cfg(n, v), &args)
    }

    /// One block per row, up to CE_THREADS threads.
    fn xent_cfg(n: usize, v: usize) -> LaunchConfig {
        let threads = (v.next_multiple_of(32) as u32).clamp(32, CE_THREADS);
        LaunchConfig {
            grid_dim: (n as u32, 1, 1),
            block_dim: (threads, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    /// Vocab-parallel cross-entropy, step 1 (kernels/cuda/cross_entropy.cu).
    pub(crate) fn xent_stats(
        &self,
        logits: Src<'_, CudaSlice<A>>,
        targets: Src<'_, CudaSlice<i32>>,
        mut stats: Dst<'_, CudaSlice<f32>>,
        d: VocabSlice,
    ) -> Result<()> {
        valid_columns("cross_entropy_stats", d)?;
        check_len("cross_entropy_stats logits", logits.len, d.n * d.v)?;
        check_len("cross_entropy_stats targets", targets.len, d.n)?;
        check_len("cross_entropy_stats stats", stats.len, 3 * d.n)?;
        if d.n == 0 {
            return Ok(());
        }
        let mut bind = Bound::new(&self.stream);
        let args = [
            P(bind.r(&logits)),
            P(bind.r(&targets)),
            P(bind.w(&mut stats)),
            I64(d.n as i64),
            I64(d.v as i64),
            I64(d.valid as i64),
            I64(d.start as i64),
        ];
        let k = Self::kname("cross_entropy_stats");
        self.launch("cross_entropy", &k, Self::row_blocks(d), &args)
    }

    /// Vocab-parallel cross-entropy, step 2 (kernels/cuda/cross_entropy.cu).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn xent_finish(
        &self,
        logits: Src<'_, CudaSlice<A>>,
        targets: Src<'_, CudaSlice<i32>>,
        all: Src<'_, CudaSlice<f32>>,
        parts: usize,
        mut losses: Dst<'_, CudaSlice<f32>>,
        mut dlogits: Option<Dst<'_, CudaSlice<A>>>,
        d: VocabSlice,
        grad_scale: f64,
    ) -> Result<()> {
        valid_columns("cross_entropy_finish", d)?;
        check_len("cross_entropy_finish logits", logits.len, d.n * d.v)?;
        check_len("cross_entropy_finish targets", targets.len, d.n)?;
        check_len("cross_entropy_finish stats", all.len, parts * 3 * d.n)?;
        check_len("cross_entropy_finish losses", losses.len, d.n)?;
        if let Some(dl) = &dlogits {
            check_len("cross_entropy_finish dlogits", dl.len, d.n * d.v)?;
        }
        if d.n == 0 {
            return Ok(());
        }
        let mut bind = Bound::new(&self.stream);
        let (dl, want) = match &mut dlogits {
            Some(x) => (bind.w(x), 1),
            None => (0, 0),
        };
        let args = [
            P(bind.r(&logits)),
            P(bind.r(&targets)),
            P(bind.r(&all)),
            I32(parts as i32),
            P(bind.w(&mut losses)),
            P(dl),
            I32(want),
            I64(d.n as i64),
            I64(d.v as i64),
            I64(d.valid as i64),
            I64(d.start as i64),
            F32(grad_scale as f32),
        ];
        let k = Self::kname("cross_entropy_finish");
        self.launch("cross_entropy", &k, Self::row_blocks(d), &args)
    }

    /// One block per row of `d`'s logits, threads for its columns.
    fn row_blocks(d: VocabSlice) -> LaunchConfig {
        LaunchConfig {
            grid_dim: (d.n as u32, 1, 1),
            block_dim: (
                (d.v.next_multiple_of(32) as u32).clamp(32, CE_THREADS),
                1,
                1,
            ),
            shared_mem_bytes: 0,
        }
    }

    /// Σ x (squares = false) or Σ x² over an fp32 region, in f64.
    pub(crate) fn reduce_f32(&self, x: Src<'_, CudaSlice<f32>>, squares: bool) -> Result<f64> {
        self.reduce_many_f32(&[x], squares)
    }

    /// Σ over the regions of Σ x (or x²): one partial-sum launch per region into one buffer of
    /// f64 partials, then one copy to the host and one wait.
    pub(crate) fn reduce_many_f32(
        &self,
        xs: &[Src<'_, CudaSlice<f32>>],
        squares: bool,
    ) -> Result<f64> {
        let blocks: Vec<usize> = xs
            .iter()
            .map(|x| x.len.div_ceil(BLOCK as usize).clamp(1, REDUCE_BLOCKS))
            .collect();
        let total: usize = xs
            .iter()
            .zip(&blocks)
            .filter(|(x, _)| x.len > 0)
            .map(|(_, &b)| b)
            .sum();
        if total == 0 {
            return Ok(0.0);
        }
        let mut partials = self.zeros::<f64>(total)?;
        let name = if squares {
            "sum_squares_partials"
        } else {
            "sum_partials"
        };
        let mut at = 0;
        for (x, &nb) in xs.iter().zip(&blocks).filter(|(x, _)| x.len > 0) {
            let mut pdst = Dst::range(&mut partials, at, nb);
            let mut bind = Bound::new(&self.stream);
            let pp = bind.w(&mut pdst);
            let cfg = LaunchConfig {
                grid_dim: (nb as u32, 1, 1),
                block_dim: (BLOCK, 1, 1),
                shared_mem_bytes: 0,
            };
            self.launch(
                "reduce",
                name,
                cfg,
                &[P(bind.r(x)), I64(x.len as i64), P(pp)],
            )?;
            at += nb;
        }
        let mut host = vec![0f64; total];
        self.stream
            .memcpy_dtoh(&partials, &mut host)
            .map_err(|e| cuda_err("device-to-host copy", e))?;
        self.stream
            .synchronize()
            .map_err(|e| cuda_err("synchronize", e))?;
        Ok(host.iter().sum())
    }
}

/// The kernels read `valid` columns of each `v`-wide row: more would read past the row.
fn valid_columns(op: &str, d: VocabSlice) -> Result<()> {
    if d.valid > d.v {
        return Err(Error::Cuda(format!(
            "{op}: {} valid columns of rows {} wide",
            d.valid, d.v
        )));
    }
    Ok(())
}
