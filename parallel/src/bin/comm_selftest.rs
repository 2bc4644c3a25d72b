//! `ferrotron-comm-selftest`: checks the communication layer of a real job, the way the trainer
//! opens it (environment detection, then `init_world`). Run it under mpirun, srun or
//! `ferrotron launch`; every rank prints one "ok" line or an error, and exits non-zero on error.
//!
//!   ferrotron-comm-selftest collectives [--timeout-s N]   values and byte counters
//!   ferrotron-comm-selftest mesh PP DP TP                 mesh groups built by split
//!   ferrotron-comm-selftest hang [--timeout-s N]          rank 1 stalls; the others must time out
//!   ferrotron-comm-selftest die                           rank 1 kills itself mid-loop
//!   ferrotron-comm-selftest p2p                           non-blocking send/recv and counters
//!   ferrotron-comm-selftest p2p-blocking [--timeout-s N]  the same exchange with blocking sends
//!   ferrotron-comm-selftest p2p-hang [--timeout-s N]      rank 0 waits for a message never sent
//!   ferrotron-comm-selftest pipeline SCHEDULE M V [--stage-ms T [--idle-tolerance X]] [--grouped]
//!                                                         a toy pipelined step vs 1 process

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use ferrotron_parallel::pipeline::selftest::{Timing, IDLE_TOLERANCE};
use ferrotron_parallel::selftest::{check_collectives, check_mesh};
use ferrotron_parallel::{env, init_world, Comm, Mesh, ReduceOp, WorldOptions};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ferrotron-comm-selftest: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<String, String> {
    let scenario = args.first().ok_or(
        "usage: ferrotron-comm-selftest <collectives|mesh PP DP TP|hang|die|p2p|p2p-blocking|p2p-hang|pipeline SCHEDULE M V> [--timeout-s N]",
    )?;
    let mut options = WorldOptions::default();
    if let Some(i) = args.iter().position(|a| a == "--timeout-s") {
        let secs: f64 = args
            .get(i + 1)
            .and_then(|s| s.parse().ok())
            .ok_or("--timeout-s needs a number of seconds")?;
        options.collective_timeout = Duration::from_secs_f64(secs);
    }
    let dist = env::detect_from_process()?;
    let world = init_world(&dist, &options).map_err(|e| e.to_string())?;
    let (rank, size) = (world.rank(), world.size());
    let tag = format!("rank {rank} of {size} ({:?})", dist.backend());
    let result = match scenario.as_str() {
        "collectives" => check_collectives(&*world),
        "mesh" => mesh_scenario(Arc::clone(&world), &args[1..]),
        "hang" => hang(&*world),
        "die" => die(&*world),
        "p2p" => ferrotron_parallel::selftest_p2p::check_p2p(&*world),
        "p2p-blocking" => ferrotron_parallel::selftest_p2p::blocking_exchange(&*world),
        "p2p-hang" => p2p_hang(&*world, options.collective_timeout),
        "pipeline" => pipeline_scenario(&*world, &args[1..]),
        other => Err(format!("unknown scenario {other}")),
    };
    drop(world); // finalises MPI before the process exits
    result
        .map(|_| format!("ok: {scenario} {tag}"))
        .map_err(|e| format!("{scenario} failed on {tag}: {e}"))
}

fn mesh_scenario(world: Arc<dyn Comm>, args: &[String]) -> Result<(), String> {
    let sizes: Vec<usize> = args.iter().take(3).filter_map(|a| a.parse().ok()).collect();
    let [pp, dp, tp] = sizes[..] else {
        return Err("mesh needs PP DP TP".into());
    };
    let mesh = Mesh::new(world.size(), pp, dp, tp).map_err(|e| e.to_string())?;
    check_mesh(world, mesh)
}

/// A toy step of the named schedule over the whole world as the pp group.
fn pipeline_scenario(world: &dyn Comm, args: &[String]) -> Result<(), String> {
    let usage = "pipeline needs SCHEDULE M V";
    let name = args.first().ok_or(usage)?;
    let number = |i: usize| -> Result<usize, String> {
        args.get(i)
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| usage.to_string())
    };
    let flag = |name: &str| -> Result<Option<f64>, String> {
        match args.iter().position(|a| a == name) {
            Some(i) => args
                .get(i + 1)
                .and_then(|a| a.parse().ok())
                .map(Some)
                .ok_or_else(|| format!("{name} needs a number")),
            None => Ok(None),
        }
    };
    let timing = flag("--stage-ms")?.map(|stage_ms| -> Result<Timing, String> {
        Ok(Timing {
            stage_ms,
            tolerance: flag("--idle-tolerance")?.unwrap_or(IDLE_TOLERANCE),
        })
    });
    let timing = timing.transpose()?;
    let options = ferrotron_parallel::pipeline::ExecOptions {
        grouped: args.iter().any(|a| a == "--grouped"),
        ..Default::default()
    };
    let line = ferrotron_parallel::pipeline::selftest::check_pipeline(
        world,
        name,
        number(1)?,
        number(2)?,
        timing,
        &options,
    )?;
    println!("rank {}: {line}", world.rank());
    Ok(())
}

/// Rank 0 waits for a message from rank 1, which stays alive past the timeout without sending.
fn p2p_hang(world: &dyn Comm, timeout: Duration) -> Result<(), String> {
    if world.rank() == 1 {
        std::thread::sleep(timeout + Duration::from_secs(3));
        return Ok(());
    }
    if world.rank() != 0 {
        return Ok(());
    }
    let request = world
        .irecv(ferrotron_parallel::Dtype::F32, 4, 1, 5)
        .map_err(|e| e.to_string())?;
    request.wait().map(|_| ()).map_err(|e| e.to_string())
}

fn hang(world: &dyn Comm) -> Result<(), String> {
    if world.rank() == 1 {
        std::thread::sleep(Duration::from_secs(60));
    }
    let mut x = [1.0f32];
    world
        .all_reduce((&mut x[..]).into(), ReduceOp::Sum)
        .map_err(|e| e.to_string())
}

fn die(world: &dyn Comm) -> Result<(), String> {
    for step in 0..2000 {
        if world.rank() == 1 && step == 20 {
            // SAFETY: plain libc calls; the process ends here.
            unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        }
        let mut x = [step as f32];
        world
            .all_reduce((&mut x[..]).into(), ReduceOp::Sum)
            .map_err(|e| format!("step {step}: {e}"))?;
        std::thread::sleep(Duration::from_millis(5));
    }
    Err("rank 1 should have died but the loop finished".into())
}
