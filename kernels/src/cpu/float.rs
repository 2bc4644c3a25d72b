//! The element types of the CPU reference: f32 (training) and f64 (finite-difference checks).
//!
//! `exp_shifted` (xs ← exp(xs − shift), the inner loop of softmax, attention and cross-entropy)
//! is std's exp for f64, and for f32 a branch-free Cephes-style polynomial that the compiler
//! vectorizes (at the machine's vector width, simd.rs): exp(x) = 2^n · p(r),
//! n = round(x·log2 e), r = x − n·ln 2 (ln 2 split in two parts), p a degree-7 polynomial;
//! max error 0.88 ulp fused, 0.99 unfused (kernels/tests/exp_f32.rs); 0 below ln(2^-126), ∞ above
//! ln(f32::MAX), NaN stays NaN. It is the one loop here that uses `mul_add` (simd.rs's rule
//! otherwise): with fused multiply-adds, 32 elements at a time, it takes a little over half the
//! time.
//! Every CPU with FMA (x86-64 with AVX2 or AVX-512, aarch64) computes the same bits; x86-64
//! CPUs without FMA, where `mul_add` would be a library call, evaluate the same polynomial
//! unfused (`exp_shifted_f32_unfused`), which can differ in the last bit.
//! `exp_elem` / `tanh_elem` (tanh softcapping): std's for f64; for f32 math.rs, which is as
//! accurate as glibc's (≤ 0.502 ulp) and vectorizes. `sigmoid_parts_elem` (SiLU) and
//! `gelu_tanh_elem` / `gelu_tanh_and_grad_elem` (tanh GELU): from std's exp and tanh for f64;
//! for f32 math.rs's sigmoid forms in f32 arithmetic. `gelu_erf_elem` / `gelu_erf_grad_elem`
//! (exact GELU): libm's erfc for f64; for f32 math.rs's (f64 inside, rounded once).

use num_traits::{Float, FromPrimitive, ToPrimitive};

