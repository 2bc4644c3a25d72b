//! The compute contract: every op of a transformer as an explicit forward/backward pair.
//!
//! Shape legend (used in every op comment below and in kernels/src/cpu):
//!   N = tokens in the (flattened, possibly packed) batch, D = model width,
//!   H = query heads, Hkv = key/value heads (H % Hkv == 0), Dh = head dim,
//!   V = vocabulary, I/O = linear in/out features.
//!
//! Buffers. A backend owns three buffer kinds:
//!   `Act` compute precision: activations, activation gradients, the compute copy of weights
//!         (bf16 on CUDA in mixed precision; T on the CPU backend `CpuBackend<T>`);
//!   `Acc` accumulation precision: master weights, weight gradients, Adam moments, norm
//!         statistics, logsumexp, per-token losses (fp32 on CUDA; T on CPU);
//!   `Idx` i32: token ids, targets, positions, cumulative sequence offsets.
//! Ops address a buffer region through [`Src`] (read) and [`Dst`] (write): buffer, start, len.
//! A logical tensor inside a flat parameter unit is such a region.
//!
//! Gradient convention (as in llm.c): every `*_backward` ADDS into its gradient outputs
//! (dx, dw, db, dtable, ...). Callers zero a gradient buffer when it starts a new accumulation.
//! Exceptions are named on the op: `rope_*` rotate in place, `cross_entropy` overwrites dlogits,
//! `attention_backward` overwrites dq, dk, dv (attention is their only producer).

use crate::Result;

/// A device buffer: knows its length in elements.
pub trait Buffer: Send + Sync {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T: Send + Sync> Buffer for Vec<T> {
    fn len(&self) -> usize {
        Vec::len(self)
    }
}

/// A read-only region `[start, start + len)` of a buffer.
pub struct Src<'a, B> {
    pub buf: &'a B,
    pub start: usize,
    pub len: usize,
}

impl<B> Clone for Src<'_, B> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<B> Copy for Src<'_, B> {}

impl<'a, B: Buffer> Src<'a, B> {
    pub fn all(buf: &'a B) -> Self {
        Src {
            buf,
            start: 0,
            len: buf.len(),
        }
    }
    pub fn range(buf: &'a B, start: usize, len: usize) -> Self {
        assert!(
            start + len <= buf.len(),
            "Src range {start}+{len} outside buffer of {}",
            buf.len()
        );
        Src { buf, start, len }
    }
    /// A sub-region relative to this one.
    pub fn sub(self, start: usize, len: usize) -> Self {
        assert!(
            start + len <= self.len,
            "sub-range {start}+{len} outside region of {}",
            self.len
        );
        Src {
            buf: self.buf,
            start: self.start + start,
            len,
        }
    }
}

/// A writable region `[start, start + len)` of a buffer.
pub struct Dst<'a, B> {
    pub buf: &'a mut B,
    pub start: usize,
    pub len: usize,
}

impl<'a, B: Buffer> Dst<'a, B> {
    pub fn all(buf: &'a mut B) -> Self {
        let len = buf.len();
        Dst { buf, start: 0, len }
    }
    pub fn range(buf: &'a mut B, start: usize, len: usize) -> Self {
        assert!(
            start + len <= buf.len(),
            "Dst range {start}+{len} outside buffer of {}",
            buf.len()
        );
        Dst { buf, start, len }
    }
    /// Reborrow, so one `Dst` can be passed to several calls in turn.
    pub fn reborrow(&mut self) -> Dst<'_, B> {
        Dst {
            buf: self.buf,
            start: self.start,
            len: self.len,
        }
    }
    pub fn as_src(&self) -> Src<'_, B> {
        Src {
            buf: self.buf,
            start: self.start,
            len: self.len,
        }
    }
}

/// The gradient regions of a weight and its optional bias inside ONE accumulation buffer (a
/// unit's flat gradient), borrowed once: `w` and `b` are (start, len) and must not overlap.
/// Backends split the buffer into the two disjoint regions (CPU: `split_at_mut`; CUDA:
/// `CudaSlice::split_at_mut`).
pub struct WeightGrads<'a, B> {
    pub buf: &'a mut B,
    pub w: (usize, usize),
    pub b: Option<(usize, usize)>,
}

