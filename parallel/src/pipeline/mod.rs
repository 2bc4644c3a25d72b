//! Pipeline parallelism without a model: schedules as data, a simulator that checks them, and an
//! executor that runs one rank's list over the pp group's non-blocking point-to-point.
//!
//! - `action.rs`: what a rank does (forward/backward of micro-batch i through model chunk c,
//!   send/receive of activations and gradients) and the messages' tags.
//! - `schedule.rs`: `Schedule::new(parallel.pp_schedule, pp, microbatches, pp_virtual_stages)`;
//!   one file per schedule (`gpipe.rs`, `one_f_one_b.rs`, `interleaved.rs`, `zb_h1.rs`) with
//!   its order, bubble and memory formulas.
//! - `sim.rs`: runs all ranks' lists in-process against a `TimeModel` and checks them.
//! - `executor.rs`: `run_step` runs one rank's list with a `StageCompute` over the pp group.
//! - `links.rs`: the two transports (tagged non-blocking host messages; NCCL-like groups).
//! - `grouped.rs`: checks that the lists also run over NCCL-like point-to-point (grouped,
//!   tagless, rendezvous), which the executor's grouped mode uses for device buffers.
//! - `toy.rs`, `selftest.rs`: a toy model whose pipelined step must equal its one-process
//!   reference bit for bit, run on a real group by `ferrotron-comm-selftest pipeline`;
//!   `timed.rs` makes its calls last a `TimeModel`'s durations, to measure idle fractions.

pub mod action;
pub mod executor;
mod gpipe;
pub mod grouped;
mod interleaved;
pub mod links;
mod one_f_one_b;
mod rounds;
pub mod schedule;
pub mod selftest;
pub mod sim;
pub mod time_model;
pub mod timed;
pub mod toy;
mod zb_h1;

pub use action::{Action, Direction, Message, MessageKind};
pub use executor::{
    run_step, run_step_with, ComputeError, ExecOptions, PipelineError, StageCompute, StepReport,
};
pub use grouped::{check_grouped, check_grouped_actions, comm_runs};
pub use links::{GroupExchange, GroupedLinks, HostExchange, HostLinks, Links};
pub use schedule::{Schedule, ScheduleError, ScheduleKind};
pub use sim::{simulate, simulate_actions, SimError, SimReport};
pub use time_model::TimeModel;
