//! The decoder-only transformer, forward and backward written out by hand over `Backend` ops.
//!
//! Shapes: N tokens (flattened batch), D hidden, H/Hkv heads, Dh head dim, F MLP width, V vocab.
//!
//!   x₀ = E[ids] (+ P[pos] for GPT-2)
//!   block ℓ (pre-norm):  h = norm₁(x);  q, k, v = h·Wqᵀ, h·Wkᵀ, h·Wvᵀ (GPT-2: one fused Conv1D)
//!                        q, k ← rope(q, k)  (Llama family)
//!                        m = x + attn(q, k, v)·Woᵀ
//!                        x' = m + mlp(norm₂(m)),  mlp = W_down·(silu(W_gate·) ⊙ W_up·)  (Llama)
//!                                                 or  W_proj·gelu(W_fc·)                    (GPT-2)
//!   logits = norm_f(x_L)·W_headᵀ (W_head = E when tied);  loss = Σ CE(logits, targets)
//!
//! Backward runs the same units in reverse; every weight gradient is added into the unit's
//! accumulator (so micro-batches accumulate), every activation gradient flows through `dx`, the
//! gradient of the residual stream, which norm backwards add into (the residual's identity path).
//! Units are reached only through a `ParamStore`, so ZeRO can gather/release/reduce around them.

use super::batch::DeviceBatch;
use super::config::{Arch, ModelConfig};
use super::layout::{ParamLayout, Role, UnitKind, UnitSpec};
use ferrotron_kernels::{
    AttnDims, Backend, Dst, LinearDims, Result, Src, WeightGrads, WeightLayout,
};
use ferrotron_zero::ParamStore;

pub struct Transformer {
    pub cfg: ModelConfig,
    pub layout: ParamLayout,
}

/// What one block keeps from forward for its backward (no recomputation).
pub struct BlockActs<B: Backend> {
    /// Block input (the residual stream entering it) is `Forward::xs[ℓ]`.
    h1: B::Act,
    mean1: B::Acc,
    rstd1: B::Acc,
    q: B::Act,
    k: B::Act,
    v: B::Act,
    o: B::Act,
    lse: B::Acc,
    /// Residual stream after attention.
    mid: B::Act,
    h2: B::Act,
    mean2: B::Acc,
    rstd2: B::Acc,
    /// Llama: gate and up projections; GPT-2: `up` is c_fc's output, `gate` unused.
    gate: B::Act,
    up: B::Act,
    /// MLP hidden after the nonlinearity [N, F].
    act: B::Act,
}

pub struct Forward<B: Backend> {
    /// xs[ℓ] is the input of block ℓ; xs[L] the final hidden state.
    pub xs: Vec<B::Act>,
    blocks: Vec<BlockActs<B>>,
}

/// Rows of logits computed at once in the head, so N×V logits never exist whole.
const HEAD_CHUNK_ELEMS: usize = 1 << 22;

fn src<T: ferrotron_kernels::Buffer>(b: &T) -> Src<'_, T> {
    Src::all(b)
}
fn dst<T: ferrotron_kernels::Buffer>(b: &mut T) -> Dst<'_, T> {
    Dst::all(b)
}

/// The region of tensor `role` in a unit's flat buffer.
fn t<'a, T: ferrotron_kernels::Buffer>(buf: &'a T, unit: &UnitSpec, role: Role) -> Src<'a, T> {
    let s = unit.tensor(role);
    Src::range(buf, s.offset, s.numel())
}
fn tm<'a, T: ferrotron_kernels::Buffer>(buf: &'a mut T, unit: &UnitSpec, role: Role) -> Dst<'a, T> {
    let s = unit.tensor(role);
    Dst::range(buf, s.offset, s.numel())
}
fn opt<'a, T: ferrotron_kernels::Buffer>(
    buf: &'a T,
    unit: &UnitSpec,
    role: Role,
) -> Option<Src<'a, T>> {
    unit.find(role)
        .map(|s| Src::range(buf, s.offset, s.numel()))
}

