//! One training step through the pipeline: the executor of parallel/src/pipeline runs this
//! rank's list of the schedule, and `StageRun` computes its chunks on the real model and
//! engine.
//!
//!   forward(mb, c):   x_e = chunk_forward(blocks of c, x_s) (x_s: the embedding for chunk 0,
//!                     else the received activation); keeps the chunk's `Forward`; returns x_e
//!                     (nothing for the last chunk).
//!   backward(mb, c):  last chunk: the head (final norm, projection, cross-entropy with dloss =
//!                     1 / global target tokens, and their backward) gives dx_L and the
//!                     micro-batch's loss sum; else dx_e is the received gradient. Then
//!                     chunk_backward; returns dx_s (nothing for chunk 0, whose backward ends in
//!                     the embedding's).
//! The head runs in the last chunk's backward, not its forward, so no dx_L waits between them
//! (GPipe would hold m of them). Activations and gradients cross ranks as f32 host vectors (the
//! executor's buffers): on a GPU they are downloaded and uploaded, i.e. host-staged over the pp
//! group's MPI/TCP communicator, 4 bytes per element whatever the compute precision.
//!
//! Exact accounting: every `Forward` kept is counted (`Forward::saved_elements`) while it waits
//! for its backward; the peak over the step is what the stage held at once, to compare with
//! `Transformer::blocks_activation_elements` × the schedule's in-flight bound.

use super::Pipeline;
use crate::data::Batch;
use crate::error::{Error, Result};
use crate::model::{DeviceBatch, Forward, Transformer};
use crate::train::{all_sum, comm_err};
use ferrotron_kernels::Src;
use ferrotron_parallel::pipeline::{run_step, ComputeError, ExecOptions, StageCompute, StepReport};
use ferrotron_parallel::{Comm, OpKind, TpComm};
use ferrotron_zero::{Collectives, Engine};
use serde_json::{json, Value};
use std::collections::HashMap;

/// This rank's chunks of one step, on the real model.
pub struct StageRun<'a, B: Collectives> {
    pub b: &'a B,
    pub model: &'a Transformer,
    pub engine: &'a mut dyn Engine<B>,
    pub pipeline: &'a Pipeline,
    /// The tensor-parallel group inside this stage.
    pub tp: &'a dyn TpComm<B>,
    pub batches: &'a [DeviceBatch<B>],
    /// dloss per target token.
    pub grad_scale: f64,
    saved: HashMap<(usize, usize), Forward<B>>,
    /// Σ loss over the target tokens of the micro-batches whose head ran here.
    pub loss_sum: f64,
    /// (act, acc) elements of the `Forward`s held now, and the peak of their sum's bytes.
    held: (usize, usize),
    pub peak: (usize, usize),
    /// The largest single (micro-batch, chunk) `Forward`.
    pub largest: (usize, usize),
}

impl<'a, B: Collectives> StageRun<'a, B> {
    pub fn new(
        b: &'a B,
        model: &'a Transformer,
        engine: &'a mut dyn Engine<B>,
        pipeline: &'a Pipeline,
        tp: &'a dyn TpComm<B>,
        batches: &'a [DeviceBatch<B>],
        grad_scale: f64,
    ) -> Self {
        StageRun {
            b,
            model,
            engine,
            pipeline,
            tp,
            batches,
            grad_scale,
            saved: HashMap::new(),
            loss_sum: 0.0,
            held: (0, 0),
            peak: (0, 0),
            largest: (0, 0),
        }
    }

    fn bytes((act, acc): (usize, usize)) -> u64 {
        act as u64 * B::ACT_BYTES + acc as u64 * B::ACC_BYTES
    }

    fn keep(&mut self, key: (usize, usize), fwd: Forward<B>) {
        let (act, acc) = fwd.saved_elements();
        self.held = (self.held.0 + act, self.held.1 + acc);
        if Self::bytes(self.held) > Self::bytes(self.peak) {
            self.peak = self.held;
        }
        if Self::bytes((act, acc)) > Self::bytes(self.largest) {
            self.largest = (act, acc);
        }
        self.saved.insert(key, fwd);
    }

    fn take(&mut self, key: (usize, usize)) -> std::result::Result<Forward<B>, ComputeError> {
        let fwd = self.saved.remove(&key).ok_or_else(|| {
            format!(
                "backward of micro-batch {} chunk {} before its forward",
                key.0, key.1
            )
        })?;
        let (act, acc) = fwd.saved_elements();
        self.held = (self.held.0 - act, self.held.1 - acc);
        Ok(fwd)
    }

    /// Bytes of the peak and of the largest single chunk activation.
    pub fn peak_bytes(&self) -> u64 {
        Self::bytes(self.peak)
    }
    pub fn largest_bytes(&self) -> u64 {
        Self::bytes(self.largest)
    }
}

fn boxed(e: impl Into<Error>) -> ComputeError {
    Box::new(e.into())
}

