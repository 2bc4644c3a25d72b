//! Runs one rank's action list for one step over the pp group, with the stage's compute behind a
//! trait object and activations/gradients moving by point-to-point (`links.rs`).
//!
//! Contract:
//! - `run_step(pp, schedule, compute, options)`: `pp` is the pipeline group (size p, group rank
//!   = stage rank); every rank of it calls `run_step` with the same schedule. The rank runs its
//!   actions in order: compute actions call `StageCompute`; sends hand the produced buffer to
//!   the transport (no copy); receives take what arrived. With `options.grouped` false (the
//!   default) messages are f32 host vectors on `HostLinks` (non-blocking, tagged, receives
//!   posted `recv_ahead` ahead); with it true they go as NCCL-like groups over the host group
//!   (`HostExchange`), the CPU check of the grouped mode.
//! - `run_step_with(links, rank, stages, schedule, compute)`: the same over any `Links`, with
//!   the compute's own buffer type (device buffers with `GroupedLinks` over NCCL). Grouped
//!   links run `Schedule::grouped_actions` (the lists `check_grouped` accepts, or the reason
//!   there are none), taken here before any message.
//! - Tags (host mode) are `Message::tag()`: 2·boundary (+1 for gradients), on the pp group only.
//! - The length of every message is `StageCompute::boundary_len`; a produced buffer of another
//!   length is an error naming the action.
//! - Chunks of one rank that are neighbours (p = 1) hand their buffers over locally.
//! - The report's counts are exact: compute time, time blocked in receives, group exchanges and
//!   final send waits, the peak of (micro-batch, chunk) activations held (the simulator's
//!   measure), messages and bytes.

use std::collections::HashMap;
use std::time::Instant;

use crate::comm::Comm;

use super::action::{Action, Direction, Message, MessageKind};
use super::links::{GroupedLinks, HostExchange, HostLinks, LinkError, Links};
use super::schedule::Schedule;

/// An error of the stage's own computation.
pub type ComputeError = Box<dyn std::error::Error + Send + Sync>;

const NOT_SPLIT: &str = "this stage computes the backward in one piece; pp_schedule \"zb-h1\" needs it split into input and weight gradients";

/// What a pipeline stage computes; implemented by the trainer (and by `toy::ToyStage`).
/// `Buf` is what crosses a boundary: f32 host vectors, or the backend's device buffers.
pub trait StageCompute {
    type Buf;

    /// Elements of the activation crossing `boundary` (output of chunk `boundary`, input of
    /// chunk `boundary + 1`) for micro-batch `mb`; its gradient has the same length.
    fn boundary_len(&self, mb: usize, boundary: usize) -> usize;

    /// Forward of `mb` through `chunk` (a chunk of this rank). `input` is chunk − 1's output,
    /// None for chunk 0 (which reads the micro-batch itself). Keeps what backward needs and
    /// returns the chunk's output; the last chunk computes and keeps its loss, and returns
    /// None.
    fn forward(
        &mut self,
        mb: usize,
        chunk: usize,
        input: Option<Self::Buf>,
    ) -> Result<Option<Self::Buf>, ComputeError>;

    /// Full backward of `mb` through `chunk`: `grad_output` is d loss / d output (None for the
    /// last chunk, whose loss is its own). Accumulates the chunk's weight gradients and returns
    /// d loss / d input (None for chunk 0).
    fn backward(
        &mut self,
        mb: usize,
        chunk: usize,
        grad_output: Option<Self::Buf>,
    ) -> Result<Option<Self::Buf>, ComputeError>;

    /// Zero-bubble first half: d loss / d input only. Needed by "zb-h1".
    fn backward_input(
        &mut self,
        mb: usize,
        chunk: usize,
        grad_output: Option<Self::Buf>,
    ) -> Result<Option<Self::Buf>, ComputeError> {
        let _ = (mb, chunk, grad_output);
        Err(NOT_SPLIT.into())
    }

