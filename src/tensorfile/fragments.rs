//! Where the stored values of each logical tensor are.
//!
//! A HF directory or a checkpoint stores each logical tensor (HF name, global shape) as one or
//! more fragments: the whole tensor (HF files, checkpoints written by one process), or the
//! slices the ranks of a distributed checkpoint owned (a fragment = a `TensorSlice` and a flat
//! range `[a, b)` of that slice's local tensor, stored as a 1-D tensor of b − a values).
//! `Fragments` expands every fragment into runs of the global row-major index space, kept
//! sorted, so a reader asks for any global range and copies exactly the stored values that
//! overlap it, whatever layout wrote them. Each element must be stored once: overlapping
//! fragments are an error, and `check_complete` finds elements nobody stored.

use super::files::SafetensorsFiles;
use crate::error::Result;
use crate::model::TensorSlice;
use crate::user;
use ferrotron_zero::StatePart;
use std::collections::HashMap;
use std::ops::Range;

/// `len` global elements from `global` on, stored in tensor `stored` from element `at` on.
#[derive(Clone, Debug)]
struct Piece {
    global: usize,
    len: usize,
    stored: usize,
    at: usize,
}

struct TensorPieces {
    global_shape: Vec<usize>,
    pieces: Vec<Piece>,
    sorted: bool,
}

/// The stored pieces of every (part, logical tensor) of a set of files.
pub struct Fragments {
    files: SafetensorsFiles,
    /// Stored tensors (file, name), indexed by `Piece::stored`.
    stored: Vec<(usize, String)>,
    tensors: HashMap<(StatePart, String), TensorPieces>,
}

impl Fragments {
    pub fn new(files: SafetensorsFiles) -> Self {
        Fragments {
            files,
            stored: Vec::new(),
            tensors: HashMap::new(),
        }
    }

    pub fn files(&self) -> &SafetensorsFiles {
        &self.files
    }

    fn entry(
        &mut self,
        part: StatePart,
        name: &str,
        global_shape: &[usize],
    ) -> Result<&mut TensorPieces> {
        let t = self
            .tensors
            .entry((part, name.to_string()))
            .or_insert_with(|| TensorPieces {
                global_shape: global_shape.to_vec(),
                pieces: Vec::new(),
                sorted: true,
            });
        if t.global_shape != global_shape {
            return Err(user!(
                "{}: tensor `{name}` is stored with shapes {:?} and {global_shape:?}",
                self.files.describe(),
                t.global_shape
            ));
        }
        Ok(t)
    }

    fn intern(&mut self, file: usize, stored: &str) -> usize {
        self.stored.push((file, stored.to_string()));
        self.stored.len() - 1
    }

    /// The stored tensor `stored` is the whole logical tensor `name` (its shape must be
    /// `global_shape` exactly).
    pub fn add_whole(
        &mut self,
        part: StatePart,
        name: &str,
        global_shape: &[usize],
        stored: &str,
    ) -> Result<()> {
        let (path, info) = self.files.info(stored).ok_or_else(|| {
            user!(
                "{}: tensor `{stored}` is missing (expected shape {global_shape:?})",
                self.files.describe()
            )
        })?;
        if info.shape != global_shape {
            return Err(user!(
                "{}: tensor `{stored}` has shape {:?}, but the model has {global_shape:?}",
                path.display(),
                info.shape
            ));
        }
        let numel = global_shape.iter().product();
        let file = self.files.find(stored).expect("found above");
        let id = self.intern(file, stored);
        let t = self.entry(part, name, global_shape)?;
        t.pieces.push(Piece {
            global: 0,
            len: numel,
            stored: id,
            at: 0,
        });
        t.sorted = false;
        Ok(())
    }

