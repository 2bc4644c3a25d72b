//! AVX-512 pieces of the engine: the 12 × 32 tile kernel and the 12-row transposing packer.
//!
//! Tile: for k < kc, with a the packed A panel (12 floats per step) and b a B panel (32 floats
//! per step, `ldb` apart):  acc[i][h] ← fma(a[k·12 + i], b[k·ldb + 16h ..], acc[i][h])
//! — 24 zmm accumulators, 2 vector loads and 12 broadcasts per 24 FMAs. One FMA chain per
//! element in k order, as the engine's contract requires.

#[cfg(target_arch = "x86_64")]
use super::{MR, NR};
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

#[cfg(target_arch = "x86_64")]
macro_rules! fma_rows {
    ($acc:ident, $a:ident, $b0:ident, $b1:ident; $($i:literal)*) => {
        $(
            let ai = _mm512_set1_ps(*$a.add($i));
            $acc[$i][0] = _mm512_fmadd_ps(ai, $b0, $acc[$i][0]);
            $acc[$i][1] = _mm512_fmadd_ps(ai, $b1, $acc[$i][1]);
        )*
    };
}

/// The tile's accumulators after kc steps (expanded inside each `#[target_feature]` caller).
#[cfg(target_arch = "x86_64")]
macro_rules! accumulate {
    ($kc:expr, $a:expr, $b:expr, $ldb:expr) => {{
        let mut acc = [[_mm512_setzero_ps(); 2]; MR];
        let (mut a, mut b) = ($a, $b);
        for _ in 0..$kc {
            let b0 = _mm512_loadu_ps(b);
            let b1 = _mm512_loadu_ps(b.add(16));
            fma_rows!(acc, a, b0, b1; 0 1 2 3 4 5 6 7 8 9 10 11);
            a = a.add(MR);
            b = b.add($ldb);
        }
        acc
    }};
}

/// One full tile straight into C (rows `rsc` apart, columns contiguous) with the fused
/// epilogue: c = alpha·ab (beta = 0, C not read) or c = fma(alpha, ab, beta·c).
///
/// # Safety
/// AVX-512F and FMA present; a: kc·MR floats; b: kc rows of NR floats `ldb` apart; C: MR rows
/// of NR floats.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn tile_to_c(
    kc: usize,
    a: *const f32,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    rsc: isize,
    alpha: f32,
    beta: f32,
) {
    if beta != 0.0 {
        // C is read after kc steps of FMAs: fetch its lines now, so a tile of a C that is
        // larger than the caches does not stall on memory at the end
        for i in 0..MR {
            let p = c.offset(i as isize * rsc) as *const i8;
            _mm_prefetch::<_MM_HINT_T0>(p);
            _mm_prefetch::<_MM_HINT_T0>(p.add(64));
            _mm_prefetch::<_MM_HINT_T0>(p.add(127));
        }
    }
    let acc = accumulate!(kc, a, b, ldb);
    let av = _mm512_set1_ps(alpha);
    if beta == 0.0 {
        for (i, row) in acc.iter().enumerate() {
            let p = c.offset(i as isize * rsc);
            _mm512_storeu_ps(p, _mm512_mul_ps(av, row[0]));
            _mm512_storeu_ps(p.add(16), _mm512_mul_ps(av, row[1]));
        }
    } else {
        let bv = _mm512_set1_ps(beta);
        for (i, row) in acc.iter().enumerate() {
            let p = c.offset(i as isize * rsc);
            let c0 = _mm512_mul_ps(_mm512_loadu_ps(p), bv);
            let c1 = _mm512_mul_ps(_mm512_loadu_ps(p.add(16)), bv);
            _mm512_storeu_ps(p, _mm512_fmadd_ps(av, row[0], c0));
            _mm512_storeu_ps(p.add(16), _mm512_fmadd_ps(av, row[1], c1));
        }
    }
}

/// One tile's raw products ab into `out` (row-major MR × NR), for the per-element epilogue
/// (the whole tile: `_rows` and `_cols`, the part inside C, matter to avx2.rs's sub-tiles).
///
/// # Safety
/// As `tile_to_c`; out holds MR·NR floats.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
pub(super) unsafe fn tile_to_buf(
    kc: usize,
    a: *const f32,
    b: *const f32,
    ldb: usize,
    out: *mut f32,
    _rows: usize,
    _cols: usize,
) {
    let acc = accumulate!(kc, a, b, ldb);
    for (i, row) in acc.iter().enumerate() {
        _mm512_storeu_ps(out.add(i * NR), row[0]);
        _mm512_storeu_ps(out.add(i * NR + 16), row[1]);
    }
}

