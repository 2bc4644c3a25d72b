//! Attention through the fallback kernels of kernels/cuda/attention.cu (exact fp32 math, any
//! length, GQA, packed segments, causal or not, head_dim <= 256). Forward: attn_fwd. Backward:
//! attn_bwd_delta (delta = rowsum(dout ∘ o), scratch [H, N] fp32), attn_bwd_dq, attn_bwd_dkdv.
//! Grids: (ceil(N / 4), H) with 4 warps a block (warp per query token and head); dkdv uses
//! (ceil(N / 4), Hkv). Shared memory 4 warps x 2 x Dh floats.

use super::backend::{CudaBackend, KArg::*};
use super::buffer::{check_len, Bound};
use super::dtype::CudaAct;
use crate::backend::{AttnDims, Dst, Src};
use crate::{Error, Result};
use cudarc::driver::{CudaSlice, DeviceRepr, LaunchConfig};

type ASrc<'a, A> = Src<'a, CudaSlice<A>>;
type ADst<'a, A> = Dst<'a, CudaSlice<A>>;

/// Mirrors `struct AttnShape` in attention.cu (passed by value).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct AttnShape {
    pub n: i32,
    pub heads: i32,
    pub kv_heads: i32,
    pub head_dim: i32,
    pub segments: i32,
    pub causal: i32,
    pub scale: f32,
}
// SAFETY: plain-old-data with the C layout of the kernel's struct.
unsafe impl DeviceRepr for AttnShape {}

const WARPS: usize = 4;
const MAX_HEAD_DIM: usize = 256;

fn shape(d: &AttnDims) -> Result<AttnShape> {
    if d.head_dim == 0 || d.head_dim > MAX_HEAD_DIM {
        return Err(Error::Unsupported(format!(
            "CUDA attention: head_dim {} outside 1..={MAX_HEAD_DIM}",
            d.head_dim
        )));
    }
    if d.kv_heads == 0 || !d.heads.is_multiple_of(d.kv_heads) || d.segments == 0 {
        return Err(Error::Unsupported(format!(
            "CUDA attention: heads {} not a multiple of kv_heads {}, or no segments ({})",
            d.heads, d.kv_heads, d.segments
        )));
    }
    Ok(AttnShape {
        n: d.tokens as i32,
        heads: d.heads as i32,
        kv_heads: d.kv_heads as i32,
        head_dim: d.head_dim as i32,
        segments: d.segments as i32,
        causal: d.causal as i32,
        scale: d.scale,
    })
}

fn cfg(n: usize, heads: usize, smem_floats: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (n.div_ceil(WARPS) as u32, heads as u32, 1),
        block_dim: ((WARPS * 32) as u32, 1, 1),
        shared_mem_bytes: (WARPS * smem_floats * 4) as u32,
    }
}

impl<A: CudaAct> CudaBackend<A> {
    #[allow(clippy::too_many_arguments)]
    fn check_attn(
        &self,
        q: usize,
        k: usize,
        v: usize,
        o: usize,
        lse: usize,
        cu: usize,
        d: &AttnDims,
    ) -> Result<AttnShape> {
        let sh = shape(d)?;
        let (nq, nkv) = (
            d.tokens * d.heads * d.head_dim,
            d.tokens * d.kv_heads * d.head_dim,
        );
        for (what, have, want) in [
            ("q", q, nq),
            ("k", k, nkv),
            ("v", v, nkv),
            ("o", o, nq),
            ("lse", lse, d.heads * d.tokens),
            ("cu_seqlens", cu, d.segments + 1),
        ] {
            check_len(&format!("attention {what}"), have, want)?;
        }
        Ok(sh)
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn attn_fwd(
        &self,
        q: ASrc<'_, A>,
        k: ASrc<'_, A>,
        v: ASrc<'_, A>,
        mut o: ADst<'_, A>,
        mut lse: Dst<'_, CudaSlice<f32>>,
        cu: Src<'_, CudaSlice<i32>>,
        d: &AttnDims,
    ) -> Result<()> {
        let sh = self.check_attn(q.len, k.len, v.len, o.len, lse.len, cu.len, d)?;
        if d.tokens == 0 || d.heads == 0 {
            return Ok(());
        }
        let mut bind = Bound::new(&self.stream);
        let args = [
            P(bind.r(&q)),
            P(bind.r(&k)),
            P(bind.r(&v)),
            P(bind.w(&mut o)),
            P(bind.w(&mut lse)),
            P(bind.r(&cu)),
            Attn(sh),
        ];
        self.launch(
            "attention",
            &Self::kname("attn_fwd"),
            cfg(d.tokens, d.heads, d.head_dim),
            &args,
        )
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn attn_bwd(
        &self,
        q: ASrc<'_, A>,
        k: ASrc<'_, A>,
        v: ASrc<'_, A>,
        o: ASrc<'_, A>,
        dout: ASrc<'_, A>,
        lse: Src<'_, CudaSlice<f32>>,
        mut dq: ADst<'_, A>,
        mut dk: ADst<'_, A>,
        mut dv: ADst<'_, A>,
        cu: Src<'_, CudaSlice<i32>>,
        d: &AttnDims,
    ) -> Result<()> {
        let sh = self.check_attn(q.len, k.len, v.len, o.len, lse.len, cu.len, d)?;
        check_len("attention dout", dout.len, o.len)?;
        check_len("attention dq", dq.len, q.len)?;
        check_len("attention dk", dk.len, k.len)?;
        check_len("attention dv", dv.len, v.len)?;
        if d.tokens == 0 || d.heads == 0 {
            return Ok(());
        }
        let mut delta = self.zeros::<f32>(d.heads * d.tokens)?;
        let mut delta_dst = Dst::all(&mut delta);
        let mut bind = Bound::new(&self.stream);
        let delta_p = bind.w(&mut delta_dst);
        let (pq, pk, pv, pdo, plse, pcu) = (
            bind.r(&q),
            bind.r(&k),
            bind.r(&v),
            bind.r(&dout),
            bind.r(&lse),
            bind.r(&cu),
        );
        let args = [P(bind.r(&o)), P(pdo), P(delta_p), Attn(sh)];
        self.launch(
            "attention",
            &Self::kname("attn_bwd_delta"),
            cfg(d.tokens, d.heads, 0),
            &args,
        )?;
        let args = [
            P(pq),
            P(pk),
            P(pv),
            P(pdo),
            P(plse),
            P(delta_p),
            P(bind.w(&mut dq)),
            P(pcu),
            Attn(sh),
        ];
        self.launch(
            "attention",
            &Self::kname("attn_bwd_dq"),
            cfg(d.tokens, d.heads, 2 * d.head_dim),
            &args,
        )?;
        let args = [
            P(pq),
            P(pk),
            P(pv),
            P(pdo),
            P(plse),
            P(delta_p),
            P(bind.w(&mut dk)),
            P(bind.w(&mut dv)),
            P(pcu),
            Attn(sh),
        ];
        self.launch(
            "attention",
            &Self::kname("attn_bwd_dkdv"),
            cfg(d.tokens, d.kv_heads, 2 * d.head_dim),
            &args,
        )?;
        // `bind` records the launches' events, then `delta` is freed (stream-ordered, after the
        // kernels queued above).
        Ok(())
    }
}
