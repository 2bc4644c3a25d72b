//! AVX2 + FMA pieces of the engine: the 12 × 32 tile kernel and the transposing packers, on
//! the packed layouts the AVX-512 ones use (so the two are interchangeable, isa.rs).
//!
//! Tile: 16 ymm registers cannot hold a 12 × 32 tile, so it is computed as four 6 × 16
//! sub-tiles (rows r0..r0+6 of the A panel, columns c0..c0+16 of the B panel), each over all kc:
//!   for k < kc:  acc[i][h] ← fma(a[k·12 + r0 + i], b[k·ldb + c0 + 8h ..], acc[i][h])
//! — 12 accumulators, 2 vector loads and 6 broadcasts per 12 FMAs (BLIS's Haswell shape).
//! Every element is still one FMA chain from zero in k order, as the engine's contract
//! requires, and its epilogue is the AVX-512 kernel's: the same bits.
//! Sub-tile order: both row halves against columns 0..16, then against 16..32, so each 16 KiB
//! half of the B panel is read from L1 the second time.

#[cfg(target_arch = "x86_64")]
use super::{KC, MR, NR};
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Rows and columns of a sub-tile.
#[cfg(target_arch = "x86_64")]
const SUB_ROWS: usize = 6;
#[cfg(target_arch = "x86_64")]
const SUB_COLS: usize = 16;
/// The sub-tiles' (first row, first column), in the order they run.
#[cfg(target_arch = "x86_64")]
const SUB_TILES: [(usize, usize); 4] = [(0, 0), (SUB_ROWS, 0), (0, SUB_COLS), (SUB_ROWS, SUB_COLS)];

#[cfg(target_arch = "x86_64")]
macro_rules! fma_rows6 {
    ($acc:ident, $a:ident, $b0:ident, $b1:ident; $($i:literal)*) => {
        $(
            let ai = _mm256_broadcast_ss(&*$a.add($i));
            $acc[$i][0] = _mm256_fmadd_ps(ai, $b0, $acc[$i][0]);
            $acc[$i][1] = _mm256_fmadd_ps(ai, $b1, $acc[$i][1]);
        )*
    };
}

/// A sub-tile's accumulators after kc steps, from A panel rows at `$a` (MR floats a step) and
/// B panel columns at `$b` (`$ldb` floats a step); expanded inside each `#[target_feature]`
/// caller.
#[cfg(target_arch = "x86_64")]
macro_rules! accumulate6x16 {
    ($kc:expr, $a:expr, $b:expr, $ldb:expr) => {{
        let mut acc = [[_mm256_setzero_ps(); 2]; SUB_ROWS];
        let (mut a, mut b) = ($a, $b);
        for _ in 0..$kc {
            let b0 = _mm256_loadu_ps(b);
            let b1 = _mm256_loadu_ps(b.add(8));
            fma_rows6!(acc, a, b0, b1; 0 1 2 3 4 5);
            a = a.add(MR);
            b = b.add($ldb);
        }
        acc
    }};
}

/// One full 12 × 32 tile straight into C (rows `rsc` apart, columns contiguous) with the fused
/// epilogue: c = alpha·ab (beta = 0, C not read) or c = fma(alpha, ab, beta·c).
///
/// # Safety
/// AVX2 and FMA present; a: kc·MR floats; b: kc rows of NR floats `ldb` apart; C: MR rows of
/// NR floats.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
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
    let av = _mm256_set1_ps(alpha);
    let bv = _mm256_set1_ps(beta);
    for (r0, c0) in SUB_TILES {
        let c = c.offset(r0 as isize * rsc).add(c0);
        if beta != 0.0 {
            // C is read after kc steps of FMAs: fetch its lines now
            for i in 0..SUB_ROWS {
                let p = c.offset(i as isize * rsc) as *const i8;
                _mm_prefetch::<_MM_HINT_T0>(p);
                _mm_prefetch::<_MM_HINT_T0>(p.add(63));
            }
        }
        let acc = accumulate6x16!(kc, a.add(r0), b.add(c0), ldb);
        for (i, row) in acc.iter().enumerate() {
            let p = c.offset(i as isize * rsc);
            for (h, &ab) in row.iter().enumerate() {
                let p = p.add(8 * h);
                let v = if beta == 0.0 {
                    _mm256_mul_ps(av, ab)
                } else {
                    _mm256_fmadd_ps(av, ab, _mm256_mul_ps(_mm256_loadu_ps(p), bv))
                };
                _mm256_storeu_ps(p, v);
            }
        }
    }
}

/// One tile's raw products ab into `out` (row-major MR × NR), for the per-element epilogue:
/// rows below `rows` and columns left of `cols` (the part of the tile inside C); sub-tiles
/// wholly outside it are skipped (a 4-row edge panel computes half the tile).
///
/// # Safety
/// As `tile_to_c`; out holds MR·NR floats.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn tile_to_buf(
    kc: usize,
    a: *const f32,
    b: *const f32,
    ldb: usize,
    out: *mut f32,
    rows: usize,
    cols: usize,
) {
    for (r0, c0) in SUB_TILES {
        if r0 >= rows || c0 >= cols {
            continue;
        }
        let acc = accumulate6x16!(kc, a.add(r0), b.add(c0), ldb);
        for (i, row) in acc.iter().enumerate() {
            let p = out.add((r0 + i) * NR + c0);
            _mm256_storeu_ps(p, row[0]);
            _mm256_storeu_ps(p.add(8), row[1]);
        }
    }
}

