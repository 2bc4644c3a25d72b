//! `train.profile_steps = N`: a per-kernel device profile of the run's last N steps.
//!
//! Before the first of them the device is drained and the backend's profiling turned on (CUDA
//! events around every kernel, matmul and FlashAttention call, kernels/src/cuda/profile.rs);
//! each profiled step drains the device before its time is taken, so the steps' wall time holds
//! all of their work. After the last one the times are taken and rank 0 writes
//! `<out_dir>/profile.md` (and prints its head): per kernel the calls and milliseconds per step,
//! the share of the summed kernel time, and the achieved TFLOP/s where FLOPs are counted; above
//! the table the GPU's busy share = Σ kernel time / wall time (the rest is time the GPU waited
//! on the host, on transfers or on untimed streams). Rank 0's kernels only.

use crate::error::Result;
use crate::user;
use ferrotron_kernels::{Backend, KernelTime};
use std::path::Path;

/// The profiled stretch of a run: steps `first..=last`.
pub struct KernelProfile {
    first: u64,
    on: bool,
    wall_s: f64,
    steps: u64,
}

impl KernelProfile {
    /// None when `profile_steps` is 0.
    pub fn new(profile_steps: u64, last_step: u64) -> Option<Self> {
        (profile_steps > 0).then(|| KernelProfile {
            first: last_step + 1 - profile_steps.min(last_step),
            on: false,
            wall_s: 0.0,
            steps: 0,
        })
    }

    pub fn covers(&self, step: u64) -> bool {
        step >= self.first
    }

    /// Before step `step`'s clock starts: turns profiling on at the first profiled step (or the
    /// first step a resumed run trains inside the stretch).
    pub fn before_step<B: Backend>(&mut self, b: &B, step: u64) -> Result<()> {
        if self.covers(step) && !self.on {
            b.synchronize()?;
            b.set_profiling(true)?;
            self.on = true;
        }
        Ok(())
    }

    /// At the end of a profiled step, before its time is read: drains the device.
    pub fn end_step<B: Backend>(&self, b: &B, step: u64) -> Result<()> {
        if self.covers(step) {
            b.synchronize()?;
        }
        Ok(())
    }

    /// Adds a profiled step's wall time.
    pub fn add_wall(&mut self, step: u64, seconds: f64) {
        if self.covers(step) {
            self.wall_s += seconds;
            self.steps += 1;
        }
    }

    /// Turns profiling off and takes the times; on rank 0 writes `<out_dir>/profile.md` and
    /// returns its text.
    pub fn finish<B: Backend>(&self, b: &B, out_dir: &Path, rank0: bool) -> Result<Option<String>> {
        b.set_profiling(false)?;
        let rows = b.take_profile()?;
        if !rank0 {
            return Ok(None);
        }
        let text = markdown(&rows, self.steps, self.wall_s, &b.name(), self.first);
        let path = out_dir.join("profile.md");
        std::fs::write(&path, &text)
            .map_err(|e| user!("{}: cannot write the kernel profile: {e}", path.display()))?;
        Ok(Some(text))
    }
}

/// The profile as markdown: a summary line, then one row per kernel (rows as `take_profile`
/// returns them, largest first).
pub fn markdown(rows: &[KernelTime], steps: u64, wall_s: f64, device: &str, first: u64) -> String {
    let per_step = steps.max(1) as f64;
    let kernel_ms: f64 = rows.iter().map(|r| r.ms).sum();
    let wall_ms = wall_s * 1e3;
    let busy = if wall_ms > 0.0 {
        format!("{:.1}%", 100.0 * kernel_ms / wall_ms)
    } else {
        "n/a".into()
    };
    let mut out = format!(
        "# Kernel profile: {steps} step(s) from step {first} on {device}\n\n\
         - wall time {:.2} ms/step; summed kernel time {:.2} ms/step; GPU busy {busy}\n\
         - {} distinct kernels, {:.0} launches/step\n\n\
         | kernel | calls/step | ms/step | share | TFLOP/s |\n| --- | --- | --- | --- | --- |\n",
        wall_ms / per_step,
        kernel_ms / per_step,
        rows.len(),
        rows.iter().map(|r| r.calls as f64).sum::<f64>() / per_step,
    );
    for r in rows {
        let tflops = if r.flops > 0.0 && r.ms > 0.0 {
            format!("{:.1}", r.flops / (r.ms * 1e-3) / 1e12)
        } else {
            String::new()
        };
        let share = if kernel_ms > 0.0 {
            100.0 * r.ms / kernel_ms
        } else {
            0.0
        };
        out += &format!(
            "| {} | {:.1} | {:.3} | {share:.1}% | {tflops} |\n",
            r.name,
            r.calls as f64 / per_step,
            r.ms / per_step,
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, calls: u64, ms: f64, flops: f64) -> KernelTime {
        KernelTime {
            name: name.into(),
            calls,
            ms,
            flops,
        }
    }

    #[test]
    fn the_last_n_steps_are_profiled() {
        let p = KernelProfile::new(2, 15).unwrap();
        assert!(!p.covers(13) && p.covers(14) && p.covers(15));
        assert!(KernelProfile::new(0, 15).is_none());
        assert!(KernelProfile::new(5, 3).unwrap().covers(1));
    }

    #[test]
    fn the_table_gives_per_step_times_shares_and_rates() {
        // 2 steps, 10 ms of wall time each; a matmul of 2e12 FLOPs in 8 ms and a norm of 4 ms.
        let rows = [
            row("gemm fwd NN 4x4x4", 4, 8.0, 2e12),
            row("rmsnorm_fwd_bf16", 2, 4.0, 0.0),
        ];
        let t = markdown(&rows, 2, 0.020, "cuda:0-bf16", 14);
        assert!(
            t.contains("wall time 10.00 ms/step; summed kernel time 6.00 ms/step; GPU busy 60.0%"),
            "{t}"
        );
        assert!(
            t.contains("| gemm fwd NN 4x4x4 | 2.0 | 4.000 | 66.7% | 250.0 |"),
            "{t}"
        );
        assert!(
            t.contains("| rmsnorm_fwd_bf16 | 1.0 | 2.000 | 33.3% |  |"),
            "{t}"
        );
        assert!(t.contains("2 distinct kernels, 3 launches/step"), "{t}");
    }
}
