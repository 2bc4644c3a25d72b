//! Range checks of every numeric recipe key, run after the recipe is typed (so a value of the
//! wrong type has already been reported by serde). Each failure is one sentence naming the key,
//! its allowed range and the value found; nothing downstream then meets a value it cannot use
//! (a negative timeout would panic in `Duration`, `log_every = 0` would divide by zero).
//!
//! | key                              | allowed                                  |
//! | -------------------------------- | ---------------------------------------- |
//! | model.init_std                   | finite, >= 0                             |
//! | data.seq_len                     | >= 2 when set                            |
//! | data.val_fraction                | [0, 1)                                   |
//! | optim.lr                         | finite, > 0                              |
//! | optim.min_lr_ratio               | [0, 1]                                   |
//! | optim.beta1, optim.beta2         | [0, 1)                                   |
//! | optim.eps                        | finite, > 0                              |
//! | optim.weight_decay               | finite, >= 0                             |
//! | optim.clip_norm                  | finite, >= 0 (0 disables clipping)       |
//! | train.steps, train.global_batch  | >= 1                                     |
//! | train.micro_batch                | >= 1 when set, <= train.global_batch     |
//! | train.log_every                  | >= 1                                     |
//! | train.eval_batches               | >= 1                                     |
//! | train.sample_tokens              | >= 1                                     |
//! | train.spike_guard                | 0 (off) or finite > 1                    |
//! | parallel.zero_stage              | 0, 1, 2 or 3                             |
//! | parallel.tp, pp, microbatches    | >= 1                                     |
//! | parallel.collective_timeout_s    | finite, > 0, <= MAX_TIMEOUT_S            |
//! (optim.warmup_steps, train.seed, train.eval_every, train.sample_every, checkpoint.every and
//! checkpoint.keep_last accept every value of their unsigned type; 0 has a documented meaning.)

use super::Recipe;
use crate::error::Result;
use crate::user;

/// Longest collective timeout accepted: 30 days. Longer values are not a timeout any more, and
/// `Duration` arithmetic on them could overflow.
pub const MAX_TIMEOUT_S: f64 = 30.0 * 86400.0;

