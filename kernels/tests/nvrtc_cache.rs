//! The NVRTC helpers without a GPU: include expansion, compile errors carrying NVRTC's log, and
//! the on-disk PTX cache (a second request is served from the file). The NVRTC parts need
//! libnvrtc (scripts/setup-nvrtc.sh); they skip without it unless CI=true /
//! FERROTRON_REQUIRE_NVRTC=1. The cache directory is redirected with FERROTRON_CACHE_DIR (this
//! binary only, one test touches it).

use ferrotron_kernels::cuda::nvrtc;

fn nvrtc_or_skip() -> bool {
    if nvrtc::nvrtc_available() {
        return true;
    }
    let on = |v: &str| {
        std::env::var(v)
            .map(|s| !s.is_empty() && s != "0" && s.to_lowercase() != "false")
            .unwrap_or(false)
    };
    assert!(
        !(on("CI") || on("FERROTRON_REQUIRE_NVRTC")),
        "libnvrtc not found (run scripts/setup-nvrtc.sh)"
    );
    eprintln!("SKIPPED: libnvrtc not found");
    false
}

#[test]
fn includes_expand_once_and_nested() {
    let headers = |name: &str| match name {
        "a.cuh" => Some("#pragma once\nint a;\n#include \"b.cuh\"\n".to_string()),
        "b.cuh" => Some("int b;\n".to_string()),
        _ => None,
    };
    let out = nvrtc::expand_includes(
        "#include \"a.cuh\"\n#include \"b.cuh\"\n#include <cuda_bf16.h>\nint main;\n",
        &headers,
    )
    .unwrap();
    assert_eq!(out, "int a;\nint b;\n#include <cuda_bf16.h>\nint main;\n");
    assert!(nvrtc::expand_includes("#include \"missing.cuh\"\n", &headers).is_err());
}

#[test]
fn compile_error_carries_the_log() {
    if !nvrtc_or_skip() {
        return;
    }
    let err = nvrtc::compile_ptx(
        "broken",
        "extern \"C\" __global__ void k() { undefined_thing(); }",
        "sm_90",
        &[],
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("broken.cu") && msg.contains("undefined_thing"),
        "{msg}"
    );
}

#[test]
fn ptx_is_cached_on_disk() {
    if !nvrtc_or_skip() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("ferrotron-ptx-test-{}", std::process::id()));
    std::env::set_var("FERROTRON_CACHE_DIR", &dir);
    let src = "extern \"C\" __global__ void cache_probe(float* x) { x[threadIdx.x] += 1.f; }";
    let ptx = nvrtc::cached_ptx("probe", src, "sm_80", &[]).unwrap();
    assert!(ptx.contains(".entry cache_probe"));
    let files: Vec<_> = std::fs::read_dir(dir.join("ferrotron/ptx"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    // Served from the file: a marked copy comes back unchanged.
    let marked = format!("{ptx}\n// from-cache\n");
    std::fs::write(&files[0], &marked).unwrap();
    assert_eq!(
        nvrtc::cached_ptx("probe", src, "sm_80", &[]).unwrap(),
        marked
    );
    // Another arch or option is another entry.
    nvrtc::cached_ptx("probe", src, "sm_90", &[]).unwrap();
    nvrtc::cached_ptx("probe", src, "sm_80", &["-DX=1".to_string()]).unwrap();
    assert_eq!(
        std::fs::read_dir(dir.join("ferrotron/ptx"))
            .unwrap()
            .count(),
        3
    );
    let _ = std::fs::remove_dir_all(&dir);
}
