//! Memory-mapped safetensors files: the one reader every path uses (HF import, checkpoints,
//! export, check-hf's reference tensors).
//!
//! Each file is mapped read-only and its header parsed once. `open` treats the files as one set
//! (HF shards: a tensor is found by name across the files, a name in two files is an error);
//! `open_each` keeps them apart (the per-rank files of a checkpoint reuse names), and tensors are
//! then addressed by (file, name). `read_f32` converts any element range of a tensor from its
//! stored dtype (F32, BF16, F16, F64) to f32. Headers are parsed from a read-only mapping (only
//! the header's pages are touched); data is read with positioned reads (pread), not through the
//! mapping, so what a rank reads passes through the page cache without becoming part of its
//! resident memory: a reader's RSS grows by what it keeps, not by what it read. Every error
//! names the file and the tensor.

use crate::error::Result;
use crate::user;
use memmap2::Mmap;
use rayon::prelude::*;
use safetensors::tensor::{Metadata, TensorInfo};
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};

struct MappedFile {
    path: PathBuf,
    file: File,
    len: u64,
    /// Byte offset of the data section (8 + header length).
    data_start: usize,
    meta: Metadata,
}

/// A set of safetensors files read as one.
pub struct SafetensorsFiles {
    files: Vec<MappedFile>,
    /// Tensor name -> index of the file holding it.
    index: BTreeMap<String, usize>,
}

impl SafetensorsFiles {
    /// Opens `dir/model.safetensors` or the shards listed in `dir/model.safetensors.index.json`.
    pub fn open_dir(dir: &Path) -> Result<Self> {
        Self::open_stem(dir, "model")
    }

