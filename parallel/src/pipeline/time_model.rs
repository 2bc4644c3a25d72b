//! The time model of the simulator and of the bubble formulas.
//!
//! `forward` (t_f) and `backward` (t_b) are the durations of one micro-batch through one whole
//! pipeline stage, i.e. through all v chunks a rank holds; one chunk costs t_f/v and t_b/v (the
//! model's blocks are spread evenly over the p·v chunks). The zero-bubble split cuts a chunk's
//! backward into the input gradient, (t_b − t_w)/v, and the weight gradient, t_w/v
//! (`backward_weight` = t_w ≤ t_b). Communication is free by default (the textbook model);
//! `latency` delays every message from its send to the moment its receive can complete.
//! The ideal (bubble-free) compute time of a rank for one step is m·(t_f + t_b).

/// Durations used by `simulate` and by `Schedule::exact_bubble`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TimeModel {
    /// t_f: forward of one micro-batch through one stage (all of a rank's chunks).
    pub forward: f64,
    /// t_b: full backward (input and weight gradients) of one micro-batch through one stage.
    pub backward: f64,
    /// t_w: the weight-gradient part of `backward` (zero-bubble schedules only).
    pub backward_weight: f64,
    /// Delay between a send and the earliest completion of its receive.
    pub latency: f64,
}

impl Default for TimeModel {
    /// t_f = 1, t_b = 2 (backward ≈ twice forward), t_w = 1, free communication.
    fn default() -> Self {
        TimeModel {
            forward: 1.0,
            backward: 2.0,
            backward_weight: 1.0,
            latency: 0.0,
        }
    }
}

impl TimeModel {
    /// A model with the given t_f and t_b, t_w = t_b / 2, free communication.
    pub fn new(forward: f64, backward: f64) -> TimeModel {
        TimeModel {
            forward,
            backward,
            backward_weight: backward / 2.0,
            latency: 0.0,
        }
    }

    /// t_b − t_w: the input-gradient part of the backward.
    pub fn backward_input(&self) -> f64 {
        self.backward - self.backward_weight
    }

    /// Rejects negative or non-finite durations and t_w > t_b.
    pub fn check(&self) -> Result<(), String> {
        let all = [
            ("forward", self.forward),
            ("backward", self.backward),
            ("backward_weight", self.backward_weight),
            ("latency", self.latency),
        ];
        for (name, value) in all {
            if !(value.is_finite() && value >= 0.0) {
                return Err(format!(
                    "time model {name} = {value} must be finite and >= 0"
                ));
            }
        }
        if self.backward_weight > self.backward {
            return Err(format!(
                "time model backward_weight {} exceeds backward {}",
                self.backward_weight, self.backward
            ));
        }
        Ok(())
    }
}