impl Transformer {
    pub fn new(cfg: ModelConfig) -> Self {
        let layout = ParamLayout::new(&cfg);
        Transformer { cfg, layout }
    }

    fn lin(&self, n: usize, inp: usize, out: usize) -> LinearDims {
        let layout = match self.cfg.arch {
            Arch::Llama => WeightLayout::OutIn,
            Arch::Gpt2 => WeightLayout::InOut,
        };
        LinearDims {
            n,
            inp,
            out,
            layout,
        }
    }

    fn attn_dims<B: Backend>(&self, batch: &DeviceBatch<B>) -> AttnDims {
        let c = &self.cfg;
        AttnDims {
            tokens: batch.tokens,
            heads: c.heads,
            kv_heads: c.kv_heads,
            head_dim: c.head_dim,
            segments: batch.segments,
            max_seqlen: batch.max_seqlen,
            causal: true,
            scale: 1.0 / (c.head_dim as f32).sqrt(),
        }
    }

    fn embedding_unit(&self) -> usize {
        0
    }
    fn final_norm_unit(&self) -> usize {
        self.layout
            .unit_of(UnitKind::FinalNorm)
            .expect("layout has a final norm")
    }
    /// The unit holding the output projection: the head, or the embedding when tied.
    fn head_unit(&self) -> (usize, Role) {
        match self.layout.unit_of(UnitKind::Head) {
            Some(u) => (u, Role::LmHead),
            None => (self.embedding_unit(), Role::TokenEmbedding),
        }
    }

    // ---- forward --------------------------------------------------------------------------

    pub fn forward<B: Backend, S: ParamStore<B> + ?Sized>(
        &self,
        b: &B,
        store: &mut S,
        batch: &DeviceBatch<B>,
    ) -> Result<Forward<B>> {
        let (n, d) = (batch.tokens, self.cfg.hidden);
        let eu = self.embedding_unit();
        store.before_use(b, eu)?;
        let mut x = b.zeros_act(n * d)?;
        {
            let (w, _) = store.parts();
            let unit = &self.layout.units[eu];
            b.embedding_forward(
                src(&batch.input_ids),
                t(&w[eu], unit, Role::TokenEmbedding),
                dst(&mut x),
                n,
                d,
            )?;
            if self.cfg.arch == Arch::Gpt2 {
                let mut p = b.zeros_act(n * d)?;
                b.embedding_forward(
                    src(&batch.positions),
                    t(&w[eu], unit, Role::PositionEmbedding),
                    dst(&mut p),
                    n,
                    d,
                )?;
                b.add_inplace(dst(&mut x), src(&p))?;
            }
        }
        store.after_use(b, eu)?;
        let mut xs = vec![x];
        let mut blocks = Vec::with_capacity(self.cfg.layers);
        for l in 0..self.cfg.layers {
            let u = self.layout.block_unit(l);
            store.before_use(b, u)?;
            let (w, _) = store.parts();
            let (acts, out) = self.block_forward(b, &w[u], &self.layout.units[u], &xs[l], batch)?;
            store.after_use(b, u)?;
            blocks.push(acts);
            xs.push(out);
        }
        Ok(Forward { xs, blocks })
    }

