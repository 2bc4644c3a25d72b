//! How a rank's copy of a logical tensor relates to the whole tensor.
//!
//! A logical tensor has a global (HF) shape G = [G_0, …, G_{k-1}]; a rank holds a local tensor of
//! shape L = [L_0, …, L_{k-1}], row-major in its unit. Along each dim d the local indices
//! 0..L_d take, in order, the global indices of a list of ranges R_d = [r_1, r_2, …]; local
//! indices past Σ|r| are padding (e.g. the vocabulary padding of a vocab-parallel embedding) and
//! stand for no global element.
//!
//!   whole tensor:                        R_d = [0..G_d] for every d
//!   dim d split in p parts, part i:       R_d = [i·G_d/p .. (i+1)·G_d/p]
//!   strided: b blocks of dim d, each split in p parts (GPT-2's fused c_attn [D, 3D] is b = 3
//!   column blocks q | k | v), part i:     R_d = [j·G_d/b + i·G_d/(b·p) .. + G_d/(b·p)  for j < b]
//!   padded split (G_d not a multiple of p): L_d = ⌈G_d/p⌉, R_d = [i·L_d .. min((i+1)·L_d, G_d)]
//!
//! A flat range of the local tensor maps to *runs*: maximal pieces contiguous both in local and
//! in global row-major order (`for_each_run`). Random init, HF loading, checkpoints and export
//! move data run by run, so none of them needs the whole tensor, and any two slicings of one
//! tensor meet in the global index space.

use serde::{Deserialize, Serialize};
use std::ops::Range;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorSlice {
    pub global_shape: Vec<usize>,
    pub local_shape: Vec<usize>,
    /// Per dim: the global index ranges `[start, end)` the local indices take, in order.
    pub dims: Vec<Vec<[usize; 2]>>,
}

/// A piece of a local flat range: `len` elements at local flat offset `local` that sit at global
/// flat offset `global`, or padding (`None`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    pub local: usize,
    pub global: Option<usize>,
    pub len: usize,
}

impl TensorSlice {
    /// The whole tensor (what one rank holds without tensor parallelism).
    pub fn whole(shape: &[usize]) -> Self {
        TensorSlice {
            global_shape: shape.to_vec(),
            local_shape: shape.to_vec(),
            dims: shape.iter().map(|&g| vec![[0, g]]).collect(),
        }
    }

    /// Part `part` of `parts` of dim `dim`, made of `blocks` equal blocks each split evenly
    /// (`blocks` = 1: a plain split). The dim must divide into blocks · parts.
    pub fn strided(shape: &[usize], dim: usize, blocks: usize, parts: usize, part: usize) -> Self {
        let g = shape[dim];
        assert!(
            blocks > 0 && g % blocks == 0,
            "dim {dim} of {shape:?} does not split into {blocks} blocks"
        );
        Self::blocks(shape, dim, &vec![g / blocks; blocks], parts, part)
    }

    /// Part `part` of `parts` of dim `dim`, made of consecutive blocks of the given sizes
    /// (Phi-3's qkv_proj: q | k | v rows), each split evenly; the local tensor holds this
    /// part of every block, in block order. Every size must divide by `parts`.
    pub fn blocks(shape: &[usize], dim: usize, sizes: &[usize], parts: usize, part: usize) -> Self {
        assert!(
            parts > 0
                && part < parts
                && sizes.iter().sum::<usize>() == shape[dim]
                && sizes.iter().all(|b| b % parts == 0),
            "dim {dim} of {shape:?} does not split into blocks {sizes:?} x {parts} parts"
        );
        let mut s = Self::whole(shape);
        let mut start = 0;
        s.dims[dim] = sizes
            .iter()
            .map(|&b| {
                let piece = b / parts;
                let r = [start + part * piece, start + (part + 1) * piece];
                start += b;
                r
            })
            .collect();
        s.local_shape[dim] = sizes.iter().map(|b| b / parts).sum();
        s
    }

    /// Part `part` of `parts` of dim `dim`, padded: every part has ⌈G/parts⌉ local indices, the
    /// last ones past G are padding.
    pub fn padded_split(shape: &[usize], dim: usize, parts: usize, part: usize) -> Self {
        assert!(parts > 0 && part < parts);
        let l = shape[dim].div_ceil(parts);
        let (s0, s1) = ((part * l).min(shape[dim]), ((part + 1) * l).min(shape[dim]));
        let mut s = Self::whole(shape);
        s.dims[dim] = if s0 < s1 { vec![[s0, s1]] } else { vec![] };
        s.local_shape[dim] = l;
        s
    }

