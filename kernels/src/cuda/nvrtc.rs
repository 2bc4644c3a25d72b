//! NVRTC: compile `.cu` sources to PTX at run time, cache the PTX on disk, load each module once
//! per CUDA context. Reusable by every kernel family (FlashAttention included).
//!
//!   load_module(ctx, name, source)  -> Arc<CudaModule>   the usual entry point
//!   compile_ptx(name, source, arch, extra_opts)         no cache, no GPU (the CI compile test)
//!
//! Options: `--std=c++17 --gpu-architecture=sm_XX` (XX from the device's compute capability),
//! `--include-path` for each of [`include_paths`], then the caller's extra options.
//! Disk cache: `<cache>/ferrotron/ptx/<name>-<sha256(nvrtc version, source, arch, options)>.ptx`,
//! `<cache>` = $FERROTRON_CACHE_DIR, else $XDG_CACHE_HOME, else $HOME/.cache; written atomically
//! (temp file + rename); a cache that cannot be written only costs a recompile.
//! Local includes (`#include "x.cuh"`) are expanded textually before hashing from
//! [`super::sources::header`], so a header change is a cache miss; `<...>` includes go to NVRTC.

use crate::{Error, Result};
use cudarc::driver::{CudaContext, CudaModule};
use cudarc::nvrtc::{CompileError, CompileOptions, Ptx};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

/// Whether libnvrtc can be loaded (cudarc panics on first use when it cannot).
pub fn nvrtc_available() -> bool {
    // SAFETY: only tries to dlopen the library by its candidate names.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

fn require_nvrtc() -> Result<()> {
    if nvrtc_available() {
        Ok(())
    } else {
        Err(Error::Cuda(
            "NVRTC (libnvrtc.so) was not found: put the CUDA toolkit's lib64 on LD_LIBRARY_PATH \
             or run scripts/setup-nvrtc.sh"
                .into(),
        ))
    }
}

/// Directories NVRTC searches for `<...>` includes: $FERROTRON_NVRTC_INCLUDE (':'-separated),
/// then $CUDA_HOME/include, $CUDA_PATH/include, /usr/local/cuda/include, where they exist.
pub fn include_paths() -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    if let Ok(v) = std::env::var("FERROTRON_NVRTC_INCLUDE") {
        out.extend(v.split(':').filter(|s| !s.is_empty()).map(String::from));
    }
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Ok(v) = std::env::var(var) {
            out.push(format!("{v}/include"));
        }
    }
    out.push("/usr/local/cuda/include".into());
    let mut seen = std::collections::HashSet::new();
    out.retain(|p| std::path::Path::new(p).is_dir() && seen.insert(p.clone()));
    out
}

