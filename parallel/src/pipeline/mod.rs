//! Pipeline parallelism without a model: schedules as data, a simulator that checks them, and an
//! executor that runs one rank's list over the pp group's non-blocking point-to-point.
//!
//! - `action.rs`: what a rank does (forward/backward of micro-batch i through model chunk c,
//!   send/receive of activations and gradients) and the messages' tags.
//! - `schedule.rs`: `Schedule::new(parallel.pp_schedule, pp, microbatches, pp_virtual_stages)`;
//!   one file per schedule (`gpipe.rs`, `one_f_one_b.rs`, `interleaved.rs`, `zb_h1.rs`) with
//!   its order, bubble and memory formulas.
//! - `sim.rs`: runs all ranks' lists in-process against a `TimeModel` and checks them.
//! - (next) `executor.rs`: runs one rank's list with a `StageCompute` over a `Comm`.

pub mod action;
mod gpipe;
mod interleaved;
mod one_f_one_b;
pub mod schedule;
pub mod sim;
pub mod time_model;
mod zb_h1;

pub use action::{Action, Direction, Message, MessageKind};
pub use schedule::{Schedule, ScheduleError, ScheduleKind};
pub use sim::{simulate, simulate_actions, SimError, SimReport};
pub use time_model::TimeModel;
