//! The process groups of a run and the GPU each rank drives.
//!
//! The world comes from the launcher's environment (MPI, or TCP under `ferrotron launch`); the
//! pp × dp × tp mesh splits it. On CUDA with `parallel.gpu_comm = "nccl"` the dp group moves
//! device buffers through NCCL; otherwise through the host.

use super::comm_err;
use crate::error::Result;
use crate::recipe::Recipe;
use crate::user;
use ferrotron_kernels::cuda::{device::device_count, CudaAct, CudaBackend};
use ferrotron_parallel::{env::DistEnv, init_world, Mesh, MeshComms, WorldOptions};
use ferrotron_zero::Collectives;
use std::time::Duration;

/// The world and its mesh groups for `recipe`.
pub fn open<B: Collectives>(b: &B, recipe: &Recipe, dist: &DistEnv) -> Result<MeshComms> {
    let p = &recipe.parallel;
    let options = WorldOptions {
        collective_timeout: Duration::from_secs_f64(p.collective_timeout_s),
        ..WorldOptions::default()
    };
    let world = init_world(dist, &options).map_err(comm_err)?;
    let model_ranks = p.pp * p.tp;
    if world.size() % model_ranks != 0 {
        return Err(user!(
            "parallel.pp = {} x parallel.tp = {} = {model_ranks} ranks per model copy does not divide the {} rank(s) started: start a multiple of {model_ranks} ranks (mpirun -np, ferrotron launch --nproc-per-node) or lower parallel.tp / parallel.pp",
            p.pp,
            p.tp,
            world.size()
        ));
    }
    let mesh = Mesh::with_inferred_dp(world.size(), p.pp, p.tp).map_err(|e| user!("{e}"))?;
    let mut comms = MeshComms::build(world, mesh).map_err(comm_err)?;
    if recipe.uses_nccl() {
        comms.dp = b.nccl_group(comms.dp.clone())?;
        if comms.tp.size() > 1 {
            comms.tp = b.nccl_group(comms.tp.clone())?;
        }
    }
    Ok(comms)
}

/// The CUDA backend of this rank: GPU `LOCAL_RANK mod device count`. With NCCL, more local ranks
/// than GPUs is rejected (NCCL refuses two ranks on one GPU).
pub fn open_gpu<A: CudaAct>(recipe: &Recipe, dist: &DistEnv) -> Result<CudaBackend<A>> {
    let gpus = device_count().map_err(|e| user!("train.device = \"cuda\": {e}"))?;
    if gpus == 0 {
        return Err(user!(
            "train.device = \"cuda\" but no CUDA device is visible"
        ));
    }
    let local = dist.local_world_size.unwrap_or(1);
    if recipe.parallel.gpu_comm == "nccl" && local > gpus {
        return Err(user!(
            "{local} ranks on this node share {gpus} GPU(s) and NCCL refuses two ranks on one GPU: set parallel.gpu_comm = \"host-staged\" or start one rank per GPU"
        ));
    }
    let b = CudaBackend::<A>::new(dist.local_rank % gpus)
        .map_err(|e| user!("train.device = \"cuda\": {e}"))?;
    Ok(b)
}