impl<'a, B: Buffer> WeightGrads<'a, B> {
    pub fn new(buf: &'a mut B, w: (usize, usize), b: Option<(usize, usize)>) -> Self {
        let end = |r: (usize, usize)| r.0 + r.1;
        assert!(
            end(w) <= buf.len(),
            "weight-grad region {w:?} outside buffer of {}",
            buf.len()
        );
        if let Some(b) = b {
            assert!(
                end(b) <= buf.len(),
                "bias-grad region {b:?} outside buffer of {}",
                buf.len()
            );
            assert!(
                end(w) <= b.0 || end(b) <= w.0,
                "weight-grad {w:?} and bias-grad {b:?} regions overlap"
            );
        }
        WeightGrads { buf, w, b }
    }
}

/// How a weight matrix is stored.
/// `OutIn`: [O, I], torch `nn.Linear` (Llama). `InOut`: [I, O], HF `Conv1D` (GPT-2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightLayout {
    OutIn,
    InOut,
}

/// Which GELU (PyTorch's `approximate` argument). `Tanh`: ½x(1 + tanh(√(2/π)(x + 0.044715x³))),
/// HF "gelu_new" / "gelu_pytorch_tanh" (GPT-2's default). `Erf`: the exact x·Φ(x) =
/// ½x(1 + erf(x/√2)), HF "gelu" (e.g. Cerebras-GPT).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Gelu {
    #[default]
    Tanh,
    Erf,
}

/// The activation of a gated MLP, out = act(gate) · up (HF `hidden_act` of the Llama family):
/// `Silu` (SwiGLU, Llama's "silu"), or a GELU (GeGLU: Gemma's "gelu_pytorch_tanh", or the exact
/// "gelu" of a Llama config).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Glu {
    #[default]
    Silu,
    Gelu(Gelu),
}

/// y[N, O] = x[N, I] · W^T (+ b[O]), W in `layout`.
#[derive(Clone, Copy, Debug)]
pub struct LinearDims {
    pub n: usize,
    pub inp: usize,
    pub out: usize,
    pub layout: WeightLayout,
}

/// Rows of logits over one rank's part of a vocabulary-parallel output layer: logits [n, v],
/// columns 0..valid are the vocabulary ids start..start + valid, columns valid..v padding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VocabSlice {
    pub n: usize,
    pub v: usize,
    pub valid: usize,
    pub start: usize,
}

/// Attention over a packed batch of `segments` independent sequences.
/// q, o: [N, H, Dh]; k, v: [N, Hkv, Dh]; lse: [H, N] (natural-log logsumexp of the scaled scores).
/// `cu_seqlens` [segments + 1]: segment s holds tokens cu[s]..cu[s+1]; a token attends only
/// inside its own segment, and (when `causal`) only to positions at or before its own.
/// Query head h reads key/value head h / (H / Hkv).
/// `max_seqlen` must be at least the longest segment (cu[s+1] − cu[s]) and cu[segments] = N:
/// the CPU backend asserts both; CUDA's FlashAttention sizes its grid from `max_seqlen` and
/// leaves rows of longer segments unwritten (it cannot read cu_seqlens without a sync).
/// `window` (sliding-window attention, causal only): query i sees key j only when
/// i − window < j ≤ i (local positions in the segment; transformers' `sliding_window`). A window
/// of at least the segment length is full causal attention. `None`: no window.
/// `softcap` (Gemma 2's attn_logit_softcapping c): the scaled scores pass through
/// s ← c · tanh(s / c) before the mask and the softmax; the backward multiplies dS by
/// 1 − (s / c)². `None`: the scores as they are.
#[derive(Clone, Copy, Debug)]
pub struct AttnDims {
    pub tokens: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub segments: usize,
    pub max_seqlen: usize,
    pub causal: bool,
    /// The softmax scale (1/√head_dim, or the model's own): f64, so the f64 backend computes
    /// with it unrounded; each backend rounds it once to its compute type.
    pub scale: f64,
    pub window: Option<usize>,
    pub softcap: Option<f64>,
}

impl AttnDims {
    /// The keys query `i` (local position) sees in a segment of `len`: `[lo, hi)`.
    pub fn key_range(&self, i: usize, len: usize) -> (usize, usize) {
        if !self.causal {
            return (0, len);
        }
        let lo = match self.window {
            Some(w) => (i + 1).saturating_sub(w),
            None => 0,
        };
        (lo, i + 1)
    }

    /// The queries that see key `j` (local position) in a segment of `len`: `[lo, hi)`.
    pub fn query_range(&self, j: usize, len: usize) -> (usize, usize) {
        if !self.causal {
            return (0, len);
        }
        let hi = match self.window {
            Some(w) => j.saturating_add(w).min(len),
            None => len,
        };
        (j, hi)
    }