    /// The stored 1-D tensor `stored` of file `file` holds elements `range` of the local tensor
    /// `slice` of the logical tensor `name`.
    pub fn add_fragment(
        &mut self,
        part: StatePart,
        name: &str,
        slice: &TensorSlice,
        range: Range<usize>,
        file: usize,
        stored: &str,
    ) -> Result<()> {
        slice
            .check()
            .map_err(|e| user!("{}: fragment of `{name}`: {e}", self.files.describe()))?;
        if range.start > range.end || range.end > slice.local_numel() {
            return Err(user!(
                "{}: fragment of `{name}`: range {range:?} outside its {} local elements",
                self.files.describe(),
                slice.local_numel()
            ));
        }
        let (path, info) = self.files.info_at(file, stored).ok_or_else(|| {
            user!(
                "{}: tensor `{stored}` of fragment `{name}` is missing",
                self.files.describe()
            )
        })?;
        let n: usize = info.shape.iter().product();
        if n != range.len() {
            return Err(user!(
                "{}: tensor `{stored}` has {n} elements, its index says {}",
                path.display(),
                range.len()
            ));
        }
        let id = self.intern(file, stored);
        let start = range.start;
        let mut pieces = Vec::new();
        slice.for_each_run(range, |r| {
            if let Some(g) = r.global {
                pieces.push(Piece {
                    global: g,
                    len: r.len,
                    stored: id,
                    at: r.local - start,
                });
            }
        });
        let t = self.entry(part, name, &slice.global_shape)?;
        t.pieces.extend(pieces);
        t.sorted = false;
        Ok(())
    }

    /// Sorts every tensor's pieces and rejects elements stored twice.
    pub fn finish(&mut self) -> Result<()> {
        for ((part, name), t) in &mut self.tensors {
            if t.sorted {
                continue;
            }
            t.pieces.sort_by_key(|p| p.global);
            for w in t.pieces.windows(2) {
                if w[0].global + w[0].len > w[1].global {
                    return Err(user!(
                        "{}: the {} of `{name}` stores element {} twice",
                        self.files.describe(),
                        part.name(),
                        w[1].global
                    ));
                }
            }
            t.sorted = true;
        }
        Ok(())
    }

    pub fn has(&self, part: StatePart, name: &str) -> bool {
        self.tensors.contains_key(&(part, name.to_string()))
    }

    /// Logical tensors of `part`, in no particular order.
    pub fn names(&self, part: StatePart) -> impl Iterator<Item = &str> {
        self.tensors
            .keys()
            .filter(move |(p, _)| *p == part)
            .map(|(_, n)| n.as_str())
    }

    pub fn global_shape(&self, part: StatePart, name: &str) -> Option<&[usize]> {
        self.tensors
            .get(&(part, name.to_string()))
            .map(|t| t.global_shape.as_slice())
    }

    fn pieces(&self, part: StatePart, name: &str) -> Result<&TensorPieces> {
        let t = self.tensors.get(&(part, name.to_string())).ok_or_else(|| {
            user!(
                "{}: the {} of tensor `{name}` is missing",
                self.files.describe(),
                part.name()
            )
        })?;
        assert!(t.sorted, "Fragments::finish was not called");
        Ok(t)
    }

    /// Checks every element of (part, name) is stored.
    pub fn check_complete(&self, part: StatePart, name: &str) -> Result<()> {
        let t = self.pieces(part, name)?;
        let numel: usize = t.global_shape.iter().product();
        let mut at = 0;
        for p in &t.pieces {
            if p.global != at {
                break;
            }
            at += p.len;
        }
        if at != numel {
            return Err(user!(
                "{}: the {} of tensor `{name}` lacks element {at} of {numel} (a rank's file is missing or incomplete)",
                self.files.describe(),
                part.name()
            ));
        }
        Ok(())
    }

    /// Fills `out` with global elements `[global, global + out.len())` of (part, name).
    pub fn read(&self, part: StatePart, name: &str, global: usize, out: &mut [f32]) -> Result<()> {
        let t = self.pieces(part, name)?;
        let end = global + out.len();
        let mut at = global;
        let first = t.pieces.partition_point(|p| p.global + p.len <= global);
        for p in &t.pieces[first..] {
            if at >= end {
                break;
            }
            if p.global > at {
                break;
            }
            let stop = end.min(p.global + p.len);
            let from = p.at + (at - p.global);
            let (file, stored) = &self.stored[p.stored];
            self.files.read_f32_at(
                *file,
                stored,
                from..from + (stop - at),
                &mut out[at - global..stop - global],
            )?;
            at = stop;
        }
        if at != end {
            return Err(user!(
                "{}: the {} of tensor `{name}` lacks element {at}",
                self.files.describe(),
                part.name()
            ));
        }
        Ok(())
    }
}
