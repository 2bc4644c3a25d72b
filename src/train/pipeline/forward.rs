//! Forward-only through the pipeline: evaluation losses and sample logits.
//!
//! Every stage walks its chunks in model order (j = 0..v) and, within a chunk, the batches in
//! order; a chunk's input is the embedding (chunk 0), or the activation received from the owner
//! of the previous chunk; its output is sent on with a non-blocking send (the tag of that
//! boundary's activations, as in training). The last chunk runs `head` on its output.
//! No deadlock: the forward of (j, batch) on stage r needs only (j, batch) of stage r − 1, or
//! (j − 1, batch) of stage p − 1, both earlier in the order (j, batch, r) that every stage
//! follows, and sends never wait. Stage 0 thus runs ahead through its batches (GPipe's forward
//! half); nothing is kept for a backward beyond the chunk's own call.
//! Every stage runs every batch's chunks, so each stage's dp group gathers (ZeRO-3) in the
//! same order on all its ranks.

use super::Pipeline;
use crate::data::Batch;
use crate::error::{Error, Result};
use crate::model::{DeviceBatch, Forward, HostBatch, Transformer};
use crate::train::comm_err;
use ferrotron_kernels::Src;
use ferrotron_parallel::comm::p2p::OwnedBuf;
use ferrotron_parallel::pipeline::{Message, MessageKind};
use ferrotron_parallel::{Dtype, ReduceOp, TpComm};
use ferrotron_zero::{Collectives, Engine};

impl Pipeline {
    /// `head(engine, batch, fwd)` of every batch on the last stage (empty elsewhere), after a
    /// forward through the pipeline (see the module comment). Collective over the pp group.
    pub fn forward_only<B: Collectives, T>(
        &self,
        b: &B,
        model: &Transformer,
        engine: &mut dyn Engine<B>,
        tp: &dyn TpComm<B>,
        batches: &[DeviceBatch<B>],
        mut head: impl FnMut(&mut dyn Engine<B>, &DeviceBatch<B>, &Forward<B>) -> Result<T>,
    ) -> Result<Vec<T>> {
        let split = &self.split;
        let d = model.cfg.hidden;
        let mut out = Vec::new();
        let mut sends = Vec::new();
        for chunk in split.chunks_of(self.rank) {
            for (mb, batch) in batches.iter().enumerate() {
                let input = if chunk == 0 {
                    None
                } else {
                    let msg = Message {
                        kind: MessageKind::Activation,
                        mb,
                        boundary: chunk - 1,
                    };
                    let from = split.owner(chunk - 1);
                    let len = model.residual_tokens(batch.tokens) * d;
                    let received = self
                        .pp
                        .irecv(Dtype::F32, len, from, msg.tag())
                        .and_then(|r| r.wait())
                        .map_err(comm_err)?;
                    let host = received.into_f32().ok_or_else(|| {
                        Error::Internal(format!("the {msg} did not arrive as f32"))
                    })?;
                    Some(b.upload_act(&host)?)
                };
                let layers = split.blocks[chunk].clone();
                let fwd = model.chunk_forward(b, &mut *engine, batch, layers, input, tp)?;
                if chunk == split.last_chunk() {
                    out.push(head(&mut *engine, batch, &fwd)?);
                    continue;
                }
                let msg = Message {
                    kind: MessageKind::Activation,
                    mb,
                    boundary: chunk,
                };
                let x = fwd.xs.last().expect("a chunk has an output");
                let host = b.download_act(Src::all(x))?;
                let to = split.owner(chunk + 1);
                let request = self
                    .pp
                    .isend_owned(OwnedBuf::F32(host), to, msg.tag())
                    .map_err(comm_err)?;
                sends.push(request);
            }
        }
        for request in sends {
            request.wait().map_err(comm_err)?;
        }
        Ok(out)
    }

    /// The loss sum of each of `batches` (every stage gets them: the last stage's, summed over
    /// the pp group). Collective over the pp group.
    pub fn eval_losses<B: Collectives>(
        &self,
        b: &B,
        model: &Transformer,
        engine: &mut dyn Engine<B>,
        tp: &dyn TpComm<B>,
        batches: Vec<Batch>,
    ) -> Result<Vec<f64>> {
        let dev = upload_all(b, model, batches)?;
        let mut losses = self.forward_only(b, model, engine, tp, &dev, |engine, batch, fwd| {
            Ok(model.head_tp(b, engine, batch, fwd, None, None, tp)?.0)
        })?;
        losses.resize(dev.len(), 0.0);
        self.pp
            .all_reduce((&mut losses[..]).into(), ReduceOp::Sum)
            .map_err(comm_err)?;
        Ok(losses)
    }

    /// Logits [V] at the last position of `ids` (one sequence), on every stage (broadcast from
    /// the last). Collective over the pp group.
    pub fn last_logits<B: Collectives>(
        &self,
        b: &B,
        model: &Transformer,
        engine: &mut dyn Engine<B>,
        tp: &dyn TpComm<B>,
        ids: &[u32],
    ) -> Result<Vec<f32>> {
        let (n, v) = (ids.len(), model.cfg.vocab_size);
        let ids32: Vec<i32> = ids.iter().map(|&t| t as i32).collect();
        let host = HostBatch::from_rows(&ids32, &vec![-100; n], 1, n);
        let batch = model.upload_batch(b, &host)?;
        let mut rows =
            self.forward_only(b, model, engine, tp, &[batch], |engine, batch, fwd| {
                let mut logits = Vec::with_capacity(n * v);
                model.head_tp(b, engine, batch, fwd, None, Some(&mut logits), tp)?;
                Ok(logits[(n - 1) * v..n * v].to_vec())
            })?;
        let mut last = rows.pop().unwrap_or_else(|| vec![0.0; v]);
        let root = self.split.owner(self.split.last_chunk());
        self.pp
            .broadcast((&mut last[..]).into(), root)
            .map_err(comm_err)?;
        Ok(last)
    }
}

/// This rank's micro-batches on the device, in order.
pub(super) fn upload_all<B: Collectives>(
    b: &B,
    model: &Transformer,
    batches: Vec<Batch>,
) -> Result<Vec<DeviceBatch<B>>> {
    let dev = batches
        .into_iter()
        .map(|batch| model.upload_batch(b, &HostBatch::from(batch)))
        .collect::<ferrotron_kernels::Result<_>>()?;
    Ok(dev)
}
