//! Bad input to `ferrotron export` and `ferrotron sample`, through the binary: each gives exit
//! code 2 and exactly one line on stderr naming the file or tensor at fault (no panic), and
//! nothing half-written.

mod checkpoint_support;

use checkpoint_support::*;
use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

/// Runs the binary; asserts exit 2 and one stderr line; returns that line.
fn fails(args: &[&OsStr]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ferrotron"))
        .args(args)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert_eq!(err.lines().count(), 1, "one sentence expected: {err}");
    assert!(
        err.starts_with("error: ") && !err.contains("panicked"),
        "{err}"
    );
    err
}

fn export_args<'a>(ckpt: &'a Path, out: &'a Path) -> Vec<&'a OsStr> {
    vec![
        "export".as_ref(),
        ckpt.as_os_str(),
        "--hf".as_ref(),
        out.as_os_str(),
    ]
}

#[test]
fn export_of_a_missing_or_empty_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("hf");
    let e = fails(&export_args(&tmp.path().join("nope"), &out));
    assert!(e.contains("nope") && e.contains("does not exist"), "{e}");
    let e = fails(&export_args(tmp.path(), &out));
    assert!(e.contains("is not a checkpoint"), "{e}");
    assert!(!out.exists());
}

#[test]
fn export_of_a_corrupt_safetensors_file() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, _) = save_fixture(&tmp.path().join("ckpt"), "tiny-gpt2", 1, 0);
    std::fs::write(
        dir.join("shard-00000-of-00001.safetensors"),
        b"\x10\0\0\0\0\0\0\0{not json}",
    )
    .unwrap();
    let out = tmp.path().join("hf");
    let e = fails(&export_args(&dir, &out));
    assert!(
        e.contains("shard-00000-of-00001.safetensors") && e.contains("not a valid safetensors"),
        "{e}"
    );
    assert!(!out.exists());
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        1,
        "no temporary directory left"
    );
}

#[test]
fn export_of_a_tensor_with_the_wrong_shape() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, _) = save_fixture(&tmp.path().join("ckpt"), "tiny-gpt2", 1, 0);
    let wrong = "transformer.h.1.attn.c_attn.weight";
    // The index claims a transposed shape for one tensor (same element count, consistent
    // slice): only the shape check against the model can catch it.
    let index = dir.join("shard-00000-of-00001.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&index).unwrap()).unwrap();
    for f in v["fragments"].as_array_mut().unwrap() {
        if f["tensor"] == wrong {
            f["slice"] = serde_json::json!({
                "global_shape": [192, 64], "local_shape": [192, 64], "dims": [[[0, 192]], [[0, 64]]]
            });
        }
    }
    std::fs::write(&index, v.to_string()).unwrap();
    let out = tmp.path().join("hf");
    let e = fails(&export_args(&dir, &out));
    assert!(
        e.contains("step-00000001") && e.contains(wrong) && e.contains("[192, 64]"),
        "{e}"
    );
    assert!(!out.exists());
}

#[test]
fn export_into_a_non_empty_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, _) = save_fixture(&tmp.path().join("ckpt"), "tiny-gpt2", 1, 0);
    let out = tmp.path().join("hf");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("keep.txt"), "mine").unwrap();
    let e = fails(&export_args(&dir, &out));
    assert!(e.contains("already exists"), "{e}");
    assert_eq!(
        std::fs::read_to_string(out.join("keep.txt")).unwrap(),
        "mine"
    );
}

#[test]
fn sample_bad_inputs() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, _) = save_fixture(&tmp.path().join("ckpt"), "tiny-gpt2", 1, 0);
    let sample = |model: &Path, prompt: &str, extra: &[&str]| {
        let mut a: Vec<&OsStr> = vec![
            "sample".as_ref(),
            model.as_os_str(),
            "--prompt".as_ref(),
            prompt.as_ref(),
        ];
        a.extend(extra.iter().map(|s| OsStr::new(*s)));
        fails(&a)
    };
    let e = sample(&tmp.path().join("nope"), "in the", &[]);
    assert!(e.contains("nope") && e.contains("does not exist"), "{e}");
    // " Zebra" is not among the fixture's 512 ids.
    let e = sample(&dir, "Zebra crossing", &[]);
    assert!(e.contains("outside the model's vocabulary of 512"), "{e}");
    let e = sample(&dir, "in the", &["--temperature=-1"]);
    assert!(e.contains("--temperature"), "{e}");
    std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
    let e = sample(&dir, "in the", &[]);
    assert!(e.contains("holds no tokenizer"), "{e}");
}
