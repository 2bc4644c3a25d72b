//! ferrotron-zero: data-parallel model state. `ParamStore` is how the model reaches its units;
//! an `Engine` (ZeRO stage 0, 1, 2 or 3) implements it and owns gradients, master weights and
//! optimizer states, whole or sharded over the data-parallel group. One type per stage:
//! `Stage0` .. `Stage3`; `build_engine` picks one from a recipe's `parallel.zero_stage`.

pub mod collectives;
mod collectives_cuda;
pub mod engine;
pub mod shard;
pub mod source;
pub mod stage0;
pub mod stage1;
pub mod stage2;
pub mod stage3;
pub mod store;

pub use collectives::Collectives;
pub use engine::{
    Engine, EngineGroups, FullState, GradSum, MemoryReport, Region, StepConfig, StepStats, UnitMeta,
};
pub use shard::ShardPlan;
pub use source::{OwnedShard, StatePart, StateSource, UnitWeights};
pub use stage0::Stage0;
pub use stage1::Stage1;
pub use stage2::Stage2;
pub use stage3::Stage3;
pub use store::{ParamStore, ResidentStore};

use ferrotron_kernels::{Error, Result};

/// The engine for ZeRO `stage` (0-3) over `groups` (ZeRO shards over `groups.dp`), its state read
/// from `src` (each rank reads only the ranges it keeps). Any other stage is an error naming it.
pub fn build_engine<B: Collectives + 'static>(
    stage: u8,
    b: &B,
    groups: EngineGroups,
    units: Vec<UnitMeta>,
    src: &dyn StateSource,
) -> Result<Box<dyn Engine<B>>> {
    Ok(match stage {
        0 => Box::new(Stage0::new(b, groups, units, src)?),
        1 => Box::new(Stage1::new(b, groups, units, src)?),
        2 => Box::new(Stage2::new(b, groups, units, src)?),
        3 => Box::new(Stage3::new(b, groups, units, src)?),
        s => {
            return Err(Error::Unsupported(format!(
                "parallel.zero_stage = {s} is not a ZeRO stage (0, 1, 2 or 3)"
            )))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrotron_kernels::cpu::CpuBackend;
    use ferrotron_parallel::Comm;
    use ferrotron_parallel::LocalComm;
    use std::sync::Arc;

    #[test]
    fn an_unknown_stage_is_rejected_with_the_reason() {
        let b = CpuBackend::<f32>::new();
        let dp: Arc<dyn Comm> = Arc::new(LocalComm::named("dp"));
        let units = vec![UnitMeta {
            name: "u".into(),
            numel: 1,
            regions: vec![Region {
                offset: 0,
                len: 1,
                decay: true,
                counted: true,
            }],
        }];
        let err = build_engine(
            4,
            &b,
            EngineGroups::data_parallel(dp),
            units,
            &UnitWeights(&[vec![0.0]]),
        )
        .err()
        .unwrap()
        .to_string();
        assert_eq!(
            err,
            "parallel.zero_stage = 4 is not a ZeRO stage (0, 1, 2 or 3)"
        );
    }

    #[test]
    fn full_state_round_trips_through_every_stage() {
        let b = CpuBackend::<f32>::new();
        let regions = vec![
            Region {
                offset: 0,
                len: 2,
                decay: true,
                counted: true,
            },
            Region {
                offset: 2,
                len: 1,
                decay: false,
                counted: true,
            },
        ];
        let units = vec![UnitMeta {
            name: "u".into(),
            numel: 3,
            regions,
        }];
        let state = FullState {
            master: vec![vec![1.0, 2.0, 3.0]],
            exp_avg: vec![vec![0.1, 0.2, 0.3]],
            exp_avg_sq: vec![vec![4.0, 5.0, 6.0]],
        };
        for stage in 0..4 {
            let dp: Arc<dyn Comm> = Arc::new(LocalComm::named("dp"));
            let groups = EngineGroups::data_parallel(dp);
            let zeros = UnitWeights(&[vec![0.0; 3]]);
            let mut e = build_engine(stage, &b, groups, units.clone(), &zeros).unwrap();
            e.load_state(&b, &state).unwrap();
            assert_eq!(e.full_state(&b).unwrap(), state, "stage {stage}");
            e.before_use(&b, 0).unwrap();
            assert_eq!(
                e.parts().0[0][..3],
                [1.0, 2.0, 3.0],
                "stage {stage}: compute weights follow the master"
            );
            e.after_use(&b, 0).unwrap();
            let bad = FullState {
                master: vec![vec![0.0; 2]],
                ..state.clone()
            };
            let err = e.load_state(&b, &bad).unwrap_err().to_string();
            assert!(
                err.contains("master: unit 0 has 2 elements, 0..3 was asked for"),
                "stage {stage}: {err}"
            );
            let mut owned = Vec::new();
            e.for_each_owned(&b, &mut |s| {
                owned.push((
                    s.unit,
                    s.range.clone(),
                    s.master.to_vec(),
                    s.exp_avg_sq.to_vec(),
                ));
                Ok(())
            })
            .unwrap();
            assert_eq!(
                owned,
                vec![(0, 0..3, vec![1.0, 2.0, 3.0], vec![4.0, 5.0, 6.0])],
                "stage {stage}: one rank owns everything"
            );
        }
    }
}