    pub fn local_numel(&self) -> usize {
        self.local_shape.iter().product()
    }
    pub fn global_numel(&self) -> usize {
        self.global_shape.iter().product()
    }
    /// True when the local tensor is the whole global tensor.
    pub fn is_whole(&self) -> bool {
        *self == Self::whole(&self.global_shape)
    }

    /// Checks the invariants (ranges in bounds, disjoint, their total within the local extent);
    /// returns the reason when one fails (slices read from a checkpoint index are user input).
    pub fn check(&self) -> Result<(), String> {
        let k = self.global_shape.len();
        if self.local_shape.len() != k || self.dims.len() != k {
            return Err(format!(
                "rank mismatch: global {:?}, local {:?}, {} dim range lists",
                self.global_shape,
                self.local_shape,
                self.dims.len()
            ));
        }
        for d in 0..k {
            let mut taken = 0;
            let mut sorted = self.dims[d].clone();
            sorted.sort();
            for (i, r) in sorted.iter().enumerate() {
                if r[0] >= r[1] || r[1] > self.global_shape[d] {
                    return Err(format!(
                        "dim {d}: range {r:?} is empty or outside 0..{}",
                        self.global_shape[d]
                    ));
                }
                if i > 0 && sorted[i - 1][1] > r[0] {
                    return Err(format!("dim {d}: ranges overlap"));
                }
                taken += r[1] - r[0];
            }
            if taken > self.local_shape[d] {
                return Err(format!(
                    "dim {d}: ranges cover {taken} indices but the local extent is {}",
                    self.local_shape[d]
                ));
            }
        }
        Ok(())
    }

    /// Global index of local index `i` along dim `d` (None: padding).
    fn global_index(&self, d: usize, mut i: usize) -> Option<usize> {
        for r in &self.dims[d] {
            let len = r[1] - r[0];
            if i < len {
                return Some(r[0] + i);
            }
            i -= len;
        }
        None
    }

    /// Global flat offset of the first element of local row `row` (all dims but the last), or
    /// None when the row is padding.
    fn global_row_start(&self, mut row: usize) -> Option<usize> {
        let k = self.local_shape.len();
        let mut offset = 0;
        let mut stride = self.global_shape[k - 1];
        for d in (0..k - 1).rev() {
            let i = row % self.local_shape[d];
            row /= self.local_shape[d];
            offset += self.global_index(d, i)? * stride;
            stride *= self.global_shape[d];
        }
        Some(offset)
    }

    /// Calls `f` with the runs of local flat range `local` in order (adjacent runs that are
    /// contiguous in both orders are merged).
    pub fn for_each_run(&self, local: Range<usize>, mut f: impl FnMut(Run)) {
        assert!(local.end <= self.local_numel(), "local range out of bounds");
        if local.is_empty() {
            return;
        }
        if self.global_shape.is_empty() {
            f(Run {
                local: 0,
                global: Some(0),
                len: 1,
            });
            return;
        }
        let k = self.local_shape.len();
        let width = self.local_shape[k - 1];
        // The last dim's pieces: (local start, global start or padding, len).
        let mut cols: Vec<(usize, Option<usize>, usize)> = Vec::new();
        let mut at = 0;
        for r in &self.dims[k - 1] {
            cols.push((at, Some(r[0]), r[1] - r[0]));
            at += r[1] - r[0];
        }
        if at < width {
            cols.push((at, None, width - at));
        }
        let mut pending: Option<Run> = None;
        let mut emit = |run: Run, f: &mut dyn FnMut(Run)| {
            if let Some(p) = pending.as_mut() {
                let joins = p.local + p.len == run.local
                    && match (p.global, run.global) {
                        (Some(a), Some(b)) => a + p.len == b,
                        (None, None) => true,
                        _ => false,
                    };
                if joins {
                    p.len += run.len;
                    return;
                }
                f(*p);
            }
            pending = Some(run);
        };
        let mut pos = local.start;
        while pos < local.end {
            let (row, col) = (pos / width, pos % width);
            let col_end = width.min(col + (local.end - pos));
            let row_start = self.global_row_start(row);
            for &(ls, gs, len) in &cols {
                let (s, e) = (ls.max(col), (ls + len).min(col_end));
                if s >= e {
                    continue;
                }
                let global = match (row_start, gs) {
                    (Some(r), Some(g)) => Some(r + g + (s - ls)),
                    _ => None,
                };
                emit(
                    Run {
                        local: row * width + s,
                        global,
                        len: e - s,
                    },
                    &mut f,
                );
            }
            pos += col_end - col;
        }
        if let Some(p) = pending {
            f(p);
        }
    }

