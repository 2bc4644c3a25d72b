//! Which instruction set runs the engine's tiles and transposing packers: AVX-512 (12 × 32
//! tiles in 24 zmm accumulators, avx512.rs) or AVX2 + FMA (the same 12 × 32 tile as four
//! 6 × 16 sub-tiles in 12 ymm accumulators, avx2.rs). Both read and write the same packed
//! layouts (pack.rs) and give every element the same arithmetic (the contract in mod.rs: one
//! FMA chain in k order per K block, the same epilogue), so a product's bits do not depend on
//! which of them ran.
//!
//! Chosen once per process from the CPU's features (AVX-512F + FMA before AVX2 + FMA); a thread
//! may run its products on the other one that the CPU also has (`with_isa`: the tests hold
//! the AVX2 kernel to the contract on AVX-512 machines too).

use std::cell::Cell;
use std::sync::OnceLock;

/// The engine's kernel families.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// AVX-512F + FMA.
    Avx512,
    /// AVX2 + FMA (AMD Zen 1-3, Intel Haswell to Alder Lake client parts).
    Avx2,
}

thread_local! {
    static FORCED: Cell<Option<Isa>> = const { Cell::new(None) };
}

impl Isa {
    /// Whether this CPU can run `self`.
    pub fn supported(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            has!("fma")
                && match self {
                    Isa::Avx512 => has!("avx512f"),
                    Isa::Avx2 => has!("avx2"),
                }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = self;
            false
        }
    }

    /// The best kernel family this CPU has (None: the engine does not run here).
    pub fn detected() -> Option<Isa> {
        static DETECTED: OnceLock<Option<Isa>> = OnceLock::new();
        *DETECTED.get_or_init(|| [Isa::Avx512, Isa::Avx2].into_iter().find(|i| i.supported()))
    }

    /// The family this thread's products run on: `with_isa`'s choice, else `detected`.
    pub fn current() -> Option<Isa> {
        FORCED.with(Cell::get).or_else(Isa::detected)
    }
}

/// Runs `f` with this thread's engine products on `isa` (for tests and benches: the arithmetic
/// is the same on every family). Panics when the CPU lacks `isa`.
pub fn with_isa<R>(isa: Isa, f: impl FnOnce() -> R) -> R {
    assert!(isa.supported(), "this CPU cannot run the {isa:?} kernels");
    struct Restore(Option<Isa>);
    impl Drop for Restore {
        fn drop(&mut self) {
            FORCED.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(FORCED.with(|c| c.replace(Some(isa))));
    f()
}

#[cfg(target_arch = "x86_64")]
use super::{avx2, avx512};

/// The kernels, dispatched on the family (the argument contracts are avx512.rs's).
#[cfg(target_arch = "x86_64")]
impl Isa {
    /// # Safety
    /// As `avx512::tile_to_c`, with `self` supported by the CPU.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub(super) unsafe fn tile_to_c(
        self,
        kc: usize,
        a: *const f32,
        b: *const f32,
        ldb: usize,
        c: *mut f32,
        rsc: isize,
        alpha: f32,
        beta: f32,
    ) {
        match self {
            Isa::Avx512 => avx512::tile_to_c(kc, a, b, ldb, c, rsc, alpha, beta),
            Isa::Avx2 => avx2::tile_to_c(kc, a, b, ldb, c, rsc, alpha, beta),
        }
    }

    /// # Safety
    /// As `avx512::tile_to_buf`, with `self` supported by the CPU.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub(super) unsafe fn tile_to_buf(
        self,
        kc: usize,
        a: *const f32,
        b: *const f32,
        ldb: usize,
        out: *mut f32,
        rows: usize,
        cols: usize,
    ) {
        match self {
            Isa::Avx512 => avx512::tile_to_buf(kc, a, b, ldb, out, rows, cols),
            Isa::Avx2 => avx2::tile_to_buf(kc, a, b, ldb, out, rows, cols),
        }
    }

    /// # Safety
    /// As `avx512::pack_rows_transposed`, with `self` supported by the CPU.
    #[inline]
    pub(super) unsafe fn pack_rows_transposed(
        self,
        kc: usize,
        src: *const f32,
        rs: usize,
        d: *mut f32,
    ) -> usize {
        match self {
            Isa::Avx512 => avx512::pack_rows_transposed(kc, src, rs, d),
            Isa::Avx2 => avx2::pack_rows_transposed(kc, src, rs, d),
        }
    }

    /// # Safety
    /// As `avx512::pack_cols_transposed`, with `self` supported by the CPU.
    #[inline]
    pub(super) unsafe fn pack_cols_transposed(
        self,
        kc: usize,
        w: usize,
        src: *const f32,
        cs: usize,
        d: *mut f32,
    ) -> usize {
        match self {
            Isa::Avx512 => avx512::pack_cols_transposed(kc, w, src, cs, d),
            Isa::Avx2 => avx2::pack_cols_transposed(kc, w, src, cs, d),
        }
    }
}
