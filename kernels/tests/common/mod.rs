//! Shared helpers of the CPU op tests: seeded random data and the finite-difference checker.
//!
//! Gradcheck method: for an op out = f(x), take a random linear functional L(x) = Σ out·r
//! (r fixed, random), so that one backward with dout = r yields ∂L/∂x for every input element,
//! and compare each element with a fourth-order central difference of L along e_i, in f64.

#![allow(dead_code)] // each test binary uses a different subset

use ferrotron_kernels::Backend;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::Instant;

pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// n values uniform in [-1, 1).
pub fn uniform(rng: &mut ChaCha8Rng, n: usize) -> Vec<f64> {
    (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
}

pub fn uniform_f32(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// FD step of the fourth-order stencil below. Its truncation error is h⁴·|f⁽⁵⁾|/30 ≈ 3e-14·|f⁽⁵⁾|
/// and its rounding error about 1.5·eps·|L|/h ≈ 3e-13·|L|; a plain central difference would
/// need h ≈ 1e-5 and then carry a rounding error of ~1e-10 absolute, which is more than 1e-6
/// of the small elements of e.g. dk in attention (whose rows of dS sum to zero).
pub const FD_STEP: f64 = 1e-3;

/// Allowed error of one gradient element (see `grad_error`).
pub const FD_TOL: f64 = 1e-6;

/// Central finite differences of `loss` around `x0`, one per element, by the fourth-order
/// five-point stencil  f'(x) ≈ (−f(x+2h) + 8f(x+h) − 8f(x−h) + f(x−2h)) / 12h.
pub fn fd_grad(x0: &[f64], mut loss: impl FnMut(&[f64]) -> f64) -> Vec<f64> {
    let mut x = x0.to_vec();
    let mut at = |x: &mut Vec<f64>, i: usize, steps: f64| {
        x[i] = x0[i] + steps * FD_STEP;
        let l = loss(x);
        x[i] = x0[i];
        l
    };
    (0..x0.len())
        .map(|i| {
            let (p2, p1, m1, m2) = (
                at(&mut x, i, 2.0),
                at(&mut x, i, 1.0),
                at(&mut x, i, -1.0),
                at(&mut x, i, -2.0),
            );
            (-p2 + 8.0 * p1 - 8.0 * m1 + m2) / (12.0 * FD_STEP)
        })
        .collect()
}

/// Largest element error of `analytic` against `numeric`:
///   err_i = |a_i − n_i| / (|n_i| + 1e-3 · max_j |n_j|).
/// A pure relative error is meaningless for elements that are (near) zero, where the FD result
/// carries an absolute rounding error of order eps·|L|/h; the floor of 1e-3 of the tensor's
/// largest gradient bounds the denominator away from zero while keeping the check relative for
/// every element that carries weight (an error of 1e-6 on a 1e-3-scale element is still caught).
pub fn grad_error(analytic: &[f64], numeric: &[f64]) -> f64 {
    assert_eq!(analytic.len(), numeric.len(), "gradient lengths differ");
    let scale = numeric.iter().fold(0f64, |m, v| m.max(v.abs()));
    assert!(
        scale > 0.0,
        "the numeric gradient is identically zero: the check would be vacuous"
    );
    analytic
        .iter()
        .zip(numeric)
        .map(|(a, n)| (a - n).abs() / (n.abs() + 1e-3 * scale))
        .fold(0f64, f64::max)
}

/// Asserts that `analytic` matches the finite-difference gradient of `loss` at `x0`; prints and
/// returns the error.
pub fn fd_check(name: &str, x0: &[f64], analytic: &[f64], loss: impl FnMut(&[f64]) -> f64) -> f64 {
    let numeric = fd_grad(x0, loss);
    let err = grad_error(analytic, &numeric);
    println!("gradcheck {name:<40} n={:<6} max err {err:.3e}", x0.len());
    assert!(
        err <= FD_TOL,
        "gradcheck {name}: max error {err:.3e} > {FD_TOL:.0e}"
    );
    err
}

/// Max |a − b| / max |b|.
pub fn max_rel_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f64, |m, v| m.max(v.abs()));
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f64, f64::max)
        / scale
}

/// ‖a − b‖ / ‖b‖ in f64; infinite when `a` holds a non-finite value (unwritten, poisoned output).
pub fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    if a.iter().any(|x| !x.is_finite()) {
        return f64::INFINITY;
    }
    let num: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
        .sum();
    let den: f64 = b.iter().map(|&y| (y as f64).powi(2)).sum();
    (num / den.max(1e-300)).sqrt()
}

/// Milliseconds of `f` on backend `b`: the median of 20 runs after 3 warm-ups, host clock around
/// a synchronize (for the GPU benches' CUDA-BENCH lines).
pub fn median_ms<B: Backend>(b: &B, mut f: impl FnMut()) -> f64 {
    for _ in 0..3 {
        f();
    }
    b.synchronize().unwrap();
    let mut ms: Vec<f64> = (0..20)
        .map(|_| {
            let t = Instant::now();
            f();
            b.synchronize().unwrap();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    ms[10]
}