/// Replace each line `#include "name"` by the text `resolve(name)` gives (recursively, once per
/// header: later includes of the same header become empty, like `#pragma once`).
pub fn expand_includes(source: &str, resolve: &dyn Fn(&str) -> Option<String>) -> Result<String> {
    fn go(
        src: &str,
        resolve: &dyn Fn(&str) -> Option<String>,
        seen: &mut Vec<String>,
        out: &mut String,
        depth: usize,
    ) -> Result<()> {
        if depth > 16 {
            return Err(Error::Cuda("#include nesting deeper than 16".into()));
        }
        for line in src.lines() {
            let t = line.trim_start();
            let local = t
                .strip_prefix("#include")
                .map(str::trim)
                .and_then(|r| r.strip_prefix('"'))
                .and_then(|r| r.split('"').next());
            match local {
                Some(name) => {
                    if !seen.iter().any(|s| s == name) {
                        seen.push(name.to_string());
                        let text = resolve(name).ok_or_else(|| {
                            Error::Cuda(format!("kernel header \"{name}\" not found"))
                        })?;
                        go(&text, resolve, seen, out, depth + 1)?;
                    }
                }
                None if t.starts_with("#pragma once") => {}
                None => {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        Ok(())
    }
    let mut out = String::with_capacity(source.len() * 2);
    go(source, resolve, &mut Vec::new(), &mut out, 0)?;
    Ok(out)
}

/// The full NVRTC option list for `arch` ("sm_90") plus `extra`.
pub fn compile_options(arch: &str, extra: &[String]) -> Vec<String> {
    let mut o = vec![
        "--std=c++17".to_string(),
        format!("--gpu-architecture={arch}"),
    ];
    o.extend(
        include_paths()
            .into_iter()
            .map(|p| format!("--include-path={p}")),
    );
    o.extend(extra.iter().cloned());
    o
}

/// Compile (already include-expanded) `source` to PTX text. No GPU needed.
pub fn compile_ptx(name: &str, source: &str, arch: &str, extra: &[String]) -> Result<String> {
    require_nvrtc()?;
    let opts = CompileOptions {
        options: compile_options(arch, extra),
        name: Some(format!("{name}.cu")),
        ..Default::default()
    };
    match cudarc::nvrtc::compile_ptx_with_opts(source, opts) {
        Ok(ptx) => Ok(ptx.to_src()),
        Err(CompileError::CompileError { log, options, .. }) => Err(Error::Cuda(format!(
            "NVRTC failed to compile {name}.cu for {arch} (options {options:?}):\n{}",
            log.to_string_lossy()
        ))),
        Err(e) => Err(Error::Cuda(format!(
            "NVRTC failed on {name}.cu for {arch}: {e}"
        ))),
    }
}

fn nvrtc_version() -> String {
    let (mut major, mut minor) = (0i32, 0i32);
    // SAFETY: two out-pointers to valid ints; only called after require_nvrtc().
    unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
    format!("{major}.{minor}")
}

fn cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("FERROTRON_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(PathBuf::from))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("ferrotron").join("ptx"))
}

/// The cache key of a compile: hex sha256 over the NVRTC version, arch, options and source.
pub fn cache_key(source: &str, arch: &str, options: &[String]) -> String {
    let mut h = Sha256::new();
    for part in [
        nvrtc_version().as_str(),
        arch,
        &options.join("\u{1f}"),
        source,
    ] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// PTX for `source`, from the disk cache when present, else compiled and stored.
pub fn cached_ptx(name: &str, source: &str, arch: &str, extra: &[String]) -> Result<String> {
    require_nvrtc()?;
    let key = cache_key(source, arch, &compile_options(arch, extra));
    let path = cache_dir().map(|d| d.join(format!("{name}-{arch}-{}.ptx", &key[..32])));
    if let Some(p) = &path {
        if let Ok(text) = std::fs::read_to_string(p) {
            if !text.contains('\0') && (text.contains(".entry") || text.contains(".visible")) {
                return Ok(text);
            }
        }
    }
    let ptx = compile_ptx(name, source, arch, extra)?;
    if let Some(p) = &path {
        let _ = store_atomically(p, &ptx);
    }
    Ok(ptx)
}

fn store_atomically(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    let dir = path.parent().ok_or(std::io::ErrorKind::NotFound)?;
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".tmp-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// "sm_XY" for the context's device.
pub fn device_arch(ctx: &Arc<CudaContext>) -> Result<String> {
    let (major, minor) = ctx
        .compute_capability()
        .map_err(|e| Error::Cuda(format!("compute capability: {e}")))?;
    Ok(format!("sm_{major}{minor}"))
}

type ModuleKey = (usize, String);
fn loaded() -> &'static Mutex<HashMap<ModuleKey, Arc<CudaModule>>> {
    static LOADED: OnceLock<Mutex<HashMap<ModuleKey, Arc<CudaModule>>>> = OnceLock::new();
    LOADED.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Options of [`load_module_with`]; `ModuleOpts::default()` is what [`load_module`] uses.
#[derive(Clone, Copy, Debug, Default)]
pub struct ModuleOpts<'a> {
    /// Target, e.g. "sm_90a" for wgmma; default: the device's "sm_XY".
    pub arch: Option<&'a str>,
    /// Extra NVRTC options, e.g. "-DKBLOCK=128", "--use_fast_math".
    pub extra: &'a [String],
    /// Local headers (`#include "name"` -> text) beyond ferrotron_common.cuh.
    pub headers: &'a [(&'a str, &'a str)],
}

/// Compile (or fetch from the disk cache) and load `source` for the context's device, once per
/// context: later calls with the same context, name, source and options return the same module.
pub fn load_module(ctx: &Arc<CudaContext>, name: &str, source: &str) -> Result<Arc<CudaModule>> {
    load_module_with(ctx, name, source, &ModuleOpts::default())
}

/// As [`load_module`], with an explicit arch, extra NVRTC options and extra local headers.
pub fn load_module_with(
    ctx: &Arc<CudaContext>,
    name: &str,
    source: &str,
    opts: &ModuleOpts<'_>,
) -> Result<Arc<CudaModule>> {
    let resolve = |h: &str| {
        opts.headers
            .iter()
            .find(|(n, _)| *n == h)
            .map(|(_, t)| t.to_string())
            .or_else(|| super::sources::header(h).map(String::from))
    };
    let source = expand_includes(source, &resolve)?;
    let arch = match opts.arch {
        Some(a) => a.to_string(),
        None => device_arch(ctx)?,
    };
    let extra = opts.extra;
    let digest: String = Sha256::digest(source.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let key = (
        ctx.cu_ctx() as usize,
        format!("{name}\u{1f}{arch}\u{1f}{}\u{1f}{digest}", extra.join(" ")),
    );
    let mut map = loaded()
        .lock()
        .map_err(|_| Error::Cuda("NVRTC module cache poisoned".into()))?;
    if let Some(m) = map.get(&key) {
        return Ok(m.clone());
    }
    let ptx = cached_ptx(name, &source, &arch, extra)?;
    let module = ctx
        .load_module(Ptx::from_src(ptx))
        .map_err(|e| Error::Cuda(format!("loading the PTX of {name}.cu ({arch}): {e}")))?;
    map.insert(key, module.clone());
    Ok(module)
}
