//! The embedding, forward and backward, whole or vocab-parallel.
//!
//! One rank:        x₀ = E[ids] (+ P[pos], GPT-2: returned apart, added by block 0 fused with its
//!                  first norm).
//! Tensor parallel: each rank holds rows start..start+valid of E (padded to ⌈V/tp⌉) and looks up
//!                  only its own ids (the others read as zero rows); rank 0 adds P[pos] (GPT-2);
//!                  the partial sums are summed over the group: g's all-reduce, or with sequence
//!                  parallelism a reduce-scatter that leaves each rank its N/tp tokens.
//! Backward:        the gradient of the partial sum is the full-token dx₀ (g's backward is the
//!                  identity; the scatter's is an all-gather); each rank adds it into its own
//!                  rows of dE, and rank 0 into dP (summed over the group at the step, as the
//!                  position table is replicated: model/tensor_parallel.rs).

use super::super::batch::DeviceBatch;
use super::super::config::Arch;
use super::super::layout::Role;
use super::{dst, scale_unless_one, scaled_copy, src, t, tm, Transformer};
use ferrotron_kernels::{Backend, Result};
use ferrotron_parallel::TpComm;
use ferrotron_zero::ParamStore;

impl Transformer {
    /// The ids this rank's table rows are indexed by.
    fn table_ids<'a, B: Backend>(&self, batch: &'a DeviceBatch<B>) -> Result<&'a B::Idx> {
        match (&batch.vocab_ids, self.tp.is_parallel()) {
            (Some(ids), _) => Ok(ids),
            (None, false) => Ok(&batch.input_ids),
            (None, true) => Err(ferrotron_kernels::Error::Unsupported(
                "a tensor-parallel model needs its batch uploaded with Transformer::upload_batch (vocab-parallel ids)".into(),
            )),
        }
    }

    /// x₀ on this rank ([N_res, D]) and, on one rank for GPT-2, P[pos] still to be added.
    pub(super) fn embed_forward<B: Backend, S: ParamStore<B> + ?Sized>(
        &self,
        b: &B,
        store: &mut S,
        batch: &DeviceBatch<B>,
        tp: &dyn TpComm<B>,
    ) -> Result<(B::Act, Option<B::Act>)> {
        let (n, d) = (batch.tokens, self.cfg.hidden);
        let eu = self.embedding_unit();
        store.before_use(b, eu)?;
        let (w, _) = store.parts();
        let unit = &self.layout.units[eu];
        let mut x = b.zeros_act(n * d)?;
        b.embedding_forward(
            src(self.table_ids(batch)?),
            t(&w[eu], unit, Role::TokenEmbedding),
            dst(&mut x),
            n,
            d,
        )?;
        scale_unless_one(b, &mut x, self.cfg.embedding_multiplier)?;
        let mut pos = None;
        if self.cfg.arch == Arch::Gpt2 && self.tp.adds_replicated_bias() {
            let mut p = b.zeros_act(n * d)?;
            b.embedding_forward(
                src(&batch.positions),
                t(&w[eu], unit, Role::PositionEmbedding),
                dst(&mut p),
                n,
                d,
            )?;
            pos = Some(p);
        }
        store.after_use(b, eu)?;
        if !self.tp.is_parallel() {
            return Ok((x, pos));
        }
        if let Some(p) = pos {
            b.add_inplace(dst(&mut x), src(&p))?;
        }
        if self.tp.sequence_parallel {
            let mut local = b.zeros_act(self.residual_tokens(n) * d)?;
            tp.sp_scatter(b, src(&x), dst(&mut local))?;
            Ok((local, None))
        } else {
            tp.g_forward(b, dst(&mut x))?;
            Ok((x, None))
        }
    }

    /// Adds the embedding's gradients given dx₀ on this rank ([N_res, D]).
    pub(super) fn embed_backward<B: Backend, S: ParamStore<B> + ?Sized>(
        &self,
        b: &B,
        store: &mut S,
        batch: &DeviceBatch<B>,
        tp: &dyn TpComm<B>,
        dx: &B::Act,
    ) -> Result<()> {
        let (n, d) = (batch.tokens, self.cfg.hidden);
        let full;
        let dx = if self.tp.sequence_parallel {
            full = {
                let mut f = b.zeros_act(n * d)?;
                tp.sp_gather(b, src(dx), dst(&mut f))?;
                f
            };
            &full
        } else {
            dx
        };
        // x₀ = multiplier · table[id] (Granite): the table's gradient is multiplier · dx₀
        let dx_table = scaled_copy(b, dx, self.cfg.embedding_multiplier)?;
        let eu = self.embedding_unit();
        store.before_grad(b, eu)?;
        {
            let (_, g) = store.parts();
            let unit = &self.layout.units[eu];
            let ids = match &batch.grad_ids {
                Some(ids) => ids,
                None => self.table_ids(batch)?,
            };
            b.embedding_backward(
                src(ids),
                src(dx_table.as_ref().unwrap_or(dx)),
                tm(&mut g[eu], unit, Role::TokenEmbedding),
                n,
                d,
            )?;
            if self.cfg.arch == Arch::Gpt2 && self.tp.adds_replicated_bias() {
                b.embedding_backward(
                    src(&batch.positions),
                    src(dx),
                    tm(&mut g[eu], unit, Role::PositionEmbedding),
                    n,
                    d,
                )?;
            }
        }
        store.after_grad(b, eu)
    }
}
