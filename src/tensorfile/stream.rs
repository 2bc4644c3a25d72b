//! Writing safetensors files one tensor at a time, so no writer holds more than the tensor in
//! hand: the header (every name, dtype, shape and byte range) is computed from the entries up
//! front, then each tensor's values are pushed in entry order and converted as they are written.
//!
//! File layout (the safetensors format): 8-byte little-endian header length, the JSON header
//! padded with spaces to a multiple of 8, then the tensors' bytes in entry order. Values are
//! stored as F32, or as BF16 rounded to nearest-even (`half::bf16::from_f32`). The file is
//! fsync'ed by `finish`; a writer dropped before `finish` leaves an incomplete file that the
//! caller's temporary directory discards.

use crate::error::Result;
use crate::user;
use serde_json::{json, Map, Value};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreDtype {
    F32,
    Bf16,
}

impl StoreDtype {
    pub fn bytes(self) -> usize {
        match self {
            StoreDtype::F32 => 4,
            StoreDtype::Bf16 => 2,
        }
    }
    fn tag(self) -> &'static str {
        match self {
            StoreDtype::F32 => "F32",
            StoreDtype::Bf16 => "BF16",
        }
    }
}

/// A tensor to be written: its name and shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub shape: Vec<usize>,
}

impl Entry {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// A safetensors file being written (see the module comment).
pub struct StreamWriter {
    path: PathBuf,
    w: BufWriter<File>,
    entries: Vec<Entry>,
    next: usize,
    dtype: StoreDtype,
    buf: Vec<u8>,
}

impl StreamWriter {
    /// Creates `path` and writes the header for `entries`; `metadata` goes into `__metadata__`.
    pub fn create(
        path: &Path,
        entries: Vec<Entry>,
        dtype: StoreDtype,
        metadata: &[(&str, String)],
    ) -> Result<Self> {
        let mut meta = Map::new();
        meta.insert("format".into(), "pt".into());
        for (k, v) in metadata {
            meta.insert((*k).into(), Value::String(v.clone()));
        }
        let mut h = Map::new();
        h.insert("__metadata__".into(), Value::Object(meta));
        let mut offset = 0usize;
        for e in &entries {
            let end = offset + e.numel() * dtype.bytes();
            h.insert(
                e.name.clone(),
                json!({"dtype": dtype.tag(), "shape": e.shape, "data_offsets": [offset, end]}),
            );
            offset = end;
        }
        let mut head = serde_json::to_vec(&Value::Object(h)).expect("header serializes");
        while head.len() % 8 != 0 {
            head.push(b' ');
        }
        let fail = |e: std::io::Error| user!("cannot write {}: {e}", path.display());
        let f = File::create(path).map_err(fail)?;
        let mut w = BufWriter::with_capacity(1 << 20, f);
        w.write_all(&(head.len() as u64).to_le_bytes())
            .and_then(|_| w.write_all(&head))
            .map_err(fail)?;
        Ok(StreamWriter {
            path: path.to_path_buf(),
            w,
            entries,
            next: 0,
            dtype,
            buf: Vec::with_capacity(1 << 20),
        })
    }

    /// The entry the next `push` must supply, if any is left.
    pub fn next_entry(&self) -> Option<&Entry> {
        self.entries.get(self.next)
    }

    /// Writes the values of the next entry, which must be `name` with exactly its element count.
    pub fn push(&mut self, name: &str, data: &[f32]) -> Result<()> {
        let e = self.entries.get(self.next).unwrap_or_else(|| {
            panic!(
                "{}: `{name}` pushed after the last entry",
                self.path.display()
            )
        });
        assert!(
            e.name == name && e.numel() == data.len(),
            "{}: pushed `{name}` ({} values), the next entry is `{}` ({} values)",
            self.path.display(),
            data.len(),
            e.name,
            e.numel()
        );
        self.next += 1;
        let fail = |e: std::io::Error| user!("cannot write {}: {e}", self.path.display());
        for chunk in data.chunks(1 << 18) {
            self.buf.clear();
            match self.dtype {
                StoreDtype::F32 => chunk
                    .iter()
                    .for_each(|x| self.buf.extend_from_slice(&x.to_le_bytes())),
                StoreDtype::Bf16 => chunk.iter().for_each(|x| {
                    self.buf
                        .extend_from_slice(&half::bf16::from_f32(*x).to_le_bytes())
                }),
            }
            self.w.write_all(&self.buf).map_err(fail)?;
        }
        Ok(())
    }

    /// Checks every entry was written, flushes and fsyncs the file.
    pub fn finish(self) -> Result<()> {
        if let Some(e) = self.entries.get(self.next) {
            panic!(
                "{}: finished before `{}` was written",
                self.path.display(),
                e.name
            );
        }
        let path = self.path;
        let fail = |e: std::io::Error| user!("cannot write {}: {e}", path.display());
        let f = self.w.into_inner().map_err(|e| fail(e.into_error()))?;
        f.sync_all().map_err(fail)
    }
}