    fn block_forward<B: Backend>(
        &self,
        b: &B,
        w: &B::Act,
        unit: &UnitSpec,
        x: &B::Act,
        batch: &DeviceBatch<B>,
    ) -> Result<(BlockActs<B>, B::Act)> {
        let c = &self.cfg;
        let (n, d, f) = (batch.tokens, c.hidden, c.ffn);
        let (qd, kvd) = (c.heads * c.head_dim, c.kv_heads * c.head_dim);
        let gpt2 = c.arch == Arch::Gpt2;
        let stat = |on: bool| if on { b.zeros_acc(n) } else { b.zeros_acc(0) };

        // attention
        let mut h1 = b.zeros_act(n * d)?;
        let mut mean1 = stat(gpt2)?;
        let mut rstd1 = b.zeros_acc(n)?;
        self.norm_forward(
            b,
            w,
            unit,
            Role::AttnNorm,
            Role::AttnNormBias,
            x,
            &mut h1,
            &mut mean1,
            &mut rstd1,
            n,
        )?;
        let mut q = b.zeros_act(n * qd)?;
        let mut k = b.zeros_act(n * kvd)?;
        let mut v = b.zeros_act(n * kvd)?;
        if gpt2 {
            let mut qkv = b.zeros_act(n * 3 * d)?;
            b.linear_forward(
                src(&h1),
                t(w, unit, Role::Qkv),
                opt(w, unit, Role::QkvBias),
                dst(&mut qkv),
                self.lin(n, d, 3 * d),
            )?;
            for (i, part) in [&mut q, &mut k, &mut v].into_iter().enumerate() {
                b.copy_columns(src(&qkv), 3 * d, i * d, dst(part), d, 0, n, d, false)?;
            }
        } else {
            b.linear_forward(
                src(&h1),
                t(w, unit, Role::Q),
                opt(w, unit, Role::QBias),
                dst(&mut q),
                self.lin(n, d, qd),
            )?;
            b.linear_forward(
                src(&h1),
                t(w, unit, Role::K),
                opt(w, unit, Role::KBias),
                dst(&mut k),
                self.lin(n, d, kvd),
            )?;
            b.linear_forward(
                src(&h1),
                t(w, unit, Role::V),
                opt(w, unit, Role::VBias),
                dst(&mut v),
                self.lin(n, d, kvd),
            )?;
            b.rope_forward(
                dst(&mut q),
                src(&batch.positions),
                n,
                c.heads,
                c.head_dim,
                c.rope_theta,
            )?;
            b.rope_forward(
                dst(&mut k),
                src(&batch.positions),
                n,
                c.kv_heads,
                c.head_dim,
                c.rope_theta,
            )?;
        }
        let dims = self.attn_dims(batch);
        let mut o = b.zeros_act(n * qd)?;
        let mut lse = b.zeros_acc(c.heads * n)?;
        b.attention_forward(
            src(&q),
            src(&k),
            src(&v),
            dst(&mut o),
            dst(&mut lse),
            src(&batch.cu_seqlens),
            &dims,
        )?;
        let mut mid = b.zeros_act(n * d)?;
        b.linear_forward(
            src(&o),
            t(w, unit, Role::O),
            opt(w, unit, Role::OBias),
            dst(&mut mid),
            self.lin(n, qd, d),
        )?;
        b.add_inplace(dst(&mut mid), src(x))?;

        // MLP
        let mut h2 = b.zeros_act(n * d)?;
        let mut mean2 = stat(gpt2)?;
        let mut rstd2 = b.zeros_acc(n)?;
        self.norm_forward(
            b,
            w,
            unit,
            Role::MlpNorm,
            Role::MlpNormBias,
            &mid,
            &mut h2,
            &mut mean2,
            &mut rstd2,
            n,
        )?;
        let mut up = b.zeros_act(n * f)?;
        let mut act = b.zeros_act(n * f)?;
        b.linear_forward(
            src(&h2),
            t(w, unit, Role::Up),
            opt(w, unit, Role::UpBias),
            dst(&mut up),
            self.lin(n, d, f),
        )?;
        let gate = if gpt2 {
            b.gelu_forward(src(&up), dst(&mut act))?;
            b.zeros_act(0)?
        } else {
            let mut gate = b.zeros_act(n * f)?;
            b.linear_forward(
                src(&h2),
                t(w, unit, Role::Gate),
                opt(w, unit, Role::GateBias),
                dst(&mut gate),
                self.lin(n, d, f),
            )?;
            b.swiglu_forward(src(&gate), src(&up), dst(&mut act))?;
            gate
        };
        let mut out = b.zeros_act(n * d)?;
        b.linear_forward(
            src(&act),
            t(w, unit, Role::Down),
            opt(w, unit, Role::DownBias),
            dst(&mut out),
            self.lin(n, f, d),
        )?;
        b.add_inplace(dst(&mut out), src(&mid))?;
        Ok((
            BlockActs {
                h1,
                mean1,
                rstd1,
                q,
                k,
                v,
                o,
                lse,
                mid,
                h2,
                mean2,
                rstd2,
                gate,
                up,
                act,
            },
            out,
        ))
    }

