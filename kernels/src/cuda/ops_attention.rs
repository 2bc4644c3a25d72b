//! Attention on the GPU, behind `Backend::attention_forward/backward`:
//! - `CudaBackend<bf16>` runs FlashAttention-2 (kernels/src/cuda/flash_attn, kernels/cuda/
//!   flash_attn.cu) whenever the call qualifies: head_dim 64 or 128, compute capability >= 8.0,
//!   every bf16 region starting 16-byte aligned (start a multiple of 8 elements; allocations
//!   are 256-byte aligned), 0 < max_seqlen <= tokens, segments and heads <= 65535.
//! - Everything else (f32, other head dims, unaligned regions, older GPUs, or
//!   `set_flash_attention(false)`) runs the fallback kernels of kernels/cuda/attention.cu:
//!   exact fp32 math, any length, GQA, packed segments, causal or not, sliding window,
//!   head_dim <= 256.
//!
//! Both take the score softcap (`AttnDims::softcap`, Gemma 2): FlashAttention through its
//! `*_softcap` kernels (a separate module, compiled on first use, so uncapped attention runs
//! exactly the kernels it ran before), the fallback through `AttnShape::softcap` (0 = none).
//! A cap that is not a positive finite number is `Error::Unsupported`, never ignored.
//!
//! Both satisfy the same contract (backend.rs `AttnDims`): lse [H, N] is the NATURAL-log
//! logsumexp of the scaled (and, with a softcap, capped) scores. flash_attn.cu works in base 2
//! inside (scores scaled by scale·log2 e; capped scores c·tanh(s / c) times log2 e) and converts
//! on the way out, lse = (m₂ + log₂ l)·ln 2, and back on the way in (lse·log2 e), so an lse from
//! either forward feeds either backward. Both backwards OVERWRITE
//! dq, dk, dv (FlashAttention parks rowsum(dout ∘ o) in dq between its passes).
//! FlashAttention relies on `max_seqlen` >= the longest segment (its grid is sized by it; it
//! cannot read cu_seqlens without a sync); the model passes the batch's true longest segment.
//!
//! Fallback: forward attn_fwd; backward attn_bwd_delta (delta = rowsum(dout ∘ o), scratch [H, N]
//! fp32), attn_bwd_dq, attn_bwd_dkdv. Grids: (ceil(N / 4), H) with 4 warps a block (warp per
//! query token and head); dkdv uses (ceil(N / 4), Hkv). Shared memory 4 warps x 2 x Dh floats.

use super::backend::{CudaBackend, KArg::*};
use super::buffer::{check_len, Bound};
use super::dtype::CudaAct;
use super::flash_attn::FlashAttention;
use crate::backend::{AttnDims, Dst, Src};
use crate::{Error, Result};
use cudarc::driver::{CudaSlice, CudaView, CudaViewMut, DeviceRepr, LaunchConfig};
use half::bf16;
use std::any::TypeId;
use std::sync::atomic::Ordering;

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
    /// Sliding window (causal only), 0 = none.
    pub window: i32,
    /// Score softcap c (s -> c·tanh(s / c)), 0 = none.
    pub softcap: f32,
}
// SAFETY: plain-old-data with the C layout of the kernel's struct.
unsafe impl DeviceRepr for AttnShape {}

const WARPS: usize = 4;
const MAX_HEAD_DIM: usize = 256;

fn shape(d: &AttnDims) -> Result<AttnShape> {
    d.check_window()?;
    let softcap = softcap_arg(d)?;
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
        scale: d.scale as f32,
        window: window_arg(d),
        softcap,
    })
}

/// The softcap as the kernels take it: c as f32, 0 = none; `Unsupported` for a cap that is not
/// a positive finite number (in f32 too), which no kernel could apply.
pub(crate) fn softcap_arg(d: &AttnDims) -> Result<f32> {
    match d.softcap {
        None => Ok(0.0),
        Some(c) if (c as f32).is_finite() && c as f32 > 0.0 => Ok(c as f32),
        Some(c) => Err(Error::Unsupported(format!(
            "CUDA attention: softcap {c} (must be a positive finite number)"
        ))),
    }
}