    /// `Err` for a window the ops do not define: zero, or without causal masking.
    pub fn check_window(&self) -> Result<()> {
        match self.window {
            Some(0) => Err(crate::Error::Unsupported(
                "attention: a sliding window of 0 keys".into(),
            )),
            Some(_) if !self.causal => Err(crate::Error::Unsupported(
                "attention: a sliding window needs causal attention".into(),
            )),
            _ => Ok(()),
        }
    }
}

/// Rotary inverse frequencies of the default (unscaled) embedding: inv_freq[i] = theta^(−2i/Dh),
/// i < Dh/2. Scaled variants (llama3, linear) change this table only.
pub fn rope_inv_freq(theta: f64, head_dim: usize) -> Vec<f64> {
    (0..head_dim / 2)
        .map(|i| theta.powf(-((2 * i) as f64) / head_dim as f64))
        .collect()
}

/// Device time of one kernel (or matmul shape) summed over a profiled stretch
/// ([`Backend::take_profile`]): how often it ran, for how long, and the floating-point
/// operations counted for it (0 where none are counted).
#[derive(Clone, Debug, PartialEq)]
pub struct KernelTime {
    pub name: String,
    pub calls: u64,
    pub ms: f64,
    pub flops: f64,
}

/// One decoupled AdamW update (Loshchilov & Hutter), PyTorch semantics:
///   p -= lr·wd·p;  m = b1·m + (1−b1)·g;  v = b2·v + (1−b2)·g²;
///   p -= lr · (m / (1−b1^t)) / (sqrt(v / (1−b2^t)) + eps)
/// `step` is t, starting at 1.
#[derive(Clone, Copy, Debug)]
pub struct AdamWStep {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    pub step: u64,
}

/// The AdamW regions of one parameter buffer set, for [`Backend::adamw_multi_step`]: master
/// weights, gradient and moments (equal lengths), and the pieces of them to update as
/// `(start, len, decay)` relative to the regions (`decay`: apply `AdamWStep::weight_decay`;
/// norms and biases are usually excluded). Elements outside every piece (padding) are untouched.
pub struct AdamWGroup<'a, A> {
    pub param: Dst<'a, A>,
    pub grad: Src<'a, A>,
    pub m: Dst<'a, A>,
    pub v: Dst<'a, A>,
    pub pieces: Vec<(usize, usize, bool)>,
}

impl<'a, A: Buffer> AdamWGroup<'a, A> {
    /// Checks that the four regions have one length and every piece lies inside them.
    pub fn check(&self) -> Result<()> {
        let n = self.param.len;
        if self.grad.len != n || self.m.len != n || self.v.len != n {
            return Err(crate::Error::Unsupported(format!(
                "adamw: param, grad, m, v lengths differ ({n}, {}, {}, {})",
                self.grad.len, self.m.len, self.v.len
            )));
        }
        if let Some(&(s, l, _)) = self.pieces.iter().find(|&&(s, l, _)| s + l > n) {
            return Err(crate::Error::Unsupported(format!(
                "adamw: piece {s}+{l} outside regions of {n}"
            )));
        }
        Ok(())
    }
}

/// Shorthands for the regions of a backend's three buffer kinds.
pub type ActSrc<'a, B> = Src<'a, <B as Backend>::Act>;
pub type ActDst<'a, B> = Dst<'a, <B as Backend>::Act>;
pub type AccSrc<'a, B> = Src<'a, <B as Backend>::Acc>;
pub type AccDst<'a, B> = Dst<'a, <B as Backend>::Acc>;
pub type IdxSrc<'a, B> = Src<'a, <B as Backend>::Idx>;

pub trait Backend: Send + Sync {
    type Act: Buffer;
    type Acc: Buffer;
    type Idx: Buffer;

    /// Elements of logits a model's head computes at once (rows = this / V), so N×V logits
    /// never exist whole. Each chunk re-reads W_head for its logits and for dh_f and adds into
    /// all of dW_head, so a chunk should be as large as memory allows. The CPU: 2^24 (64 MiB
    /// in f32, about 330 rows of a 50k vocabulary), where 2^23 made the quickstart's step about
    /// 8% slower and larger chunks no faster. CUDA overrides it.
    const LOGITS_CHUNK_ELEMS: usize = 1 << 24;
    /// The head's chunks hold a multiple of this many rows (when they hold more than that),
    /// the last chunk the rest. The CPU: the GEMM's panel height (`cpu::sgemm::PANEL_ROWS`),
    /// so that only the last chunk's products have a partial panel of rows.
    const LOGITS_CHUNK_ROW_MULTIPLE: usize = 1;
    /// A single rank's logits rows are padded to a multiple of this many elements when the
    /// vocabulary is not one (the model's head, `Transformer::head_aligned`). The CPU: 1 (no
    /// padding). CUDA overrides it.
    const LOGITS_ROW_ALIGN: usize = 1;