    #[allow(clippy::too_many_arguments)]
    fn norm_forward<B: Backend>(
        &self,
        b: &B,
        w: &B::Act,
        unit: &UnitSpec,
        weight: Role,
        bias: Role,
        x: &B::Act,
        y: &mut B::Act,
        mean: &mut B::Acc,
        rstd: &mut B::Acc,
        n: usize,
    ) -> Result<()> {
        let (d, eps) = (self.cfg.hidden, self.cfg.norm_eps);
        match self.cfg.arch {
            Arch::Llama => {
                b.rmsnorm_forward(src(x), t(w, unit, weight), dst(y), dst(rstd), n, d, eps)
            }
            Arch::Gpt2 => b.layernorm_forward(
                src(x),
                t(w, unit, weight),
                t(w, unit, bias),
                dst(y),
                dst(mean),
                dst(rstd),
                n,
                d,
                eps,
            ),
        }
    }

    /// dx += ∂/∂x of the norm; weight (and bias) gradients added into `g`.
    #[allow(clippy::too_many_arguments)]
    fn norm_backward<B: Backend>(
        &self,
        b: &B,
        w: &B::Act,
        g: &mut B::Acc,
        unit: &UnitSpec,
        (weight, bias): (Role, Role),
        x: &B::Act,
        (mean, rstd): (&B::Acc, &B::Acc),
        dy: &B::Act,
        dx: &mut B::Act,
        n: usize,
    ) -> Result<()> {
        let d = self.cfg.hidden;
        match self.cfg.arch {
            Arch::Llama => b.rmsnorm_backward(
                src(x),
                t(w, unit, weight),
                src(rstd),
                src(dy),
                dst(dx),
                tm(g, unit, weight),
                n,
                d,
            ),
            Arch::Gpt2 => {
                let grads = weight_grads(g, unit, weight, bias);
                b.layernorm_backward(
                    src(x),
                    t(w, unit, weight),
                    src(mean),
                    src(rstd),
                    src(dy),
                    dst(dx),
                    grads,
                    n,
                    d,
                )
            }
        }
    }

    // ---- head and loss --------------------------------------------------------------------

