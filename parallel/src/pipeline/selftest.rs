//! End-to-end check of the executor on a real pp group (`ferrotron-comm-selftest pipeline
//! SCHEDULE M V` under mpirun or as TCP ranks; every rank of the group runs it).
//!
//! One step of the toy model (toy.rs: p·v chunks of tanh(W x), dim 32, 8 rows per micro-batch)
//! runs with `schedule` over `pp`; then each rank checks, exactly:
//! - the weight gradients of its chunks and (on the last chunk's rank) every micro-batch's loss
//!   equal the one-process reference bit for bit;
//! - the p2p bytes: every boundary carries m activations and m gradients of rows·dim f32, so this
//!   rank sends and receives m · rows·dim·4 bytes per neighbouring chunk on another rank, as the
//!   executor's report and the group's send/recv counters both say;
//! - the peak of activations held equals the schedule's bound (the simulator's figure).
//!
//! With `timing` = Some(Timing { stage_ms: t_f, .. }) every call is stretched to the time model t_f, t_b = 2 t_f,
//! t_w = t_f (timed.rs) and the step, timed between two barriers of the group, must idle the
//! schedule's exact formula within `timing.tolerance` (absolute, in units of the ideal time);
//! without it the measured idle fraction (then mostly messaging overhead) is only reported.
//!
//! Returns a line with the measured idle fraction ((step time − compute)/compute).

use crate::comm::counters::OpKind;
use crate::comm::Comm;
use crate::selftest::ensure;

use super::executor::{run_step, ExecOptions, StageCompute, StepReport};
use super::schedule::Schedule;
use super::time_model::TimeModel;
use super::timed::Timed;
use super::toy::{ToyModel, ToyStage};

/// A timed step: t_f in milliseconds and how far its idle fraction may be from the formula.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub stage_ms: f64,
    pub tolerance: f64,
}

/// The default tolerance, 0.08 of the ideal step time, covers message latency and sleeps
/// overshooting on a quiet machine (at t_f = 40 ms on 4 oversubscribed ranks of a 2-core machine:
/// 1f1b within 0.02 of the formula, interleaved v = 2 within 0.035). Under heavy load (other jobs,
/// concurrent tests) the excess reached 0.12.
pub const IDLE_TOLERANCE: f64 = 0.08;

/// Timed steps per check; the least idle one is compared with the formula.
const TIMED_STEPS: usize = 3;