    /// e.g. "cpu-f32", "cuda:0-bf16".
    fn name(&self) -> String;
    /// Wait for queued work (no-op on CPU).
    fn synchronize(&self) -> Result<()>;
    /// Turns per-kernel device timing on or off (CUDA: events around every launch). Backends
    /// without it refuse, so a run never asks for a profile it cannot get.
    fn set_profiling(&self, _on: bool) -> Result<()> {
        Err(crate::Error::Unsupported(format!(
            "per-kernel profiling is not available on {} (it times CUDA kernels; on the CPU use perf)",
            self.name()
        )))
    }
    /// The kernel times gathered since profiling was turned on or last taken, largest first
    /// (waits for the device); clears them.
    fn take_profile(&self) -> Result<Vec<KernelTime>> {
        Ok(Vec::new())
    }

    // ---- memory ----------------------------------------------------------------------------
    fn zeros_act(&self, n: usize) -> Result<Self::Act>;
    fn zeros_acc(&self, n: usize) -> Result<Self::Acc>;
    /// n elements of unspecified value (like `torch.empty`): for a buffer that an op overwrites
    /// whole before anything reads it. Backends that reuse memory skip the zero fill here.
    fn empty_act(&self, n: usize) -> Result<Self::Act> {
        self.zeros_act(n)
    }
    /// As `empty_act`, in accumulation precision.
    fn empty_acc(&self, n: usize) -> Result<Self::Acc> {
        self.zeros_acc(n)
    }
    fn upload_act(&self, host: &[f32]) -> Result<Self::Act>;
    fn upload_acc(&self, host: &[f32]) -> Result<Self::Acc>;
    fn upload_idx(&self, host: &[i32]) -> Result<Self::Idx>;
    fn download_act(&self, src: ActSrc<'_, Self>) -> Result<Vec<f32>>;
    fn download_acc(&self, src: AccSrc<'_, Self>) -> Result<Vec<f32>>;
    fn fill_zero_act(&self, dst: ActDst<'_, Self>) -> Result<()>;
    fn fill_zero_acc(&self, dst: AccDst<'_, Self>) -> Result<()>;
    /// dst = 0, where most of dst stays 0 until the next call (a gradient written at a few rows
    /// per step: an untied token embedding's). A backend may give the memory back to the system
    /// instead of writing it, so that only the parts written again hold memory (the CPU: whole
    /// pages released with MADV_DONTNEED read as zeros and are faulted in when written).
    fn release_zero_acc(&self, dst: AccDst<'_, Self>) -> Result<()> {
        self.fill_zero_acc(dst)
    }
    /// dst = src (same length).
    fn copy_acc(&self, src: AccSrc<'_, Self>, dst: AccDst<'_, Self>) -> Result<()>;
    /// dst = cast(src): the compute copy of master weights.
    fn acc_to_act(&self, src: AccSrc<'_, Self>, dst: ActDst<'_, Self>) -> Result<()>;
    /// Master weights seen as compute weights without a copy, where the two precisions are one
    /// type (the CPU backends: Act = Acc); None where the compute copy is a cast (CUDA). An
    /// engine that holds a whole master may then keep no compute copy (P = 0 bytes).
    fn acc_as_act(acc: &[Self::Acc]) -> Option<&[Self::Act]> {
        let _ = acc;
        None
    }
    /// Column block copy between row-major matrices with `rows` rows:
    /// dst[r, dst_col0 + c] (=|+=) src[r, src_col0 + c] for c < width.
    /// src has `src_cols` columns, dst `dst_cols`. Used to split/merge fused QKV.
    #[allow(clippy::too_many_arguments)]
    fn copy_columns(
        &self,
        src: ActSrc<'_, Self>,
        src_cols: usize,
        src_col0: usize,
        dst: ActDst<'_, Self>,
        dst_cols: usize,
        dst_col0: usize,
        rows: usize,
        width: usize,
        accumulate: bool,
    ) -> Result<()>;

    // ---- embedding -------------------------------------------------------------------------
    /// out[n, :] = table[ids[n], :]. ids [N], table [V, D], out [N, D]. A negative id selects no
    /// row (out[n] = 0, and nothing in backward): a vocab-parallel rank marks other ranks' ids so.
    fn embedding_forward(
        &self,
        ids: IdxSrc<'_, Self>,
        table: ActSrc<'_, Self>,
        out: ActDst<'_, Self>,
        n: usize,
        d: usize,
    ) -> Result<()>;
    /// dtable[ids[n], :] += dout[n, :].
    fn embedding_backward(
        &self,
        ids: IdxSrc<'_, Self>,
        dout: ActSrc<'_, Self>,
        dtable: AccDst<'_, Self>,
        n: usize,
        d: usize,
    ) -> Result<()>;

    // ---- linear ----------------------------------------------------------------------------
    /// y = x · W^T (+ b). Overwrites y.
    fn linear_forward(
        &self,
        x: ActSrc<'_, Self>,
        w: ActSrc<'_, Self>,
        b: Option<ActSrc<'_, Self>>,
        y: ActDst<'_, Self>,
        dims: LinearDims,
    ) -> Result<()>;
    /// W prepared for several `linear_forward_prepared` calls with the same W (the head's row
    /// chunks): on the CPU, Wᵀ packed once in the GEMM's panel layout instead of once per call.
    /// Empty where a backend prepares nothing (the default). `dims.n` is not used.
    fn prepare_linear_weight(&self, _w: ActSrc<'_, Self>, _dims: LinearDims) -> Result<Self::Act> {
        self.empty_act(0)
    }
    /// `linear_forward`, reading W from `prepared` (`prepare_linear_weight` of this w and these
    /// dims) where it is not empty. The same numbers as `linear_forward`.
    fn linear_forward_prepared(
        &self,
        x: ActSrc<'_, Self>,
        w: ActSrc<'_, Self>,
        _prepared: ActSrc<'_, Self>,
        b: Option<ActSrc<'_, Self>>,
        y: ActDst<'_, Self>,
        dims: LinearDims,
    ) -> Result<()> {
        self.linear_forward(x, w, b, y, dims)
    }
    /// W prepared for several `linear_backward_prepared` calls with the same W (the head's row
    /// chunks): on the CPU, W packed once as the B of dx = dy · W. Empty where a backend
    /// prepares nothing (the default). `dims.n` is not used.
    fn prepare_linear_weight_dx(
        &self,
        _w: ActSrc<'_, Self>,
        _dims: LinearDims,
    ) -> Result<Self::Act> {
        self.empty_act(0)
    }
    /// `linear_backward`, reading W for dx from `prepared_dx` (`prepare_linear_weight_dx` of
    /// this w and these dims) where it is not empty. The same numbers as `linear_backward`.
    #[allow(clippy::too_many_arguments)]
    fn linear_backward_prepared(
        &self,
        x: ActSrc<'_, Self>,
        w: ActSrc<'_, Self>,
        _prepared_dx: ActSrc<'_, Self>,
        dy: ActSrc<'_, Self>,
        dx: Option<ActDst<'_, Self>>,
        grads: WeightGrads<'_, Self::Acc>,
        dims: LinearDims,
    ) -> Result<()> {
        self.linear_backward(x, w, dy, dx, grads, dims)
    }
    /// dx += dy · W;  dW += dy^T · x (stored in W's layout);  db += Σ_n dy[n]  (dW, db: `grads`).
    #[allow(clippy::too_many_arguments)]
    fn linear_backward(
        &self,
        x: ActSrc<'_, Self>,
        w: ActSrc<'_, Self>,
        dy: ActSrc<'_, Self>,
        dx: Option<ActDst<'_, Self>>,
        grads: WeightGrads<'_, Self::Acc>,
        dims: LinearDims,
    ) -> Result<()>;

    // ---- norms -----------------------------------------------------------------------------
    /// y = x · rstd · (w + w_offset),  rstd[n] = 1 / sqrt(mean_d x[n]² + eps). x, y [N, D],
    /// w [D], rstd [N]. `w_offset` is 0, or 1 for Gemma's RMSNorm, whose stored weight is the
    /// scale minus one (w + 1 is formed in Act precision, as transformers' `1.0 + w`).
    #[allow(clippy::too_many_arguments)]
    fn rmsnorm_forward(
        &self,
        x: ActSrc<'_, Self>,
        w: ActSrc<'_, Self>,
        y: ActDst<'_, Self>,
        rstd: AccDst<'_, Self>,
        n: usize,
        d: usize,
        eps: f64,
        w_offset: f64,
    ) -> Result<()>;
    /// dx += ∂y/∂x · dy with the scale w + w_offset; dw += Σ_n dy · x · rstd (the offset's
    /// derivative is 1).
    #[allow(clippy::too_many_arguments)]
    fn rmsnorm_backward(
        &self,
        x: ActSrc<'_, Self>,
        w: ActSrc<'_, Self>,
        rstd: AccSrc<'_, Self>,
        dy: ActSrc<'_, Self>,
        dx: ActDst<'_, Self>,
        dw: AccDst<'_, Self>,
        n: usize,
        d: usize,
        w_offset: f64,
    ) -> Result<()>;
    /// y = (x − mean) · rstd · w + b. mean, rstd [N]. Backward: dx += …; dw, db (in `grads`, bias
    /// region required) += ….
    #[allow(clippy::too_many_arguments)]
    fn layernorm_forward(
        &self,
        x: ActSrc<'_, Self>,
        w: ActSrc<'_, Self>,
        b: ActSrc<'_, Self>,
        y: ActDst<'_, Self>,
        mean: AccDst<'_, Self>,
        rstd: AccDst<'_, Self>,
        n: usize,
        d: usize,
        eps: f64,
    ) -> Result<()>;
    #[allow(clippy::too_many_arguments)]
    fn layernorm_backward(
        &self,
        x: ActSrc<'_, Self>,
        w: ActSrc<'_, Self>,
        mean: AccSrc<'_, Self>,
        rstd: AccSrc<'_, Self>,
        dy: ActSrc<'_, Self>,
        dx: ActDst<'_, Self>,
        grads: WeightGrads<'_, Self::Acc>,
        n: usize,
        d: usize,
    ) -> Result<()>;

    /// The residual add fused with the RMSNorm that follows it, one pass over memory:
    ///   h += y;  then exactly `rmsnorm_forward(h, w, out, rstd, .., w_offset)` on the updated h.
    /// h, y, out [N, D]. h is rounded to Act before its statistics are taken, so the result is
    /// that of `add_inplace` followed by `rmsnorm_forward` (bit for bit on every backend), and
    /// `rmsnorm_backward` on the saved h is its backward. There is no fused backward: the add's
    /// backward is the identity, already folded into the convention that norm backwards ADD dx
    /// into the residual stream's gradient.
    #[allow(clippy::too_many_arguments)]
    fn residual_rmsnorm_forward(
        &self,
        h: ActDst<'_, Self>,
        y: ActSrc<'_, Self>,
        w: ActSrc<'_, Self>,
        out: ActDst<'_, Self>,
        rstd: AccDst<'_, Self>,
        n: usize,
        d: usize,
        eps: f64,
        w_offset: f64,
    ) -> Result<()>;
    /// h += y; then exactly `layernorm_forward(h, w, b, out, mean, rstd)` (see
    /// `residual_rmsnorm_forward`; backward is `layernorm_backward` on the saved h).
    #[allow(clippy::too_many_arguments)]
    fn residual_layernorm_forward(
        &self,
        h: ActDst<'_, Self>,
        y: ActSrc<'_, Self>,
        w: ActSrc<'_, Self>,
        b: ActSrc<'_, Self>,
        out: ActDst<'_, Self>,
        mean: AccDst<'_, Self>,
        rstd: AccDst<'_, Self>,
        n: usize,
        d: usize,
        eps: f64,
    ) -> Result<()>;

    // ---- rotary position embedding (HF rotate-half) ----------------------------------------
    /// In place on x [N, heads, Dh], over the rotary dim R = 2·inv_freq.len() ≤ Dh: for
    /// i < R/2, angle a = pos[n] · inv_freq[i],
    /// (x_i, x_{i+R/2}) ← (x_i cos a − x_{i+R/2} sin a, x_{i+R/2} cos a + x_i sin a);
    /// dims R.. pass through (partial rotary). cos and sin are multiplied by `scale` (the
    /// attention factor of yarn and longrope; 1 otherwise). `inv_freq` is the frequency table
    /// (`rope_inv_freq(theta, R)` for the default embedding; scaling changes the table).
    /// Angles are taken in f64.
    #[allow(clippy::too_many_arguments)]
    fn rope_forward(
        &self,
        x: ActDst<'_, Self>,
        pos: IdxSrc<'_, Self>,
        n: usize,
        heads: usize,
        head_dim: usize,
        inv_freq: &[f64],
        scale: f64,
    ) -> Result<()>;
    /// In place on dx: the transpose scale·R(−a).
    #[allow(clippy::too_many_arguments)]
    fn rope_backward(
        &self,
        dx: ActDst<'_, Self>,
        pos: IdxSrc<'_, Self>,
        n: usize,
        heads: usize,
        head_dim: usize,
        inv_freq: &[f64],
        scale: f64,
    ) -> Result<()>;

    // ---- attention -------------------------------------------------------------------------
    /// o = softmax(scale · q kᵀ + mask) v per head and segment; writes o and lse (see AttnDims).
    #[allow(clippy::too_many_arguments)]
    fn attention_forward(
        &self,
        q: ActSrc<'_, Self>,
        k: ActSrc<'_, Self>,
        v: ActSrc<'_, Self>,
        o: ActDst<'_, Self>,
        lse: AccDst<'_, Self>,
        cu_seqlens: IdxSrc<'_, Self>,
        dims: &AttnDims,
    ) -> Result<()>;
    /// dq, dk, dv = gradients of the attention output given dout, recomputing P from lse.
    /// OVERWRITES dq, dk, dv.
    #[allow(clippy::too_many_arguments)]
    fn attention_backward(
        &self,
        q: ActSrc<'_, Self>,
        k: ActSrc<'_, Self>,
        v: ActSrc<'_, Self>,
        o: ActSrc<'_, Self>,
        dout: ActSrc<'_, Self>,
        lse: AccSrc<'_, Self>,
        dq: ActDst<'_, Self>,
        dk: ActDst<'_, Self>,
        dv: ActDst<'_, Self>,
        cu_seqlens: IdxSrc<'_, Self>,
        dims: &AttnDims,
    ) -> Result<()>;

    // ---- activations and residual ----------------------------------------------------------
    /// out = act(gate) · up, act = silu (g · σ(g)) or the GELU of `kind`. All [n] elements.
    fn glu_forward(
        &self,
        kind: Glu,
        gate: ActSrc<'_, Self>,
        up: ActSrc<'_, Self>,
        out: ActDst<'_, Self>,
    ) -> Result<()>;
    /// dgate += dout · up · act'(gate);  dup += dout · act(gate).
    fn glu_backward(
        &self,
        kind: Glu,
        gate: ActSrc<'_, Self>,
        up: ActSrc<'_, Self>,
        dout: ActSrc<'_, Self>,
        dgate: ActDst<'_, Self>,
        dup: ActDst<'_, Self>,
    ) -> Result<()>;
    /// y = gelu(x), the `kind` of GELU (see `Gelu`).
    fn gelu_forward(&self, kind: Gelu, x: ActSrc<'_, Self>, y: ActDst<'_, Self>) -> Result<()>;
    /// dx += dy · gelu'(x).
    fn gelu_backward(
        &self,
        kind: Gelu,
        x: ActSrc<'_, Self>,
        dy: ActSrc<'_, Self>,
        dx: ActDst<'_, Self>,
    ) -> Result<()>;
    /// x += y (the residual connection; its backward is the identity, folded into the
    /// accumulate convention).
    fn add_inplace(&self, x: ActDst<'_, Self>, y: ActSrc<'_, Self>) -> Result<()>;
    /// x *= s (activations; Granite's embedding, residual and logits multipliers).
    fn scale_inplace(&self, x: ActDst<'_, Self>, s: f64) -> Result<()>;
    /// x ← c · tanh(x / c) (Gemma 2's final_logit_softcapping on the logits).
    fn softcap_inplace(&self, x: ActDst<'_, Self>, c: f64) -> Result<()>;
    /// dy *= 1 − (y / c)², y the capped values `softcap_inplace` wrote: its backward.
    fn softcap_backward(&self, dy: ActDst<'_, Self>, y: ActSrc<'_, Self>, c: f64) -> Result<()>;

    // ---- loss ------------------------------------------------------------------------------
    /// Fused softmax cross-entropy over rows of logits [N, V] with targets [N] (−100 = ignore):
    ///   losses[n] = logsumexp(logits[n]) − logits[n, t[n]]   (0 where ignored);
    ///   dlogits[n] = grad_scale · (softmax(logits[n]) − onehot(t[n]))   (0 where ignored).
    /// OVERWRITES dlogits (it may alias nothing else). Targets are already shifted by the caller.
    #[allow(clippy::too_many_arguments)]
    fn cross_entropy(
        &self,
        logits: ActSrc<'_, Self>,
        targets: IdxSrc<'_, Self>,
        losses: AccDst<'_, Self>,
        dlogits: Option<ActDst<'_, Self>>,
        n: usize,
        v: usize,
        grad_scale: f64,
    ) -> Result<()>;
    /// `cross_entropy` with dlogits written over the logits (with `grad_scale`; without one the
    /// logits are left unspecified): one [N, V] buffer instead of two. The default copies the
    /// logits aside first; the CPU backend works row by row in place.
    #[allow(clippy::too_many_arguments)]
    fn cross_entropy_in_place(
        &self,
        logits: ActDst<'_, Self>,
        targets: IdxSrc<'_, Self>,
        losses: AccDst<'_, Self>,
        n: usize,
        v: usize,
        grad_scale: Option<f64>,
    ) -> Result<()> {
        let mut copy = self.empty_act(n * v)?;
        let whole = Dst::range(&mut copy, 0, n * v);
        self.copy_columns(logits.as_src(), v, 0, whole, v, 0, n, v, false)?;
        let src = Src::range(&copy, 0, n * v);
        match grad_scale {
            None => self.cross_entropy(src, targets, losses, None, n, v, 0.0),
            Some(s) => self.cross_entropy(src, targets, losses, Some(logits), n, v, s),
        }
    }

    /// Vocab-parallel cross-entropy, step 1 of 2 (math: cpu/vocab_ce.rs): over the first `valid`
    /// of the `v` columns of logits [N, V] (this rank's ids `start..start + valid`; the rest is
    /// padding), stats [3·N] = row max ‖ Σ exp(x − row max) ‖ the target's logit when the target
    /// is this rank's (else 0). Every rank's stats are then gathered over the tensor-parallel
    /// group.
    fn cross_entropy_stats(
        &self,
        logits: ActSrc<'_, Self>,
        targets: IdxSrc<'_, Self>,
        stats: AccDst<'_, Self>,
        dims: VocabSlice,
    ) -> Result<()>;
    /// Step 2: from every rank's stats in rank order (`all` [parts·3·N]), the loss of every row
    /// (the same on every rank) and, with `dlogits`, this rank's columns of
    /// grad_scale·(softmax − onehot) (0 in padding columns and ignored rows). OVERWRITES dlogits.
    #[allow(clippy::too_many_arguments)]
    fn cross_entropy_finish(
        &self,
        logits: ActSrc<'_, Self>,
        targets: IdxSrc<'_, Self>,
        all: AccSrc<'_, Self>,
        parts: usize,
        losses: AccDst<'_, Self>,
        dlogits: Option<ActDst<'_, Self>>,
        dims: VocabSlice,
        grad_scale: f64,
    ) -> Result<()>;

    // ---- reductions and the optimizer ------------------------------------------------------
    fn sum(&self, x: AccSrc<'_, Self>) -> Result<f64>;
    fn sum_squares(&self, x: AccSrc<'_, Self>) -> Result<f64>;
    /// Σ over the regions of Σ x² (a gradient norm over many tensors; on a GPU one wait for the
    /// result instead of one per region).
    fn sum_squares_many(&self, xs: &[AccSrc<'_, Self>]) -> Result<f64> {
        xs.iter().map(|&x| self.sum_squares(x)).sum()
    }
    /// x *= s.
    fn scale_acc(&self, x: AccDst<'_, Self>, s: f64) -> Result<()>;
    /// x += y (accumulation precision; microbatch and reduction sums).
    fn add_acc(&self, x: AccDst<'_, Self>, y: AccSrc<'_, Self>) -> Result<()>;
    /// One AdamW step over every piece of every group (one launch per many pieces on a GPU).
    /// The gradient is read as g·grad_scale (global-norm clipping folded in; 1.0: none) and is
    /// not modified; `h.weight_decay` applies to the pieces marked `decay`.
    fn adamw_multi_step(
        &self,
        groups: Vec<AdamWGroup<'_, Self::Acc>>,
        h: &AdamWStep,
        grad_scale: f64,
    ) -> Result<()>;
    /// One AdamW step on one region of master weights with its gradient and moments, decay on.
    fn adamw_step(
        &self,
        param: AccDst<'_, Self>,
        grad: AccSrc<'_, Self>,
        m: AccDst<'_, Self>,
        v: AccDst<'_, Self>,
        h: &AdamWStep,
    ) -> Result<()> {
        let pieces = vec![(0, param.len, true)];
        let group = AdamWGroup {
            param,
            grad,
            m,
            v,
            pieces,
        };
        self.adamw_multi_step(vec![group], h, 1.0)
    }
}