    /// Final norm, output projection and cross-entropy. Returns Σ loss over target tokens.
    /// With `grad_scale`, also runs the head's backward (dloss = grad_scale per target token)
    /// and returns dx, the gradient of the final hidden state. With `logits_out`, the logits
    /// ([N, V], row-major) are copied to the host.
    pub fn head<B: Backend, S: ParamStore<B> + ?Sized>(
        &self,
        b: &B,
        store: &mut S,
        batch: &DeviceBatch<B>,
        fwd: &Forward<B>,
        grad_scale: Option<f64>,
        mut logits_out: Option<&mut Vec<f32>>,
    ) -> Result<(f64, Option<B::Act>)> {
        let c = &self.cfg;
        let (n, d, vocab) = (batch.tokens, c.hidden, c.vocab_size);
        let fu = self.final_norm_unit();
        let (hu, head_role) = self.head_unit();
        let gpt2 = c.arch == Arch::Gpt2;
        let x = fwd.xs.last().expect("forward has a final state");
        store.before_use(b, fu)?;
        if hu != fu {
            store.before_use(b, hu)?;
        }
        if grad_scale.is_some() {
            store.before_grad(b, fu)?;
            store.before_grad(b, hu)?;
        }
        let (w, g) = store.parts();
        let (funit, hunit) = (&self.layout.units[fu], &self.layout.units[hu]);
        let mut hf = b.zeros_act(n * d)?;
        let mut mean = if gpt2 {
            b.zeros_acc(n)?
        } else {
            b.zeros_acc(0)?
        };
        let mut rstd = b.zeros_acc(n)?;
        self.norm_forward(
            b,
            &w[fu],
            funit,
            Role::FinalNorm,
            Role::FinalNormBias,
            x,
            &mut hf,
            &mut mean,
            &mut rstd,
            n,
        )?;

        let chunk = (HEAD_CHUNK_ELEMS / vocab).clamp(1, n.max(1));
        let mut logits = b.zeros_act(chunk * vocab)?;
        let mut dlogits = if grad_scale.is_some() {
            b.zeros_act(chunk * vocab)?
        } else {
            b.zeros_act(0)?
        };
        let mut dhf = if grad_scale.is_some() {
            b.zeros_act(n * d)?
        } else {
            b.zeros_act(0)?
        };
        let mut losses = b.zeros_acc(n)?;
        let wh = t(&w[hu], hunit, head_role);
        let mut r0 = 0;
        while r0 < n {
            let rows = chunk.min(n - r0);
            let xin = Src::range(&hf, r0 * d, rows * d);
            let dims = LinearDims {
                n: rows,
                inp: d,
                out: vocab,
                layout: WeightLayout::OutIn,
            };
            b.linear_forward(
                xin,
                wh,
                None,
                Dst::range(&mut logits, 0, rows * vocab),
                dims,
            )?;
            if let Some(out) = logits_out.as_deref_mut() {
                out.extend(b.download_act(Src::range(&logits, 0, rows * vocab))?);
            }
            let tg = Src::range(&batch.targets, r0, rows);
            let ls = Dst::range(&mut losses, r0, rows);
            match grad_scale {
                None => b.cross_entropy(
                    Src::range(&logits, 0, rows * vocab),
                    tg,
                    ls,
                    None,
                    rows,
                    vocab,
                    0.0,
                )?,
                Some(scale) => {
                    let dl = Dst::range(&mut dlogits, 0, rows * vocab);
                    b.cross_entropy(
                        Src::range(&logits, 0, rows * vocab),
                        tg,
                        ls,
                        Some(dl),
                        rows,
                        vocab,
                        scale,
                    )?;
                    let dx = Dst::range(&mut dhf, r0 * d, rows * d);
                    let dw = weight_grads(&mut g[hu], hunit, head_role, head_role);
                    b.linear_backward(
                        xin,
                        wh,
                        Src::range(&dlogits, 0, rows * vocab),
                        Some(dx),
                        dw,
                        dims,
                    )?;
                }
            }
            r0 += rows;
        }
        let loss_sum = b.sum(src(&losses))?;
        let dx = match grad_scale {
            None => None,
            Some(_) => {
                let mut dx = b.zeros_act(n * d)?;
                let roles = (Role::FinalNorm, Role::FinalNormBias);
                self.norm_backward(
                    b,
                    &w[fu],
                    &mut g[fu],
                    funit,
                    roles,
                    x,
                    (&mean, &rstd),
                    &dhf,
                    &mut dx,
                    n,
                )?;
                Some(dx)
            }
        };
        if grad_scale.is_some() {
            store.after_grad(b, fu)?;
            if hu != fu && hu != self.embedding_unit() {
                store.after_grad(b, hu)?;
            }
        }
        store.after_use(b, fu)?;
        if hu != fu {
            store.after_use(b, hu)?;
        }
        Ok((loss_sum, dx))
    }

    // ---- backward -------------------------------------------------------------------------

