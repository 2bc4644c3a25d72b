//! The device mesh: world = pp x dp x tp, tp varying fastest.
//!
//!   rank = (pp_index * dp + dp_index) * tp + tp_index
//!
//! so the ranks of one tensor-parallel group are consecutive (they share a node), a
//! data-parallel group strides by tp, and a pipeline group strides by dp * tp.
//! Example 2x2x2 (pp x dp x tp): tp groups {0,1} {2,3} {4,5} {6,7}; dp groups {0,2} {1,3} {4,6}
//! {5,7}; pp groups {0,4} {1,5} {2,6} {3,7}.
//! A pure struct: no communicator, no environment. `mesh_comms.rs` turns it into groups.

/// One axis of the mesh.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Axis {
    Pp,
    Dp,
    Tp,
}

impl Axis {
    pub fn name(self) -> &'static str {
        match self {
            Axis::Pp => "pp",
            Axis::Dp => "dp",
            Axis::Tp => "tp",
        }
    }
}

/// A rank's position on each axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Coords {
    pub pp: usize,
    pub dp: usize,
    pub tp: usize,
}

/// A rejected mesh layout.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MeshError {
    #[error("parallel layout pp={pp} x dp={dp} x tp={tp} = {product} does not match the world size {world}")]
    SizeMismatch {
        pp: usize,
        dp: usize,
        tp: usize,
        product: usize,
        world: usize,
    },
    #[error(
        "parallel.pp = {pp} x parallel.tp = {tp} = {product} does not divide the world size {world} (the number of ranks)"
    )]
    NotDivisible {
        pp: usize,
        tp: usize,
        product: usize,
        world: usize,
    },
    #[error("parallel sizes must be at least 1 (got pp={pp}, dp={dp}, tp={tp})")]
    Zero { pp: usize, dp: usize, tp: usize },
}

/// The pp x dp x tp layout of a world of ranks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mesh {
    pub pp: usize,
    pub dp: usize,
    pub tp: usize,
}

impl Mesh {
    /// A mesh whose sizes must multiply to `world`.
    pub fn new(world: usize, pp: usize, dp: usize, tp: usize) -> Result<Mesh, MeshError> {
        if pp == 0 || dp == 0 || tp == 0 {
            return Err(MeshError::Zero { pp, dp, tp });
        }
        let product = pp * dp * tp;
        if product != world {
            return Err(MeshError::SizeMismatch {
                pp,
                dp,
                tp,
                product,
                world,
            });
        }
        Ok(Mesh { pp, dp, tp })
    }

    /// A mesh with dp inferred as world / (pp * tp), the usual recipe setting.
    pub fn with_inferred_dp(world: usize, pp: usize, tp: usize) -> Result<Mesh, MeshError> {
        if pp == 0 || tp == 0 || world == 0 {
            return Err(MeshError::Zero { pp, dp: 0, tp });
        }
        let product = pp * tp;
        if !world.is_multiple_of(product) {
            return Err(MeshError::NotDivisible {
                pp,
                tp,
                product,
                world,
            });
        }
        Mesh::new(world, pp, world / product, tp)
    }

    pub fn world_size(&self) -> usize {
        self.pp * self.dp * self.tp
    }

    pub fn size(&self, axis: Axis) -> usize {
        match axis {
            Axis::Pp => self.pp,
            Axis::Dp => self.dp,
            Axis::Tp => self.tp,
        }
    }

    /// The coordinates of `rank` (must be < world_size).
    pub fn coords(&self, rank: usize) -> Coords {
        assert!(rank < self.world_size(), "rank {rank} outside the mesh");
        Coords {
            tp: rank % self.tp,
            dp: (rank / self.tp) % self.dp,
            pp: rank / (self.tp * self.dp),
        }
    }

    pub fn rank_of(&self, c: Coords) -> usize {
        (c.pp * self.dp + c.dp) * self.tp + c.tp
    }

    /// The global ranks of the group along `axis` that contains `rank`, in group-rank order.
    pub fn group_members(&self, rank: usize, axis: Axis) -> Vec<usize> {
        let c = self.coords(rank);
        (0..self.size(axis))
            .map(|i| {
                let mut m = c;
                match axis {
                    Axis::Pp => m.pp = i,
                    Axis::Dp => m.dp = i,
                    Axis::Tp => m.tp = i,
                }
                self.rank_of(m)
            })
            .collect()
    }

    /// `rank`'s position inside its group along `axis`.
    pub fn index_on(&self, rank: usize, axis: Axis) -> usize {
        let c = self.coords(rank);
        match axis {
            Axis::Pp => c.pp,
            Axis::Dp => c.dp,
            Axis::Tp => c.tp,
        }
    }

