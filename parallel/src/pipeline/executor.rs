//! Runs one rank's action list for one step over the pp group, with the stage's compute behind a
//! trait object and activations/gradients moving by non-blocking point-to-point.
//!
//! Contract:
//! - `run_step(pp, schedule, compute, options)`: `pp` is the pipeline group (size p, group rank
//!   = stage rank); every rank of it calls `run_step` with the same schedule. The rank runs its
//!   actions in order: compute actions call `StageCompute`; a send hands the produced buffer to
//!   `isend_owned` (no copy) and moves on; a receive waits for its message. Receives are posted
//!   ahead of the action that waits for them: the next `options.recv_ahead` receives of the list
//!   are always posted (in list order, which keeps each channel's FIFO matching the simulator
//!   checked), so a message can land while the rank computes. Sends are waited for at the end
//!   of the step (tested along the way so the transport makes progress).
//! - Tags are `Message::tag()`: 2·boundary (+1 for gradients), on the pp group only.
//! - Buffers are f32 host vectors, moved in and out of the compute (no copies here). The
//!   length of every message is `StageCompute::boundary_len`; a produced buffer of another
//!   length is an error naming the action.
//! - Chunks of one rank that are neighbours (p = 1) hand their buffers over locally.
//! - The report's counts are exact: compute time, time blocked in receives and final send
//!   waits, the peak of (micro-batch, chunk) activations held (the simulator's measure), messages
//!   and bytes.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use crate::comm::error::CommError;
use crate::comm::p2p::{OwnedBuf, RecvRequest, SendRequest};
use crate::comm::Comm;
use crate::Dtype;

use super::action::{Action, Direction, Message, MessageKind};
use super::schedule::Schedule;

/// An error of the stage's own computation.
pub type ComputeError = Box<dyn std::error::Error + Send + Sync>;

const NOT_SPLIT: &str = "this stage computes the backward in one piece; pp_schedule \"zb-h1\" needs it split into input and weight gradients";

/// What a pipeline stage computes; implemented by the trainer (and by `toy::ToyStage`).
pub trait StageCompute {
    /// Elements of the activation crossing `boundary` (output of chunk `boundary`, input of
    /// chunk `boundary + 1`) for micro-batch `mb`; its gradient has the same length.
    fn boundary_len(&self, mb: usize, boundary: usize) -> usize;

    /// Forward of `mb` through `chunk` (a chunk of this rank). `input` is chunk − 1's output,
    /// None for chunk 0 (which reads the micro-batch itself). Keeps what backward needs and
    /// returns the chunk's output; the last chunk computes and keeps its loss, and its output
    /// is not used.
    fn forward(
        &mut self,
        mb: usize,
        chunk: usize,
        input: Option<Vec<f32>>,
    ) -> Result<Vec<f32>, ComputeError>;

    /// Full backward of `mb` through `chunk`: `grad_output` is d loss / d output (None for the
    /// last chunk, whose loss is its own). Accumulates the chunk's weight gradients and returns
    /// d loss / d input (not used for chunk 0).
    fn backward(
        &mut self,
        mb: usize,
        chunk: usize,
        grad_output: Option<Vec<f32>>,
    ) -> Result<Vec<f32>, ComputeError>;

