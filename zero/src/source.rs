//! Where an engine's state comes from and where a checkpoint's goes: ranges of units, never
//! whole models.
//!
//! A `StateSource` fills any element range `[a, b)` of a unit (in the rank's unit coordinates)
//! with one part of the state: the fp32 master weights, or an AdamW moment. Engines ask it for
//! exactly the elements they keep (their shard; stage 0 the whole unit), so a rank reads, draws
//! or receives only its own slice of the model: random init draws by element index, a HF or
//! checkpoint source reads the overlapping bytes of its files.
//!
//! `Engine::for_each_owned` is the other direction: every element of every unit is *owned* by
//! exactly one rank of the dp group (the ZeRO shard plan; stage 0, which keeps everything,
//! owns the same blocks for saving), and the engine hands out its owned ranges one unit at a
//! time, so a checkpoint writer never holds more than one unit's shard on the host.

use crate::engine::FullState;
use ferrotron_kernels::{Error, Result};
use std::ops::Range;

/// One part of the per-element optimizer state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StatePart {
    /// fp32 master weights.
    Master,
    /// AdamW first moment m.
    ExpAvg,
    /// AdamW second moment v.
    ExpAvgSq,
}

impl StatePart {
    pub const ALL: [StatePart; 3] = [StatePart::Master, StatePart::ExpAvg, StatePart::ExpAvgSq];
    /// The prefix this part's tensors carry in checkpoints.
    pub fn name(self) -> &'static str {
        match self {
            StatePart::Master => "master",
            StatePart::ExpAvg => "exp_avg",
            StatePart::ExpAvgSq => "exp_avg_sq",
        }
    }
}

/// Fills ranges of units with state (see the module comment). `Sync`: engines may fill units
/// from several threads.
pub trait StateSource: Sync {
    /// Writes elements `range` of unit `unit`'s `part` into `out` (`out.len() == range.len()`,
    /// `range` within the unit's numel).
    fn fill(
        &self,
        part: StatePart,
        unit: usize,
        range: Range<usize>,
        out: &mut [f32],
    ) -> Result<()>;
    /// Whether the source holds AdamW moments (a checkpoint) or weights only (init, HF): without
    /// them the moments start at zero.
    fn has_moments(&self) -> bool;
}

/// One unit's owned state on the host: elements `range` of unit `unit` (unit coordinates,
/// padding excluded).
pub struct OwnedShard<'a> {
    pub unit: usize,
    pub range: Range<usize>,
    pub master: &'a [f32],
    pub exp_avg: &'a [f32],
    pub exp_avg_sq: &'a [f32],
}

/// Copies `range` of unit `unit` out of full per-unit vectors; errors name `what`.
fn copy_from_units(
    units: &[Vec<f32>],
    what: &str,
    unit: usize,
    range: Range<usize>,
    out: &mut [f32],
) -> Result<()> {
    let u = units
        .get(unit)
        .ok_or_else(|| Error::Unsupported(format!("{what}: unit {unit} is not given")))?;
    let src = u.get(range.clone()).ok_or_else(|| {
        Error::Unsupported(format!(
            "{what}: unit {unit} has {} elements, {range:?} was asked for",
            u.len()
        ))
    })?;
    out.copy_from_slice(src);
    Ok(())
}

/// A full host state is a source too (tests, and the harness that compares layouts).
impl StateSource for FullState {
    fn fill(
        &self,
        part: StatePart,
        unit: usize,
        range: Range<usize>,
        out: &mut [f32],
    ) -> Result<()> {
        let units = match part {
            StatePart::Master => &self.master,
            StatePart::ExpAvg => &self.exp_avg,
            StatePart::ExpAvgSq => &self.exp_avg_sq,
        };
        copy_from_units(units, part.name(), unit, range, out)
    }
    fn has_moments(&self) -> bool {
        !self.exp_avg.is_empty()
    }
}

/// Initial weights given as one full vector per unit (tests, the zero harness).
pub struct UnitWeights<'a>(pub &'a [Vec<f32>]);

impl StateSource for UnitWeights<'_> {
    fn fill(
        &self,
        part: StatePart,
        unit: usize,
        range: Range<usize>,
        out: &mut [f32],
    ) -> Result<()> {
        if part != StatePart::Master {
            return Err(Error::Unsupported(format!(
                "initial weights hold no {}",
                part.name()
            )));
        }
        copy_from_units(self.0, "initial weights", unit, range, out)
    }
    fn has_moments(&self) -> bool {
        false
    }
}
