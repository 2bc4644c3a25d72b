//! The f32 GEMM of the CPU backend on x86-64 CPUs with AVX-512 or AVX2 + FMA (elsewhere:
//! matrixmultiply):
//!
//!   C[m, n] = alpha · A[m, k] · B[k, n] + beta · C,   every operand at any (row, col) strides.
//!
//! What each element gets, whatever the tiling or thread split (so a result never depends on
//! them, and is the one matrixmultiply 0.3's AVX-512 kernel gave before this engine replaced
//! it — the training bits did not change):
//!   for each block of KC = 256 consecutive k, from k = 0:
//!     ab = 0;  ab ← fma(a[i, k], b[k, j], ab) over the block, in k order
//!     β' = beta for the first block, 1 for the others
//!     c ← alpha · ab                 when β' = 0 (C is not read)
//!     c ← fma(alpha, ab, β' · c)     when (i, j) lies in the call's 16 × 16 tile grid
//!                                    (i < m − m mod 16 and j < n − n mod 16)
//!     c ← β' · c + alpha · ab        (two roundings) on the grid's ragged edge
//! The two non-zero forms agree unless alpha ≠ 1 or β' ∉ {0, 1} (attention's scaled tiles).
//!
//! Blocking (BLIS): C is computed in MR × NR = 12 × 32 tiles, held in 24 zmm registers
//! (avx512.rs) or computed as four 6 × 16 sub-tiles in 12 ymm registers (avx2.rs) — isa.rs
//! picks one per CPU, and both give the arithmetic above — from A packed into MR-row panels
//! and B in NR-column panels (pack.rs, the same layouts for both), in
//! thread-local buffers that are reused, never reallocated in the steady state (scratch.rs).
//! B's panels come one of two ways (`BSource`): packed per block (the default), or prepared once
//! for many products (`prepare_b`, `sgemm_prepared`: W_headᵀ for every logits chunk of a step).
//! B is packed even when A is one MC block and its rows are contiguous, where the tiles could
//! read it in place: on an Intel Xeon (AVX-512, 48 KiB L1) the head's dx = dlogits · W_head ran
//! 10-25% faster from packed panels than from W_head's rows (bench_cpu, bench_head_products).
//!   order "B panel first" (BLIS):   for NC columns { for KC { pack B; for MC rows { pack A; tiles }}}
//!   order "C block first":          for NC columns { for MC rows { for KC { B; pack A; tiles }}}
//! The second keeps a C block in cache across all K blocks; it is used when B is not packed per
//! block, or A is one MC block anyway. C is written in its contiguous direction: a column-major
//! C is computed as Cᵀ = Bᵀ·Aᵀ.
//!
//! Single-threaded: cpu/gemm.rs splits large products over the thread team (team.rs), a block
//! each.

mod avx2;
mod avx512;
mod isa;
#[cfg(target_arch = "x86_64")]
mod pack;
mod scratch;

pub use isa::{with_isa, Isa};

/// Rows of a tile (broadcast from packed A): part of the packed A layout.
const MR: usize = 12;
/// Columns of a tile: the width of a packed B panel.
const NR: usize = 32;

/// k per block: fixed, it is part of the arithmetic contract above.
pub const KC: usize = 256;
/// The tile grid of the edge rule (matrixmultiply's AVX-512 MR = NR = 16).
const EDGE_GRID: usize = 16;
/// Rows of C (and A) per packed A block: 28 panels, 344 KiB of A at k = KC (L2 holds it).
const MC: usize = 28 * MR;
/// Columns of C (and B) per B block: 512 KiB of packed B at k = KC.
const NC: usize = 16 * NR;
/// Most K blocks of a single-MC-block A packed once for all column blocks (5.5 MiB at 16).
const MAX_HOISTED_K_BLOCKS: usize = 16;

/// Whether this CPU runs the engine (else callers use matrixmultiply).
pub fn available() -> bool {
    Isa::current().is_some()
}

/// A strided matrix operand: element (r, c) at ptr[r·rs + c·cs].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Mat {
    pub ptr: *const f32,
    pub rs: isize,
    pub cs: isize,
}

impl Mat {
    /// The transpose, as the same memory.
    fn t(self) -> Mat {
        Mat {
            ptr: self.ptr,
            rs: self.cs,
            cs: self.rs,
        }
    }
    /// The element (r, c) onwards.
    unsafe fn at(self, r: usize, c: usize) -> Mat {
        Mat {
            ptr: self.ptr.offset(r as isize * self.rs + c as isize * self.cs),
            ..self
        }
    }
}

