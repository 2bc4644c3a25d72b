//! Weights read from a file must be finite: a NaN or infinity in a HF checkpoint would only
//! surface as "the loss is not finite" at step 1. Each rank checks the master weights it owns
//! (the ranks' owned ranges tile the model, so every element is checked once, and no rank reads
//! more than its share); one all-reduce agrees on the first offending tensor in layout order, so
//! every rank stops with an error naming it.

use super::comm_err;
use crate::error::Result;
use crate::model::ParamLayout;
use crate::user;
use ferrotron_parallel::{Comm, ReduceOp};
use ferrotron_zero::{Collectives, Engine};
use std::path::Path;

/// Checks the engine's master weights (collective over `world`); the error names the tensor and
/// `dir`.
pub fn check_engine<B: Collectives>(
    b: &B,
    engine: &mut dyn Engine<B>,
    layout: &ParamLayout,
    world: &dyn Comm,
    dir: &Path,
) -> Result<()> {
    let tensors: Vec<_> = layout.tensors().collect();
    // (tensor index in layout order, element of the local tensor, value) of the first bad value.
    let mut first: Option<(usize, usize, f32)> = None;
    engine.for_each_owned(b, &mut |s| {
        for (ti, (u, t)) in tensors.iter().enumerate() {
            let (lo, hi) = (
                s.range.start.max(t.offset),
                s.range.end.min(t.offset + t.numel()),
            );
            if *u != s.unit || lo >= hi || first.is_some_and(|f| f.0 <= ti) {
                continue;
            }
            let values = &s.master[lo - s.range.start..hi - s.range.start];
            if let Some(i) = values.iter().position(|x| !x.is_finite()) {
                first = Some((ti, lo - t.offset + i, values[i]));
            }
        }
        Ok(())
    })?;
    let mut found = [first.map_or(f64::INFINITY, |f| f.0 as f64)];
    world
        .all_reduce((&mut found[..]).into(), ReduceOp::Min)
        .map_err(comm_err)?;
    if !found[0].is_finite() {
        return Ok(());
    }
    let name = &tensors[found[0] as usize].1.name;
    Err(match first {
        Some((ti, i, v)) if ti as f64 == found[0] => user!(
            "{}: tensor `{name}` holds {v} at element {i} (weights must be finite)",
            dir.display()
        ),
        _ => user!(
            "{}: tensor `{name}` holds a value that is not finite (weights must be finite)",
            dir.display()
        ),
    })
}