    /// Zero-bubble second half: the weight gradients of `mb`, after its `backward_input`.
    fn backward_weight(&mut self, mb: usize, chunk: usize) -> Result<(), ComputeError> {
        let _ = (mb, chunk);
        Err(NOT_SPLIT.into())
    }
}

/// Tuning of `run_step`.
#[derive(Clone, Copy, Debug)]
pub struct ExecOptions {
    /// Receives kept posted ahead of the action that waits for them (at least the current one
    /// is always posted). Each holds a receive buffer. Host mode only.
    pub recv_ahead: usize,
    /// NCCL-like groups (`GroupedLinks` over `HostExchange`) instead of tagged non-blocking
    /// messages.
    pub grouped: bool,
}

impl Default for ExecOptions {
    fn default() -> Self {
        ExecOptions {
            recv_ahead: 2,
            grouped: false,
        }
    }
}

/// What one step measured on this rank.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepReport {
    /// Wall time of the whole step.
    pub elapsed_s: f64,
    /// Time inside `StageCompute` calls.
    pub compute_s: f64,
    /// Time blocked in receives, group exchanges and the final wait for sends.
    pub wait_s: f64,
    /// Most (micro-batch, chunk) activations held at once (forwarded, not fully backwarded);
    /// each is 1/v of a stage's activations for one micro-batch, so peak / v is the activation
    /// memory in micro-batches (1f1b: ≤ p on stage 0). Equals
    /// `Schedule::expected_peak_in_flight(rank)`.
    pub peak_in_flight: usize,
    pub messages_sent: usize,
    pub messages_received: usize,
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

impl StepReport {
    /// (elapsed − compute) / compute: the measured counterpart of the simulator's idle fraction.
    pub fn idle_fraction(&self) -> f64 {
        (self.elapsed_s - self.compute_s) / self.compute_s
    }
}

/// A failed step, naming the rank and what it was doing.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("pipeline rank {rank}, {action}: {source}")]
    Comm {
        rank: usize,
        action: String,
        source: LinkError,
    },
    #[error("pipeline rank {rank}, {action}: {source}")]
    Compute {
        rank: usize,
        action: String,
        source: ComputeError,
    },
    /// The lists, the group or the compute's buffers do not fit together.
    #[error("pipeline rank {rank}: {what}")]
    Mismatch { rank: usize, what: String },
}

/// Runs this rank's actions of `schedule` for one step over the host group `pp` (see the module
/// comment).
pub fn run_step(
    pp: &dyn Comm,
    schedule: &Schedule,
    compute: &mut dyn StageCompute<Buf = Vec<f32>>,
    options: &ExecOptions,
) -> Result<StepReport, PipelineError> {
    let (rank, size) = (pp.rank(), pp.size());
    if options.grouped {
        let links = GroupedLinks::new(HostExchange { pp });
        run_step_with(links, rank, size, schedule, compute)
    } else {
        let links = HostLinks::new(pp, options.recv_ahead);
        run_step_with(links, rank, size, schedule, compute)
    }
}

/// Runs this rank's actions of `schedule` for one step over `links`, as group rank `rank` of a
/// pp group of `size` ranks (see the module comment).
pub fn run_step_with<L: Links>(
    links: L,
    rank: usize,
    size: usize,
    schedule: &Schedule,
    compute: &mut dyn StageCompute<Buf = L::Buf>,
) -> Result<StepReport, PipelineError> {
    if size != schedule.stages() {
        return Err(PipelineError::Mismatch {
            rank,
            what: format!(
                "the pp group has {size} ranks but the schedule has {} stages",
                schedule.stages()
            ),
        });
    }
    let actions = if L::GROUPED {
        schedule
            .grouped_actions(rank)
            .map_err(|e| PipelineError::Mismatch {
                rank,
                what: format!(
                    "the {} schedule cannot run over grouped point-to-point: {e}",
                    schedule.kind().name()
                ),
            })?
    } else {
        schedule.actions(rank)
    };
    let mut step = Step {
        links,
        compute,
        rank,
        last_chunk: schedule.chunks() - 1,
        stages: schedule.stages(),
        inputs: HashMap::new(),
        grads: HashMap::new(),
        outbox: HashMap::new(),
        in_flight: 0,
        report: StepReport::default(),
    };
    let start = Instant::now();
    for (i, action) in actions.iter().enumerate() {
        let compute = &*step.compute;
        let len = |mb: usize, boundary: usize| compute.boundary_len(mb, boundary);
        step.links
            .before(i, actions, &len)
            .map_err(|(a, e)| step.comm_err(&a, e))?;
        step.run(i, action)?;
    }
    step.flush(None)?;
    step.finish()?;
    step.report.elapsed_s = start.elapsed().as_secs_f64();
    Ok(step.report)
}

