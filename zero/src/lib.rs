//! ferrotron-zero: data-parallel model state. `ParamStore` is how the model reaches its units;
//! an `Engine` (ZeRO stage 0, 1, 2 or 3) implements it and owns gradients, master weights and
//! optimizer states, whole or sharded over the data-parallel group. One type per stage:
//! `Stage0` .. `Stage3`; `build_engine` picks one from a recipe's `parallel.zero_stage`.

pub mod engine;
pub mod shard;
pub mod source;
pub mod stage0;
pub mod stage1;
pub mod stage2;
pub mod stage3;
pub mod store;

pub use engine::{
    Engine, EngineGroups, FullState, GradSum, MemoryReport, Region, StepConfig, StepStats, UnitMeta,
};
pub use ferrotron_parallel::device::Collectives;
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
            sparse_grad: false,
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

    /// A unit a rank does not hold (another pipeline stage's) is given with numel 0 and no
    /// regions: every stage steps, reports, saves and gathers around it.
    #[test]
    fn empty_units_are_held_by_no_stage_and_cost_nothing() {
        let b = CpuBackend::<f32>::new();
        let meta = |name: &str, n: usize| UnitMeta {
            name: name.into(),
            numel: n,
            sparse_grad: false,
            regions: (n > 0)
                .then_some(Region {
                    offset: 0,
                    len: n,
                    decay: true,
                    counted: true,
                })
                .into_iter()
                .collect(),
        };
        let units = vec![meta("a", 4), meta("elsewhere", 0), meta("b", 3)];
        let init = [vec![1.0f32; 4], vec![], vec![2.0; 3]];
        let cfg = StepConfig {
            lr: 0.1,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.0,
            clip_norm: None,
            step: 1,
        };
        for stage in 0..4 {
            let dp: Arc<dyn Comm> = Arc::new(LocalComm::named("dp"));
            let groups = EngineGroups::data_parallel(dp);
            let mut e =
                build_engine(stage, &b, groups, units.clone(), &UnitWeights(&init)).unwrap();
            e.zero_grads(&b).unwrap();
            for u in [0, 2] {
                e.before_use(&b, u).unwrap();
                e.before_grad(&b, u).unwrap();
                e.parts().1[u].iter_mut().for_each(|g| *g = 1.0);
                e.after_grad(&b, u).unwrap();
                e.after_use(&b, u).unwrap();
            }
            let stats = e.step(&b, &cfg).unwrap();
            assert!(
                (stats.grad_norm - 7f64.sqrt()).abs() < 1e-9,
                "stage {stage}"
            );
            assert_eq!(e.owned_ranges(), vec![0..4, 0..0, 0..3], "stage {stage}");
            let mut seen = Vec::new();
            e.for_each_owned(&b, &mut |s| {
                seen.push(s.unit);
                Ok(())
            })
            .unwrap();
            assert_eq!(
                seen,
                vec![0, 2],
                "stage {stage}: the empty unit is not handed out"
            );
            let m = e.memory();
            // stage 0 on the CPU: the model reads the master, no compute copy
            let compute_copy = if stage == 0 { 0 } else { 7 * 4 };
            assert_eq!(m.parameters, compute_copy, "stage {stage}");
            assert_eq!(m.optimizer_states, 7 * 12, "stage {stage}");
            let full = e.full_state(&b).unwrap();
            assert_eq!(full.master[1], Vec::<f32>::new());
            assert!(
                full.master[0].iter().all(|&w| (w - 0.9).abs() < 1e-6),
                "stage {stage}"
            );
        }
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
            sparse_grad: false,
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
