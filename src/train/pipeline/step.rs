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
//! (GPipe would hold m of them).
//!
//! How boundary tensors travel (`parallel.pp_p2p`, decided in `Pipeline::new`):
//! - tagged: f32 host vectors on the executor's non-blocking tagged messages (`HostVectors`:
//!   on a GPU downloaded and uploaded, i.e. host-staged, 4 bytes per element whatever the
//!   compute precision);
//! - grouped: the backend's own activation buffers (`ActBuffers`) in NCCL-like groups through
//!   `Collectives::p2p_group_act` — device to device over NCCL in the compute precision on a
//!   GPU whose pp group is an NCCL group; on the CPU the same code over MPI/TCP, which is how
//!   it is tested without a GPU.
//!
//! Exact accounting: every `Forward` kept is counted (`Forward::saved_elements`) while it waits
//! for its backward; the peak over the step is what the stage held at once, to compare with
//! `Transformer::blocks_activation_elements` × the schedule's in-flight bound.

use super::Pipeline;
use crate::data::Batch;
use crate::error::{Error, Result};
use crate::model::{DeviceBatch, Forward, Transformer};
use crate::train::{all_sum, comm_err};
use ferrotron_kernels::{Backend, Dst, Src};
use ferrotron_parallel::pipeline::{
    run_step, run_step_with, ComputeError, ExecOptions, GroupExchange, GroupedLinks, PipelineError,
    StageCompute, StepReport,
};
use ferrotron_parallel::{Comm, OpKind, TpComm};
use ferrotron_zero::{Collectives, Engine};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::marker::PhantomData;

/// How boundary tensors leave and enter the model's buffers (module comment).
pub trait Boundary<B: Backend> {
    type Buf;
    /// A received buffer as the model's activation.
    fn into_act(b: &B, buf: Self::Buf) -> ferrotron_kernels::Result<B::Act>;
    /// A copy of `x` to send (a chunk's output stays in its `Forward`).
    fn copy_out(b: &B, x: &B::Act) -> ferrotron_kernels::Result<Self::Buf>;
    /// An owned activation gradient to send.
    fn move_out(b: &B, x: B::Act) -> ferrotron_kernels::Result<Self::Buf>;
}

/// f32 host vectors (the tagged mode).
pub struct HostVectors;

impl<B: Backend> Boundary<B> for HostVectors {
    type Buf = Vec<f32>;
    fn into_act(b: &B, buf: Vec<f32>) -> ferrotron_kernels::Result<B::Act> {
        b.upload_act(&buf)
    }
    fn copy_out(b: &B, x: &B::Act) -> ferrotron_kernels::Result<Vec<f32>> {
        b.download_act(Src::all(x))
    }
    fn move_out(b: &B, x: B::Act) -> ferrotron_kernels::Result<Vec<f32>> {
        b.download_act(Src::all(&x))
    }
}

/// The backend's activation buffers (the grouped mode).
pub struct ActBuffers;

impl<B: Backend> Boundary<B> for ActBuffers {
    type Buf = B::Act;
    fn into_act(_: &B, buf: B::Act) -> ferrotron_kernels::Result<B::Act> {
        Ok(buf)
    }
    fn copy_out(b: &B, x: &B::Act) -> ferrotron_kernels::Result<B::Act> {
        use ferrotron_kernels::backend::Buffer;
        let n = x.len();
        let mut y = b.empty_act(n)?;
        b.copy_columns(Src::all(x), n, 0, Dst::all(&mut y), n, 0, 1, n, false)?;
        Ok(y)
    }
    fn move_out(_: &B, x: B::Act) -> ferrotron_kernels::Result<B::Act> {
        Ok(x)
    }
}

/// The grouped mode's exchange: `Collectives::p2p_group_act` on the pp group.
struct ActExchange<'a, B> {
    b: &'a B,
    pp: &'a dyn Comm,
}