struct Step<'c, L: Links> {
    links: L,
    compute: &'c mut dyn StageCompute<Buf = L::Buf>,
    rank: usize,
    last_chunk: usize,
    stages: usize,
    /// Input activations here, by (mb, chunk).
    inputs: HashMap<(usize, usize), L::Buf>,
    /// Output gradients here, by (mb, chunk).
    grads: HashMap<(usize, usize), L::Buf>,
    /// Produced, waiting for their send action.
    outbox: HashMap<Message, L::Buf>,
    in_flight: usize,
    report: StepReport,
}

impl<L: Links> Step<'_, L> {
    fn comm_err(&self, action: &Action, source: LinkError) -> PipelineError {
        PipelineError::Comm {
            rank: self.rank,
            action: action.to_string(),
            source,
        }
    }

    fn mismatch(&self, action: &Action, what: impl std::fmt::Display) -> PipelineError {
        PipelineError::Mismatch {
            rank: self.rank,
            what: format!("{action}: {what}"),
        }
    }

    /// Completes what the links hold pending (before compute action `at`, or at the end).
    fn flush(&mut self, at: Option<&Action>) -> Result<(), PipelineError> {
        let started = Instant::now();
        let arrived = self.links.flush().map_err(|e| match at {
            Some(a) => self.comm_err(a, e),
            None => PipelineError::Comm {
                rank: self.rank,
                action: "the end-of-step exchange".into(),
                source: e,
            },
        })?;
        self.report.wait_s += started.elapsed().as_secs_f64();
        for (action, data, bytes) in arrived {
            self.arrived(&action, data, bytes)?;
        }
        Ok(())
    }

    /// A received message for `action` (a receive): kept for the compute that consumes it.
    fn arrived(&mut self, action: &Action, data: L::Buf, bytes: u64) -> Result<(), PipelineError> {
        let Some((msg, _, _)) = action.message() else {
            return Err(self.mismatch(action, "is not a receive"));
        };
        let expected = self.compute.boundary_len(msg.mb, msg.boundary);
        if L::len(&data) != expected {
            return Err(self.mismatch(
                action,
                format!("{} elements arrived, {expected} expected", L::len(&data)),
            ));
        }
        let (mb, chunk) = action.mb_chunk();
        match msg.kind {
            MessageKind::Activation => self.inputs.insert((mb, chunk), data),
            MessageKind::Grad => self.grads.insert((mb, chunk), data),
        };
        self.report.messages_received += 1;
        self.report.bytes_received += bytes;
        Ok(())
    }

    fn run(&mut self, i: usize, action: &Action) -> Result<(), PipelineError> {
        if let Some((msg, dir, peer)) = action.message() {
            return match dir {
                Direction::Send => self.send(action, msg, peer),
                Direction::Recv => self.receive(i, action, msg, peer),
            };
        }
        self.flush(Some(action))?;
        let (mb, chunk) = action.mb_chunk();
        let started = Instant::now();
        let produced = match *action {
            Action::Forward { .. } => {
                let input = if chunk == 0 {
                    None
                } else {
                    let input = self.inputs.remove(&(mb, chunk));
                    Some(input.ok_or_else(|| self.mismatch(action, "its input is not here"))?)
                };
                let output = self.call(action, |c| c.forward(mb, chunk, input))?;
                self.in_flight += 1;
                self.report.peak_in_flight = self.report.peak_in_flight.max(self.in_flight);
                let wanted = chunk < self.last_chunk;
                self.produced(action, output, wanted, MessageKind::Activation, chunk)?
            }
            Action::Backward { .. } | Action::BackwardInput { .. } => {
                let grad_output =
                    if chunk == self.last_chunk {
                        None
                    } else {
                        let grad = self.grads.remove(&(mb, chunk));
                        Some(grad.ok_or_else(|| {
                            self.mismatch(action, "its output gradient is not here")
                        })?)
                    };
                let full = matches!(action, Action::Backward { .. });
                let grad_input = self.call(action, |c| {
                    if full {
                        c.backward(mb, chunk, grad_output)
                    } else {
                        c.backward_input(mb, chunk, grad_output)
                    }
                })?;
                if full {
                    self.in_flight -= 1;
                }
                let boundary = chunk.wrapping_sub(1);
                self.produced(action, grad_input, chunk > 0, MessageKind::Grad, boundary)?
            }
            Action::BackwardWeight { .. } => {
                self.call(action, |c| c.backward_weight(mb, chunk).map(|_| None))?;
                self.in_flight -= 1;
                None
            }
            _ => None,
        };
        self.report.compute_s += started.elapsed().as_secs_f64();
        if let Some((kind, boundary, data)) = produced {
            self.deliver(action, Message { kind, mb, boundary }, data)?;
        }
        Ok(())
    }

    /// What a compute call returned, against what its chunk must produce.
    #[allow(clippy::type_complexity)]
    fn produced(
        &self,
        action: &Action,
        out: Option<L::Buf>,
        wanted: bool,
        kind: MessageKind,
        boundary: usize,
    ) -> Result<Option<(MessageKind, usize, L::Buf)>, PipelineError> {
        match (out, wanted) {
            (Some(data), true) => Ok(Some((kind, boundary, data))),
            (None, false) => Ok(None),
            (None, true) => Err(self.mismatch(action, "produced nothing to pass on")),
            (Some(_), false) => Err(self.mismatch(action, "produced a buffer nobody takes")),
        }
    }

    fn call(
        &mut self,
        action: &Action,
        f: impl FnOnce(&mut dyn StageCompute<Buf = L::Buf>) -> Result<Option<L::Buf>, ComputeError>,
    ) -> Result<Option<L::Buf>, PipelineError> {
        f(&mut *self.compute).map_err(|source| PipelineError::Compute {
            rank: self.rank,
            action: action.to_string(),
            source,
        })
    }

    /// A produced activation or gradient: checked, then kept for the chunk of this rank that
    /// consumes it, or for the send action.
    fn deliver(
        &mut self,
        action: &Action,
        msg: Message,
        data: L::Buf,
    ) -> Result<(), PipelineError> {
        let expected = self.compute.boundary_len(msg.mb, msg.boundary);
        if L::len(&data) != expected {
            return Err(self.mismatch(
                action,
                format!(
                    "produced {} elements for the {msg}, but boundary_len says {expected}",
                    L::len(&data)
                ),
            ));
        }
        let consumer = match msg.kind {
            MessageKind::Activation => msg.boundary + 1,
            MessageKind::Grad => msg.boundary,
        };
        if consumer % self.stages == self.rank {
            match msg.kind {
                MessageKind::Activation => self.inputs.insert((msg.mb, consumer), data),
                MessageKind::Grad => self.grads.insert((msg.mb, consumer), data),
            };
        } else {
            self.outbox.insert(msg, data);
        }
        Ok(())
    }

    fn send(&mut self, action: &Action, msg: Message, peer: usize) -> Result<(), PipelineError> {
        let data = self
            .outbox
            .remove(&msg)
            .ok_or_else(|| self.mismatch(action, "nothing was produced to send"))?;
        let bytes = self
            .links
            .send(action, msg, peer, data)
            .map_err(|e| self.comm_err(action, e))?;
        self.report.messages_sent += 1;
        self.report.bytes_sent += bytes;
        Ok(())
    }

    fn receive(
        &mut self,
        i: usize,
        action: &Action,
        msg: Message,
        peer: usize,
    ) -> Result<(), PipelineError> {
        let len = self.compute.boundary_len(msg.mb, msg.boundary);
        let started = Instant::now();
        let got = self
            .links
            .recv(i, action, msg, peer, len)
            .map_err(|e| self.comm_err(action, e))?;
        self.report.wait_s += started.elapsed().as_secs_f64();
        if let Some((data, bytes)) = got {
            self.arrived(action, data, bytes)?;
        }
        Ok(())
    }

    /// Waits for the sends and checks that nothing is left over.
    fn finish(&mut self) -> Result<(), PipelineError> {
        let started = Instant::now();
        let pending = self.links.finish().map_err(|source| PipelineError::Comm {
            rank: self.rank,
            action: "the end-of-step wait for sends".into(),
            source,
        })?;
        self.report.wait_s += started.elapsed().as_secs_f64();
        let leftovers = self.inputs.len() + self.grads.len() + self.outbox.len() + pending;
        if leftovers > 0 || self.in_flight > 0 {
            return Err(PipelineError::Mismatch {
                rank: self.rank,
                what: format!(
                    "the step ended with {leftovers} unused buffers or receives and {} micro-batches not backwarded",
                    self.in_flight
                ),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::comm::local::LocalComm;
    use crate::pipeline::toy::{ToyModel, ToyStage};

    #[test]
    fn one_stage_runs_locally_and_matches_the_reference() {
        let model = ToyModel {
            chunks: 1,
            dim: 5,
            rows: 3,
        };
        for name in ["gpipe", "1f1b", "zb-h1"] {
            let schedule = Schedule::new(name, 1, 4, 1).unwrap();
            let mut stage = ToyStage::new(model, &[0]);
            let report = run_step(
                &LocalComm::named("pp"),
                &schedule,
                &mut stage,
                &ExecOptions::default(),
            )
            .unwrap();
            let reference = model.reference(4);
            assert_eq!(stage.weight_grads[&0], reference.weight_grads[0], "{name}");
            assert_eq!(report.messages_sent + report.messages_received, 0);
            assert_eq!(report.peak_in_flight, schedule.expected_peak_in_flight(0));
        }
    }

    #[test]
    fn a_group_of_the_wrong_size_and_an_unsplit_backward_are_errors() {
        let schedule = Schedule::new("1f1b", 2, 2, 1).unwrap();
        let model = ToyModel {
            chunks: 2,
            dim: 2,
            rows: 1,
        };
        let mut stage = ToyStage::new(model, &[0]);
        let err = run_step(
            &LocalComm::named("pp"),
            &schedule,
            &mut stage,
            &ExecOptions::default(),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "pipeline rank 0: the pp group has 1 ranks but the schedule has 2 stages"
        );

        struct Whole;
        impl StageCompute for Whole {
            type Buf = Vec<f32>;
            fn boundary_len(&self, _: usize, _: usize) -> usize {
                0
            }
            fn forward(
                &mut self,
                _: usize,
                _: usize,
                _: Option<Vec<f32>>,
            ) -> Result<Option<Vec<f32>>, ComputeError> {
                Ok(None)
            }
            fn backward(
                &mut self,
                _: usize,
                _: usize,
                _: Option<Vec<f32>>,
            ) -> Result<Option<Vec<f32>>, ComputeError> {
                Ok(None)
            }
        }
        let zb = Schedule::new("zb-h1", 1, 1, 1).unwrap();
        let err = run_step(
            &LocalComm::named("pp"),
            &zb,
            &mut Whole,
            &ExecOptions::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("pipeline rank 0, backward-input mb 0 chunk 0: this stage computes the backward in one piece"),
            "{err}"
        );
    }
}