    /// Zero-bubble first half: d loss / d input only. Needed by "zb-h1".
    fn backward_input(
        &mut self,
        mb: usize,
        chunk: usize,
        grad_output: Option<Vec<f32>>,
    ) -> Result<Vec<f32>, ComputeError> {
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
    /// is always posted). Each holds a receive buffer.
    pub recv_ahead: usize,
}

impl Default for ExecOptions {
    fn default() -> Self {
        ExecOptions { recv_ahead: 2 }
    }
}

/// What one step measured on this rank.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepReport {
    /// Wall time of the whole step.
    pub elapsed_s: f64,
    /// Time inside `StageCompute` calls.
    pub compute_s: f64,
    /// Time blocked in receives and in the final wait for sends.
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
        source: Box<CommError>,
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

/// Runs this rank's actions of `schedule` for one step (see the module comment).
pub fn run_step(
    pp: &dyn Comm,
    schedule: &Schedule,
    compute: &mut dyn StageCompute,
    options: &ExecOptions,
) -> Result<StepReport, PipelineError> {
    let rank = pp.rank();
    if pp.size() != schedule.stages() {
        return Err(PipelineError::Mismatch {
            rank,
            what: format!(
                "the pp group {} has {} ranks but the schedule has {} stages",
                pp.name(),
                pp.size(),
                schedule.stages()
            ),
        });
    }
    let mut step = Step {
        pp,
        compute,
        rank,
        last_chunk: schedule.chunks() - 1,
        stages: schedule.stages(),
        actions: schedule.actions(rank),
        recv_ahead: options.recv_ahead,
        posted: VecDeque::new(),
        receives: schedule
            .actions(rank)
            .iter()
            .enumerate()
            .filter(|(_, a)| matches!(a.message(), Some((_, Direction::Recv, _))))
            .map(|(i, _)| i)
            .collect(),
        next_recv: 0,
        inputs: HashMap::new(),
        grads: HashMap::new(),
        outbox: HashMap::new(),
        sends: Vec::new(),
        in_flight: 0,
        report: StepReport::default(),
    };
    let start = Instant::now();
    let actions = step.actions;
    for (i, action) in actions.iter().enumerate() {
        step.post_receives(i)?;
        step.run(i, action)?;
    }
    step.finish()?;
    step.report.elapsed_s = start.elapsed().as_secs_f64();
    Ok(step.report)
}

struct Step<'a, 'c> {
    pp: &'a dyn Comm,
    compute: &'c mut dyn StageCompute,
    rank: usize,
    last_chunk: usize,
    stages: usize,
    actions: &'a [Action],
    recv_ahead: usize,
    /// Posted receives, in list order: (action index, request).
    posted: VecDeque<(usize, RecvRequest<'a>)>,
    /// Indices of the receive actions, in list order.
    receives: Vec<usize>,
    /// How many of them have been posted.
    next_recv: usize,
    /// Input activations here, by (mb, chunk).
    inputs: HashMap<(usize, usize), Vec<f32>>,
    /// Output gradients here, by (mb, chunk).
    grads: HashMap<(usize, usize), Vec<f32>>,
    /// Produced, waiting for their send action.
    outbox: HashMap<Message, Vec<f32>>,
    sends: Vec<SendRequest<'a>>,
    in_flight: usize,
    report: StepReport,
}

impl<'a> Step<'a, '_> {
    fn comm_err(&self, action: &Action, source: CommError) -> PipelineError {
        PipelineError::Comm {
            rank: self.rank,
            action: action.to_string(),
            source: Box::new(source),
        }
    }

    fn mismatch(&self, action: &Action, what: impl std::fmt::Display) -> PipelineError {
        PipelineError::Mismatch {
            rank: self.rank,
            what: format!("{action}: {what}"),
        }
    }

    /// Posts every receive up to action `i`, and more until `recv_ahead` are posted.
    fn post_receives(&mut self, i: usize) -> Result<(), PipelineError> {
        while let Some(&j) = self.receives.get(self.next_recv) {
            if j > i && self.posted.len() >= self.recv_ahead {
                break;
            }
            let action = &self.actions[j];
            let Some((msg, _, peer)) = action.message() else {
                break;
            };
            let len = self.compute.boundary_len(msg.mb, msg.boundary);
            let request = self
                .pp
                .irecv(Dtype::F32, len, peer, msg.tag())
                .map_err(|e| self.comm_err(action, e))?;
            self.posted.push_back((j, request));
            self.next_recv += 1;
        }
        Ok(())
    }

    /// Lets finished sends go (and the transport progress).
    fn reap_sends(&mut self) -> Result<(), CommError> {
        let mut i = 0;
        while i < self.sends.len() {
            if self.sends[i].test()? {
                drop(self.sends.swap_remove(i));
            } else {
                i += 1;
            }
        }
        Ok(())
    }