pub trait CpuFloat:
    Float
    + FromPrimitive
    + ToPrimitive
    + Default
    + Send
    + Sync
    + std::fmt::Debug
    + std::iter::Sum
    + super::memory::Element
    + super::workspace::Cached
    + 'static
{
    const NAME: &'static str;
    fn from_f64c(x: f64) -> Self {
        <Self as FromPrimitive>::from_f64(x).unwrap()
    }
    fn to_f64c(self) -> f64 {
        ToPrimitive::to_f64(&self).unwrap()
    }
    /// xs[i] ← exp(xs[i] − shift).
    fn exp_shifted(xs: &mut [Self], shift: Self) {
        xs.iter_mut().for_each(|x| *x = (*x - shift).exp());
    }
    /// xs[i] ← exp(xs[i] − shift), then Σ xs as `sum_lanes_f64` adds it (the cross-entropy's
    /// row): the same numbers as the two calls; f32 adds each block while it is in registers.
    fn exp_shifted_sum(xs: &mut [Self], shift: Self) -> f64 {
        Self::exp_shifted(xs, shift);
        super::elementwise::sum_lanes_f64(xs)
    }
    /// exp of one element, for loops that vectorize (see the top comment).
    #[inline(always)]
    fn exp_elem(self) -> Self {
        self.exp()
    }
    /// tanh of one element, likewise.
    #[inline(always)]
    fn tanh_elem(self) -> Self {
        self.tanh()
    }
    /// (σ(x), 1 − σ(x)), σ(x) = 1/(1 + e^{−x}), of one element, likewise (f32: math.rs, which
    /// takes 1 − σ without cancelling).
    #[inline(always)]
    fn sigmoid_parts_elem(self) -> (Self, Self) {
        let s = Self::one() / (Self::one() + (-self).exp_elem());
        (s, Self::one() - s)
    }
    /// The tanh GELU ½x(1 + tanh(c(x + 0.044715x³))), c = √(2/π), of one element, likewise
    /// (f32: math.rs's sigmoid form).
    #[inline(always)]
    fn gelu_tanh_elem(self) -> Self {
        let (c, a, half) = gelu_tanh_consts::<Self>();
        half * self * (Self::one() + (c * (self + a * self * self * self)).tanh_elem())
    }
    /// `gelu_tanh_elem` and its derivative ½(1 + t) + ½x(1 − t²)·c(1 + 3·0.044715x²),
    /// t = tanh(c(x + 0.044715x³)), from one tanh (f32: math.rs's sigmoid form).
    #[inline(always)]
    fn gelu_tanh_and_grad_elem(self) -> (Self, Self) {
        let (c, a, half) = gelu_tanh_consts::<Self>();
        let x = self;
        let three_a = Self::from_f64c(3.0 * GELU_CUBIC);
        let t = (c * (x + a * x * x * x)).tanh_elem();
        let dt = (Self::one() - t * t) * c * (Self::one() + three_a * x * x);
        (
            half * x * (Self::one() + t),
            half * (Self::one() + t) + half * x * dt,
        )
    }
    /// The exact GELU x·Φ(x) of one element, likewise (Φ the standard normal distribution
    /// function, ½·erfc(−x/√2); libm's erfc here, math.rs for f32).
    #[inline(always)]
    fn gelu_erf_elem(self) -> Self {
        let x = self.to_f64c();
        Self::from_f64c(x * 0.5 * libm::erfc(-x * std::f64::consts::FRAC_1_SQRT_2))
    }
    /// d/dx of `gelu_erf_elem`: Φ(x) + x·φ(x), φ(x) = e^{−x²/2}/√(2π).
    #[inline(always)]
    fn gelu_erf_grad_elem(self) -> Self {
        let x = self.to_f64c();
        let cdf = 0.5 * libm::erfc(-x * std::f64::consts::FRAC_1_SQRT_2);
        let pdf = (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
        Self::from_f64c(cdf + x * pdf)
    }
    /// Whether this type's GEMM can pack a B once for several products (`prepare_b`,
    /// `gemm_prepared`): f32 on CPUs that run the engine (sgemm/).
    fn has_prepared_gemm() -> bool {
        false
    }
    /// `sgemm::prepare_b` (only called when `has_prepared_gemm()`).
    ///
    /// # Safety
    /// As `sgemm::prepare_b`.
    #[allow(clippy::too_many_arguments)]
    unsafe fn prepare_b(
        _k: usize,
        _n: usize,
        _b: *const Self,
        _rsb: isize,
        _csb: isize,
        _dst: *mut Self,
        _panels: std::ops::Range<usize>,
    ) {
        unreachable!("prepare_b without a prepared GEMM")
    }
    /// `sgemm::sgemm_prepared` (only called when `has_prepared_gemm()`).
    ///
    /// # Safety
    /// As `sgemm::sgemm_prepared`.
    #[allow(clippy::too_many_arguments)]
    unsafe fn gemm_prepared(
        _m: usize,
        _k: usize,
        _n: usize,
        _a: *const Self,
        _rsa: isize,
        _csa: isize,
        _prepared: *const Self,
        _b_cols: usize,
        _first_col: usize,
        _beta: Self,
        _c: *mut Self,
        _rsc: isize,
    ) {
        unreachable!("gemm_prepared without a prepared GEMM")
    }
    /// C[m, n] = alpha · A[m, k] · B[k, n] + beta · C, all addressed by (row, col) strides
    /// (single-threaded: the sgemm engine for f32 where the CPU runs it, matrixmultiply otherwise;
    /// kernels/src/cpu/gemm.rs is the checked, threaded caller).
    ///
    /// # Safety
    /// Every addressed element must lie inside its allocation; C must not alias A or B.
    #[allow(clippy::too_many_arguments)]
    unsafe fn gemm(
        m: usize,
        k: usize,
        n: usize,
        alpha: Self,
        a: *const Self,
        rsa: isize,
        csa: isize,
        b: *const Self,
        rsb: isize,
        csb: isize,
        beta: Self,
        c: *mut Self,
        rsc: isize,
        csc: isize,
    );
}

impl CpuFloat for f32 {
    const NAME: &'static str = "f32";
    #[inline]
    fn exp_shifted(xs: &mut [f32], shift: f32) {
        exp_shifted_f32(xs, shift)
    }
    #[inline]
    fn exp_shifted_sum(xs: &mut [f32], shift: f32) -> f64 {
        exp_shifted_sum_f32(xs, shift)
    }
    #[inline(always)]
    fn exp_elem(self) -> f32 {
        super::math::exp_f32(self)
    }
    #[inline(always)]
    fn tanh_elem(self) -> f32 {
        super::math::tanh_f32(self)
    }
    #[inline(always)]
    fn sigmoid_parts_elem(self) -> (f32, f32) {
        super::math::sigmoid_parts_f32(self)
    }
    #[inline(always)]
    fn gelu_tanh_elem(self) -> f32 {
        super::math::gelu_tanh_f32(self)
    }
    #[inline(always)]
    fn gelu_tanh_and_grad_elem(self) -> (f32, f32) {
        super::math::gelu_tanh_and_grad_f32(self)
    }
    #[inline(always)]
    fn gelu_erf_elem(self) -> f32 {
        super::math::gelu_erf_f32(self)
    }
    #[inline(always)]
    fn gelu_erf_grad_elem(self) -> f32 {
        super::math::gelu_erf_grad_f32(self)
    }
    fn has_prepared_gemm() -> bool {
        super::sgemm::available()
    }
    unsafe fn prepare_b(
        k: usize,
        n: usize,
        b: *const f32,
        rsb: isize,
        csb: isize,
        dst: *mut f32,
        panels: std::ops::Range<usize>,
    ) {
        super::sgemm::prepare_b(k, n, b, rsb, csb, dst, panels)
    }
    unsafe fn gemm_prepared(
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
        super::sgemm::sgemm_prepared(
            m, k, n, a, rsa, csa, prepared, b_cols, first_col, beta, c, rsc,
        )
    }
    unsafe fn gemm(
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
        if super::sgemm::available() {
            super::sgemm::sgemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc)
        } else {
            matrixmultiply::sgemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc)
        }
    }
}

