//! `ferrotron check-hf DIR --tp N` under a launcher (mpirun -np N, `ferrotron launch`): the world
//! of N ranks is one tensor-parallel group (dp = 1); each rank runs `run_tp` on its slices and
//! rank 0 prints the report of the reassembled tensors (every rank computes the same rows).
//! CPU f32, or CUDA (f32/bf16) through host-staged collectives; the f64 reference backend has
//! no collectives.

use super::{print_report, run_tp, Report};
use crate::error::{Error, Result};
use crate::user;
use ferrotron_kernels::cpu::CpuBackend;
use ferrotron_kernels::cuda::{CudaAct, CudaBackend};
use ferrotron_parallel::env::detect_from_process;
use ferrotron_parallel::tensor_parallel::TpGroup;
use ferrotron_parallel::{init_world, Comm, WorldOptions};
use ferrotron_zero::Collectives;
use std::path::Path;
use std::sync::Arc;

/// Which backend and precision the ranks compute in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TpBackend {
    CpuF32,
    CudaF32,
    CudaBf16,
}

/// Runs the tensor-parallel check; the exit code (1 when a row exceeds `tol`).
pub fn run_cli(
    dir: &Path,
    backend: TpBackend,
    tol: f64,
    tp: usize,
    sequence_parallel: bool,
) -> Result<i32> {
    let dist = detect_from_process().map_err(|e| user!("check-hf --tp {tp}: {e}"))?;
    if dist.world_size != tp {
        return Err(user!(
            "check-hf --tp {tp} runs on exactly {tp} ranks (e.g. mpirun -np {tp} ferrotron check-hf ... --tp {tp}), but the launcher started {}",
            dist.world_size
        ));
    }
    let world = init_world(&dist, &WorldOptions::default())
        .map_err(|e| Error::Internal(format!("check-hf: {e}")))?;
    let report = |name: &str, r: Result<Report>| -> Result<i32> {
        let r = r?;
        // Every rank holds the same report; one prints it.
        Ok(if world.rank() == 0 {
            print_report(&r, &format!("{name}, tp {tp}"), tol)
        } else {
            i32::from(r.max_err() > tol)
        })
    };
    match backend {
        TpBackend::CpuF32 => {
            let b = CpuBackend::<f32>::new();
            report("cpu-f32", on(&b, dir, world.clone(), sequence_parallel))
        }
        TpBackend::CudaF32 => {
            let b = gpu::<f32>(dist.local_rank)?;
            report("cuda-f32", on(&b, dir, world.clone(), sequence_parallel))
        }
        TpBackend::CudaBf16 => {
            let b = gpu::<half::bf16>(dist.local_rank)?;
            report("cuda-bf16", on(&b, dir, world.clone(), sequence_parallel))
        }
    }
}

fn on<B: Collectives>(
    b: &B,
    dir: &Path,
    world: Arc<dyn Comm>,
    sequence_parallel: bool,
) -> Result<Report> {
    let group = TpGroup {
        comm: world.clone(),
    };
    run_tp(b, dir, &group, Some(world.as_ref()), sequence_parallel)
}

/// The GPU of local rank `local` (ranks may share one: the collectives are host-staged).
fn gpu<A: CudaAct>(local: usize) -> Result<CudaBackend<A>> {
    let count =
        ferrotron_kernels::cuda::device::device_count().map_err(|e| user!("--device cuda: {e}"))?;
    if count == 0 {
        return Err(user!("--device cuda but no CUDA device is visible"));
    }
    CudaBackend::<A>::new(local % count).map_err(|e| user!("--device cuda: {e}"))
}
