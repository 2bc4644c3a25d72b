//! The head: final norm, output projection and cross-entropy, and their backward.
//!
//!   h_f = norm_f(x_L);  logits = h_f·W_headᵀ (W_head = E when tied);
//!   Gemma 2: logits ← c·tanh(logits / c) (final_logit_softcapping), and dlogits times
//!   1 − (logits / c)² on the capped values (kept in a chunk copy where the cross-entropy
//!   writes its gradient over the logits);
//!   loss = Σ_n CE(logits[n], target[n])  (targets already shifted; −100 ignored)
//! Logits are computed `Backend::LOGITS_CHUNK_ELEMS / V` rows at a time, so N×V logits never exist whole;
//! with a gradient scale each chunk's dlogits = scale·(softmax − onehot), written over its logits
//! (one chunk buffer), is folded straight into dh_f and dW_head before the next chunk. Then
//! dx_L = norm_f backward(dh_f).
//!
//! Tensor parallelism: the output layer is vocab-parallel (each rank holds ⌈V/tp⌉ rows of
//! W_head, the last rank padding), so no rank ever holds a row of logits over the whole
//! vocabulary: per chunk each rank computes its columns, its row statistics (max, Σexp, the
//! target's logit when it is one of its ids: Backend::cross_entropy_stats), the statistics of
//! every rank are all-gathered, and each rank finishes the loss (the same on all) and its
//! columns of dlogits (cross_entropy_finish, into a second chunk buffer). h_f is gathered to all
//! N tokens first with sequence parallelism; ∂h_f is then a partial sum over the vocabulary
//! shards: all-reduced (f's backward), or reduce-scattered to N/tp tokens.

use super::super::batch::DeviceBatch;
use super::super::config::Arch;
use super::super::layout::Role;
use super::{dst, scale_unless_one, src, t, tm, weight_grads, Forward, Transformer};
use ferrotron_kernels::{
    Backend, Dst, LinearDims, Result, Src, VocabSlice, WeightGrads, WeightLayout,
};
use ferrotron_parallel::{NoTp, TpComm};
use ferrotron_zero::ParamStore;

/// The largest W_head (elements; 64 MiB in f32) that is prepared (CPU: packed) whole: up to it
/// the head is prepared once per call for every chunk's logits, and once more for every chunk's
/// dx = dlogits·W_head when there is a backward; above it each chunk's products pack W_head
/// block by block as they go (a 75M Llama's 50257 × 512 head: 2 × 98 MiB saved for a few % of
/// its step time; the quickstart's 2 × 25 MiB copies are kept, where packing is a larger share).
pub const HEAD_PREPARED_MAX_ELEMS: usize = 1 << 24;

/// Rows of the head's logits chunk: as many rows of `width` as `chunk_elems` holds, rounded
/// down to a multiple of `multiple` when that leaves at least one, and at most `n` (≥ 1). A
/// multiple of 0 counts as 1.
pub fn logits_chunk_rows(chunk_elems: usize, multiple: usize, width: usize, n: usize) -> usize {
    let multiple = multiple.max(1);
    let rows = chunk_elems / width.max(1);
    let rows = if rows >= multiple {
        rows / multiple * multiple
    } else {
        rows
    };
    rows.clamp(1, n.max(1))
}