impl CpuFloat for f64 {
    const NAME: &'static str = "f64";
    unsafe fn gemm(
        m: usize,
        k: usize,
        n: usize,
        alpha: f64,
        a: *const f64,
        rsa: isize,
        csa: isize,
        b: *const f64,
        rsb: isize,
        csb: isize,
        beta: f64,
        c: *mut f64,
        rsc: isize,
        csc: isize,
    ) {
        matrixmultiply::dgemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc)
    }
}

/// The tanh GELU's coefficient 0.044715.
pub const GELU_CUBIC: f64 = 0.044715;

/// (√(2/π), 0.044715, ½) in the element type.
#[inline(always)]
fn gelu_tanh_consts<T: CpuFloat>() -> (T, T, T) {
    let c = T::from_f64c((2.0 / std::f64::consts::PI).sqrt());
    (c, T::from_f64c(GELU_CUBIC), T::from_f64c(0.5))
}

/// A public `fn $name(xs: &mut [f32], shift: f32) -> $ret` that runs `$fused` compiled for the
/// CPU's fused multiply-adds (AVX-512 or AVX2 + FMA, as simd.rs detects them), and `$baseline`
/// on x86-64 CPUs without them (where each `mul_add` would be a library call); elsewhere
/// `$fused`.
macro_rules! fma_dispatch {
    ($(#[$doc:meta])* fn $name:ident($xs:ident, $shift:ident) -> $ret:ty {
        fused: $fused:expr,
        baseline: $baseline:expr $(,)?
    }) => {
        $(#[$doc])*
        pub fn $name($xs: &mut [f32], $shift: f32) -> $ret {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
                unsafe fn v512($xs: &mut [f32], $shift: f32) -> $ret {
                    $fused
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn v256($xs: &mut [f32], $shift: f32) -> $ret {
                    $fused
                }
                match super::simd::level() {
                    // SAFETY: the level was detected on this CPU.
                    super::simd::Level::Avx512 => unsafe { v512($xs, $shift) },
                    super::simd::Level::Avx2 => unsafe { v256($xs, $shift) },
                    super::simd::Level::Baseline => $baseline,
                }
            }
            #[cfg(not(target_arch = "x86_64"))]
            $fused
        }
    };
}

fma_dispatch! {
    /// `exp_shifted` for f32 (see the top comment): the fused polynomial (`exp_block_fused`)
    /// wherever the CPU has fused multiply-adds, the unfused one on x86-64 CPUs without them.
    fn exp_shifted_f32(xs, shift) -> () {
        fused: exp_shifted_f32_fused(xs, shift),
        baseline: exp_shifted_f32_unfused(xs, shift),
    }
}

fma_dispatch! {
    /// `exp_shifted_sum` for f32: `exp_shifted_f32` and then `sum_lanes_f64`, the sum taken
    /// block by block as the fused exp leaves each (same numbers, one pass over xs less).
    fn exp_shifted_sum_f32(xs, shift) -> f64 {
        fused: exp_shifted_sum_f32_fused(xs, shift),
        baseline: {
            exp_shifted_f32_unfused(xs, shift);
            super::elementwise::sum_lanes_f64(xs)
        },
    }
}

/// Elements the fused exp works on at once: four AVX2 vectors (two AVX-512 ones) of
/// independent dependency chains, which the core overlaps (one chain at a time left it
/// waiting on the polynomial's latency: 0.96 ns an element on a Zen 3 unfused, 0.53 so;
/// kernels/tests/exp_f32.rs, `bench_exp_shifted_forms`).
const EXP_BLOCK: usize = 32;

/// xs ← exp(xs − shift) by the fused polynomial, in blocks of `EXP_BLOCK` (the tail in a
/// padded block: every element gets the same arithmetic wherever it sits), handing each
/// finished block (the tail: its own elements only) to `visit`. Compiled for its caller's
/// features: outside the dispatchers (tests) each `mul_add` on baseline x86-64 is a library
/// call, about 40 ns an element.
#[inline(always)]
fn exp_fused_blocks(xs: &mut [f32], shift: f32, mut visit: impl FnMut(&[f32])) {
    let mut blocks = xs.chunks_exact_mut(EXP_BLOCK);
    for block in &mut blocks {
        let block: &mut [f32; EXP_BLOCK] = block.try_into().expect("a whole block");
        block.iter_mut().for_each(|x| *x -= shift);
        exp_block_fused(block);
        visit(block);
    }
    let tail = blocks.into_remainder();
    if !tail.is_empty() {
        let mut block = [0f32; EXP_BLOCK];
        block[..tail.len()].copy_from_slice(tail);
        block.iter_mut().for_each(|x| *x -= shift);
        exp_block_fused(&mut block);
        tail.copy_from_slice(&block[..tail.len()]);
        visit(tail);
    }
}

/// xs ← exp(xs − shift) by the fused polynomial (`exp_fused_blocks`; compiled for its
/// caller's features, as that says).
#[inline(always)]
pub fn exp_shifted_f32_fused(xs: &mut [f32], shift: f32) {
    exp_fused_blocks(xs, shift, |_| {});
}

/// `exp_shifted_f32_fused`, returning Σ xs in `sum_lanes_f64`'s order: lane j of
/// `SUM_LANES` f64 accumulators adds element j of every whole group of `SUM_LANES` (a block
/// holds four groups, and blocks start at multiples of it), the last partial group is summed
/// on its own, then the lanes in order plus that.
#[inline(always)]
pub fn exp_shifted_sum_f32_fused(xs: &mut [f32], shift: f32) -> f64 {
    const SUM_LANES: usize = super::elementwise::LANES;
    const _: () = assert!(EXP_BLOCK.is_multiple_of(SUM_LANES));
    let mut acc = [0f64; SUM_LANES];
    let mut tail = 0.0;
    exp_fused_blocks(xs, shift, |done| {
        let groups = done.chunks_exact(SUM_LANES);
        let rest = groups.remainder();
        for g in groups {
            for (a, &x) in acc.iter_mut().zip(g) {
                *a += x as f64;
            }
        }
        if !rest.is_empty() {
            // only the last piece can end in a partial group
            tail = rest.iter().map(|&x| x as f64).sum::<f64>();
        }
    });
    acc.iter().sum::<f64>() + tail
}

/// The constants of the Cephes-style exp (see the top comment): arguments in (88, ln f32::MAX]
/// are evaluated at 88 (so that 2^n stays a normal number); every caller passes x − max ≤ 0.
const EXP_HI: f32 = 88.0;
const EXP_MAX_LOG: f32 = 88.722_84; // ln(f32::MAX)
const EXP_MIN_LOG: f32 = -87.336_55; // ln(2^-126), the smallest normal
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
const ROUND: f32 = 12_582_912.0; // 1.5·2^23: adding and subtracting it rounds to an integer
/// Cephes expf's polynomial: exp(r) ≈ 1 + r + r²·p(r) on |r| ≤ ln(2)/2, p's coefficients from
/// the highest power down.
const EXP_P: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    0.5,
];

