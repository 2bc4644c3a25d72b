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

/// Keeps `keep` step directories (`keep == 0`: keep all): `protect` (the one just written) and
/// the newest others; removes the rest. The new checkpoint is never pruned, even when older
/// step numbers than its own exist.
pub fn keep_last_steps(root: &Path, keep: usize, protect: &Path) -> Result<()> {
    if keep == 0 {
        return Ok(());
    }
    let others: Vec<_> = step_dirs(root)?
        .into_iter()
        .filter(|(_, d)| d != protect)
        .collect();
    let n = others.len().saturating_sub(keep - 1);
    for (_, dir) in &others[..n] {
        std::fs::remove_dir_all(dir)
            .map_err(|e| user!("cannot remove old checkpoint {}: {e}", dir.display()))?;
    }
    Ok(())
}