impl<B: Collectives> StageCompute for StageRun<'_, B> {
    fn boundary_len(&self, mb: usize, _boundary: usize) -> usize {
        self.model.residual_tokens(self.batches[mb].tokens) * self.model.cfg.hidden
    }

    fn forward(
        &mut self,
        mb: usize,
        chunk: usize,
        input: Option<Vec<f32>>,
    ) -> std::result::Result<Vec<f32>, ComputeError> {
        let (b, batch) = (self.b, &self.batches[mb]);
        let x = input.map(|h| b.upload_act(&h)).transpose().map_err(boxed)?;
        let layers = self.pipeline.split.blocks[chunk].clone();
        let fwd = self
            .model
            .chunk_forward(b, &mut *self.engine, batch, layers, x, self.tp)
            .map_err(boxed)?;
        let out = if chunk == self.pipeline.split.last_chunk() {
            Vec::new()
        } else {
            let x = fwd.xs.last().expect("a chunk has an output");
            b.download_act(Src::all(x)).map_err(boxed)?
        };
        self.keep((mb, chunk), fwd);
        Ok(out)
    }

    fn backward(
        &mut self,
        mb: usize,
        chunk: usize,
        grad_output: Option<Vec<f32>>,
    ) -> std::result::Result<Vec<f32>, ComputeError> {
        let (b, batch) = (self.b, &self.batches[mb]);
        let fwd = self.take((mb, chunk))?;
        let model = self.model;
        let dx = match grad_output {
            Some(g) => b.upload_act(&g).map_err(boxed)?,
            None => {
                let engine = &mut *self.engine;
                let (loss, dx) = model
                    .head_tp(b, engine, batch, &fwd, Some(self.grad_scale), None, self.tp)
                    .map_err(boxed)?;
                if !self.pipeline.first() {
                    // A tied table's copy: its backward for this micro-batch is complete.
                    model.finish_head_grad(b, engine).map_err(boxed)?;
                }
                self.loss_sum += loss;
                dx.expect("head returns dx with a grad scale")
            }
        };
        let first = chunk == 0;
        let dx_in = model
            .chunk_backward(b, &mut *self.engine, batch, &fwd, dx, first, self.tp)
            .map_err(boxed)?;
        match dx_in {
            Some(dx) => b.download_act(Src::all(&dx)).map_err(boxed),
            None => Ok(Vec::new()),
        }
    }
}

/// What one pipelined step did on this rank.
#[derive(Clone, Debug)]
pub struct PipelineStep {
    /// Σ loss over this dp rank's target tokens (the last stage's, summed over pp: every stage
    /// holds it).
    pub loss_sum: f64,
    pub report: StepReport,
    /// Bytes sent on the pp group during the step (the Comm counters).
    pub pp_bytes_sent: u64,
    /// Peak bytes of activations held for backward, and the largest single chunk's.
    pub peak_activation_bytes: u64,
    pub largest_activation_bytes: u64,
    /// Peak (act, acc) elements held.
    pub peak_activation_elements: (usize, usize),
}

impl Pipeline {
    /// Runs one step's forwards and backwards of `batches` (this dp rank's micro-batches; every
    /// stage of the pp group gets the same) with dloss = `grad_scale` per target token. The
    /// gradients are accumulated in `engine`; the caller steps it.
    pub fn train_step<B: Collectives>(
        &self,
        b: &B,
        model: &Transformer,
        engine: &mut dyn Engine<B>,
        tp: &dyn TpComm<B>,
        batches: Vec<Batch>,
        grad_scale: f64,
    ) -> Result<PipelineStep> {
        let dev = super::forward::upload_all(b, model, batches)?;
        let before = self.pp.counters().snapshot();
        let mut run = StageRun::new(b, model, engine, self, tp, &dev, grad_scale);
        let report = run_step(&*self.pp, &self.schedule, &mut run, &ExecOptions::default())
            .map_err(|e| match e {
                ferrotron_parallel::pipeline::PipelineError::Compute { source, .. } => {
                    match source.downcast::<Error>() {
                        Ok(e) => *e,
                        Err(other) => Error::Internal(other.to_string()),
                    }
                }
                other => Error::Internal(other.to_string()),
            })?;
        let pp_bytes_sent = self
            .pp
            .counters()
            .snapshot()
            .since(&before)
            .op(OpKind::Send)
            .bytes_sent;
        let loss_sum = all_sum(&*self.pp, run.loss_sum)?;
        Ok(PipelineStep {
            loss_sum,
            report,
            pp_bytes_sent,
            peak_activation_bytes: run.peak_bytes(),
            largest_activation_bytes: run.largest_bytes(),
            peak_activation_elements: run.peak,
        })
    }
}

/// Every rank's figures of a pipelined step, for metrics.jsonl (collective over `world`):
/// bytes sent on the pp group, idle fraction ((elapsed − compute) / compute), peak
/// (micro-batch, chunk) activations in flight, and peak activation bytes and elements held.
pub fn metrics_record(world: &dyn Comm, r: &PipelineStep) -> Result<Value> {
    let mine = [
        r.pp_bytes_sent as f64,
        r.report.idle_fraction(),
        r.report.peak_in_flight as f64,
        r.peak_activation_bytes as f64,
        r.peak_activation_elements.0 as f64,
        r.peak_activation_elements.1 as f64,
    ];
    let mut all = vec![0.0f64; mine.len() * world.size()];
    world
        .all_gather((&mine[..]).into(), (&mut all[..]).into())
        .map_err(comm_err)?;
    let column = |i: usize| -> Vec<f64> { all.chunks(mine.len()).map(|v| v[i]).collect() };
    let ints = |i: usize| -> Vec<u64> { column(i).into_iter().map(|x| x as u64).collect() };
    Ok(json!({
        "bytes_sent": ints(0),
        "idle_fraction": column(1),
        "peak_in_flight": ints(2),
        "activation_peak_bytes": ints(3),
        "activation_peak_elements": ints(4),
        "activation_peak_acc_elements": ints(5),
    }))
}