/// Checks every numeric key of `r`; `origin` names the recipe file.
pub fn check(r: &Recipe, origin: &str) -> Result<()> {
    let err = |key: &str, want: &str, found: String| {
        Err(user!("{origin}: `{key}` must be {want}, found {found}"))
    };
    let finite_at_least = |key: &str, v: f64, min: f64, strict: bool| {
        let ok = v.is_finite() && if strict { v > min } else { v >= min };
        let want = if strict {
            format!("a finite number above {min}")
        } else {
            format!("a finite number of at least {min}")
        };
        if ok {
            Ok(())
        } else {
            err(key, &want, format!("{v:?}"))
        }
    };
    let in_unit = |key: &str, v: f64, closed: bool| {
        let ok = (0.0..=1.0).contains(&v) && (closed || v < 1.0);
        let want = if closed {
            "within [0, 1]"
        } else {
            "within [0, 1)"
        };
        if ok {
            Ok(())
        } else {
            err(key, want, format!("{v:?}"))
        }
    };
    let at_least_one = |key: &str, v: u64| {
        if v >= 1 {
            Ok(())
        } else {
            err(key, "at least 1", v.to_string())
        }
    };

    finite_at_least("model.init_std", r.model.init_std, 0.0, false)?;
    if let Some(s) = r.data.seq_len {
        if s < 2 {
            return err(
                "data.seq_len",
                "at least 2 (a token and the one it predicts)",
                s.to_string(),
            );
        }
    }
    in_unit("data.val_fraction", r.data.val_fraction, false)?;

    let o = &r.optim;
    finite_at_least("optim.lr", o.lr, 0.0, true)?;
    in_unit("optim.min_lr_ratio", o.min_lr_ratio, true)?;
    in_unit("optim.beta1", o.beta1, false)?;
    in_unit("optim.beta2", o.beta2, false)?;
    finite_at_least("optim.eps", o.eps, 0.0, true)?;
    finite_at_least("optim.weight_decay", o.weight_decay, 0.0, false)?;
    finite_at_least("optim.clip_norm", o.clip_norm, 0.0, false)?;

    let t = &r.train;
    at_least_one("train.steps", t.steps)?;
    at_least_one("train.global_batch", t.global_batch as u64)?;
    if let Some(m) = t.micro_batch {
        at_least_one("train.micro_batch", m as u64)?;
        if m > t.global_batch {
            return err(
                "train.micro_batch",
                &format!("at most train.global_batch = {}", t.global_batch),
                m.to_string(),
            );
        }
    }
    at_least_one("train.log_every", t.log_every)?;
    at_least_one("train.eval_batches", t.eval_batches as u64)?;
    at_least_one("train.sample_tokens", t.sample_tokens as u64)?;
    if t.spike_guard != 0.0 && !(t.spike_guard.is_finite() && t.spike_guard > 1.0) {
        return err(
            "train.spike_guard",
            "0 (off) or a factor above 1 (stop when a loss exceeds that many times the running mean)",
            format!("{:?}", t.spike_guard),
        );
    }

    let p = &r.parallel;
    if p.zero_stage > 3 {
        return err(
            "parallel.zero_stage",
            "0, 1, 2 or 3",
            p.zero_stage.to_string(),
        );
    }
    at_least_one("parallel.tp", p.tp as u64)?;
    at_least_one("parallel.pp", p.pp as u64)?;
    if let Some(m) = p.microbatches {
        at_least_one("parallel.microbatches", m as u64)?;
    }
    let timeout = p.collective_timeout_s;
    if !(timeout.is_finite() && timeout > 0.0 && timeout <= MAX_TIMEOUT_S) {
        return err(
            "parallel.collective_timeout_s",
            &format!("a number of seconds above 0 and at most {MAX_TIMEOUT_S} (30 days)"),
            format!("{timeout:?}"),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::recipe::Recipe;

    const MIN: &str = "[model]\nconfig = \"c.json\"\n[data]\npath = \"x.txt\"\n[train]\nsteps = 3\nglobal_batch = 4\nout_dir = \"o\"\n";

    fn err(set: &str) -> String {
        Recipe::parse(MIN, "r.toml", &[set.to_string()])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn every_out_of_range_value_names_its_key() {
        for (set, key) in [
            ("model.init_std=-0.1", "model.init_std"),
            ("data.seq_len=1", "data.seq_len"),
            ("data.val_fraction=1.0", "data.val_fraction"),
            ("optim.lr=0", "optim.lr"),
            ("optim.lr=nan", "optim.lr"),
            ("optim.min_lr_ratio=1.5", "optim.min_lr_ratio"),
            ("optim.beta1=1", "optim.beta1"),
            ("optim.beta2=-0.1", "optim.beta2"),
            ("optim.eps=-1e-8", "optim.eps"),
            ("optim.eps=0", "optim.eps"),
            ("optim.weight_decay=-0.1", "optim.weight_decay"),
            ("optim.clip_norm=-1", "optim.clip_norm"),
            ("optim.clip_norm=inf", "optim.clip_norm"),
            ("train.steps=0", "train.steps"),
            ("train.global_batch=0", "train.global_batch"),
            ("train.micro_batch=0", "train.micro_batch"),
            ("train.micro_batch=5", "train.micro_batch"),
            ("train.log_every=0", "train.log_every"),
            ("train.eval_batches=0", "train.eval_batches"),
            ("train.sample_tokens=0", "train.sample_tokens"),
            ("train.spike_guard=0.5", "train.spike_guard"),
            ("train.spike_guard=-2", "train.spike_guard"),
            ("parallel.zero_stage=4", "parallel.zero_stage"),
            ("parallel.tp=0", "parallel.tp"),
            ("parallel.pp=0", "parallel.pp"),
            ("parallel.microbatches=0", "parallel.microbatches"),
            (
                "parallel.collective_timeout_s=-5",
                "parallel.collective_timeout_s",
            ),
            (
                "parallel.collective_timeout_s=0",
                "parallel.collective_timeout_s",
            ),
            (
                "parallel.collective_timeout_s=1e300",
                "parallel.collective_timeout_s",
            ),
        ] {
            let e = err(set);
            assert!(e.starts_with("r.toml: `") && e.contains(key), "{set}: {e}");
        }
    }

    #[test]
    fn values_at_the_edges_are_accepted() {
        for set in [
            "model.init_std=0",
            "optim.clip_norm=0",
            "optim.weight_decay=0",
            "optim.min_lr_ratio=1",
            "train.spike_guard=0",
            "train.spike_guard=3",
            "train.micro_batch=4",
            "parallel.collective_timeout_s=0.5",
        ] {
            assert_eq!(err(set), "", "{set}");
        }
    }
}
