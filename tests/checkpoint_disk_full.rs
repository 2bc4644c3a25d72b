//! A full disk while writing a checkpoint: the save fails with an error naming the file, leaves
//! no step or temporary directory behind, and the previous checkpoint still loads bitwise.
//!
//! The disk is "full" for real: the save runs in a child process (this test binary re-executed
//! on `child_save_under_file_size_limit`) with RLIMIT_FSIZE set and SIGXFSZ ignored, so a write
//! past the limit fails with EFBIG exactly as it would with ENOSPC.

mod checkpoint_support;

use checkpoint_support::*;
use ferrotron::checkpoint::{self, latest, load};
use std::path::Path;
use std::process::Command;

const CHILD_ROOT: &str = "FERROTRON_TEST_DISKFULL_ROOT";
const CHILD_LIMIT: &str = "FERROTRON_TEST_DISKFULL_LIMIT";

/// Runs only as the child of `full_disk_keeps_the_previous_checkpoint`.
#[test]
fn child_save_under_file_size_limit() {
    let (Ok(root), Ok(limit)) = (std::env::var(CHILD_ROOT), std::env::var(CHILD_LIMIT)) else {
        return;
    };
    let limit: libc::rlim_t = limit.parse().unwrap();
    // SAFETY: plain libc calls on this process; ignoring SIGXFSZ turns the kill into EFBIG.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let rl = libc::rlimit {
            rlim_cur: limit,
            rlim_max: limit,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &rl), 0);
    }
    let (cfg, layout, units) = fixture("tiny-gpt2");
    let state = state_of(&units, 2.0);
    let ts = serde_json::json!({"step": 2});
    match checkpoint::save(
        Path::new(&root),
        2,
        &cfg,
        &layout,
        &state,
        &gpt2_tokenizer(),
        &ts,
        1,
    ) {
        Ok(_) => std::process::exit(0),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(e.exit_code());
        }
    }
}

#[test]
fn full_disk_keeps_the_previous_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let (dir1, state1) = save_fixture(root, "tiny-gpt2", 1, 1);
    let shard = "shard-00000-of-00001.safetensors";
    let size = |f: &str| std::fs::metadata(dir1.join(f)).unwrap().len();
    // A limit inside the shard fails on it; one between the shard and the (larger) tokenizer.json
    // fails on the tokenizer, after the shard was written whole.
    assert!(size("tokenizer.json") > size(shard) + 4096);
    for (limit, file) in [
        (size(shard) / 2, shard),
        (size(shard) + 4096, "tokenizer.json"),
    ] {
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "child_save_under_file_size_limit",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ROOT, root)
            .env(CHILD_LIMIT, limit.to_string())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "limit {limit}: {stderr}");
        let line = stderr
            .lines()
            .find(|l| l.starts_with("error: "))
            .expect("an error line");
        assert!(
            line.contains("cannot write") && line.contains(&format!(".tmp-step-00000002/{file}")),
            "{line}"
        );
        assert!(
            line.contains("File too large") && line.contains("step 2 was not saved"),
            "{line}"
        );

        let names: Vec<String> = std::fs::read_dir(root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            vec!["step-00000001".to_string()],
            "nothing half-written may remain"
        );
        assert_eq!(latest(root).unwrap(), Some(dir1.clone()));
        let (cfg, layout, _) = fixture("tiny-gpt2");
        let (state, ts) = load(&dir1, &cfg, &layout).unwrap();
        assert_eq!(bits(&state.master), bits(&state1.master));
        assert_eq!(bits(&state.exp_avg_sq), bits(&state1.exp_avg_sq));
        assert_eq!(ts["step"], 1);
    }
}
