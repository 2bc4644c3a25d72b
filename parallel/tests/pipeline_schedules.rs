//! Every schedule at p ∈ {2, 4, 8}, m ∈ {p, 2p, p − 1, p + 1, 2p + 1} (the last three odd),
//! v ∈ {1, 2} where the schedule takes v (and v = 3 for interleaved), simulated under several
//! time models: the lists must pass every simulator check, every rank's idle time must equal
//! the schedule's exact formula, the idle fraction must equal the textbook figure where that is
//! exact, and the peak activations held must equal the schedule's bound (1F1B: ≤ p on stage 0).
//! `cargo test --release -p ferrotron-parallel --test pipeline_schedules -- --nocapture` prints
//! the table.

use ferrotron_parallel::pipeline::action::Action;
use ferrotron_parallel::pipeline::{simulate, Schedule, ScheduleKind, TimeModel};

const TOLERANCE: f64 = 1e-9;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= TOLERANCE * a.abs().max(b.abs()).max(1.0)
}

fn combinations() -> Vec<(ScheduleKind, usize, usize, usize)> {
    let mut out = Vec::new();
    for kind in ScheduleKind::ALL {
        let vs: &[usize] = if kind == ScheduleKind::Interleaved {
            &[2, 3]
        } else {
            &[1]
        };
        for p in [2, 4, 8] {
            for m in [p, 2 * p, p - 1, p + 1, 2 * p + 1] {
                for &v in vs {
                    out.push((kind, p, m, v));
                }
            }
        }
    }
    out
}

/// Time models: t_b = 2 t_f (the usual ratio), equal, t_b = 3 t_f, slow forward, for the
/// zero-bubble split weight gradients smaller and larger than a forward, and random ones.
fn time_models() -> Vec<TimeModel> {
    let t = |forward, backward, backward_weight| TimeModel {
        forward,
        backward,
        backward_weight,
        latency: 0.0,
    };
    let mut models = vec![
        t(1.0, 2.0, 1.0),
        t(1.0, 1.0, 0.5),
        t(1.0, 3.0, 1.0),
        t(2.0, 3.0, 1.0),
        t(1.0, 2.0, 0.5),
        t(1.0, 4.0, 2.0),
        t(0.75, 2.5, 1.25),
    ];
    // And 24 pseudo-random ones (t_f, t_b in [0.1, 4), t_w in [0, t_b]).
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut uniform = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    for _ in 0..24 {
        let forward = 0.1 + 3.9 * uniform();
        let backward = 0.1 + 3.9 * uniform();
        let weight = backward * uniform();
        models.push(t(forward, backward, weight));
    }
    models
}

/// Whether the textbook figure is the exact one: always for GPipe and 1F1B; for interleaved
/// when m ≥ p; for ZB-H1 when m ≥ p and t_w ≤ min(t_f, t_B).
fn textbook_is_exact(kind: ScheduleKind, p: usize, m: usize, t: &TimeModel) -> bool {
    match kind {
        ScheduleKind::GPipe | ScheduleKind::OneFOneB => true,
        ScheduleKind::Interleaved => m >= p,
        ScheduleKind::ZbH1 => {
            m >= p && t.backward_weight <= t.forward.min(t.backward - t.backward_weight)
        }
    }
}