/// Packs MR = 12 rows (each `rs` floats apart, kc contiguous floats) into one A panel:
/// d[k·12 + i] = src[i·rs + k], for the whole blocks of sixteen steps (returns how many steps
/// that is; pack.rs packs the rest), through a 16 × 16 register transpose (rows 12..15 zero); each step's 16-float store spills 4 floats into the next
/// step, which its own store then overwrites (so the last one needs the scratch slack).
///
/// # Safety
/// AVX-512F present; src rows valid for kc floats; d holds kc·12 floats + 4.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn pack_rows_transposed(
    kc: usize,
    src: *const f32,
    rs: usize,
    d: *mut f32,
) -> usize {
    let blocks = kc / 16;
    for blk in 0..blocks {
        let k0 = blk * 16;
        let mut r = [_mm512_setzero_ps(); 16];
        for (i, v) in r.iter_mut().enumerate().take(MR) {
            let row = src.add(i * rs + k0);
            // the same rows' next K block: twelve short runs far apart, which the hardware
            // prefetchers do not follow
            _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(super::KC) as *const i8);
            *v = _mm512_loadu_ps(row);
        }
        let cols = transpose16(r);
        for (t, col) in cols.iter().enumerate() {
            _mm512_storeu_ps(d.add((k0 + t) * MR), *col);
        }
    }
    blocks * 16
}

/// Packs a B panel from Bᵀ row-major: `w` ≤ NR rows of Bᵀ (columns of B), each `cs` floats
/// apart with kc contiguous floats, into d[k·NR + j] = src[j·cs + k] (zero for j ≥ w).
/// Whole blocks of sixteen steps through two 16 × 16 register transposes; returns the steps
/// packed (pack.rs packs the rest).
///
/// # Safety
/// AVX-512F present; src rows valid for kc floats; d holds kc·NR floats.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn pack_cols_transposed(
    kc: usize,
    w: usize,
    src: *const f32,
    cs: usize,
    d: *mut f32,
) -> usize {
    let blocks = kc / 16;
    for blk in 0..blocks {
        let k0 = blk * 16;
        for half in 0..2 {
            let mut r = [_mm512_setzero_ps(); 16];
            for (i, v) in r.iter_mut().enumerate() {
                let j = half * 16 + i;
                if j < w {
                    let row = src.add(j * cs + k0);
                    // the next panel's row at this step
                    _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(NR * cs) as *const i8);
                    *v = _mm512_loadu_ps(row);
                }
            }
            let cols = transpose16(r);
            for (t, col) in cols.iter().enumerate() {
                _mm512_storeu_ps(d.add((k0 + t) * NR + half * 16), *col);
            }
        }
    }
    blocks * 16
}

/// 16 × 16 transpose: out[j] lane i = r[i] lane j.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn transpose16(r: [__m512; 16]) -> [__m512; 16] {
    // pairs of rows interleaved by element, then by pairs of elements
    let mut t = [_mm512_setzero_ps(); 16];
    for q in 0..8 {
        t[2 * q] = _mm512_unpacklo_ps(r[2 * q], r[2 * q + 1]);
        t[2 * q + 1] = _mm512_unpackhi_ps(r[2 * q], r[2 * q + 1]);
    }
    let mut u = [_mm512_setzero_ps(); 16];
    for g in 0..4 {
        let (t0, t1, t2, t3) = (t[4 * g], t[4 * g + 1], t[4 * g + 2], t[4 * g + 3]);
        let (t0, t1, t2, t3) = (
            _mm512_castps_pd(t0),
            _mm512_castps_pd(t1),
            _mm512_castps_pd(t2),
            _mm512_castps_pd(t3),
        );
        u[4 * g] = _mm512_castpd_ps(_mm512_unpacklo_pd(t0, t2));
        u[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(t0, t2));
        u[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(t1, t3));
        u[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(t1, t3));
    }
    // u[4g + c] holds, per 128-bit lane l, rows 4g..4g+3 of column 4l + c
    let mut out = [_mm512_setzero_ps(); 16];
    for c in 0..4 {
        let v0 = _mm512_shuffle_f32x4::<0x88>(u[c], u[4 + c]);
        let v1 = _mm512_shuffle_f32x4::<0xDD>(u[c], u[4 + c]);
        let w0 = _mm512_shuffle_f32x4::<0x88>(u[8 + c], u[12 + c]);
        let w1 = _mm512_shuffle_f32x4::<0xDD>(u[8 + c], u[12 + c]);
        out[c] = _mm512_shuffle_f32x4::<0x88>(v0, w0);
        out[8 + c] = _mm512_shuffle_f32x4::<0xDD>(v0, w0);
        out[4 + c] = _mm512_shuffle_f32x4::<0x88>(v1, w1);
        out[12 + c] = _mm512_shuffle_f32x4::<0xDD>(v1, w1);
    }
    out
}