    /// Runs every block's and the embedding's backward, given dx = ∂loss/∂x_L.
    pub fn backward<B: Backend, S: ParamStore<B> + ?Sized>(
        &self,
        b: &B,
        store: &mut S,
        batch: &DeviceBatch<B>,
        fwd: &Forward<B>,
        mut dx: B::Act,
    ) -> Result<()> {
        let (n, d) = (batch.tokens, self.cfg.hidden);
        for l in (0..self.cfg.layers).rev() {
            let u = self.layout.block_unit(l);
            store.before_use(b, u)?;
            store.before_grad(b, u)?;
            let (w, g) = store.parts();
            self.block_backward(
                b,
                &w[u],
                &mut g[u],
                &self.layout.units[u],
                &fwd.xs[l],
                &fwd.blocks[l],
                batch,
                &mut dx,
            )?;
            store.after_grad(b, u)?;
            store.after_use(b, u)?;
        }
        let eu = self.embedding_unit();
        store.before_grad(b, eu)?;
        {
            let (_, g) = store.parts();
            let unit = &self.layout.units[eu];
            b.embedding_backward(
                src(&batch.input_ids),
                src(&dx),
                tm(&mut g[eu], unit, Role::TokenEmbedding),
                n,
                d,
            )?;
            if self.cfg.arch == Arch::Gpt2 {
                b.embedding_backward(
                    src(&batch.positions),
                    src(&dx),
                    tm(&mut g[eu], unit, Role::PositionEmbedding),
                    n,
                    d,
                )?;
            }
        }
        store.after_grad(b, eu)
    }

    #[allow(clippy::too_many_arguments)]
    fn block_backward<B: Backend>(
        &self,
        b: &B,
        w: &B::Act,
        g: &mut B::Acc,
        unit: &UnitSpec,
        x: &B::Act,
        a: &BlockActs<B>,
        batch: &DeviceBatch<B>,
        dx: &mut B::Act,
    ) -> Result<()> {
        let c = &self.cfg;
        let (n, d, f) = (batch.tokens, c.hidden, c.ffn);
        let (qd, kvd) = (c.heads * c.head_dim, c.kv_heads * c.head_dim);
        let gpt2 = c.arch == Arch::Gpt2;

        // MLP: out = mid + down(act);  dx currently holds ∂/∂out, which is also ∂/∂mid's direct path.
        let mut dact = b.zeros_act(n * f)?;
        self.linear_bwd(
            b,
            w,
            g,
            unit,
            (Role::Down, Role::DownBias),
            &a.act,
            dx,
            Some(&mut dact),
            self.lin(n, f, d),
        )?;
        let mut dup = b.zeros_act(n * f)?;
        let mut dh2 = b.zeros_act(n * d)?;
        if gpt2 {
            b.gelu_backward(src(&a.up), src(&dact), dst(&mut dup))?;
        } else {
            let mut dgate = b.zeros_act(n * f)?;
            b.swiglu_backward(
                src(&a.gate),
                src(&a.up),
                src(&dact),
                dst(&mut dgate),
                dst(&mut dup),
            )?;
            self.linear_bwd(
                b,
                w,
                g,
                unit,
                (Role::Gate, Role::GateBias),
                &a.h2,
                &dgate,
                Some(&mut dh2),
                self.lin(n, d, f),
            )?;
        }
        self.linear_bwd(
            b,
            w,
            g,
            unit,
            (Role::Up, Role::UpBias),
            &a.h2,
            &dup,
            Some(&mut dh2),
            self.lin(n, d, f),
        )?;
        let roles = (Role::MlpNorm, Role::MlpNormBias);
        self.norm_backward(
            b,
            w,
            g,
            unit,
            roles,
            &a.mid,
            (&a.mean2, &a.rstd2),
            &dh2,
            dx,
            n,
        )?;

        // attention: mid = x + o·Woᵀ;  dx now holds ∂/∂mid.
        let mut d_o = b.zeros_act(n * qd)?;
        self.linear_bwd(
            b,
            w,
            g,
            unit,
            (Role::O, Role::OBias),
            &a.o,
            dx,
            Some(&mut d_o),
            self.lin(n, qd, d),
        )?;
        let mut dq = b.zeros_act(n * qd)?;
        let mut dk = b.zeros_act(n * kvd)?;
        let mut dv = b.zeros_act(n * kvd)?;
        let dims = self.attn_dims(batch);
        b.attention_backward(
            src(&a.q),
            src(&a.k),
            src(&a.v),
            src(&a.o),
            src(&d_o),
            src(&a.lse),
            dst(&mut dq),
            dst(&mut dk),
            dst(&mut dv),
            src(&batch.cu_seqlens),
            &dims,
        )?;
        let mut dh1 = b.zeros_act(n * d)?;
        if gpt2 {
            let mut dqkv = b.zeros_act(n * 3 * d)?;
            for (i, part) in [&dq, &dk, &dv].into_iter().enumerate() {
                b.copy_columns(src(part), d, 0, dst(&mut dqkv), 3 * d, i * d, n, d, false)?;
            }
            self.linear_bwd(
                b,
                w,
                g,
                unit,
                (Role::Qkv, Role::QkvBias),
                &a.h1,
                &dqkv,
                Some(&mut dh1),
                self.lin(n, d, 3 * d),
            )?;
            // The key bias adds q_i·b_k to every score of row i, which softmax ignores: its exact
            // gradient is 0. Keep it exactly 0 rather than f32 round-off, which Adam's g/(|g|+eps)
            // would turn into lr-sized steps.
            let kb = unit.tensor(Role::QkvBias);
            b.fill_zero_acc(Dst::range(g, kb.offset + d, d))?;
        } else {
            b.rope_backward(
                dst(&mut dq),
                src(&batch.positions),
                n,
                c.heads,
                c.head_dim,
                c.rope_theta,
            )?;
            b.rope_backward(
                dst(&mut dk),
                src(&batch.positions),
                n,
                c.kv_heads,
                c.head_dim,
                c.rope_theta,
            )?;
            self.linear_bwd(
                b,
                w,
                g,
                unit,
                (Role::Q, Role::QBias),
                &a.h1,
                &dq,
                Some(&mut dh1),
                self.lin(n, d, qd),
            )?;
            // No key-bias gradient: it is exactly 0 (softmax is shift-invariant per row; see GPT-2 above).
            self.linear_bwd(
                b,
                w,
                g,
                unit,
                (Role::K, Role::K),
                &a.h1,
                &dk,
                Some(&mut dh1),
                self.lin(n, d, kvd),
            )?;
            self.linear_bwd(
                b,
                w,
                g,
                unit,
                (Role::V, Role::VBias),
                &a.h1,
                &dv,
                Some(&mut dh1),
                self.lin(n, d, kvd),
            )?;
        }
        let roles = (Role::AttnNorm, Role::AttnNormBias);
        self.norm_backward(b, w, g, unit, roles, x, (&a.mean1, &a.rstd1), &dh1, dx, n)
    }