/// C: element (r, c) at ptr[r·rs + c·cs].
#[derive(Clone, Copy, Debug)]
pub(crate) struct MatMut {
    pub ptr: *mut f32,
    pub rs: isize,
    pub cs: isize,
}

/// The problem in the orientation it is computed in, with the edge rule's grid bounds.
struct Problem {
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    beta: f32,
    a: Mat,
    b: Mat,
    c: MatMut,
    /// (i, j) with i < full_m and j < full_n take the fused epilogue (see the top comment).
    full_m: usize,
    full_n: usize,
}

/// C = alpha · A · B + beta · C with the arithmetic of the top comment. With beta = 0, C is
/// never read. k = 0 is the caller's business (cpu/gemm.rs handles it).
///
/// # Safety
/// `available()` must be true; every addressed element must lie inside its allocation; C must
/// not alias A or B, and no two (r, c) of C may address the same element.
#[allow(clippy::too_many_arguments)]
pub unsafe fn sgemm(
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    a: *const f32,
    rsa: isize,
    csa: isize,
    b: *const f32,
    rsb: isize,
    csb: isize,
    beta: f32,
    c: *mut f32,
    rsc: isize,
    csc: isize,
) {
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    let a = Mat {
        ptr: a,
        rs: rsa,
        cs: csa,
    };
    let b = Mat {
        ptr: b,
        rs: rsb,
        cs: csb,
    };
    let (full_m, full_n) = (m - m % EDGE_GRID, n - n % EDGE_GRID);
    let p = if csc != 1 && rsc == 1 {
        // column-major C: compute Cᵀ[n, m] = Bᵀ · Aᵀ, rows of Cᵀ contiguous
        Problem {
            m: n,
            k,
            n: m,
            alpha,
            beta,
            a: b.t(),
            b: a.t(),
            c: MatMut {
                ptr: c,
                rs: csc,
                cs: 1,
            },
            full_m: full_n,
            full_n: full_m,
        }
    } else {
        Problem {
            m,
            k,
            n,
            alpha,
            beta,
            a,
            b,
            c: MatMut {
                ptr: c,
                rs: rsc,
                cs: csc,
            },
            full_m,
            full_n,
        }
    };
    #[cfg(target_arch = "x86_64")]
    run(&p, BSource::Pack);
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = &p;
        unreachable!("the sgemm engine runs on x86-64 only (`available()`)");
    }
}

/// Rows of A per packed panel (a product whose rows are a multiple of it has no partial
/// panel, whose tiles compute padding rows).
pub const PANEL_ROWS: usize = MR;

/// Columns of a prepared B per panel (a product on prepared B starts at a multiple of it).
pub const PREPARED_COLS: usize = NR;

/// Floats `prepare_b` writes for a k × n matrix B.
pub fn prepared_len(k: usize, n: usize) -> usize {
    k * n.div_ceil(NR) * NR
}

