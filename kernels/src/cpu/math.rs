//! exp, tanh, σ and the two GELUs of f32 arguments without a call per element: branch-free, so
//! loops over them vectorize. exp and tanh are evaluated in f64 and rounded to f32 once, which
//! makes them as accurate as glibc's expf (≤ 0.502 ulp) and more accurate than its tanhf
//! (2.2 ulp); so is the exact GELU. σ and the tanh GELU run in f32 arithmetic (eight lanes a
//! vector with AVX2, not four), by forms that do not cancel. kernels/tests/exp_f32.rs measures
//! each against f64 over every 61st f32 of its range.
//!
//!   exp:  x = n·ln 2 + r, n = round(x·log2 e), |r| ≤ ln 2 / 2 (ln 2 in two parts, so n·LN2_HI
//!         is exact), exp(r) by its Taylor polynomial to r^10 (truncation < 1e-12 relative),
//!         2^n from the bits. Arguments are clamped to [-104, 89]: below, every f32 result is 0
//!         (2^-150 rounds to 0); above, every one is +inf. NaN stays NaN.
//!   tanh: |y| < 1/16: y + y³·(−1/3 + y²·(2/15 + y²·(−17/315 + y²·62/2835)))  (next term < 1e-14
//!         relative); else sign(y)·(1 − 2 / (exp(2|y|) + 1)) with |y| clamped to 10 (tanh(10)
//!         rounds to 1 in f32). NaN stays NaN.
//!   exact GELU: y = x·Φ(x), y' = Φ(x) + x·φ(x), Φ(x) = ½·erfc(−x/√2), φ(x) = e^{−x²/2}/√(2π);
//!         erfc(z) for z ≥ 0 as t·exp(g(t) − z²), t = 1/(1 + z/2) (Numerical Recipes' form), g a
//!         degree-12 polynomial fitted over z ∈ [0, 10.5] (Chebyshev least squares against
//!         Python's math.erfc): relative error < 2e-10; Φ(x) for x > 0 as 1 − ½·erfc(x/√2), so
//!         neither tail cancels. Beyond z = 10.5 every f32 result is 0 (or x). NaN stays NaN.
//!   sigmoid (SiLU, and the tanh GELU below): s = σ(z) = 1/(1 + E), E = e^{−z}, in f32
//!         arithmetic with float.rs's unfused f32 exp (< 1 ulp), and 1 − s as E·s, so that
//!         neither cancels (1 − s does where s is near 1). Where −z > 87, s would leave f32's
//!         normal range and is taken as 0 (1 − s = 1); below ln(2^-126), E is 0 (s = 1,
//!         1 − s = 0). NaN stays NaN.
//!   tanh GELU: y = ½x(1 + tanh u), u = c(x + 0.044715x³), c = √(2/π), by
//!         ½(1 + tanh u) = σ(2u) = s: y = x·s, y' = s + 2c·x·s(1 − s)(1 + 3·0.044715x²), so
//!         nothing cancels where tanh u is near −1 (the form ½x(1 + t) does, in f32).
//!         kernels/tests/exp_f32.rs measures both against f64.
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

/// g(t) = ln(erfc(z)·e^{z²}/t) at t = 1/(1 + z/2), ascending powers of t (see the top comment).
const ERFC_G: [f64; 13] = [
    -1.2655052003805018,
    0.9997550215603411,
    0.3788636299897848,
    0.047425372936535815,
    0.13302167656750963,
    -1.0656823878989683,
    2.6492571809744137,
    -5.732661171153066,
    8.517234515570534,
    -7.8663466392159735,
    4.391175646372818,
    -1.372349259737476,
    0.18581161458640252,
];

/// ½·erfc(z) for z ≥ 0, relative error < 2e-10; 0 from z = 10.5 on (erfc(10.5) = 1.4e-49,
/// far below f32's smallest subnormal). The exponent g − z² reaches −112, below exp_core's
/// range, so half of it is taken and squared.
#[inline(always)]
fn half_erfc(z: f64) -> f64 {
    let zc = z.min(10.5);
    let t = 1.0 / (1.0 + 0.5 * zc);
    let mut g = ERFC_G[12];
    for &c in ERFC_G[..12].iter().rev() {
        g = g * t + c;
    }
    let e = exp_core(0.5 * (g - zc * zc));
    let v = 0.5 * t * e * e;
    if z >= 10.5 {
        0.0
    } else {
        v
    }
}

