//! Safe strided GEMM over slices (bounds checked), on top of CpuFloat::gemm (the sgemm engine
//! for f32 on AVX-512 and AVX2 CPUs, matrixmultiply otherwise).
//!
//!   C[M, N] = alpha · A[M, K] · B[K, N] + beta · C
//!
//! A matrix is a [`View`]: element (r, c) lives at data[r·rs + c·cs]. Transposing is swapping
//! rows/cols and rs/cs ([`View::t`]), never a copy, so nn.Linear [O, I] and Conv1D [I, O] weights
//! are both used in place. `gemm` checks shapes and that every addressed element lies inside its
//! slice before it calls the unsafe kernel.
//!
//! Threads: a product with m·k + k·n ≥ 2^15 is split along the longer side of C into one block
//! per thread (more on a long side: `split_parts`), each a single-threaded CpuFloat::gemm call
//! on the thread team; smaller ones (the attention tiles inside team parts) run as one call.
//! Each element of C is the same dot product in the same order either way, so the split does
//! not change a bit. (matrixmultiply's own `threading` pool,
//! used before, beside rayon's on 2 cores: the quickstart ran 20% slower, its idle threads
//! spinning in sched_yield while the other pool worked.)
//!
//! Prepared B: `prepare` packs a B once (f32 on engine CPUs; `prepared_len` says None
//! elsewhere) and `gemm_prepared` multiplies row blocks of different A by it, with the same
//! arithmetic as `gemm` (the head's logits chunks against W_headᵀ, packed once per step instead
//! of once per chunk). Column splits then fall on multiples of the packed panel width.

use super::CpuFloat;

/// A read-only strided matrix.
#[derive(Clone, Copy, Debug)]
pub struct View<'a, T> {
    pub data: &'a [T],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

/// A writable strided matrix.
#[derive(Debug)]
pub struct ViewMut<'a, T> {
    pub data: &'a mut [T],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

/// The largest index addressed by a rows × cols matrix with strides rs, cs (None when empty).
fn last_index(rows: usize, cols: usize, rs: usize, cs: usize) -> Option<usize> {
    if rows == 0 || cols == 0 {
        None
    } else {
        Some((rows - 1) * rs + (cols - 1) * cs)
    }
}

