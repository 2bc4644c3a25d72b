//! exp and tanh of f32 arguments without a call per element: branch-free, so loops over them
//! vectorize. Both are evaluated in f64 and rounded to f32 once, which makes them as accurate
//! as glibc's expf (≤ 0.502 ulp) and more accurate than its tanhf (2.2 ulp); kernels/tests/
//! exp_f32.rs measures both over every 7th f32 of their ranges.
//!
//!   exp:  x = n·ln 2 + r, n = round(x·log2 e), |r| ≤ ln 2 / 2 (ln 2 in two parts, so n·LN2_HI
//!         is exact), exp(r) by its Taylor polynomial to r^10 (truncation < 1e-12 relative),
//!         2^n from the bits. Arguments are clamped to [-104, 89]: below, every f32 result is 0
//!         (2^-150 rounds to 0); above, every one is +inf. NaN stays NaN.
//!   tanh: |y| < 1/16: y + y³·(−1/3 + y²·(2/15 + y²·(−17/315 + y²·62/2835)))  (next term < 1e-14
//!         relative); else sign(y)·(1 − 2 / (exp(2|y|) + 1)) with |y| clamped to 10 (tanh(10)
//!         rounds to 1 in f32). NaN stays NaN.
//! No `mul_add`: every ISA computes the same bits (see simd.rs).

const LOG2E: f64 = std::f64::consts::LOG2_E;
/// ln 2 to 32 significant bits (fdlibm's ln2_hi), so n·LN2_HI is exact for |n| < 2^21.
const LN2_HI: f64 = 0.693_147_180_369_123_8;
const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
/// 1.5·2^52: adding and subtracting it rounds to an integer.
const ROUND: f64 = 6_755_399_441_055_744.0;

/// exp(x) for x in [-104, 89] (or NaN), relative error < 2e-12.
#[inline(always)]
fn exp_core(x: f64) -> f64 {
    let xc = x.clamp(-104.0, 89.0);
    let t = xc * LOG2E + ROUND;
    let n = t - ROUND;
    let r = (xc - n * LN2_HI) - n * LN2_LO;
    // Σ_{k≤10} r^k / k!, Horner
    let mut p = 1.0 / 3_628_800.0;
    p = p * r + 1.0 / 362_880.0;
    p = p * r + 1.0 / 40_320.0;
    p = p * r + 1.0 / 5_040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    // 2^n: n + 1023 in the exponent field (n in [-151, 129]: a normal f64)
    let two_n = f64::from_bits(t.to_bits().wrapping_sub(ROUND.to_bits()).wrapping_add(1023) << 52);
    p * two_n
}

/// exp(x), f32, rounded once from f64 (see the top comment).
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    exp_core(x as f64) as f32
}

/// tanh(y), f32, rounded once from f64 (see the top comment).
#[inline(always)]
pub fn tanh_f32(y: f32) -> f32 {
    let yd = y as f64;
    let x = yd.abs().min(10.0);
    let x2 = x * x;
    let small =
        x + x * x2 * (-1.0 / 3.0 + x2 * (2.0 / 15.0 + x2 * (-17.0 / 315.0 + x2 * (62.0 / 2835.0))));
    let e = exp_core(2.0 * x);
    let large = 1.0 - 2.0 / (e + 1.0);
    let t = if x < 0.0625 { small } else { large };
    let signed = t.copysign(yd);
    if y.is_nan() {
        y
    } else {
        signed as f32
    }
}