/// Φ(x), the standard normal distribution function, in f64 (see the top comment).
#[inline(always)]
fn normal_cdf(x: f64) -> f64 {
    let tail = half_erfc(x.abs() * std::f64::consts::FRAC_1_SQRT_2);
    if x < 0.0 {
        tail
    } else {
        1.0 - tail
    }
}

/// 1/√(2π)
const INV_SQRT_2PI: f64 = 0.398_942_280_401_432_7;

/// Exact (erf) GELU, x·Φ(x), f32, rounded once from f64; 0 below x = −20 (−∞ included).
#[inline(always)]
pub fn gelu_erf_f32(x: f32) -> f32 {
    let xd = x as f64;
    let y = xd * normal_cdf(xd);
    if x.is_nan() {
        x
    } else if xd < -20.0 {
        0.0
    } else {
        y as f32
    }
}

/// d/dx of the exact GELU, Φ(x) + x·φ(x), f32, rounded once from f64; 0 below x = −20 and 1
/// above 20. φ's exponent −x²/2 reaches −200, so half of it is taken and squared.
#[inline(always)]
pub fn gelu_erf_grad_f32(x: f32) -> f32 {
    let xd = x as f64;
    let h = exp_core(-0.25 * xd * xd);
    let g = normal_cdf(xd) + xd * INV_SQRT_2PI * h * h;
    if x.is_nan() {
        x
    } else if xd < -20.0 {
        0.0
    } else if xd > 20.0 {
        1.0
    } else {
        g as f32
    }
}

/// Above this −z, σ(z) would leave f32's normal range: it is taken as 0.
const SIGMOID_EXP_MAX: f32 = 87.0;

/// (σ(z), 1 − σ(z)) in f32 arithmetic (see the top comment).
#[inline(always)]
pub fn sigmoid_parts_f32(z: f32) -> (f32, f32) {
    let minus_z = -z;
    // false for NaN, which then passes on, so the results stay NaN
    let below_normal = minus_z > SIGMOID_EXP_MAX;
    let e = super::float::exp_f32_unfused(if below_normal {
        SIGMOID_EXP_MAX
    } else {
        minus_z
    });
    let s = 1.0 / (1.0 + e);
    if below_normal {
        (0.0, 1.0)
    } else {
        (s, e * s)
    }
}

/// 2·√(2/π), the tanh GELU's c doubled.
const GELU_TWO_C: f32 =
    (2.0 * std::f64::consts::FRAC_2_SQRT_PI * std::f64::consts::FRAC_1_SQRT_2) as f32;
const GELU_CUBIC_F32: f32 = super::float::GELU_CUBIC as f32;

/// (s, 1 − s), s = σ(2u) = ½(1 + tanh u), for the tanh GELU at x (see the top comment).
#[inline(always)]
fn gelu_tanh_sigmoid_f32(x: f32) -> (f32, f32) {
    sigmoid_parts_f32(GELU_TWO_C * (x + GELU_CUBIC_F32 * x * x * x))
}

/// The tanh GELU ½x(1 + tanh(c(x + 0.044715x³))) in f32 arithmetic (see the top comment).
#[inline(always)]
pub fn gelu_tanh_f32(x: f32) -> f32 {
    x * gelu_tanh_sigmoid_f32(x).0
}

/// The tanh GELU and its derivative s + 2c·x·s(1 − s)(1 + 3·0.044715x²) (see the top comment).
#[inline(always)]
pub fn gelu_tanh_and_grad_f32(x: f32) -> (f32, f32) {
    let (s, one_minus_s) = gelu_tanh_sigmoid_f32(x);
    let slope = GELU_TWO_C * x * s * one_minus_s * (1.0 + 3.0 * GELU_CUBIC_F32 * x * x);
    (x * s, s + slope)
}