    /// The runs of `local` as a vector (tests, small tensors).
    pub fn runs(&self, local: Range<usize>) -> Vec<Run> {
        let mut v = Vec::new();
        self.for_each_run(local, |r| v.push(r));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Global flat index of every local element, by brute force from the per-dim ranges.
    fn brute(s: &TensorSlice) -> Vec<Option<usize>> {
        let n = s.local_numel();
        (0..n)
            .map(|mut flat| {
                let k = s.local_shape.len();
                let mut g = 0;
                let mut stride = 1;
                for d in (0..k).rev() {
                    let i = flat % s.local_shape[d];
                    flat /= s.local_shape[d];
                    g += s.global_index(d, i)? * stride;
                    stride *= s.global_shape[d];
                }
                Some(g)
            })
            .collect()
    }

    fn expand(s: &TensorSlice, local: Range<usize>) -> Vec<Option<usize>> {
        let mut out = vec![Some(usize::MAX); local.len()];
        let mut next = local.start;
        s.for_each_run(local.clone(), |r| {
            assert_eq!(r.local, next, "runs are in order and cover the range");
            for i in 0..r.len {
                out[r.local - local.start + i] = r.global.map(|g| g + i);
            }
            next = r.local + r.len;
        });
        assert_eq!(next, local.end);
        out
    }

    fn assert_runs_match(s: &TensorSlice) {
        s.check().unwrap();
        let all = brute(s);
        let n = s.local_numel();
        for (a, b) in [
            (0, n),
            (1, n),
            (0, n - 1),
            (3, n.min(11)),
            (n / 3, 2 * n / 3),
        ] {
            if a < b {
                assert_eq!(expand(s, a..b), all[a..b].to_vec(), "{s:?} range {a}..{b}");
            }
        }
    }

    #[test]
    fn a_whole_tensor_is_one_run() {
        let s = TensorSlice::whole(&[4, 6]);
        assert!(s.is_whole());
        assert_eq!(
            s.runs(2..23),
            vec![Run {
                local: 2,
                global: Some(2),
                len: 21
            }]
        );
        assert_runs_match(&s);
    }

    #[test]
    fn row_column_and_strided_splits_map_every_element() {
        for part in 0..2 {
            assert_runs_match(&TensorSlice::strided(&[6, 4], 0, 1, 2, part));
            assert_runs_match(&TensorSlice::strided(&[6, 4], 1, 1, 2, part));
            // GPT-2 c_attn [D, 3D] with D = 4: 3 column blocks of 4, each split in 2.
            let c = TensorSlice::strided(&[4, 12], 1, 3, 2, part);
            assert_eq!(c.local_shape, vec![4, 6]);
            assert_runs_match(&c);
        }
        let c = TensorSlice::strided(&[4, 12], 1, 3, 2, 1);
        // Local row 0 = global columns 2,3 | 6,7 | 10,11.
        assert_eq!(
            c.runs(0..6)
                .iter()
                .map(|r| (r.global.unwrap(), r.len))
                .collect::<Vec<_>>(),
            vec![(2, 2), (6, 2), (10, 2)]
        );
        assert_runs_match(&TensorSlice::strided(&[8], 0, 1, 4, 3));
        assert_runs_match(&TensorSlice::strided(&[2, 3, 4], 1, 3, 1, 0));
    }

    #[test]
    fn padded_splits_leave_padding_rows() {
        // A vocabulary of 10 rows over 4 parts: 3 rows each, the last part holds row 9 and 2
        // padding rows.
        let s = TensorSlice::padded_split(&[10, 2], 0, 4, 3);
        assert_eq!(s.local_shape, vec![3, 2]);
        assert_eq!(
            s.runs(0..6),
            vec![
                Run {
                    local: 0,
                    global: Some(18),
                    len: 2
                },
                Run {
                    local: 2,
                    global: None,
                    len: 4
                }
            ]
        );
        assert_runs_match(&s);
        for part in 0..4 {
            assert_runs_match(&TensorSlice::padded_split(&[10, 2], 0, 4, part));
        }
        // More parts than rows: a part of only padding.
        let empty = TensorSlice::padded_split(&[2, 2], 0, 4, 3);
        assert_eq!(empty.local_shape, vec![1, 2]);
        assert_eq!(
            empty.runs(0..2),
            vec![Run {
                local: 0,
                global: None,
                len: 2
            }]
        );
    }

    #[test]
    fn bad_slices_are_described() {
        let mut s = TensorSlice::whole(&[4, 4]);
        s.dims[1] = vec![[0, 3], [2, 4]];
        assert!(s.check().unwrap_err().contains("overlap"));
        s.dims[1] = vec![[0, 5]];
        assert!(s.check().unwrap_err().contains("outside"));
        s.dims[1] = vec![[0, 4]];
        s.local_shape[1] = 3;
        assert!(s.check().unwrap_err().contains("local extent"));
    }
}