/// A single rank's logits row for a vocabulary of `vocab` under `Backend::LOGITS_ROW_ALIGN`
/// = `row_align`: `vocab` rounded up to a multiple of it (see `Transformer::head_aligned`).
pub fn logits_row_width(vocab: usize, row_align: usize) -> usize {
    vocab.next_multiple_of(row_align.max(1))
}

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
        logits_out: Option<&mut Vec<f32>>,
    ) -> Result<(f64, Option<B::Act>)> {
        self.head_tp(b, store, batch, fwd, grad_scale, logits_out, &NoTp)
    }

    /// `head` as this rank of the tensor-parallel group `tp` (see the module comment); the
    /// returned dx is on this rank's residual tokens, the logits (if asked) over the whole
    /// vocabulary.
    #[allow(clippy::too_many_arguments)]
    pub fn head_tp<B: Backend, S: ParamStore<B> + ?Sized>(
        &self,
        b: &B,
        store: &mut S,
        batch: &DeviceBatch<B>,
        fwd: &Forward<B>,
        grad_scale: Option<f64>,
        logits_out: Option<&mut Vec<f32>>,
        tp: &dyn TpComm<B>,
    ) -> Result<(f64, Option<B::Act>)> {
        let align = B::LOGITS_ROW_ALIGN;
        self.head_aligned(b, store, batch, fwd, grad_scale, logits_out, tp, align)
    }

    /// `head_tp` with a single rank's logits rows padded to a multiple of `row_align` elements
    /// when V is not one (`head_tp` passes `Backend::LOGITS_ROW_ALIGN`): W_head is copied into
    /// a zero-padded [V_pad, D] buffer, the logits chunk is [rows, V_pad], the cross-entropy is
    /// the vocab-parallel one over the V valid columns (one part), and dW_head is computed
    /// padded and its first V rows added into the gradient. The same numbers up to round-off;
    /// public so that tests run the padded path on the CPU.
    #[allow(clippy::too_many_arguments)]
    pub fn head_aligned<B: Backend, S: ParamStore<B> + ?Sized>(
        &self,
        b: &B,
        store: &mut S,
        batch: &DeviceBatch<B>,
        fwd: &Forward<B>,
        grad_scale: Option<f64>,
        mut logits_out: Option<&mut Vec<f32>>,
        tp: &dyn TpComm<B>,
        row_align: usize,
    ) -> Result<(f64, Option<B::Act>)> {
        self.check_group(tp, batch)?;
        let c = &self.cfg;
        let (n, d) = (batch.tokens, c.hidden);
        let nr = self.residual_tokens(n);
        // This rank's columns of the logits: ids start..start + valid, padded to `vocab`.
        let (start, vocab, valid) = self.tp.vocab_rows(c.vocab_size);
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
        let mut hf = b.empty_act(nr * d)?;
        let mut mean = b.empty_acc(if gpt2 { nr } else { 0 })?;
        let mut rstd = b.empty_acc(nr)?;
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
            nr,
        )?;
        // Granite divides the logits by logits_scaling: the same as dividing h_f (h_f·Wᵀ/s =
        // (h_f/s)·Wᵀ, and dW = dlogitsᵀ·h_f/s either way); ∂h_f is divided below.
        scale_unless_one(b, &mut hf, 1.0 / c.logits_scaling)?;
        let hf_all = self.gather_tokens(b, tp, &hf, n)?;
        let hf = hf_all.unwrap_or(hf);

        let parallel = self.tp.is_parallel();
        // a single rank's logits rows padded to `width` (see head_aligned); the vocab-parallel
        // path pads its own (the vocabulary to a multiple of tp)
        let width = match parallel {
            true => vocab,
            false => logits_row_width(vocab, row_align),
        };
        let padded = width != vocab;
        // the cross-entropy over row statistics: vocab-parallel, or over a padded row
        let by_stats = parallel || padded;
        let chunk = logits_chunk_rows(
            B::LOGITS_CHUNK_ELEMS,
            B::LOGITS_CHUNK_ROW_MULTIPLE,
            width,
            n,
        );
        // logits of a chunk, then (cross-entropy in place) their gradient; through the row
        // statistics, the gradient goes to its own buffer
        let grad = grad_scale.is_some();
        let mut logits = b.empty_act(chunk * width)?;
        let mut dlogits = b.empty_act(if by_stats && grad { chunk * width } else { 0 })?;
        let cap = c.final_softcap;
        let keep_capped = cap.is_some() && grad && !by_stats;
        let mut capped = b.empty_act(if keep_capped { chunk * width } else { 0 })?;
        let mut dhf = b.zeros_act(if grad { n * d } else { 0 })?;
        let mut losses = b.empty_acc(n)?;
        let stats_len = if by_stats { 3 * chunk } else { 0 };
        let mut stats = b.empty_acc(stats_len)?;
        let mut all_stats = b.empty_acc(if parallel {
            self.tp.size * stats_len
        } else {
            0
        })?;
        // padded: W_head in zero-padded rows, and its gradient computed padded
        let mut wh_padded = b.zeros_act(if padded { width * d } else { 0 })?;
        let mut dwh_padded = b.zeros_acc(if padded && grad { width * d } else { 0 })?;
        if padded {
            let rows = dst(&mut wh_padded);
            b.copy_columns(
                t(&w[hu], hunit, head_role),
                d,
                0,
                rows,
                d,
                0,
                vocab,
                d,
                false,
            )?;
        }
        let wh = match padded {
            true => src(&wh_padded),
            false => t(&w[hu], hunit, head_role),
        };
        // W_head prepared (CPU: packed) once for every chunk's logits, unless that copy is large
        let whole = LinearDims {
            n,
            inp: d,
            out: width,
            layout: WeightLayout::OutIn,
        };
        let small = width * d <= HEAD_PREPARED_MAX_ELEMS;
        let wh_prepared = match small {
            true => b.prepare_linear_weight(wh, whole)?,
            false => b.empty_act(0)?,
        };
        // and once as the B of every chunk's dx = dlogits · W_head
        let wh_prepared_dx = match small && grad {
            true => b.prepare_linear_weight_dx(wh, whole)?,
            false => b.empty_act(0)?,
        };
        let mut r0 = 0;
        while r0 < n {
            let rows = chunk.min(n - r0);
            let xin = Src::range(&hf, r0 * d, rows * d);
            let dims = LinearDims {
                n: rows,
                inp: d,
                out: width,
                layout: WeightLayout::OutIn,
            };
            let cells = rows * width;
            b.linear_forward_prepared(
                xin,
                wh,
                src(&wh_prepared),
                None,
                Dst::range(&mut logits, 0, cells),
                dims,
            )?;
            if let Some(cap) = cap {
                b.softcap_inplace(Dst::range(&mut logits, 0, cells), cap)?;
                if keep_capped {
                    let (lg, cp) = (src(&logits), dst(&mut capped));
                    b.copy_columns(lg, width, 0, cp, width, 0, rows, width, false)?;
                }
            }
            if let Some(out) = logits_out.as_deref_mut() {
                self.logits_to_host(b, tp, &logits, rows, width, out)?;
            }
            let tg = Src::range(&batch.targets, r0, rows);
            let ls = Dst::range(&mut losses, r0, rows);
            if by_stats {
                // This rank's row statistics, everyone's (vocab-parallel), the loss.
                let slice = VocabSlice {
                    n: rows,
                    v: width,
                    valid,
                    start,
                };
                let lg = Src::range(&logits, 0, cells);
                b.cross_entropy_stats(lg, tg, Dst::range(&mut stats, 0, 3 * rows), slice)?;
                let p = self.tp.size;
                let all = match parallel {
                    true => {
                        let all = Dst::range(&mut all_stats, 0, p * 3 * rows);
                        tp.all_gather_acc(b, Src::range(&stats, 0, 3 * rows), all)?;
                        Src::range(&all_stats, 0, p * 3 * rows)
                    }
                    false => Src::range(&stats, 0, 3 * rows),
                };
                let dl = grad_scale.map(|_| Dst::range(&mut dlogits, 0, cells));
                let scale = grad_scale.unwrap_or(0.0);
                b.cross_entropy_finish(lg, tg, all, p, ls, dl, slice, scale)?;
            } else {
                let lg = Dst::range(&mut logits, 0, cells);
                b.cross_entropy_in_place(lg, tg, ls, rows, vocab, grad_scale)?;
            }
            if let (Some(cap), true) = (cap, grad) {
                let (dl, y) = match by_stats {
                    true => (&mut dlogits, &logits),
                    false => (&mut logits, &capped),
                };
                let y = Src::range(y, 0, cells);
                b.softcap_backward(Dst::range(dl, 0, cells), y, cap)?;
            }
            if grad {
                let dx = Dst::range(&mut dhf, r0 * d, rows * d);
                let dw = match padded {
                    true => WeightGrads::new(&mut dwh_padded, (0, width * d), None),
                    false => weight_grads(&mut g[hu], hunit, head_role, head_role),
                };
                let dlogits = Src::range(if by_stats { &dlogits } else { &logits }, 0, cells);
                let prepared_dx = src(&wh_prepared_dx);
                b.linear_backward_prepared(xin, wh, prepared_dx, dlogits, Some(dx), dw, dims)?;
            }
            r0 += rows;
        }
        if padded && grad {
            // the first V rows of the padded gradient are dW_head's
            let dw = tm(&mut g[hu], hunit, head_role);
            b.add_acc(dw, Src::range(&dwh_padded, 0, vocab * d))?;
        }
        let loss_sum = b.sum(src(&losses))?;
        let dx = match grad_scale {
            None => None,
            Some(_) => {
                // ∂h_f is a partial sum over the vocabulary shards.
                let dhf = if !parallel {
                    dhf
                } else if self.tp.sequence_parallel {
                    let mut local = b.zeros_act(nr * d)?;
                    tp.sp_scatter(b, src(&dhf), dst(&mut local))?;
                    local
                } else {
                    tp.f_backward(b, dst(&mut dhf))?;
                    dhf
                };
                let mut dhf = dhf;
                scale_unless_one(b, &mut dhf, 1.0 / c.logits_scaling)?;
                let mut dx = b.zeros_act(nr * d)?;
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
                    nr,
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

    /// Appends this chunk's logits [rows, V] to `out` (from rows of `width`, padding dropped):
    /// every rank's vocabulary columns gathered (padding dropped) under tensor parallelism.
    #[allow(clippy::too_many_arguments)]
    fn logits_to_host<B: Backend>(
        &self,
        b: &B,
        tp: &dyn TpComm<B>,
        logits: &B::Act,
        rows: usize,
        width: usize,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        let v = self.cfg.vocab_size;
        if !self.tp.is_parallel() {
            let all = b.download_act(Src::range(logits, 0, rows * width))?;
            for row in all.chunks(width) {
                out.extend_from_slice(&row[..v]);
            }
            return Ok(());
        }
        let (p, local) = (self.tp.size, v.div_ceil(self.tp.size));
        let mut all = b.zeros_act(p * rows * local)?;
        tp.all_gather(b, Src::range(logits, 0, rows * local), dst(&mut all))?;
        let all = b.download_act(src(&all))?;
        for row in 0..rows {
            for (r, part) in all.chunks(rows * local).enumerate() {
                let keep = local.min(v.saturating_sub(r * local));
                out.extend_from_slice(&part[row * local..row * local + keep]);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::logits_chunk_rows;

    #[test]
    fn logits_chunks_hold_whole_panels_of_rows() {
        // the quickstart: 2^24 / 50257 = 333 rows, rounded down to 324 = 27 panels of 12
        assert_eq!(logits_chunk_rows(1 << 24, 12, 50257, 1024), 324);
        // fewer rows than one chunk: all of them, whatever the multiple
        assert_eq!(logits_chunk_rows(1 << 24, 12, 50257, 100), 100);
        // a chunk smaller than the multiple keeps its rows; never fewer than one
        assert_eq!(logits_chunk_rows(1 << 20, 12, 200_000, 64), 5);
        assert_eq!(logits_chunk_rows(1 << 10, 12, 200_000, 64), 1);
        // no multiple (CUDA)
        assert_eq!(logits_chunk_rows(1 << 24, 1, 50257, 1024), 333);
        assert_eq!(logits_chunk_rows(1 << 24, 12, 50257, 0), 1);
    }
}