/// Runs and checks one toy step; the summary line on success. `options.grouped` runs it over
/// NCCL-like groups (`HostExchange`) instead of tagged non-blocking messages.
pub fn check_pipeline(
    pp: &dyn Comm,
    name: &str,
    m: usize,
    v: usize,
    timing: Option<Timing>,
    options: &ExecOptions,
) -> Result<String, String> {
    let schedule = Schedule::new(name, pp.size(), m, v).map_err(|e| e.to_string())?;
    let model = ToyModel {
        chunks: schedule.chunks(),
        dim: 32,
        rows: 8,
    };
    let rank = pp.rank();
    let mine = schedule.chunks_of(rank);
    let time = timing.map(|Timing { stage_ms: ms, .. }| TimeModel {
        forward: ms / 1000.0,
        backward: 2.0 * ms / 1000.0,
        backward_weight: ms / 1000.0,
        latency: 0.0,
    });
    let (report, step_s, stage) = match time {
        Some(t) => {
            // Load on a shared machine only ever adds time, so the fastest of a few steps is
            // the one to hold against the formula; every rank runs the same number of steps.
            let mut best: Option<(StepReport, f64, ToyStage)> = None;
            for _ in 0..TIMED_STEPS {
                let mut timed = Timed::new(ToyStage::new(model, &mine), t, v);
                let (report, step_s) = timed_step(pp, &schedule, &mut timed, options)?;
                let idle = (step_s - report.compute_s) / report.compute_s;
                if best
                    .as_ref()
                    .is_none_or(|(r, s, _)| idle < (s - r.compute_s) / r.compute_s)
                {
                    best = Some((report, step_s, timed.inner));
                }
            }
            best.expect("TIMED_STEPS > 0")
        }
        None => {
            let mut stage = ToyStage::new(model, &mine);
            let (report, step_s) = timed_step(pp, &schedule, &mut stage, options)?;
            (report, step_s, stage)
        }
    };

    let reference = model.reference(m);
    for &c in &mine {
        ensure(stage.weight_grads[&c] == reference.weight_grads[c], || {
            let diff = stage.weight_grads[&c]
                .iter()
                .zip(&reference.weight_grads[c])
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            format!("chunk {c}: weight gradient differs from the reference by up to {diff}")
        })?;
    }
    let last = schedule.chunks() - 1;
    if schedule.owner(last) == rank {
        let losses: Vec<f32> = (0..m).map(|mb| stage.losses[&mb]).collect();
        ensure(losses == reference.losses, || {
            format!(
                "losses {losses:?} differ from the reference {:?}",
                reference.losses
            )
        })?;
    }

    let message = (4 * model.rows * model.dim) as u64;
    let p = schedule.stages();
    // Activations leave every chunk but the last, gradients every chunk but the first.
    let outgoing: u64 = mine
        .iter()
        .map(|&c| (c < last && (c + 1) % p != rank) as u64 + (c > 0 && (c - 1) % p != rank) as u64)
        .sum();
    let expected = outgoing * m as u64 * message;
    let snap = pp.counters().snapshot();
    let (sent, received) = (snap.op(OpKind::Send), snap.op(OpKind::Recv));
    ensure(
        report.bytes_sent == expected
            && sent.bytes_sent == expected
            && report.bytes_received == expected
            && received.bytes_received == expected,
        || {
            format!(
                "p2p bytes: report sent {} received {}, counters sent {} received {}, expected {expected} each",
                report.bytes_sent, report.bytes_received, sent.bytes_sent, received.bytes_received
            )
        },
    )?;
    ensure(
        report.peak_in_flight == schedule.expected_peak_in_flight(rank),
        || {
            format!(
                "peak in-flight {} but the schedule's bound is {}",
                report.peak_in_flight,
                schedule.expected_peak_in_flight(rank)
            )
        },
    )?;
    let measured = (step_s - report.compute_s) / report.compute_s;
    let formula =
        schedule.exact_bubble(&TimeModel::default()) / schedule.ideal_time(&TimeModel::default());
    if let (Some(t), Some(timing)) = (time, timing) {
        let formula = schedule.exact_bubble(&t) / schedule.ideal_time(&t);
        ensure((measured - formula).abs() <= timing.tolerance, || {
            format!("idle fraction {measured:.4} measured, {formula:.4} by the formula")
        })?;
    }
    Ok(format!(
        "{name} p={p} m={m} v={v}{}: gradients and losses equal the 1-process reference; p2p bytes sent {} received {} (= {outgoing} x m x {message}); peak in-flight {}; idle fraction {measured:.4} (formula {formula:.4}, t_b = 2 t_f = 2 t_w{})",
        if options.grouped { " (grouped point-to-point)" } else { "" },
        report.bytes_sent,
        report.bytes_received,
        report.peak_in_flight,
        timing.map_or(", untimed toy".to_string(), |t| format!(", t_f = {} ms", t.stage_ms)),
    ))
}

/// One step between two barriers of the group: the report and the step's wall time.
fn timed_step(
    pp: &dyn Comm,
    schedule: &Schedule,
    compute: &mut dyn StageCompute<Buf = Vec<f32>>,
    options: &ExecOptions,
) -> Result<(StepReport, f64), String> {
    pp.barrier().map_err(|e| e.to_string())?;
    pp.counters().reset();
    let start = std::time::Instant::now();
    let report = run_step(pp, schedule, compute, options).map_err(|e| e.to_string())?;
    pp.barrier().map_err(|e| e.to_string())?;
    Ok((report, start.elapsed().as_secs_f64()))
}
