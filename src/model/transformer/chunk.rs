//! A pipeline chunk: blocks [s, e) of the chain embedding → blocks → head, run by one pipeline
//! rank. The trainer (src/train/pipeline/) drives it; parallel/src/pipeline schedules it.
//!
//!   forward:   x_s = E[ids] (+ P[pos]) when the chunk starts at the embedding, else the x_s
//!              another chunk produced; blocks s..e exactly as forward.rs runs them; the result's
//!              last state is x_e, complete (the last block's residual m added: its norm runs in
//!              the next chunk, or in the head).
//!   backward:  from dx_e = ∂loss/∂x_e (the head's, or received), the blocks in reverse as
//!              backward.rs runs them, then the embedding's backward (first chunk), or dx_s
//!              returned for the previous chunk.
//! The values are those of the whole model's forward and backward: at a chunk boundary the
//! residual add that forward.rs fuses with the next block's norm becomes add, then norm, which
//! is the same bits on the CPU (norm.rs). No pipeline communication here: the caller moves x
//! and dx between ranks; what the blocks themselves communicate over the tensor-parallel group
//! `tp` is theirs (x and dx are on this rank's residual tokens: N/tp with sequence parallelism).

use super::super::batch::DeviceBatch;
use super::super::layout::Role;
use super::{Forward, Transformer};
use ferrotron_kernels::{Backend, Result};
use ferrotron_parallel::TpComm;
use ferrotron_zero::ParamStore;
use std::ops::Range;

impl Transformer {
    /// Forward of blocks `layers` from the embedding (`input` None) or from `input` = x_s.
    #[allow(clippy::too_many_arguments)]
    pub fn chunk_forward<B: Backend, S: ParamStore<B> + ?Sized>(
        &self,
        b: &B,
        store: &mut S,
        batch: &DeviceBatch<B>,
        layers: Range<usize>,
        input: Option<B::Act>,
        tp: &dyn TpComm<B>,
    ) -> Result<Forward<B>> {
        self.check_group(tp, batch)?;
        let (x, pos) = match input {
            Some(x) => (x, None),
            None => self.embed_forward(b, store, batch, tp)?,
        };
        self.blocks_forward(b, store, batch, layers, x, pos, tp)
    }

    /// Backward of the chunk `fwd` ran, from dx = ∂loss/∂(its output). With `embedding` (the
    /// chunk started at the embedding) the embedding's backward runs too and None is returned;
    /// otherwise ∂loss/∂(its input), for the previous chunk.
    #[allow(clippy::too_many_arguments)]
    pub fn chunk_backward<B: Backend, S: ParamStore<B> + ?Sized>(
        &self,
        b: &B,
        store: &mut S,
        batch: &DeviceBatch<B>,
        fwd: &Forward<B>,
        dx: B::Act,
        embedding: bool,
        tp: &dyn TpComm<B>,
    ) -> Result<Option<B::Act>> {
        self.check_group(tp, batch)?;
        let dx = self.blocks_backward(b, store, batch, fwd, dx, tp)?;
        if !embedding {
            return Ok(Some(dx));
        }
        self.embed_backward(b, store, batch, tp, &dx)?;
        Ok(None)
    }

    /// Whether the output projection is the token embedding table (tied embeddings).
    pub fn tied_head(&self) -> bool {
        self.head_unit().1 == Role::TokenEmbedding
    }

    /// Ends a micro-batch's gradient of the tied table on a rank whose embedding backward runs
    /// elsewhere (the last pipeline stage's copy): `head` leaves the table's gradient open for
    /// the embedding's backward, which here never comes. No-op when the head is untied.
    pub fn finish_head_grad<B: Backend, S: ParamStore<B> + ?Sized>(
        &self,
        b: &B,
        store: &mut S,
    ) -> Result<()> {
        if self.tied_head() {
            store.after_grad(b, self.embedding_unit())?;
        }
        Ok(())
    }
}
