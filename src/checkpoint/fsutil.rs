//! Durable file writing for checkpoints and exports. Every error is an `Error::User` sentence
//! naming the path (a full disk is the user's to fix, and the message says where it happened).
//!
//! Contract: `write_file` creates a file, writes it through a buffered writer, and fsyncs it;
//! `publish_dir` fsyncs a finished temporary directory, renames it onto its final name (replacing
//! an existing directory of that name only after the new one is complete) and fsyncs the parent.

use crate::error::Result;
use crate::user;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

/// Creates `path`, lets `body` write into it, flushes and fsyncs it.
pub fn write_file(
    path: &Path,
    body: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<()> {
    let fail = |e: std::io::Error| user!("cannot write {}: {e}", path.display());
    let f = File::create(path).map_err(fail)?;
    let mut w = BufWriter::with_capacity(1 << 20, f);
    body(&mut w).map_err(fail)?;
    let f = w.into_inner().map_err(|e| fail(e.into_error()))?;
    f.sync_all().map_err(fail)
}

/// Writes `value` as pretty JSON to `path` (durably).
pub fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value).expect("JSON values serialize");
    write_file(path, |w| w.write_all(text.as_bytes()))
}

/// fsyncs an existing file or directory.
pub fn sync_path(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| user!("cannot sync {}: {e}", path.display()))
}

/// fsyncs every file directly inside `dir`, then `dir` itself.
pub fn sync_dir_tree(dir: &Path) -> Result<()> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| user!("cannot list {}: {e}", dir.display()))?;
    for e in entries {
        let p = e
            .map_err(|e| user!("cannot list {}: {e}", dir.display()))?
            .path();
        if p.is_file() {
            sync_path(&p)?;
        }
    }
    sync_path(dir)
}

/// Moves the complete directory `tmp` to `dest`. An existing `dest` is replaced: it is first
/// renamed aside to `aside`, then removed once `tmp` is in place.
pub fn publish_dir(tmp: &Path, dest: &Path, aside: &Path) -> Result<()> {
    sync_dir_tree(tmp)?;
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if dest.exists() {
        remove_dir_quiet(aside);
        std::fs::rename(dest, aside)
            .map_err(|e| user!("cannot move {} aside: {e}", dest.display()))?;
    }
    std::fs::rename(tmp, dest)
        .map_err(|e| user!("cannot rename {} to {}: {e}", tmp.display(), dest.display()))?;
    remove_dir_quiet(aside);
    sync_path(parent)
}

/// Removes a directory tree if it exists, ignoring errors (cleanup after a failure).
pub fn remove_dir_quiet(dir: &Path) {
    if dir.exists() {
        let _ = std::fs::remove_dir_all(dir);
    }
}