/// The window as the kernels take it: 0 = none; a window of more than i32::MAX keys covers
/// every segment (tokens fit in i32), so it is passed as i32::MAX.
pub(crate) fn window_arg(d: &AttnDims) -> i32 {
    d.window.map_or(0, |w| w.min(i32::MAX as usize) as i32)
}

fn cfg(n: usize, heads: usize, smem_floats: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (n.div_ceil(WARPS) as u32, heads as u32, 1),
        block_dim: ((WARPS * 32) as u32, 1, 1),
        shared_mem_bytes: (WARPS * smem_floats * 4) as u32,
    }
}

/// bf16 elements per 16 bytes: FlashAttention's cp.async loads need region starts aligned to it.
const FA_ALIGN_ELEMS: usize = 8;

/// The region `[start, start + len)` as a bf16 view. Only called when A is bf16.
fn bf16_view<'a, A: CudaAct>(s: &Src<'a, CudaSlice<A>>, len: usize) -> CudaView<'a, bf16> {
    assert_eq!(TypeId::of::<A>(), TypeId::of::<bf16>());
    let v: CudaView<'a, A> = s.buf.slice(s.start..s.start + len);
    // SAFETY: A is bf16 (asserted above): the reinterpretation is the identity.
    unsafe { v.transmute::<bf16>(len) }.expect("same element size")
}

impl<A: CudaAct> CudaBackend<A> {
    /// Allows (default) or forbids FlashAttention for this backend's attention calls; when
    /// forbidden, every call runs the fallback kernels. For tests and A/B benchmarks.
    pub fn set_flash_attention(&self, enabled: bool) {
        self.flash_enabled.store(enabled, Ordering::Relaxed);
    }

    /// The backend's FlashAttention, created on first use; `None` where the device cannot run
    /// it (compute capability < 8.0).
    fn flash(&self) -> Result<Option<&FlashAttention>> {
        if let Some(f) = self.flash.get() {
            return Ok(f.as_ref());
        }
        let made = match FlashAttention::new(self.stream.clone()) {
            Ok(f) => Some(f),
            Err(Error::Unsupported(_)) => None,
            Err(e) => return Err(e),
        };
        // A concurrent first call may have set it meanwhile; either value is equivalent.
        let _ = self.flash.set(made);
        Ok(self.flash.get().and_then(|f| f.as_ref()))
    }

    /// Whether attention with `dims` over regions starting at element offsets `starts` runs
    /// through FlashAttention (see the top of this file). Compiles nothing.
    pub fn uses_flash_attention(&self, dims: &AttnDims, starts: &[usize]) -> Result<bool> {
        Ok(self.flash_for(dims, starts)?.is_some())
    }

    /// The FlashAttention to run `dims` with, or `None` for the fallback kernels.
    fn flash_for(&self, d: &AttnDims, starts: &[usize]) -> Result<Option<&FlashAttention>> {
        let qualifies = self.flash_enabled.load(Ordering::Relaxed)
            && TypeId::of::<A>() == TypeId::of::<bf16>()
            && (d.head_dim == 64 || d.head_dim == 128)
            && d.kv_heads > 0
            && d.heads.is_multiple_of(d.kv_heads)
            && d.heads <= 65535
            && (1..=65535).contains(&d.segments)
            && d.max_seqlen > 0
            && d.max_seqlen <= d.tokens
            && starts.iter().all(|s| s.is_multiple_of(FA_ALIGN_ELEMS));
        if !qualifies {
            return Ok(None);
        }
        self.flash()
    }

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