/// 2^n from the bits of t = x·log2 e + ROUND, with integer ops only (a float-to-int cast would
/// not vectorize).
#[inline(always)]
fn two_to_n(t: f32) -> f32 {
    f32::from_bits(t.to_bits().wrapping_sub(ROUND.to_bits()).wrapping_add(127) << 23)
}

/// The special cases: +∞ above ln f32::MAX, 0 below the smallest normal's log, NaN kept.
#[inline(always)]
fn exp_special(x: f32, y: f32) -> f32 {
    if x > EXP_MAX_LOG {
        f32::INFINITY
    } else if x < EXP_MIN_LOG {
        0.0
    } else if x.is_nan() {
        x
    } else {
        y
    }
}

/// x ← exp(x) over one block, with fused multiply-adds, the polynomial as 1 + r·(1 + r·p(r))
/// (0.88 ulp at most; the unfused form's order, r²·p + r + 1, reaches 1.003 when fused). Each
/// step runs over the whole block before the next, so the compiler emits the block's vectors
/// side by side.
#[inline(always)]
fn exp_block_fused(x: &mut [f32; EXP_BLOCK]) {
    let mut t = [0f32; EXP_BLOCK];
    let mut r = [0f32; EXP_BLOCK];
    for i in 0..EXP_BLOCK {
        let xc = x[i].clamp(EXP_MIN_LOG, EXP_HI);
        t[i] = xc.mul_add(std::f32::consts::LOG2_E, ROUND);
        let n = t[i] - ROUND;
        r[i] = (-n).mul_add(LN2_LO, (-n).mul_add(LN2_HI, xc));
    }
    let mut p = [EXP_P[0]; EXP_BLOCK];
    for &c in &EXP_P[1..] {
        for i in 0..EXP_BLOCK {
            p[i] = p[i].mul_add(r[i], c);
        }
    }
    for i in 0..EXP_BLOCK {
        let y = r[i].mul_add(r[i].mul_add(p[i], 1.0), 1.0) * two_to_n(t[i]);
        x[i] = exp_special(x[i], y);
    }
}

crate::simd_fn! {
    /// xs ← exp(xs − shift) by the unfused polynomial (x86-64 CPUs without FMA, where a
    /// `mul_add` is a library call).
    pub fn exp_shifted_f32_unfused(xs: &mut [f32], shift: f32) {
        xs.iter_mut().for_each(|x| *x = exp_f32_unfused(*x - shift));
    }
}

/// exp for f32 without branches, calls or fused multiply-adds (< 1 ulp; the top comment).
#[inline(always)]
pub(super) fn exp_f32_unfused(x: f32) -> f32 {
    let xc = x.clamp(EXP_MIN_LOG, EXP_HI);
    let t = xc * std::f32::consts::LOG2_E + ROUND; // bits of t: bits(ROUND) + n
    let n = t - ROUND;
    let r = xc - n * LN2_HI - n * LN2_LO;
    let p = EXP_P[1..].iter().fold(EXP_P[0], |p, &c| p * r + c);
    let y = p * r * r + r + 1.0;
    exp_special(x, y * two_to_n(t))
}