    /// Linear backward for the weight of `roles.0` (and its bias `roles.1`, if the unit has one).
    #[allow(clippy::too_many_arguments)]
    fn linear_bwd<B: Backend>(
        &self,
        b: &B,
        w: &B::Act,
        g: &mut B::Acc,
        unit: &UnitSpec,
        (weight, bias): (Role, Role),
        x: &B::Act,
        dy: &B::Act,
        dx: Option<&mut B::Act>,
        dims: LinearDims,
    ) -> Result<()> {
        let grads = weight_grads(g, unit, weight, bias);
        b.linear_backward(
            src(x),
            t(w, unit, weight),
            src(dy),
            dx.map(dst),
            grads,
            dims,
        )
    }
}

/// The gradient regions of `weight` and (if the unit has one, and it differs) `bias`.
fn weight_grads<'a, T: ferrotron_kernels::Buffer>(
    g: &'a mut T,
    unit: &UnitSpec,
    weight: Role,
    bias: Role,
) -> WeightGrads<'a, T> {
    let ws = unit.tensor(weight);
    let bs = if bias == weight {
        None
    } else {
        unit.find(bias)
    };
    WeightGrads::new(
        g,
        (ws.offset, ws.numel()),
        bs.map(|s| (s.offset, s.numel())),
    )
}
