//! The process groups of a mesh, built from a world communicator by `split`s. For the tp, dp and
//! pp groups: color = the group's index along the other two axes (`Mesh::group_index`), key =
//! the rank's position on the axis, so group rank i is the rank with coordinate i on that axis.
//! The model-parallel group `mp` joins the ranks of one dp coordinate (every pp × tp rank that
//! holds a different part of one model replica), ordered by (pp, tp): the group over which the
//! gradient norm's partial sums are added.

use std::sync::Arc;

use crate::comm::error::CommError;
use crate::comm::Comm;
use crate::mesh::{Axis, Coords, Mesh};

/// This rank's communicators: the world, its tp, dp and pp groups, and the model-parallel group.
#[derive(Clone)]
pub struct MeshComms {
    pub mesh: Mesh,
    pub coords: Coords,
    pub world: Arc<dyn Comm>,
    pub tp: Arc<dyn Comm>,
    pub dp: Arc<dyn Comm>,
    pub pp: Arc<dyn Comm>,
    /// pp × tp ranks of this rank's dp coordinate.
    pub mp: Arc<dyn Comm>,
}

impl MeshComms {
    /// Splits `world` along the mesh. Collective over `world`: every rank must call it.
    pub fn build(world: Arc<dyn Comm>, mesh: Mesh) -> Result<MeshComms, CommError> {
        if mesh.world_size() != world.size() {
            return Err(CommError::Setup(format!(
                "parallel layout pp={} x dp={} x tp={} = {} does not match the world size {}",
                mesh.pp,
                mesh.dp,
                mesh.tp,
                mesh.world_size(),
                world.size()
            )));
        }
        let rank = world.rank();
        let split = |axis: Axis| {
            world.split(
                mesh.group_index(rank, axis) as u32,
                mesh.index_on(rank, axis) as u32,
                &mesh.group_name(rank, axis),
            )
        };
        let tp = split(Axis::Tp)?;
        let dp = split(Axis::Dp)?;
        let pp = split(Axis::Pp)?;
        let c = mesh.coords(rank);
        let mp = world.split(
            c.dp as u32,
            (c.pp * mesh.tp + c.tp) as u32,
            &format!("mp(dp={})", c.dp),
        )?;
        Ok(MeshComms {
            mesh,
            coords: c,
            world,
            tp,
            dp,
            pp,
            mp,
        })
    }

    pub fn group(&self, axis: Axis) -> &Arc<dyn Comm> {
        match axis {
            Axis::Pp => &self.pp,
            Axis::Dp => &self.dp,
            Axis::Tp => &self.tp,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::comm::local::LocalComm;

    #[test]
    fn single_rank_mesh_has_groups_of_one() {
        let comms =
            MeshComms::build(Arc::new(LocalComm::new()), Mesh::new(1, 1, 1, 1).unwrap()).unwrap();
        assert_eq!(comms.dp.size(), 1);
        assert_eq!(comms.tp.name(), "tp(pp=0,dp=0)");
        assert_eq!((comms.mp.size(), comms.mp.name()), (1, "mp(dp=0)"));
        let err = MeshComms::build(Arc::new(LocalComm::new()), Mesh::new(2, 1, 2, 1).unwrap())
            .err()
            .unwrap();
        assert!(err.to_string().contains("world size 1"));
    }
}
