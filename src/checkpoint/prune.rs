//! Checkpoint-root housekeeping: keep the newest K step directories; remove temporary
//! directories left by a crashed or failed save (never read by `latest`/`load`).

use super::fsutil::remove_dir_quiet;
use super::load::step_dirs;
use super::TMP_PREFIX;
use crate::error::Result;
use crate::user;
use std::path::Path;

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

/// Removes all but the newest `keep` step directories (`keep == 0`: keep all).
pub fn keep_last_steps(root: &Path, keep: usize) -> Result<()> {
    if keep == 0 {
        return Ok(());
    }
    let steps = step_dirs(root)?;
    let n = steps.len().saturating_sub(keep);
    for (_, dir) in &steps[..n] {
        std::fs::remove_dir_all(dir)
            .map_err(|e| user!("cannot remove old checkpoint {}: {e}", dir.display()))?;
    }
    Ok(())
}