#[test]
fn every_schedule_meets_its_formulas_in_the_simulator() {
    println!(
        "| schedule | p | m | v | idle/ideal measured (t_f=1, t_b=2, t_w=1) | textbook | exact formula | peak in-flight per rank (mb·chunk) | bound |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut checked = 0;
    for (kind, p, m, v) in combinations() {
        let schedule = Schedule::build(kind, p, m, v).unwrap();
        for (i, t) in time_models().iter().enumerate() {
            let what = format!("{} p={p} m={m} v={v} t={t:?}", kind.name());
            let report = simulate(&schedule, t).unwrap_or_else(|e| panic!("{what}: {e}"));
            let exact = schedule.exact_bubble(t);
            let ideal = schedule.ideal_time(t);
            for r in 0..p {
                assert!(
                    close(report.busy[r], ideal),
                    "{what}: rank {r} busy {}",
                    report.busy[r]
                );
                assert!(
                    close(report.idle[r], exact),
                    "{what}: rank {r} idles {} but the formula says {exact}",
                    report.idle[r]
                );
                assert_eq!(
                    report.peak_in_flight[r],
                    schedule.expected_peak_in_flight(r),
                    "{what}: rank {r} peak in-flight"
                );
            }
            if textbook_is_exact(kind, p, m, t) {
                let textbook = schedule.textbook_bubble_fraction(t);
                assert!(
                    close(report.idle_fraction(0), textbook),
                    "{what}: idle fraction {} vs textbook {textbook}",
                    report.idle_fraction(0)
                );
            }
            match kind {
                ScheduleKind::OneFOneB => assert!(report.peak_in_flight[0] <= p, "{what}"),
                ScheduleKind::GPipe => assert!(report.peak_in_flight.iter().all(|&x| x == m)),
                _ => {}
            }
            // m activations and m gradients cross each of the p·v − 1 chunk boundaries; those
            // between chunks of one rank (none for p ≥ 2) are handed over locally.
            let sent: usize = report.messages_sent.iter().sum();
            assert_eq!(
                sent,
                schedule.messages_per_boundary() * (p * v - 1),
                "{what}"
            );
            if i == 0 {
                let peaks: Vec<String> = report
                    .peak_in_flight
                    .iter()
                    .map(|x| x.to_string())
                    .collect();
                let bounds: Vec<String> = (0..p)
                    .map(|r| schedule.expected_peak_in_flight(r).to_string())
                    .collect();
                println!(
                    "| {} | {p} | {m} | {v} | {:.4} | {:.4} | {:.4} | {} | {} |",
                    kind.name(),
                    report.idle_fraction(0),
                    schedule.textbook_bubble_fraction(t),
                    exact / ideal,
                    peaks.join(" "),
                    bounds.join(" "),
                );
            }
            checked += 1;
        }
    }
    assert_eq!(checked, combinations().len() * time_models().len());
}

#[test]
fn idle_fraction_is_the_same_on_every_rank_and_latency_only_adds() {
    let schedule = Schedule::new("interleaved", 4, 8, 2).unwrap();
    let free = simulate(&schedule, &TimeModel::default()).unwrap();
    let slow = simulate(
        &schedule,
        &TimeModel {
            latency: 0.1,
            ..TimeModel::default()
        },
    )
    .unwrap();
    assert!(free.idle.iter().all(|&x| close(x, free.idle[0])));
    assert!(slow.makespan > free.makespan);
}

/// Every schedule runs over grouped, tagless, rendezvous point-to-point (NCCL's semantics, the
/// executor's grouped mode) at every combination: no deadlock, and each pair's messages in one
/// order on both ends. GPipe, 1F1B and ZB-H1 with their own lists; interleaved mostly with its
/// messages placed in lock-step rounds (rounds.rs), because its own placement fails there (at
/// p = 2 one pair carries activations and gradients in different orders on its two ends; at
/// p ≥ 4 with m > p the ranks' gradient sends wait on each other around the ring). The grouped
/// lists hold every rank's computes in the schedule's order and the same messages.
#[test]
fn every_schedule_runs_over_grouped_tagless_point_to_point() {
    let mut failures = Vec::new();
    let mut placed_in_rounds = 0;
    for (kind, p, m, v) in combinations() {
        let s = Schedule::build(kind, p, m, v).unwrap();
        let what = format!("{} p {p} m {m} v {v}", kind.name());
        if let Err(e) = ferrotron_parallel::pipeline::check_grouped(&s) {
            failures.push(format!("{what}: {e}"));
            continue;
        }
        if ferrotron_parallel::pipeline::check_grouped_actions(s.all_actions()).is_err() {
            placed_in_rounds += 1;
        }
        for r in 0..p {
            let (own, grouped) = (s.actions(r), s.grouped_actions(r).unwrap());
            let computes = |l: &[Action]| -> Vec<Action> {
                l.iter().copied().filter(Action::is_compute).collect()
            };
            let messages = |l: &[Action]| -> Vec<String> {
                let mut v: Vec<String> = l
                    .iter()
                    .filter(|a| !a.is_compute())
                    .map(|a| a.to_string())
                    .collect();
                v.sort();
                v
            };
            if computes(own) != computes(grouped) || messages(own) != messages(grouped) {
                failures.push(format!(
                    "{what}: rank {r}'s grouped list changes its actions"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    println!("combinations run grouped with messages placed in rounds: {placed_in_rounds}");
    assert!(
        placed_in_rounds > 0,
        "no combination needed the round placement: the checks above test nothing new"
    );
}
