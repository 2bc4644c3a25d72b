//! The model's units as a `StateSource` over stored fragments: the engines of every layout read
//! their own ranges of a HF directory or a checkpoint through this.
//!
//! fill(part, unit, [a, b)): for each logical tensor of the unit that overlaps [a, b), the
//! overlap (a range of the rank's local tensor) maps through the tensor's slice to global runs
//! (model/slicing.rs), and each run is read from the fragments; padding runs are zero.

use super::fragments::Fragments;
use crate::error::Error;
use crate::model::ParamLayout;
use ferrotron_kernels::Error as KernelError;
use ferrotron_zero::{StatePart, StateSource};
use std::ops::Range;
use std::sync::Mutex;

pub struct LayoutSource {
    pub layout: ParamLayout,
    pub fragments: Fragments,
    /// Whether the fragments hold AdamW moments (a checkpoint) or only weights.
    pub moments: bool,
    /// The first error a `fill` met, kept whole: through the engine it can only travel as a
    /// kernels error, and the caller wants the user's sentence and exit code back.
    failure: Mutex<Option<Error>>,
}

impl LayoutSource {
    pub fn new(layout: ParamLayout, fragments: Fragments, moments: bool) -> Self {
        LayoutSource {
            layout,
            fragments,
            moments,
            failure: Mutex::new(None),
        }
    }

    /// `e`, or the error a `fill` met if there was one (it explains `e`).
    pub fn explain(&self, e: Error) -> Error {
        self.failure
            .lock()
            .expect("not poisoned")
            .take()
            .unwrap_or(e)
    }

    /// Reads unit `unit` whole (single-process uses: sample, check-hf, tests).
    pub fn read_unit(&self, part: StatePart, unit: usize) -> crate::error::Result<Vec<f32>> {
        let mut out = vec![0.0; self.layout.units[unit].numel];
        self.fill_units(part, unit, 0..out.len(), &mut out)?;
        Ok(out)
    }

    /// Every unit whole.
    pub fn read_all(&self, part: StatePart) -> crate::error::Result<Vec<Vec<f32>>> {
        (0..self.layout.units.len())
            .map(|u| self.read_unit(part, u))
            .collect()
    }

    fn fill_units(
        &self,
        part: StatePart,
        unit: usize,
        range: Range<usize>,
        out: &mut [f32],
    ) -> crate::error::Result<()> {
        for t in &self.layout.units[unit].tensors {
            let (s, e) = (
                range.start.max(t.offset),
                range.end.min(t.offset + t.numel()),
            );
            if s >= e {
                continue;
            }
            let rel = s - t.offset..e - t.offset;
            let dst = &mut out[s - range.start..e - range.start];
            for r in t.slice.runs(rel.clone()) {
                let d = &mut dst[r.local - rel.start..r.local - rel.start + r.len];
                match r.global {
                    Some(g) => self.fragments.read(part, &t.name, g, d)?,
                    None => d.fill(0.0),
                }
            }
        }
        Ok(())
    }
}

impl StateSource for LayoutSource {
    fn fill(
        &self,
        part: StatePart,
        unit: usize,
        range: Range<usize>,
        out: &mut [f32],
    ) -> ferrotron_kernels::Result<()> {
        self.fill_units(part, unit, range, out).map_err(|e| {
            let msg = e.to_string();
            self.failure.lock().expect("not poisoned").get_or_insert(e);
            KernelError::Unsupported(msg)
        })
    }
    fn has_moments(&self) -> bool {
        self.moments
    }
}