/// Packs panels `panels` of B [k × n] for `sgemm_prepared` (the panel layout of
/// `BSource::Prepared`: K block kb, panel jp at kb·KC·P·NR + jp·kc·NR with P = ceil(n / NR),
/// kc rows of NR floats each, zero-padded past n). Disjoint panel ranges may be packed by
/// different threads.
///
/// # Safety
/// `available()`; B addresses k × n valid elements; dst holds `prepared_len(k, n)` floats.
#[allow(clippy::too_many_arguments)]
pub unsafe fn prepare_b(
    k: usize,
    n: usize,
    b: *const f32,
    rsb: isize,
    csb: isize,
    dst: *mut f32,
    panels: std::ops::Range<usize>,
) {
    let b = Mat {
        ptr: b,
        rs: rsb,
        cs: csb,
    };
    #[cfg(target_arch = "x86_64")]
    {
        // the packed layout is the same for every kernel family
        let isa = Isa::current().expect("prepare_b: the sgemm engine needs AVX-512 or AVX2");
        let total = n.div_ceil(NR);
        for (kb, pc) in (0..k).step_by(KC).enumerate() {
            let kc = KC.min(k - pc);
            for jp in panels.clone() {
                let j0 = jp * NR;
                let dst = dst.add(kb * KC * total * NR + jp * kc * NR);
                pack::pack_b(isa, kc, NR.min(n - j0), b.at(pc, j0), dst);
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (k, n, b, dst, panels);
        unreachable!("the sgemm engine runs on x86-64 only (`available()`)");
    }
}

/// C[m, n] = alpha · A · B + beta · C with B prepared by `prepare_b` (B's full width
/// `b_cols`; this product covers its columns [first_col, first_col + n), first_col a multiple
/// of `PREPARED_COLS`). The arithmetic of `sgemm`; alpha must be 1 and beta 0 or 1 (where the
/// edge rule cannot matter), and C's rows contiguous.
///
/// # Safety
/// As `sgemm`; `prepared` holds `prepare_b`'s full output for a k × b_cols B.
#[allow(clippy::too_many_arguments)]
pub unsafe fn sgemm_prepared(
    m: usize,
    k: usize,
    n: usize,
    a: *const f32,
    rsa: isize,
    csa: isize,
    prepared: *const f32,
    b_cols: usize,
    first_col: usize,
    beta: f32,
    c: *mut f32,
    rsc: isize,
) {
    assert!(
        first_col.is_multiple_of(PREPARED_COLS)
            && first_col + n <= b_cols
            && (beta == 0.0 || beta == 1.0),
        "sgemm_prepared: columns {first_col}+{n} of {b_cols}, beta {beta}"
    );
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    let p = Problem {
        m,
        k,
        n,
        alpha: 1.0,
        beta,
        a: Mat {
            ptr: a,
            rs: rsa,
            cs: csa,
        },
        b: Mat {
            ptr: prepared,
            rs: 0,
            cs: 0,
        },
        c: MatMut {
            ptr: c,
            rs: rsc,
            cs: 1,
        },
        full_m: m,
        full_n: n,
    };
    let src = BSource::Prepared {
        ptr: prepared,
        panels: b_cols.div_ceil(NR),
        first: first_col / NR,
    };
    #[cfg(target_arch = "x86_64")]
    run(&p, src);
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (&p, src);
        unreachable!("the sgemm engine runs on x86-64 only (`available()`)");
    }
}

/// Where the tiles of one (K block, column block) read B from.
#[derive(Clone, Copy, Debug)]
enum BSource {
    /// Packed per block into the thread's buffer (reused by every MC block of A).
    Pack,
    /// Packed once for many products (`prepare_b`): panel jp of K block kb at
    /// ptr + kb·KC·panels·NR + jp·kc·NR; this product's column 0 is panel `first`.
    Prepared {
        ptr: *const f32,
        panels: usize,
        first: usize,
    },
}

/// The packed B panels of one (K block, column block): panel jp at ptr + jp·step, NR floats a
/// step.
struct Panels {
    ptr: *const f32,
    step: usize,
    count: usize,
}

impl Panels {
    fn panel(&self, jp: usize) -> *const f32 {
        self.ptr.wrapping_add(jp * self.step)
    }
}

#[cfg(target_arch = "x86_64")]
unsafe fn run(p: &Problem, bsrc: BSource) {
    let isa = Isa::current().expect("sgemm: the engine needs AVX-512 or AVX2 (`available()`)");
    // C block first when B is not packed per block, or there is one MC block anyway: the C
    // block stays in cache across K blocks
    let c_first = p.m <= MC || !matches!(bsrc, BSource::Pack);
    // One MC block of A met by several column blocks (the head's logits: a chunk of rows times
    // every vocabulary column): pack A's K blocks once, not once per column block
    let k_blocks = p.k.div_ceil(KC);
    let hoist_a = c_first && p.m <= MC && p.n > NC && k_blocks <= MAX_HOISTED_K_BLOCKS;
    let a_len = if hoist_a { k_blocks * MC * KC } else { MC * KC };
    scratch::with_buffers(a_len, KC * NC, |apack, bpack| {
        if hoist_a {
            for (kb, pc) in (0..p.k).step_by(KC).enumerate() {
                let kc = KC.min(p.k - pc);
                pack::pack_a(
                    isa,
                    p.m,
                    kc,
                    p.a.at(0, pc),
                    apack.as_mut_ptr().add(kb * MC * KC),
                );
            }
        }
        for jc in (0..p.n).step_by(NC) {
            let nc = NC.min(p.n - jc);
            let count = nc.div_ceil(NR);
            let b_panels = |kb: usize, kc: usize, bpack: &mut [f32]| -> Panels {
                let pc = kb * KC;
                match bsrc {
                    BSource::Pack => {
                        let src = p.b.at(pc, jc);
                        for jp in 0..count {
                            let j0 = jp * NR;
                            let w = NR.min(nc - j0);
                            let dst = bpack.as_mut_ptr().add(jp * kc * NR);
                            pack::pack_b(isa, kc, w, src.at(0, j0), dst);
                        }
                        Panels {
                            ptr: bpack.as_ptr(),
                            step: kc * NR,
                            count,
                        }
                    }
                    BSource::Prepared { ptr, panels, first } => Panels {
                        ptr: ptr.add(kb * KC * panels * NR + (first + jc / NR) * kc * NR),
                        step: kc * NR,
                        count,
                    },
                }
            };
            if c_first {
                for ic in (0..p.m).step_by(MC) {
                    let mc = MC.min(p.m - ic);
                    for (kb, pc) in (0..p.k).step_by(KC).enumerate() {
                        let kc = KC.min(p.k - pc);
                        let bp = b_panels(kb, kc, bpack);
                        let a = if hoist_a {
                            apack.as_ptr().add(kb * MC * KC)
                        } else {
                            pack::pack_a(isa, mc, kc, p.a.at(ic, pc), apack.as_mut_ptr());
                            apack.as_ptr()
                        };
                        tiles(isa, p, &bp, a, ic, mc, jc, nc, kc, kb);
                    }
                }
            } else {
                for (kb, pc) in (0..p.k).step_by(KC).enumerate() {
                    let kc = KC.min(p.k - pc);
                    let bp = b_panels(kb, kc, bpack);
                    for ic in (0..p.m).step_by(MC) {
                        let mc = MC.min(p.m - ic);
                        pack::pack_a(isa, mc, kc, p.a.at(ic, pc), apack.as_mut_ptr());
                        tiles(isa, p, &bp, apack.as_ptr(), ic, mc, jc, nc, kc, kb);
                    }
                }
            }
        }
    });
}

/// All MR × NR tiles of the C block [ic, ic + mc) × [jc, jc + nc) for K block `kb` (kc deep).
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
unsafe fn tiles(
    isa: Isa,
    p: &Problem,
    bp: &Panels,
    apack: *const f32,
    ic: usize,
    mc: usize,
    jc: usize,
    nc: usize,
    kc: usize,
    kb: usize,
) {
    let beta = if kb == 0 { p.beta } else { 1.0 };
    // both epilogue forms agree here, so every full tile may take the fused one
    let uniform = beta == 0.0 || (p.alpha == 1.0 && beta == 1.0);
    let mut tile = [0f32; MR * NR];
    // A row panel at a time across the block's B panels: the A panel stays in L1 and C is
    // written along its rows (B panel outermost wrote C a 12 × 32 tile per far-apart row set:
    // the head's logits, a few hundred rows by 25,000+ columns, ran ~10% slower that way)
    for ip in 0..mc.div_ceil(MR) {
        let i = ic + ip * MR;
        let h = MR.min(mc - ip * MR);
        let a = apack.add(ip * kc * MR);
        for jp in 0..bp.count {
            let j = jc + jp * NR;
            let w = NR.min(nc - jp * NR);
            let bptr = bp.panel(jp);
            let full = h == MR && w == NR;
            let inside = i + MR <= p.full_m && j + NR <= p.full_n;
            if full && p.c.cs == 1 && (uniform || inside) {
                let c = p.c.ptr.offset(i as isize * p.c.rs + j as isize);
                isa.tile_to_c(kc, a, bptr, NR, c, p.c.rs, p.alpha, beta);
            } else {
                isa.tile_to_buf(kc, a, bptr, NR, tile.as_mut_ptr(), h, w);
                edge_epilogue(p, &tile, i, h, j, w, beta);
            }
        }
    }
}

/// The per-element epilogue of a tile computed into `tile` (row-major MR × NR): rows
/// [i, i + h), columns [j, j + w) of C.
fn edge_epilogue(p: &Problem, tile: &[f32], i: usize, h: usize, j: usize, w: usize, beta: f32) {
    for r in 0..h {
        for col in 0..w {
            let ab = tile[r * NR + col];
            let (ii, jj) = (i + r, j + col);
            // SAFETY: (ii, jj) is inside C (the caller's contract) and addressed by no other
            // element.
            let c = unsafe { &mut *p.c.ptr.offset(ii as isize * p.c.rs + jj as isize * p.c.cs) };
            *c = if beta == 0.0 {
                p.alpha * ab
            } else if p.alpha == 1.0 && beta == 1.0 {
                // both forms are one rounding of c + ab
                *c + ab
            } else if ii < p.full_m && jj < p.full_n {
                p.alpha.mul_add(ab, *c * beta)
            } else {
                *c * beta + p.alpha * ab
            };
        }
    }
}
