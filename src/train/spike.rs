//! The loss-spike guard (`train.spike_guard = f`, 0 = off).
//!
//! Running mean: an exponential moving average of the losses of the steps this run has trained,
//!   m_1 = loss_1,   m_k = (1 − α)·m_{k−1} + α·loss_k,   α = 0.1 (about the last 10 steps).
//! Step k > 1 of the run is a spike when loss_k > f · m_{k−1}. The trainer then stops before
//! applying the step's update (exit code 2) and marks the newest checkpoint, saved before the
//! spike, so that pruning never removes it (`checkpoint::prune::mark_divergence`). Every rank
//! sees the same all-reduced loss, so every rank stops at the same step. Checkpoints keep the
//! mean (trainer_state.json `loss_mean`), so a resumed run goes on with it; a checkpoint
//! without one (written before it was kept) starts it afresh at the first resumed step.

/// Weight of the newest loss in the running mean.
pub const ALPHA: f64 = 0.1;

pub struct SpikeGuard {
    factor: f64,
    mean: Option<f64>,
}

impl SpikeGuard {
    /// `factor` 0: never fires. `mean`: the running mean a resumed run continues from.
    pub fn new(factor: f64, mean: Option<f64>) -> SpikeGuard {
        SpikeGuard { factor, mean }
    }

    /// The running mean of the steps so far (what a checkpoint keeps).
    pub fn mean(&self) -> Option<f64> {
        self.mean
    }

    /// Feeds the loss of the next step: Some(running mean of the previous steps) when it is a
    /// spike (the loss is then not folded into the mean), None otherwise.
    pub fn check(&mut self, loss: f64) -> Option<f64> {
        if self.factor <= 0.0 {
            return None;
        }
        match self.mean {
            Some(m) if loss > self.factor * m => Some(m),
            Some(m) => {
                self.mean = Some((1.0 - ALPHA) * m + ALPHA * loss);
                None
            }
            None => {
                self.mean = Some(loss);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_on_a_jump_over_the_running_mean_and_not_on_a_falling_loss() {
        let mut g = SpikeGuard::new(3.0, None);
        for loss in [10.8, 9.0, 7.5, 6.0, 5.5, 5.0, 14.0] {
            assert_eq!(g.check(loss), None, "{loss}");
        }
        let m = g.check(40.0).expect("40 > 3 x the mean");
        // The mean lags a falling loss: 10.8 seeded it, six smaller losses pulled it to 9.50.
        assert!((m - 9.496).abs() < 1e-3, "{m}");
        let mut off = SpikeGuard::new(0.0, None);
        assert_eq!((off.check(1.0), off.check(1e9)), (None, None));
    }

    #[test]
    fn a_resumed_guard_goes_on_with_the_saved_mean() {
        let mut g = SpikeGuard::new(3.0, None);
        for loss in [10.8, 9.0, 7.5] {
            g.check(loss);
        }
        let mut resumed = SpikeGuard::new(3.0, g.mean());
        assert_eq!(resumed.check(40.0), g.check(40.0));
        assert!(resumed.mean().is_some());
    }
}