impl<B: Collectives> GroupExchange for ActExchange<'_, B> {
    type Buf = B::Act;
    fn len(buf: &B::Act) -> usize {
        use ferrotron_kernels::backend::Buffer;
        buf.len()
    }
    fn bytes(&self, len: usize) -> u64 {
        // Device to device in the compute precision; host-staged as f32.
        let per = if self.pp.nccl().is_some() {
            B::ACT_BYTES
        } else {
            4
        };
        len as u64 * per
    }
    fn exchange(
        &mut self,
        sends: Vec<(B::Act, usize)>,
        recvs: &[(usize, usize)],
    ) -> std::result::Result<Vec<B::Act>, ComputeError> {
        Ok(self.b.p2p_group_act(self.pp, sends, recvs)?)
    }
}

/// This rank's chunks of one step, on the real model.
pub struct StageRun<'a, B: Collectives, T> {
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
    boundary: PhantomData<T>,
}

impl<'a, B: Collectives, T> StageRun<'a, B, T> {
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
            boundary: PhantomData,
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

    /// What the step measured: its loss sum and the activations held.
    fn figures(&self) -> RunFigures {
        RunFigures {
            loss_sum: self.loss_sum,
            peak: self.peak,
            peak_bytes: Self::bytes(self.peak),
            largest_bytes: Self::bytes(self.largest),
        }
    }
}

/// `StageRun::figures`.
struct RunFigures {
    loss_sum: f64,
    peak: (usize, usize),
    peak_bytes: u64,
    largest_bytes: u64,
}

fn boxed(e: impl Into<Error>) -> ComputeError {
    Box::new(e.into())
}

impl<B: Collectives, T: Boundary<B>> StageCompute for StageRun<'_, B, T> {
    type Buf = T::Buf;

    fn boundary_len(&self, mb: usize, _boundary: usize) -> usize {
        self.model.residual_tokens(self.batches[mb].tokens) * self.model.cfg.hidden
    }

    fn forward(
        &mut self,
        mb: usize,
        chunk: usize,
        input: Option<T::Buf>,
    ) -> std::result::Result<Option<T::Buf>, ComputeError> {
        let (b, batch) = (self.b, &self.batches[mb]);
        let x = input
            .map(|h| T::into_act(b, h))
            .transpose()
            .map_err(boxed)?;
        let layers = self.pipeline.split.blocks[chunk].clone();
        let fwd = self
            .model
            .chunk_forward(b, &mut *self.engine, batch, layers, x, self.tp)
            .map_err(boxed)?;
        let out = if chunk == self.pipeline.split.last_chunk() {
            None
        } else {
            let x = fwd.xs.last().expect("a chunk has an output");
            Some(T::copy_out(b, x).map_err(boxed)?)
        };
        self.keep((mb, chunk), fwd);
        Ok(out)
    }

    fn backward(
        &mut self,
        mb: usize,
        chunk: usize,
        grad_output: Option<T::Buf>,
    ) -> std::result::Result<Option<T::Buf>, ComputeError> {
        let (b, batch) = (self.b, &self.batches[mb]);
        let fwd = self.take((mb, chunk))?;
        let model = self.model;
        let dx = match grad_output {
            Some(g) => T::into_act(b, g).map_err(boxed)?,
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
        dx_in
            .map(|dx| T::move_out(b, dx))
            .transpose()
            .map_err(boxed)
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
        let (report, run) = if self.grouped {
            let mut run =
                StageRun::<B, ActBuffers>::new(b, model, engine, self, tp, &dev, grad_scale);
            let pp = &*self.pp;
            let links = GroupedLinks::new(ActExchange { b, pp });
            let (rank, size) = (pp.rank(), pp.size());
            let report = run_step_with(links, rank, size, &self.schedule, &mut run);
            (report, run.figures())
        } else {
            let mut run =
                StageRun::<B, HostVectors>::new(b, model, engine, self, tp, &dev, grad_scale);
            let options = ExecOptions::default();
            let report = run_step(&*self.pp, &self.schedule, &mut run, &options);
            (report, run.figures())
        };
        let report = report.map_err(|e| match e {
            PipelineError::Compute { source, .. } => match source.downcast::<Error>() {
                Ok(e) => *e,
                Err(other) => Error::Internal(other.to_string()),
            },
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
            peak_activation_bytes: run.peak_bytes,
            largest_activation_bytes: run.largest_bytes,
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
