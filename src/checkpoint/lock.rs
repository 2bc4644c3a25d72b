//! One run per checkpoint directory.
//!
//! Contract: `CheckpointLock::acquire(dir)` (world rank 0, before anything is written) takes an
//! exclusive `flock(2)` on `<dir>/ferrotron.lock` and writes the holder's record into it:
//! `host <hostname>\npid <pid>\nsince <unix seconds>\n`. A second run on the same directory
//! fails with one sentence naming the holder's host and pid (exit code 2). The lock is released
//! when the guard drops (normal exit and every error path) and by the kernel when the process
//! dies, however it dies.
//!
//! A record left by a run that died without releasing (a kill -9, a watchdog `_exit`) is stale:
//! the flock is free and the record names this host and a pid that is no longer running; it is
//! taken over with a note. A record from another host whose flock is free cannot be checked
//! from here (some shared file systems keep flocks per node): the run stops and names it.
//!
//! On release the lock file is removed while still locked, and so are the directories `acquire`
//! created if they are still empty, so a run that fails early leaves nothing behind. Because the
//! file can be removed, `acquire` checks after locking that the path still names the file it
//! locked (else another run removed it in between, and it tries again). Where the file system
//! has no flock at all (ENOLCK, EOPNOTSUPP), the record alone decides, as for a free flock.

use crate::error::Result;
use crate::user;
use ferrotron_parallel::forensics::hostname;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

pub const LOCK_FILE: &str = "ferrotron.lock";

/// Held while the run owns the directory; dropping it releases the lock.
pub struct CheckpointLock {
    file: Option<File>,
    path: PathBuf,
    /// Directories `acquire` created, deepest first (removed on release if empty).
    created: Vec<PathBuf>,
}

/// Who holds (or held) a lock.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Holder {
    host: String,
    pid: u32,
    since: u64,
}

impl Holder {
    fn me() -> Holder {
        Holder {
            host: hostname(),
            pid: std::process::id(),
            since: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }

    fn parse(text: &str) -> Option<Holder> {
        let field = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(k)?.strip_prefix(' '))
                .map(str::trim)
        };
        Some(Holder {
            host: field("host")?.to_string(),
            pid: field("pid")?.parse().ok()?,
            since: field("since").and_then(|s| s.parse().ok()).unwrap_or(0),
        })
    }

    fn record(&self) -> String {
        format!(
            "host {}\npid {}\nsince {}\n",
            self.host, self.pid, self.since
        )
    }

    fn describe(&self) -> String {
        format!("pid {} on host {}", self.pid, self.host)
    }
}

/// Whether process `pid` exists on this host (EPERM: it exists but is not ours).
fn pid_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill with signal 0 only checks for the process; it sends nothing.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

enum Flock {
    Held,
    Busy,
    Unsupported,
}

fn try_flock(f: &File) -> std::io::Result<Flock> {
    // SAFETY: flock on a descriptor we own.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(Flock::Held);
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EWOULDBLOCK) => Ok(Flock::Busy),
        Some(libc::ENOLCK | libc::EOPNOTSUPP | libc::EINVAL | libc::ENOSYS) => {
            Ok(Flock::Unsupported)
        }
        _ => Err(e),
    }
}

/// Creates `dir` and its missing parents; returns the ones created, deepest first.
fn create_dirs(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut missing = Vec::new();
    let mut d = Some(dir);
    while let Some(p) = d.filter(|p| !p.as_os_str().is_empty() && !p.exists()) {
        missing.push(p.to_path_buf());
        d = p.parent();
    }
    std::fs::create_dir_all(dir)?;
    Ok(missing)
}

