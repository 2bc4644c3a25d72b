//! Learning-rate schedule: linear warmup from 0 to `lr` over `warmup_steps`, then cosine or linear
//! decay to `lr · min_lr_ratio` at the last step (or constant). Steps are 1-based.

use crate::recipe::{OptimSection, Schedule};

pub fn lr_at(o: &OptimSection, step: u64, total: u64) -> f64 {
    let (max, min) = (o.lr, o.lr * o.min_lr_ratio);
    if o.warmup_steps > 0 && step <= o.warmup_steps {
        return max * step as f64 / o.warmup_steps as f64;
    }
    let span = total.saturating_sub(o.warmup_steps).max(1) as f64;
    let p = ((step - o.warmup_steps.min(step)) as f64 / span).clamp(0.0, 1.0);
    match o.schedule {
        Schedule::Constant => max,
        Schedule::Linear => max - (max - min) * p,
        Schedule::Cosine => min + (max - min) * 0.5 * (1.0 + (std::f64::consts::PI * p).cos()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine_to_the_floor() {
        let o = OptimSection {
            lr: 1.0,
            min_lr_ratio: 0.1,
            warmup_steps: 10,
            ..Default::default()
        };
        assert_eq!(lr_at(&o, 1, 110), 0.1);
        assert_eq!(lr_at(&o, 10, 110), 1.0);
        assert!((lr_at(&o, 60, 110) - 0.55).abs() < 1e-12);
        assert!((lr_at(&o, 110, 110) - 0.1).abs() < 1e-12);
        let lin = OptimSection {
            schedule: Schedule::Linear,
            ..o.clone()
        };
        assert!((lr_at(&lin, 60, 110) - 0.55).abs() < 1e-12);
        assert!((lr_at(&lin, 110, 110) - 0.1).abs() < 1e-12);
    }
}
