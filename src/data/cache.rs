//! Token cache: a source file tokenized once into `<cache_dir>/<stem>-<key>.tok`, then
//! memory-mapped. key = sha256(cache format version, caller's key (tokenizer identity, split
//! mode), the source file's bytes), so a changed file or tokenizer gets a new cache file and an
//! unchanged one is reused without tokenizing.
//! File layout: 8 bytes magic `FTTOKv01`, u64 LE token count, then u32 LE tokens (little-endian
//! hosts). Written to a temporary file and renamed, so a crash never leaves a torn cache file.

use std::io::Write;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::user;

const MAGIC: &[u8; 8] = b"FTTOKv01";
const HEADER: usize = 16;

/// A memory-mapped token file.
pub struct TokenFile {
    mmap: Mmap,
    path: PathBuf,
}

impl TokenFile {
    pub fn tokens(&self) -> &[u32] {
        bytemuck::cast_slice(&self.mmap[HEADER..])
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn open(path: &Path) -> Option<Self> {
        let f = std::fs::File::open(path).ok()?;
        // SAFETY: cache files are written once (atomically, by rename) and never modified.
        let mmap = unsafe { Mmap::map(&f) }.ok()?;
        if mmap.len() < HEADER || &mmap[..8] != MAGIC {
            return None;
        }
        let n = u64::from_le_bytes(mmap[8..16].try_into().ok()?) as usize;
        if mmap.len() != HEADER + 4 * n
            || bytemuck::try_cast_slice::<u8, u32>(&mmap[HEADER..]).is_err()
        {
            return None;
        }
        Some(Self {
            mmap,
            path: path.to_path_buf(),
        })
    }
}

/// The cache file name for `source` under `key`.
pub fn cache_path(source: &Path, bytes: &[u8], key: &str, cache_dir: &Path) -> PathBuf {
    let mut h = Sha256::new();
    h.update(MAGIC);
    h.update(key.as_bytes());
    h.update((bytes.len() as u64).to_le_bytes());
    h.update(bytes);
    let hex = format!("{:x}", h.finalize());
    let stem = source
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    cache_dir.join(format!("{stem}-{}.tok", &hex[..20]))
}

/// Opens the cached tokens of `source`, or builds them with `tokenize(text)` and caches them.
/// Returns the file and whether it was a cache hit.
pub fn load_or_build(
    source: &Path,
    key: &str,
    cache_dir: &Path,
    tokenize: impl FnOnce(&str) -> Result<Vec<u32>>,
) -> Result<(TokenFile, bool)> {
    let bytes =
        std::fs::read(source).map_err(|e| user!("cannot read {}: {e}", source.display()))?;
    let path = cache_path(source, &bytes, key, cache_dir);
    if let Some(tf) = TokenFile::open(&path) {
        return Ok((tf, true));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        user!(
            "{} is not UTF-8 text (byte {})",
            source.display(),
            e.utf8_error().valid_up_to()
        )
    })?;
    let tokens = tokenize(&text)?;
    std::fs::create_dir_all(cache_dir).map_err(|e| {
        user!(
            "cannot create the token cache directory {}: {e}",
            cache_dir.display()
        )
    })?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        f.write_all(MAGIC)?;
        f.write_all(&(tokens.len() as u64).to_le_bytes())?;
        for t in &tokens {
            f.write_all(&t.to_le_bytes())?;
        }
        f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&tmp, &path)
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(user!(
            "cannot write the token cache {}: {e}",
            path.display()
        ));
    }
    let tf = TokenFile::open(&path).ok_or_else(|| {
        Error::Internal(format!(
            "token cache {} unreadable after writing",
            path.display()
        ))
    })?;
    Ok((tf, false))
}
