//! Packing into the panel layouts the tile kernel reads:
//!   A block [mc × kc] → MR-row panels: panel p, step k at dst[(p·kc + k)·MR + i] = A[p·MR + i, k]
//!   B block [kc × w]  → one NR-column panel: dst[k·NR + j] = B[k, j]
//! zero-padded to MR rows / NR columns. Each source layout has its own loop: a contiguous
//! copy per step where the packed direction is contiguous in memory, a register transpose
//! (avx512.rs or avx2.rs, as isa.rs chooses) where the other one is, element by element otherwise.

use super::isa::Isa;
use super::{Mat, MR, NR};
use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};

/// How many steps ahead the column-copying packer fetches.
const PREFETCH_STEPS: usize = 6;

/// Packs A[0..mc, 0..kc] (from `a`) into MR-row panels at `dst`.
///
/// # Safety
/// `a` addresses mc × kc valid elements; dst holds ceil(mc / MR)·kc·MR floats plus the
/// scratch slack (the transposing path stores full vectors past a panel's last step).
pub(super) unsafe fn pack_a(isa: Isa, mc: usize, kc: usize, a: Mat, dst: *mut f32) {
    if a.rs == 1 {
        // columns contiguous: walk each source column (step k) once, left to right, fetching
        // the column PREFETCH_STEPS ahead (a far-apart short run each: the hardware
        // prefetchers do not follow)
        let panels = mc.div_ceil(MR);
        for k in 0..kc {
            let s = a.ptr.offset(k as isize * a.cs);
            prefetch_run(s.wrapping_offset(PREFETCH_STEPS as isize * a.cs), mc);
            for p in 0..panels {
                let rows = MR.min(mc - p * MR);
                let dk = dst.add((p * kc + k) * MR);
                if rows == MR {
                    // a fixed-size copy compiles to vector moves (a call to memcpy does not)
                    (dk as *mut [f32; MR])
                        .write_unaligned(s.add(p * MR).cast::<[f32; MR]>().read_unaligned());
                } else {
                    std::ptr::copy_nonoverlapping(s.add(p * MR), dk, rows);
                    std::ptr::write_bytes(dk.add(rows), 0, MR - rows);
                }
            }
        }
        return;
    }
    for p in 0..mc.div_ceil(MR) {
        let rows = MR.min(mc - p * MR);
        let src = a.at(p * MR, 0);
        let d = dst.add(p * kc * MR);
        // rows contiguous: a register transpose for the whole blocks of steps; the rest, and
        // any other layout, element by element
        let done = if a.cs == 1 && rows == MR {
            isa.pack_rows_transposed(kc, src.ptr, a.rs as usize, d)
        } else {
            0
        };
        for k in done..kc {
            for i in 0..MR {
                *d.add(k * MR + i) = if i < rows {
                    *src.ptr.offset(i as isize * a.rs + k as isize * a.cs)
                } else {
                    0.0
                };
            }
        }
    }
}

/// Packs B[0..kc, 0..w] (w ≤ NR, from `b`) into one NR-column panel at `dst`.
///
/// # Safety
/// `b` addresses kc × w valid elements; dst holds kc·NR floats.
pub(super) unsafe fn pack_b(isa: Isa, kc: usize, w: usize, b: Mat, dst: *mut f32) {
    if b.cs == 1 && w == NR {
        for k in 0..kc {
            let dk = dst.add(k * NR) as *mut [f32; NR];
            dk.write_unaligned(
                b.ptr
                    .offset(k as isize * b.rs)
                    .cast::<[f32; NR]>()
                    .read_unaligned(),
            );
        }
    } else if b.cs == 1 {
        for k in 0..kc {
            let dk = dst.add(k * NR);
            std::ptr::copy_nonoverlapping(b.ptr.offset(k as isize * b.rs), dk, w);
            std::ptr::write_bytes(dk.add(w), 0, NR - w);
        }
    } else {
        // Bᵀ row-major (e.g. an nn.Linear weight): row j of Bᵀ is column j of the panel, by a
        // register transpose for the whole blocks of steps; the rest, and any other layout,
        // element by element
        let done = if b.rs == 1 {
            isa.pack_cols_transposed(kc, w, b.ptr, b.cs as usize, dst)
        } else {
            0
        };
        for k in done..kc {
            for j in 0..NR {
                *dst.add(k * NR + j) = if j < w {
                    *b.ptr.offset(k as isize * b.rs + j as isize * b.cs)
                } else {
                    0.0
                };
            }
        }
    }
}

/// Asks for the cache lines of `len` floats from `p` (a hint: addresses need not be valid).
#[inline]
fn prefetch_run(p: *const f32, len: usize) {
    let bytes = len * 4;
    let base = p as *const i8;
    let mut off = 0;
    while off < bytes + 63 {
        // SAFETY: a prefetch never faults, whatever the address.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(base.wrapping_add(off)) };
        off += 64;
    }
}
