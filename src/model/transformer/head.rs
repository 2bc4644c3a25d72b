//! The head: final norm, output projection and cross-entropy, and their backward.
//!
//!   h_f = norm_f(x_L);  logits = h_f·W_headᵀ (W_head = E when tied);
//!   loss = Σ_n CE(logits[n], target[n])  (targets already shifted; −100 ignored)
//! Logits are computed `HEAD_CHUNK_ELEMS / V` rows at a time, so N×V logits never exist whole;
//! with a gradient scale each chunk's dlogits = scale·(softmax − onehot), written over its logits
//! (one chunk buffer), is folded straight into dh_f and dW_head before the next chunk. Then
//! dx_L = norm_f backward(dh_f).

use super::super::batch::DeviceBatch;
use super::super::config::Arch;
use super::super::layout::Role;
use super::{src, t, weight_grads, Forward, Transformer};
use ferrotron_kernels::{Backend, Dst, LinearDims, Result, Src, WeightLayout};
use ferrotron_zero::ParamStore;

/// Rows of logits computed at once in the head, so N×V logits never exist whole: 2^24 elements
/// (64 MiB in f32, 32 MiB in bf16), about 330 rows of a 50k vocabulary. Each chunk re-reads
/// W_head for its logits (on the CPU from the copy packed once per step) and for dh_f (read in
/// place); with matrixmultiply, which re-packed W_head per chunk and product, 2^22 spent 1.47×
/// the step time of 2^24 on the quickstart, and 2^25 and 2^26 were slower again (cache).
const HEAD_CHUNK_ELEMS: usize = 1 << 24;

impl Transformer {
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
        // every buffer the ops overwrite whole is `empty`; dh_f (linear_backward ADDS) is zero
        let mut hf = b.empty_act(n * d)?;
        let mut mean = b.empty_acc(if gpt2 { n } else { 0 })?;
        let mut rstd = b.empty_acc(n)?;
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
        // logits of a chunk, then (cross-entropy in place) their gradient
        let mut logits = b.empty_act(chunk * vocab)?;
        let mut dhf = b.zeros_act(if grad_scale.is_some() { n * d } else { 0 })?;
        let mut losses = b.empty_acc(n)?;
        let wh = t(&w[hu], hunit, head_role);
        // W_head prepared (CPU: packed) once for every chunk's logits
        let whole = LinearDims {
            n,
            inp: d,
            out: vocab,
            layout: WeightLayout::OutIn,
        };
        let wh_prepared = b.prepare_linear_weight(wh, whole)?;
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
            b.linear_forward_prepared(
                xin,
                wh,
                src(&wh_prepared),
                None,
                Dst::range(&mut logits, 0, rows * vocab),
                dims,
            )?;
            if let Some(out) = logits_out.as_deref_mut() {
                out.extend(b.download_act(Src::range(&logits, 0, rows * vocab))?);
            }
            let tg = Src::range(&batch.targets, r0, rows);
            let ls = Dst::range(&mut losses, r0, rows);
            let lg = Dst::range(&mut logits, 0, rows * vocab);
            b.cross_entropy_in_place(lg, tg, ls, rows, vocab, grad_scale)?;
            if grad_scale.is_some() {
                let dx = Dst::range(&mut dhf, r0 * d, rows * d);
                let dw = weight_grads(&mut g[hu], hunit, head_role, head_role);
                let dlogits = Src::range(&logits, 0, rows * vocab);
                b.linear_backward(xin, wh, dlogits, Some(dx), dw, dims)?;
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
}
