//! Checkpoint-root housekeeping: keep the newest K step directories; remove temporary
//! directories left by a crashed or failed save (never read by `latest`/`load`).
//!
//! Divergence marker: when training stops on a loss spike or a non-finite loss, the trainer
//! writes `<root>/divergence.json` = {"step", "loss", "reason", "last_good"} naming the newest
//! checkpoint saved before it. That directory is never pruned (it is kept beside the newest K)
//! while the marker exists; delete the marker to let it go.

use super::fsutil::remove_dir_quiet;
use super::load::step_dirs;
use super::TMP_PREFIX;
use crate::error::Result;
use crate::user;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// The divergence marker's file name in a checkpoint root.
pub const DIVERGENCE_MARKER: &str = "divergence.json";

/// Removes every `.tmp-step-*` directory in `root` (errors ignored: best effort).
pub fn remove_tmp_dirs(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
            remove_dir_quiet(&e.path());
        }
    }
}

/// Keeps `keep` step directories (`keep == 0`: keep all): `protect` (the one just written) and
/// the newest others; removes the rest. The new checkpoint is never pruned, even when older
/// step numbers than its own exist.
pub fn keep_last_steps(root: &Path, keep: usize, protect: &Path) -> Result<()> {
    if keep == 0 {
        return Ok(());
    }
    let before_divergence = protected_by_divergence(root);
    let others: Vec<_> = step_dirs(root)?
        .into_iter()
        .filter(|(_, d)| d != protect && Some(d) != before_divergence.as_ref())
        .collect();
    let n = others.len().saturating_sub(keep - 1);
    for (_, dir) in &others[..n] {
        std::fs::remove_dir_all(dir)
            .map_err(|e| user!("cannot remove old checkpoint {}: {e}", dir.display()))?;
    }
    Ok(())
}

/// Records that training diverged at `step`; the newest complete checkpoint in `root` (saved
/// before it) is protected from pruning. Returns that checkpoint, if there is one.
pub fn mark_divergence(root: &Path, step: u64, loss: f64, reason: &str) -> Result<Option<PathBuf>> {
    let Some((_, last_good)) = step_dirs(root)?.pop() else {
        return Ok(None);
    };
    let name = last_good
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let marker = json!({
        "step": step,
        "loss": if loss.is_finite() { json!(loss) } else { json!(loss.to_string()) },
        "reason": reason,
        "last_good": name,
    });
    super::fsutil::write_json(&root.join(DIVERGENCE_MARKER), &marker)?;
    Ok(Some(last_good))
}

/// The step directory a divergence marker protects, if the marker names one that exists.
pub fn protected_by_divergence(root: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(root.join(DIVERGENCE_MARKER)).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    let name = v.get("last_good")?.as_str()?;
    let dir = root.join(name);
    (!name.is_empty() && !name.contains('/') && dir.is_dir()).then_some(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checkpoint_before_a_divergence_survives_pruning() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let make = |s: u64| {
            let d = r.join(super::super::step_dir_name(s));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join(super::super::TRAINER_STATE), "{}").unwrap();
            d
        };
        make(1);
        let good = make(2);
        assert_eq!(
            mark_divergence(r, 3, f64::NAN, "test").unwrap(),
            Some(good.clone())
        );
        for s in 3..=6 {
            let d = make(s);
            keep_last_steps(r, 2, &d).unwrap();
        }
        let left: Vec<u64> = step_dirs(r).unwrap().into_iter().map(|(s, _)| s).collect();
        assert_eq!(left, vec![2, 5, 6]);
        std::fs::remove_file(r.join(DIVERGENCE_MARKER)).unwrap();
        keep_last_steps(r, 2, &r.join(super::super::step_dir_name(6))).unwrap();
        let left: Vec<u64> = step_dirs(r).unwrap().into_iter().map(|(s, _)| s).collect();
        assert_eq!(left, vec![5, 6]);
    }
}