    /// Which group along `axis` `rank` belongs to, numbered 0.. over the other two axes (the
    /// color used to split the world).
    pub fn group_index(&self, rank: usize, axis: Axis) -> usize {
        let c = self.coords(rank);
        match axis {
            Axis::Tp => c.pp * self.dp + c.dp,
            Axis::Dp => c.pp * self.tp + c.tp,
            Axis::Pp => c.dp * self.tp + c.tp,
        }
    }

    /// A name for the group along `axis` holding `rank`, e.g. "dp(pp=0,tp=1)".
    pub fn group_name(&self, rank: usize, axis: Axis) -> String {
        let c = self.coords(rank);
        match axis {
            Axis::Tp => format!("tp(pp={},dp={})", c.pp, c.dp),
            Axis::Dp => format!("dp(pp={},tp={})", c.pp, c.tp),
            Axis::Pp => format!("pp(dp={},tp={})", c.dp, c.tp),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_by_one_by_one() {
        let m = Mesh::new(1, 1, 1, 1).unwrap();
        assert_eq!(
            m.coords(0),
            Coords {
                pp: 0,
                dp: 0,
                tp: 0
            }
        );
        for axis in [Axis::Pp, Axis::Dp, Axis::Tp] {
            assert_eq!(m.group_members(0, axis), vec![0]);
        }
    }

    #[test]
    fn two_by_two_by_two_groups() {
        let m = Mesh::new(8, 2, 2, 2).unwrap();
        assert_eq!(
            m.coords(5),
            Coords {
                pp: 1,
                dp: 0,
                tp: 1
            }
        );
        assert_eq!(m.group_members(5, Axis::Tp), vec![4, 5]);
        assert_eq!(m.group_members(5, Axis::Dp), vec![5, 7]);
        assert_eq!(m.group_members(5, Axis::Pp), vec![1, 5]);
        assert_eq!(m.group_members(2, Axis::Dp), vec![0, 2]);
        assert_eq!(m.group_members(3, Axis::Pp), vec![3, 7]);
        assert_eq!(m.group_name(5, Axis::Dp), "dp(pp=1,tp=1)");
    }

    #[test]
    fn one_by_four_by_two_groups() {
        let m = Mesh::new(8, 1, 4, 2).unwrap();
        assert_eq!(m.group_members(3, Axis::Dp), vec![1, 3, 5, 7]);
        assert_eq!(m.group_members(3, Axis::Tp), vec![2, 3]);
        assert_eq!(m.group_members(3, Axis::Pp), vec![3]);
        assert_eq!(m.index_on(3, Axis::Dp), 1);
    }

    #[test]
    fn pure_pipeline_and_pure_data_parallel() {
        let m = Mesh::new(4, 4, 1, 1).unwrap();
        assert_eq!(m.group_members(2, Axis::Pp), vec![0, 1, 2, 3]);
        assert_eq!(m.group_members(2, Axis::Dp), vec![2]);
        let m = Mesh::with_inferred_dp(4, 1, 1).unwrap();
        assert_eq!(
            m,
            Mesh {
                pp: 1,
                dp: 4,
                tp: 1
            }
        );
    }

    #[test]
    fn every_rank_round_trips_and_groups_partition_the_world() {
        for (pp, dp, tp) in [(1, 1, 1), (2, 2, 2), (1, 4, 2), (3, 2, 1), (2, 1, 3)] {
            let m = Mesh::new(pp * dp * tp, pp, dp, tp).unwrap();
            for axis in [Axis::Pp, Axis::Dp, Axis::Tp] {
                let mut seen = vec![0usize; m.world_size()];
                for r in 0..m.world_size() {
                    assert_eq!(m.rank_of(m.coords(r)), r);
                    let members = m.group_members(r, axis);
                    assert_eq!(members.len(), m.size(axis));
                    assert_eq!(members[m.index_on(r, axis)], r);
                    for &o in &members {
                        assert_eq!(m.group_index(o, axis), m.group_index(r, axis));
                    }
                    seen[m.group_index(r, axis)] += 1;
                }
                let groups = m.world_size() / m.size(axis);
                assert!(seen[..groups].iter().all(|&c| c == m.size(axis)));
            }
        }
    }

    #[test]
    fn layouts_that_do_not_multiply_to_the_world_are_rejected_with_the_numbers() {
        let err = Mesh::new(8, 2, 2, 3).unwrap_err();
        assert_eq!(
            err.to_string(),
            "parallel layout pp=2 x dp=2 x tp=3 = 12 does not match the world size 8"
        );
        let err = Mesh::with_inferred_dp(6, 1, 4).unwrap_err();
        assert_eq!(
            err.to_string(),
            "parallel.pp = 1 x parallel.tp = 4 = 4 does not divide the world size 6 (the number of ranks)"
        );
        assert!(matches!(Mesh::new(0, 0, 1, 1), Err(MeshError::Zero { .. })));
    }
}