impl<'a, T> View<'a, T> {
    /// A dense row-major [rows, cols] matrix at the start of `data`.
    pub fn row_major(data: &'a [T], rows: usize, cols: usize) -> Self {
        View {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }
    /// A [rows, cols] matrix whose rows are `rs` elements apart (e.g. one head of [N, H, Dh]).
    pub fn strided_rows(data: &'a [T], rows: usize, cols: usize, rs: usize) -> Self {
        View {
            data,
            rows,
            cols,
            rs,
            cs: 1,
        }
    }
    /// The transpose, as a view of the same memory.
    pub fn t(self) -> Self {
        View {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
        }
    }
    fn check(&self, what: &str) {
        if let Some(last) = last_index(self.rows, self.cols, self.rs, self.cs) {
            assert!(
                last < self.data.len(),
                "gemm: {what} [{} x {}] strides ({}, {}) addresses element {last} of a slice of {}",
                self.rows,
                self.cols,
                self.rs,
                self.cs,
                self.data.len()
            );
        }
    }
}

impl<'a, T> ViewMut<'a, T> {
    pub fn row_major(data: &'a mut [T], rows: usize, cols: usize) -> Self {
        ViewMut {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }
    pub fn strided_rows(data: &'a mut [T], rows: usize, cols: usize, rs: usize) -> Self {
        ViewMut {
            data,
            rows,
            cols,
            rs,
            cs: 1,
        }
    }
    /// The transpose, as a view of the same memory.
    pub fn t(self) -> Self {
        ViewMut {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
        }
    }
}

/// C = alpha · A · B + beta · C. With beta = 0, C's previous contents are never read.
pub fn gemm<T: CpuFloat>(alpha: T, a: View<'_, T>, b: View<'_, T>, beta: T, c: ViewMut<'_, T>) {
    assert!(
        a.cols == b.rows && a.rows == c.rows && b.cols == c.cols,
        "gemm: shapes [{} x {}] · [{} x {}] -> [{} x {}] do not match",
        a.rows,
        a.cols,
        b.rows,
        b.cols,
        c.rows,
        c.cols
    );
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if m == 0 || n == 0 {
        return;
    }
    if let Some(last) = last_index(c.rows, c.cols, c.rs, c.cs) {
        assert!(
            last < c.data.len(),
            "gemm: C [{m} x {n}] addresses element {last} of a slice of {}",
            c.data.len()
        );
    }
    if k == 0 {
        // A·B is empty: C = beta · C (matrixmultiply's k = 0 path is not relied upon).
        for r in 0..m {
            for col in 0..n {
                let x = &mut c.data[r * c.rs + col * c.cs];
                *x = if beta == T::zero() {
                    T::zero()
                } else {
                    beta * *x
                };
            }
        }
        return;
    }
    a.check("A");
    b.check("B");
    let s = |x: usize| isize::try_from(x).expect("gemm: stride overflows isize");
    // C's block [p0, p0 + w) along its longer side (all of C when w is that side's length).
    let split_cols = n >= m;
    let len = if split_cols { n } else { m };
    let cp = SendPtr(c.data.as_mut_ptr());
    let (crs, ccs) = (c.rs, c.cs);
    let block = |p0: usize, w: usize| {
        let (mm, nn) = if split_cols { (m, w) } else { (w, n) };
        let (a_off, b_off, c_off) = if split_cols {
            (0, p0 * b.cs, p0 * ccs)
        } else {
            (p0 * a.rs, 0, p0 * crs)
        };
        let cp = &cp;
        // SAFETY: every element addressed lies in its slice (checked above); blocks address
        // disjoint elements of C; A and B are only read.
        unsafe {
            T::gemm(
                mm,
                k,
                nn,
                alpha,
                a.data.as_ptr().add(a_off),
                s(a.rs),
                s(a.cs),
                b.data.as_ptr().add(b_off),
                s(b.rs),
                s(b.cs),
                beta,
                cp.0.add(c_off),
                s(crs),
                s(ccs),
            )
        }
    };
    let parts = if m * k + k * n < PAR_MIN {
        1
    } else {
        // a scaled product keeps one block per thread: its blocks' edges are part of its
        // arithmetic (the engine's edge rule), and those stay where they always were
        let plain = alpha == T::one() && (beta == T::zero() || beta == T::one());
        split_parts(len, plain)
    };
    if parts <= 1 {
        return block(0, len);
    }
    let step = len.div_ceil(parts);
    super::team::for_ranges(len, step, &|r| block(r.start, r.len()));
}

const PAR_MIN: usize = 1 << 15;

/// Fewest rows (or columns) of C per block before a product is split into more blocks than
/// threads.
const MIN_SPLIT: usize = 1024;
/// Most blocks per thread.
const MAX_PARTS_PER_THREAD: usize = 8;

/// Blocks for a product split along a side of `len`: one per thread, or where that side is long
/// and `fine` (an unscaled product, whose result cannot depend on the split), up to
/// `MAX_PARTS_PER_THREAD` per thread: a thread the machine slowed then holds up the job by a
/// small block, not by half of it (on a 2-vCPU VM the caller waited 3.6% of a quickstart step
/// for its helper's half). Each block packs its own copy of the other operand, so a side
/// shorter than `MIN_SPLIT` per block keeps one block per thread.
fn split_parts(len: usize, fine: bool) -> usize {
    let threads = rayon::current_num_threads();
    let parts = match fine {
        // whole rounds of blocks: 3 blocks on 2 threads would leave one idle a third of the time
        true => (len / MIN_SPLIT / threads).clamp(1, MAX_PARTS_PER_THREAD) * threads,
        false => threads,
    };
    parts.min(len)
}

/// Floats `prepare` writes for a k × n B, or None when T's GEMM has no prepared form here.
pub fn prepared_len<T: CpuFloat>(k: usize, n: usize) -> Option<usize> {
    T::has_prepared_gemm().then(|| super::sgemm::prepared_len(k, n))
}

/// Packs B for `gemm_prepared` into `dst` (`prepared_len` long), panels split over threads.
pub fn prepare<T: CpuFloat>(b: View<'_, T>, dst: &mut [T]) {
    let (k, n) = (b.rows, b.cols);
    let len = prepared_len::<T>(k, n).expect("prepare: this GEMM has no prepared form");
    assert!(
        dst.len() >= len,
        "prepare: {} floats for a prepared [{k} x {n}] of {len}",
        dst.len()
    );
    if k == 0 || n == 0 {
        return;
    }
    b.check("B");
    let panels = n.div_ceil(super::sgemm::PREPARED_COLS);
    let parts = rayon::current_num_threads().clamp(1, panels);
    let step = panels.div_ceil(parts);
    let dp = SendPtr(dst.as_mut_ptr());
    let s = |x: usize| isize::try_from(x).expect("prepare: stride overflows isize");
    super::team::for_ranges(panels, step, &|r| {
        // SAFETY: B's elements lie in its slice (checked); dst holds the whole layout and the
        // panel ranges are disjoint.
        unsafe { T::prepare_b(k, n, b.data.as_ptr(), s(b.rs), s(b.cs), dp.get(), r) }
    });
}

/// C = A · B + beta · C (beta 0 or 1) with B [k × n] from `prepare`. C's rows contiguous.
pub fn gemm_prepared<T: CpuFloat>(
    a: View<'_, T>,
    prepared: &[T],
    n: usize,
    beta: T,
    c: ViewMut<'_, T>,
) {
    let (m, k) = (a.rows, a.cols);
    let len = prepared_len::<T>(k, n).expect("gemm_prepared: this GEMM has no prepared form");
    assert!(
        c.rows == m && c.cols == n && c.cs == 1 && prepared.len() >= len,
        "gemm_prepared: A [{m} x {k}], B [{k} x {n}] ({} of {len} floats), C [{} x {}] strides ({}, {})",
        prepared.len(),
        c.rows,
        c.cols,
        c.rs,
        c.cs
    );
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    a.check("A");
    if let Some(last) = last_index(c.rows, c.cols, c.rs, c.cs) {
        assert!(
            last < c.data.len(),
            "gemm_prepared: C addresses element {last} of a slice of {}",
            c.data.len()
        );
    }
    let s = |x: usize| isize::try_from(x).expect("gemm_prepared: stride overflows isize");
    let cp = SendPtr(c.data.as_mut_ptr());
    let crs = c.rs;
    // rows [r0, r0 + h) × columns [c0, c0 + w) of C
    let block = |r0: usize, h: usize, c0: usize, w: usize| {
        let cp = &cp;
        // SAFETY: A and C are checked above, the prepared B holds every panel, blocks write
        // disjoint elements of C.
        unsafe {
            T::gemm_prepared(
                h,
                k,
                w,
                a.data.as_ptr().add(r0 * a.rs),
                s(a.rs),
                s(a.cs),
                prepared.as_ptr(),
                n,
                c0,
                beta,
                cp.0.add(r0 * crs + c0),
                s(crs),
            )
        }
    };
    let parts = if m * k + k * n < PAR_MIN {
        1
    } else {
        split_parts(m.max(n), true)
    };
    let cols = super::sgemm::PREPARED_COLS;
    if parts <= 1 {
        return block(0, m, 0, n);
    }
    if m >= n {
        let step = m.div_ceil(parts);
        super::team::for_ranges(m, step, &|r| block(r.start, r.len(), 0, n));
    } else {
        let step = n.div_ceil(parts).next_multiple_of(cols);
        super::team::for_ranges(n, step, &|r| block(0, m, r.start, r.len()));
    }
}

struct SendPtr<T>(*mut T);
// SAFETY: used only to hand disjoint blocks of C (or of a prepared B) to the parts of one
// team job, which all finish before the call returns.
unsafe impl<T> Send for SendPtr<T> {}
unsafe impl<T> Sync for SendPtr<T> {}

impl<T> SendPtr<T> {
    /// The pointer (a method, so closures capture the Sync wrapper, not the raw field).
    fn get(&self) -> *mut T {
        self.0
    }
}