    fn run(&mut self, i: usize, action: &Action) -> Result<(), PipelineError> {
        if let Some((msg, dir, peer)) = action.message() {
            return match dir {
                Direction::Send => self.send(action, msg, peer),
                Direction::Recv => self.receive(i, action, msg),
            };
        }
        self.reap_sends().map_err(|e| self.comm_err(action, e))?;
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
                (chunk < self.last_chunk).then_some((MessageKind::Activation, chunk, output))
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
                (chunk > 0).then(|| (MessageKind::Grad, chunk - 1, grad_input))
            }
            Action::BackwardWeight { .. } => {
                self.call(action, |c| c.backward_weight(mb, chunk).map(|_| Vec::new()))?;
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

    fn call(
        &mut self,
        action: &Action,
        f: impl FnOnce(&mut dyn StageCompute) -> Result<Vec<f32>, ComputeError>,
    ) -> Result<Vec<f32>, PipelineError> {
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
        data: Vec<f32>,
    ) -> Result<(), PipelineError> {
        let expected = self.compute.boundary_len(msg.mb, msg.boundary);
        if data.len() != expected {
            return Err(self.mismatch(
                action,
                format!(
                    "produced {} elements for the {msg}, but boundary_len says {expected}",
                    data.len()
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
        let bytes = 4 * data.len() as u64;
        let request = self
            .pp
            .isend_owned(OwnedBuf::F32(data), peer, msg.tag())
            .map_err(|e| self.comm_err(action, e))?;
        self.sends.push(request);
        self.report.messages_sent += 1;
        self.report.bytes_sent += bytes;
        Ok(())
    }

    fn receive(&mut self, i: usize, action: &Action, msg: Message) -> Result<(), PipelineError> {
        let Some((j, request)) = self.posted.pop_front() else {
            return Err(self.mismatch(action, "no receive was posted"));
        };
        if j != i {
            return Err(self.mismatch(action, format!("the oldest posted receive is action {j}")));
        }
        let bytes = request.bytes();
        let started = Instant::now();
        let data = request.wait().map_err(|e| self.comm_err(action, e))?;
        self.report.wait_s += started.elapsed().as_secs_f64();
        let data = data
            .into_f32()
            .ok_or_else(|| self.mismatch(action, "the message is not f32"))?;
        let (mb, chunk) = action.mb_chunk();
        match msg.kind {
            MessageKind::Activation => self.inputs.insert((mb, chunk), data),
            MessageKind::Grad => self.grads.insert((mb, chunk), data),
        };
        self.report.messages_received += 1;
        self.report.bytes_received += bytes;
        Ok(())
    }

    /// Waits for the sends and checks that nothing is left over.
    fn finish(&mut self) -> Result<(), PipelineError> {
        let started = Instant::now();
        for request in self.sends.drain(..) {
            request.wait().map_err(|source| PipelineError::Comm {
                rank: self.rank,
                action: "the end-of-step wait for sends".into(),
                source: Box::new(source),
            })?;
        }
        self.report.wait_s += started.elapsed().as_secs_f64();
        let leftovers =
            self.inputs.len() + self.grads.len() + self.outbox.len() + self.posted.len();
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
            "pipeline rank 0: the pp group pp has 1 ranks but the schedule has 2 stages"
        );

        struct Whole;
        impl StageCompute for Whole {
            fn boundary_len(&self, _: usize, _: usize) -> usize {
                0
            }
            fn forward(
                &mut self,
                _: usize,
                _: usize,
                _: Option<Vec<f32>>,
            ) -> Result<Vec<f32>, ComputeError> {
                Ok(Vec::new())
            }
            fn backward(
                &mut self,
                _: usize,
                _: usize,
                _: Option<Vec<f32>>,
            ) -> Result<Vec<f32>, ComputeError> {
                Ok(Vec::new())
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