impl CheckpointLock {
    /// Takes the lock of checkpoint directory `dir` (created if missing).
    pub fn acquire(dir: &Path) -> Result<CheckpointLock> {
        let path = dir.join(LOCK_FILE);
        let io = |what: &str, e: std::io::Error| user!("{}: cannot {what}: {e}", path.display());
        let created = create_dirs(dir)
            .map_err(|e| user!("cannot create checkpoint directory {}: {e}", dir.display()))?;
        let mut lock = CheckpointLock {
            file: None,
            path: path.clone(),
            created,
        };
        for _ in 0..100 {
            let mut f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(|e| io("open the lock file", e))?;
            let flock = try_flock(&f).map_err(|e| io("lock", e))?;
            let mut text = String::new();
            let _ = f.read_to_string(&mut text);
            let previous = Holder::parse(&text);
            if let Flock::Busy = flock {
                let who = previous
                    .map(|h| h.describe())
                    .unwrap_or_else(|| "a process that has not written its record yet".into());
                return Err(user!(
                    "checkpoint directory {} is in use by another ferrotron run ({who}, lock file {}); wait for it to finish or set another checkpoint.dir",
                    dir.display(),
                    path.display()
                ));
            }
            // Held (or no flock here): is the file still the one at `path`?
            let same = match (f.metadata(), std::fs::metadata(&path)) {
                (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
                _ => false,
            };
            if !same {
                continue; // removed by a releasing run in between: lock the new file
            }
            if let Some(h) = previous {
                let here = h.host == hostname();
                if here
                    && h.pid != std::process::id()
                    && pid_alive(h.pid)
                    && matches!(flock, Flock::Unsupported)
                {
                    return Err(user!(
                        "checkpoint directory {} is in use by another ferrotron run ({}, lock file {}); wait for it to finish or set another checkpoint.dir",
                        dir.display(),
                        h.describe(),
                        path.display()
                    ));
                }
                if !here {
                    return Err(user!(
                        "checkpoint directory {} has a lock left by {} (lock file {}), which cannot be checked from host {}; if that run has ended, delete the lock file",
                        dir.display(),
                        h.describe(),
                        path.display(),
                        hostname()
                    ));
                }
                crate::errln!(
                    "note: took over the stale lock of {} on checkpoint directory {} (that run ended without releasing it)",
                    h.describe(),
                    dir.display()
                );
            }
            f.set_len(0)
                .and_then(|_| f.seek(SeekFrom::Start(0)))
                .and_then(|_| f.write_all(Holder::me().record().as_bytes()))
                .and_then(|_| f.sync_all())
                .map_err(|e| io("write the lock record", e))?;
            lock.file = Some(f);
            return Ok(lock);
        }
        Err(user!(
            "{}: the lock file kept being replaced by other runs; try again",
            path.display()
        ))
    }
}

impl Drop for CheckpointLock {
    fn drop(&mut self) {
        if let Some(f) = self.file.take() {
            // Remove while still locked, so nobody locks a file that is about to vanish
            // unnoticed (acquire re-checks the path after locking).
            let _ = std::fs::remove_file(&self.path);
            drop(f);
        }
        for d in &self.created {
            if std::fs::remove_dir(d).is_err() {
                break; // not empty: the run wrote into it
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_names_the_holder_and_release_leaves_nothing() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("out/checkpoints");
        let first = CheckpointLock::acquire(&dir).unwrap();
        let e = CheckpointLock::acquire(&dir).err().unwrap().to_string();
        assert!(
            e.contains(&format!(
                "pid {} on host {}",
                std::process::id(),
                hostname()
            )),
            "{e}"
        );
        drop(first);
        assert!(
            !root.path().join("out").exists(),
            "created directories are removed"
        );
        let again = CheckpointLock::acquire(&dir).unwrap();
        std::fs::write(dir.join("x"), "kept").unwrap();
        drop(again);
        assert!(dir.join("x").exists() && !dir.join(LOCK_FILE).exists());
    }

    #[test]
    fn a_stale_record_on_this_host_is_taken_over_and_another_host_is_named() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path();
        let dead = Holder {
            host: hostname(),
            pid: i32::MAX as u32 - 7,
            since: 1,
        };
        std::fs::write(dir.join(LOCK_FILE), dead.record()).unwrap();
        let l = CheckpointLock::acquire(dir).unwrap();
        let now = Holder::parse(&std::fs::read_to_string(dir.join(LOCK_FILE)).unwrap()).unwrap();
        assert_eq!(now.pid, std::process::id());
        drop(l);
        let other = Holder {
            host: "some-other-node".into(),
            pid: 42,
            since: 1,
        };
        std::fs::write(dir.join(LOCK_FILE), other.record()).unwrap();
        let e = CheckpointLock::acquire(dir).err().unwrap().to_string();
        assert!(e.contains("pid 42 on host some-other-node"), "{e}");
    }
}