/// Packs MR = 12 rows (each `rs` floats apart, kc contiguous floats) into one A panel:
/// d[k·12 + i] = src[i·rs + k], for the whole blocks of eight steps (returns how many steps
/// that is; pack.rs packs the rest): rows 0..8 through one 8 × 8 register transpose, rows
/// 8..12 through another (its other four rows zero, its upper halves unused).
///
/// # Safety
/// AVX2 present; src rows valid for kc floats; d holds kc·12 floats.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn pack_rows_transposed(
    kc: usize,
    src: *const f32,
    rs: usize,
    d: *mut f32,
) -> usize {
    let blocks = kc / 8;
    for blk in 0..blocks {
        let k0 = blk * 8;
        let mut lo = [_mm256_setzero_ps(); 8];
        let mut hi = [_mm256_setzero_ps(); 8];
        for i in 0..MR {
            let row = src.add(i * rs + k0);
            if k0 % 16 == 0 {
                // the same rows' next K block: twelve short runs far apart, which the
                // hardware prefetchers do not follow
                _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(KC) as *const i8);
            }
            let v = _mm256_loadu_ps(row);
            if i < 8 {
                lo[i] = v;
            } else {
                hi[i - 8] = v;
            }
        }
        let lo = transpose8(lo);
        let hi = transpose8(hi);
        for t in 0..8 {
            let dk = d.add((k0 + t) * MR);
            _mm256_storeu_ps(dk, lo[t]);
            _mm_storeu_ps(dk.add(8), _mm256_castps256_ps128(hi[t]));
        }
    }
    blocks * 8
}

/// Packs a B panel from Bᵀ row-major: `w` ≤ NR rows of Bᵀ (columns of B), each `cs` floats
/// apart with kc contiguous floats, into d[k·NR + j] = src[j·cs + k] (zero for j ≥ w).
/// Whole blocks of eight steps through four 8 × 8 register transposes; returns the steps
/// packed (pack.rs packs the rest).
///
/// # Safety
/// AVX2 present; src rows valid for kc floats; d holds kc·NR floats.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn pack_cols_transposed(
    kc: usize,
    w: usize,
    src: *const f32,
    cs: usize,
    d: *mut f32,
) -> usize {
    let blocks = kc / 8;
    for blk in 0..blocks {
        let k0 = blk * 8;
        for quarter in 0..NR / 8 {
            let mut r = [_mm256_setzero_ps(); 8];
            for (i, v) in r.iter_mut().enumerate() {
                let j = quarter * 8 + i;
                if j < w {
                    let row = src.add(j * cs + k0);
                    if k0 % 16 == 0 {
                        // the next panel's row at this step
                        _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(NR * cs) as *const i8);
                    }
                    *v = _mm256_loadu_ps(row);
                }
            }
            let cols = transpose8(r);
            for (t, col) in cols.iter().enumerate() {
                _mm256_storeu_ps(d.add((k0 + t) * NR + quarter * 8), *col);
            }
        }
    }
    blocks * 8
}

/// 8 × 8 transpose: out[j] lane i = r[i] lane j.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn transpose8(r: [__m256; 8]) -> [__m256; 8] {
    // rows interleaved in pairs by element: t[2q] = (r[2q][0], r[2q+1][0], r[2q][1], ...) per
    // 128-bit lane
    let mut t = [_mm256_setzero_ps(); 8];
    for q in 0..4 {
        t[2 * q] = _mm256_unpacklo_ps(r[2 * q], r[2 * q + 1]);
        t[2 * q + 1] = _mm256_unpackhi_ps(r[2 * q], r[2 * q + 1]);
    }
    // u[4g + c] holds, per 128-bit lane l, rows 4g..4g+3 of column 4l + c
    let mut u = [_mm256_setzero_ps(); 8];
    for g in 0..2 {
        let (t0, t1, t2, t3) = (t[4 * g], t[4 * g + 1], t[4 * g + 2], t[4 * g + 3]);
        u[4 * g] = _mm256_shuffle_ps::<0x44>(t0, t2);
        u[4 * g + 1] = _mm256_shuffle_ps::<0xEE>(t0, t2);
        u[4 * g + 2] = _mm256_shuffle_ps::<0x44>(t1, t3);
        u[4 * g + 3] = _mm256_shuffle_ps::<0xEE>(t1, t3);
    }
    let mut out = [_mm256_setzero_ps(); 8];
    for c in 0..4 {
        out[c] = _mm256_permute2f128_ps::<0x20>(u[c], u[4 + c]);
        out[4 + c] = _mm256_permute2f128_ps::<0x31>(u[c], u[4 + c]);
    }
    out
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    /// The tile kernel alone on L1-resident panels (kc = KC), one thread: its GFLOP/s, to set
    /// beside the CPU's FMA peak (scripts/fma-peak.c) and the whole engine's (bench_engine_*).
    #[test]
    #[ignore = "a benchmark"]
    fn bench_tile_kernel() {
        assert!(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"));
        let a = vec![1.0f32; KC * MR];
        let b = vec![1.0f32; KC * NR];
        let mut out = vec![0f32; MR * NR];
        for _ in 0..5 {
            let reps = 20_000;
            let t = std::time::Instant::now();
            for _ in 0..reps {
                // SAFETY: the panels hold KC steps; out holds a tile.
                unsafe { tile_to_buf(KC, a.as_ptr(), b.as_ptr(), NR, out.as_mut_ptr(), MR, NR) };
                std::hint::black_box(&mut out);
            }
            let flop = 2.0 * (MR * NR * KC * reps) as f64;
            println!(
                "tile kernel: {:.1} GFLOP/s",
                flop / t.elapsed().as_secs_f64() * 1e-9
            );
        }
    }
}