    /// Opens `dir/<stem>.safetensors` or the shards listed in `dir/<stem>.safetensors.index.json`.
    pub fn open_stem(dir: &Path, stem: &str) -> Result<Self> {
        let index = dir.join(format!("{stem}.safetensors.index.json"));
        let single = dir.join(format!("{stem}.safetensors"));
        let paths: Vec<PathBuf> = if index.exists() {
            let text = std::fs::read_to_string(&index)
                .map_err(|e| user!("{}: cannot read: {e}", index.display()))?;
            let v: Value = serde_json::from_str(&text)
                .map_err(|e| user!("{}: not valid JSON: {e}", index.display()))?;
            let map = v
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| user!("{}: missing object `weight_map`", index.display()))?;
            let mut shards: Vec<String> = Vec::new();
            for (name, f) in map {
                let f = f.as_str().ok_or_else(|| {
                    user!(
                        "{}: weight_map entry `{name}` is not a file name",
                        index.display()
                    )
                })?;
                if f.contains('/') || f.contains("..") {
                    return Err(user!(
                        "{}: weight_map entry `{name}` names `{f}`, which is not a file in this directory",
                        index.display()
                    ));
                }
                if !shards.iter().any(|s| s == f) {
                    shards.push(f.to_string());
                }
            }
            shards.sort();
            shards.into_iter().map(|s| dir.join(s)).collect()
        } else if single.exists() {
            vec![single]
        } else {
            return Err(user!(
                "{}: no {stem}.safetensors or {stem}.safetensors.index.json found",
                dir.display()
            ));
        };
        Self::open(&paths)
    }

    /// Files as one set of distinct names.
    pub fn open(paths: &[PathBuf]) -> Result<Self> {
        Self::open_files(paths, true)
    }

    /// Files whose names may repeat; address tensors with `read_f32_at` / `info_at`.
    pub fn open_each(paths: &[PathBuf]) -> Result<Self> {
        Self::open_files(paths, false)
    }

    fn open_files(paths: &[PathBuf], unique: bool) -> Result<Self> {
        let mut files = Vec::new();
        let mut index = BTreeMap::new();
        for p in paths {
            let f = File::open(p).map_err(|e| user!("{}: cannot open: {e}", p.display()))?;
            // SAFETY: the file is opened read-only; a concurrent writer is outside our contract
            // (checkpoints are written to temporary directories and renamed into place).
            let map =
                unsafe { Mmap::map(&f) }.map_err(|e| user!("{}: cannot map: {e}", p.display()))?;
            let (header, meta) = SafeTensors::read_metadata(&map)
                .map_err(|e| user!("{}: not a valid safetensors file: {e}", p.display()))?;
            let fi = files.len();
            for name in meta.offset_keys() {
                if index.insert(name.clone(), fi).is_some() && unique {
                    return Err(user!(
                        "{}: tensor `{name}` appears in more than one file",
                        p.display()
                    ));
                }
            }
            let len = map.len() as u64;
            drop(map);
            files.push(MappedFile {
                path: p.clone(),
                file: f,
                len,
                data_start: 8 + header,
                meta,
            });
        }
        Ok(SafetensorsFiles { files, index })
    }

    /// The files of the set, in the order given.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.files.iter().map(|f| f.path.clone()).collect()
    }

    /// The tensors of file `file`: (name, stored dtype).
    pub fn tensors_in(&self, file: usize) -> Vec<(String, Dtype)> {
        let f = &self.files[file];
        f.meta
            .offset_keys()
            .into_iter()
            .map(|n| {
                let dt = f.meta.info(&n).expect("listed").dtype;
                (n, dt)
            })
            .collect()
    }

    /// Every tensor name, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(String::as_str)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// The index of the file holding `name` (in a set opened with `open`).
    pub fn find(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// The file holding `name` and the tensor's stored dtype and shape.
    pub fn info(&self, name: &str) -> Option<(&Path, &TensorInfo)> {
        self.info_at(self.find(name)?, name)
    }

    /// Tensor `name` of file `file`.
    pub fn info_at(&self, file: usize, name: &str) -> Option<(&Path, &TensorInfo)> {
        let f = self.files.get(file)?;
        Some((&f.path, f.meta.info(name)?))
    }

    /// A description of the set for errors: the file, or the directory of several.
    pub fn describe(&self) -> String {
        match self.files.as_slice() {
            [f] => f.path.display().to_string(),
            fs => fs
                .first()
                .and_then(|f| f.path.parent())
                .map(|d| d.display().to_string())
                .unwrap_or_default(),
        }
    }

    /// The stored bytes of elements `elems` of tensor `name`, read from disk, with its dtype and
    /// file.
    fn bytes(&self, name: &str, elems: Range<usize>) -> Result<(Vec<u8>, Dtype, &Path)> {
        let fi = self
            .find(name)
            .ok_or_else(|| user!("{}: tensor `{name}` is missing", self.describe()))?;
        let (offset, len, dt, path) = self.locate(fi, name, elems)?;
        let mut buf = vec![0u8; len];
        self.read_at(fi, offset, &mut buf)?;
        Ok((buf, dt, path))
    }

    /// (byte offset in the file, byte length, dtype, path) of elements `elems` of tensor `name`
    /// in file `fi`.
    fn locate(
        &self,
        fi: usize,
        name: &str,
        elems: Range<usize>,
    ) -> Result<(u64, usize, Dtype, &Path)> {
        let f = &self.files[fi];
        let info = f
            .meta
            .info(name)
            .ok_or_else(|| user!("{}: tensor `{name}` is missing", f.path.display()))?;
        if info.dtype.bitsize() % 8 != 0 {
            return Err(user!(
                "{}: tensor `{name}` has dtype {:?}; only F32, BF16, F16 and F64 are supported",
                f.path.display(),
                info.dtype
            ));
        }
        let size = info.dtype.bitsize() / 8;
        let numel: usize = info.shape.iter().product();
        if elems.end > numel || elems.start > elems.end {
            return Err(user!(
                "{}: tensor `{name}` has {numel} elements, elements {elems:?} were asked for",
                f.path.display()
            ));
        }
        let (a, b) = info.data_offsets;
        if b - a != numel * size {
            return Err(user!(
                "{}: tensor `{name}` holds {} bytes, but its shape {:?} needs {}",
                f.path.display(),
                b - a,
                info.shape,
                numel * size
            ));
        }
        let start = (f.data_start + a + elems.start * size) as u64;
        let len = elems.len() * size;
        if start + len as u64 > f.len {
            return Err(user!(
                "{}: tensor `{name}` lies past the end of the file",
                f.path.display()
            ));
        }
        Ok((start, len, info.dtype, &f.path))
    }

    /// Positioned read of `buf.len()` bytes at `offset` of file `fi`.
    fn read_at(&self, fi: usize, offset: u64, buf: &mut [u8]) -> Result<()> {
        use std::os::unix::fs::FileExt;
        let f = &self.files[fi];
        f.file
            .read_exact_at(buf, offset)
            .map_err(|e| user!("{}: cannot read: {e}", f.path.display()))
    }

    /// Converts elements `elems` of tensor `name` to f32 into `out` (`out.len() == elems.len()`).
    pub fn read_f32(&self, name: &str, elems: Range<usize>, out: &mut [f32]) -> Result<()> {
        let fi = self
            .find(name)
            .ok_or_else(|| user!("{}: tensor `{name}` is missing", self.describe()))?;
        self.read_f32_at(fi, name, elems, out)
    }

    /// `read_f32` of tensor `name` in file `file`.
    pub fn read_f32_at(
        &self,
        file: usize,
        name: &str,
        elems: Range<usize>,
        out: &mut [f32],
    ) -> Result<()> {
        assert_eq!(
            out.len(),
            elems.len(),
            "caller sized the output for `{name}`"
        );
        let (offset, len, dt, path) = self.locate(file, name, elems)?;
        if dt == Dtype::F32 && cfg!(target_endian = "little") {
            // Stored little-endian f32 is the in-memory layout: read straight into `out`.
            return self.read_at(file, offset, bytemuck::cast_slice_mut(out));
        }
        let size = len / out.len().max(1);
        const CHUNK: usize = 1 << 18;
        let mut buf = vec![0u8; CHUNK.min(out.len()) * size];
        for (i, o) in out.chunks_mut(CHUNK).enumerate() {
            let b = &mut buf[..o.len() * size];
            self.read_at(file, offset + (i * CHUNK * size) as u64, b)?;
            convert(dt, b, o).map_err(|dt| {
                user!(
                    "{}: tensor `{name}` has dtype {dt:?}; only F32, BF16, F16 and F64 are supported",
                    path.display()
                )
            })?;
        }
        Ok(())
    }

    /// Reads a whole tensor as f32 with its shape.
    pub fn tensor_f32(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let shape = self.shape_of(name)?;
        let mut out = vec![0.0; shape.iter().product()];
        self.read_f32(name, 0..out.len(), &mut out)?;
        Ok((shape, out))
    }

    /// Reads an integer tensor (I64 or I32) with its shape.
    pub fn tensor_i64(&self, name: &str) -> Result<(Vec<usize>, Vec<i64>)> {
        let shape = self.shape_of(name)?;
        let numel = shape.iter().product();
        let (d, dt, path) = self.bytes(name, 0..numel)?;
        let v: Vec<i64> = match dt {
            Dtype::I64 => d
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            Dtype::I32 => d
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as i64)
                .collect(),
            dt => {
                return Err(user!(
                    "{}: tensor `{name}` has dtype {dt:?}, expected an integer type",
                    path.display()
                ))
            }
        };
        Ok((shape, v))
    }

    /// Reads a whole tensor as f64 (reference data; stored f64 is kept exact).
    pub fn tensor_f64(&self, name: &str) -> Result<(Vec<usize>, Vec<f64>)> {
        let shape = self.shape_of(name)?;
        let numel = shape.iter().product();
        let (d, dt, _) = self.bytes(name, 0..numel)?;
        if dt == Dtype::F64 {
            let v = d
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                .collect();
            return Ok((shape, v));
        }
        let (shape, v) = self.tensor_f32(name)?;
        Ok((shape, v.into_iter().map(f64::from).collect()))
    }

    fn shape_of(&self, name: &str) -> Result<Vec<usize>> {
        self.info(name)
            .map(|(_, i)| i.shape.clone())
            .ok_or_else(|| user!("{}: tensor `{name}` is missing", self.describe()))
    }
}

/// Converts little-endian stored values to f32; on an unsupported dtype returns it.
fn convert(dt: Dtype, data: &[u8], out: &mut [f32]) -> std::result::Result<(), Dtype> {
    const CHUNK: usize = 1 << 16;
    fn each<const N: usize>(data: &[u8], out: &mut [f32], f: impl Fn([u8; N]) -> f32 + Sync) {
        out.par_chunks_mut(CHUNK)
            .zip(data.par_chunks(CHUNK * N))
            .for_each(|(o, d)| {
                for (x, c) in o.iter_mut().zip(d.chunks_exact(N)) {
                    *x = f(c.try_into().expect("N bytes"));
                }
            })
    }
    match dt {
        Dtype::F32 => each::<4>(data, out, f32::from_le_bytes),
        Dtype::BF16 => each::<2>(data, out, |c| half::bf16::from_le_bytes(c).to_f32()),
        Dtype::F16 => each::<2>(data, out, |c| half::f16::from_le_bytes(c).to_f32()),
        Dtype::F64 => each::<8>(data, out, |c| f64::from_le_bytes(c) as f32),
        other => return Err(other),
    }
    Ok(())
}