    /// Elements of q/o, of k/v, and of lse.
    fn attn_lens(d: &AttnDims) -> (usize, usize, usize) {
        (
            d.tokens * d.heads * d.head_dim,
            d.tokens * d.kv_heads * d.head_dim,
            d.heads * d.tokens,
        )
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
        if let Some(fa) = self.flash_for(d, &[q.start, k.start, v.start, o.start])? {
            let (nq, nkv, nl) = Self::attn_lens(d);
            let (qv, kv, vv) = (bf16_view(&q, nq), bf16_view(&k, nkv), bf16_view(&v, nkv));
            let cuv = cu.buf.slice(cu.start..cu.start + d.segments + 1);
            let mut o_a: CudaViewMut<'_, A> = o.buf.slice_mut(o.start..o.start + nq);
            // SAFETY: flash_for only returns Some when A is bf16: the identity reinterpretation.
            let mut o_v = unsafe { o_a.transmute_mut::<bf16>(nq) }.expect("same element size");
            let mut lse_v = lse.buf.slice_mut(lse.start..lse.start + nl);
            // FlashAttention checks everything before it launches: Unsupported means nothing ran.
            let timed = self.profiler.time(
                &self.stream,
                || "flash_attn fwd".to_string(),
                attn_flops(d),
                || fa.forward(&qv, &kv, &vv, &mut o_v, &mut lse_v, &cuv, d),
            );
            match timed {
                Err(Error::Unsupported(_)) => {}
                done => return done,
            }
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
        let starts = [
            q.start, k.start, v.start, o.start, dout.start, dq.start, dk.start, dv.start,
        ];
        if let Some(fa) = self.flash_for(d, &starts)? {
            let (nq, nkv, nl) = Self::attn_lens(d);
            let (qv, kv, vv) = (bf16_view(&q, nq), bf16_view(&k, nkv), bf16_view(&v, nkv));
            let (ov, dov) = (bf16_view(&o, nq), bf16_view(&dout, nq));
            let lse_v = lse.buf.slice(lse.start..lse.start + nl);
            let cuv = cu.buf.slice(cu.start..cu.start + d.segments + 1);
            let mut dq_a: CudaViewMut<'_, A> = dq.buf.slice_mut(dq.start..dq.start + nq);
            let mut dk_a: CudaViewMut<'_, A> = dk.buf.slice_mut(dk.start..dk.start + nkv);
            let mut dv_a: CudaViewMut<'_, A> = dv.buf.slice_mut(dv.start..dv.start + nkv);
            // SAFETY: flash_for only returns Some when A is bf16: the identity reinterpretation.
            let (mut dq_v, mut dk_v, mut dv_v) = unsafe {
                (
                    dq_a.transmute_mut::<bf16>(nq).expect("same element size"),
                    dk_a.transmute_mut::<bf16>(nkv).expect("same element size"),
                    dv_a.transmute_mut::<bf16>(nkv).expect("same element size"),
                )
            };
            // FlashAttention checks everything before it launches: Unsupported means nothing ran.
            let timed = self.profiler.time(
                &self.stream,
                || "flash_attn bwd".to_string(),
                2.5 * attn_flops(d),
                || {
                    fa.backward(
                        &qv, &kv, &vv, &ov, &dov, &lse_v, &mut dq_v, &mut dk_v, &mut dv_v, &cuv, d,
                    )
                },
            );
            match timed {
                Err(Error::Unsupported(_)) => {}
                done => return done,
            }
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

/// Forward FLOPs of attention for the profile (the FlashAttention papers' count: 4·Dh per
/// query-key pair, the backward 2.5 times that), as if the `segments` were of equal length;
/// causal halves the pairs and a window caps them.
fn attn_flops(d: &AttnDims) -> f64 {
    let len = d.tokens as f64 / d.segments.max(1) as f64;
    let keys = match (d.causal, d.window) {
        (false, _) => len,
        (true, Some(w)) if (w as f64) < len => w as f64,
        (true, _) => (len + 1.0) / 2.0,
    };
    4.0 * d.head_dim as f64 * d.heads as f64 * d.tokens as f64 * keys
}
