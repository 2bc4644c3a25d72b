//! Peak resident memory of this process per phase of a run, measured through the OS: Linux's
//! VmHWM (/proc/self/status) is read when a phase ends and reset (writing 5 to
//! /proc/self/clear_refs) for the next, so each figure is the high-water mark of that phase
//! alone. Phases that repeat (steps, saves) keep their maximum. Elsewhere, or where the reset is
//! refused, phases read the process-wide peak so far (never less than the truth).

use std::collections::BTreeMap;

/// Peak RSS in bytes per phase name.
#[derive(Default)]
pub struct PhasePeaks {
    peaks: BTreeMap<&'static str, u64>,
}

impl PhasePeaks {
    /// Starts measuring the first phase (the peak since process start counts towards it).
    pub fn new() -> Self {
        PhasePeaks::default()
    }

    /// Ends the current phase as `phase`: records its peak and starts the next.
    pub fn end(&mut self, phase: &'static str) {
        if let Some(peak) = vm_hwm() {
            let e = self.peaks.entry(phase).or_default();
            *e = (*e).max(peak);
        }
        reset();
    }

    /// (phase, bytes) in name order.
    pub fn all(&self) -> Vec<(&'static str, u64)> {
        self.peaks.iter().map(|(k, v)| (*k, *v)).collect()
    }
}

/// The process's peak resident set size so far, in bytes.
pub fn vm_hwm() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn reset() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_phase_sees_its_own_peak() {
        if vm_hwm().is_none() {
            return; // not Linux: nothing to measure
        }
        let mut p = PhasePeaks::new();
        p.end("start");
        let big: Vec<u8> = vec![1; 64 << 20];
        std::hint::black_box(&big);
        drop(big);
        p.end("big");
        p.end("small");
        let all: BTreeMap<_, _> = p.all().into_iter().collect();
        assert!(all["big"] >= 64 << 20, "{all:?}");
        assert!(all["small"] < all["big"], "reset between phases: {all:?}");
    }
}
