//! CPU: the residual add fused with the norm after it (`residual_rmsnorm_forward`,
//! `residual_layernorm_forward`).
//! - Forward: bit for bit `add_inplace` then the norm's forward (f32 and f64), for h, the output
//!   and the saved statistics.
//! - Backward: there is no fused backward op. With h' = h + y, out = norm(h'), and a gradient `s`
//!   arriving on the residual stream h' from above, the existing norm backward run with
//!   x = h' and dx = s (it ADDS into dx) yields ∂L/∂h' — which is both ∂L/∂h and ∂L/∂y, since
//!   the add's backward is the identity. Checked against f64 finite differences of
//!   L(h, y) = Σ out·r + Σ h'·s.

mod common;

use common::*;
use ferrotron_kernels::cpu::{CpuBackend, CpuFloat};
use ferrotron_kernels::{Backend, Dst, Src, WeightGrads};

const EPS: f64 = 1e-5;

fn cast<T: CpuFloat>(v: &[f64]) -> Vec<T> {
    v.iter().map(|&x| T::from_f64c(x)).collect()
}

fn bits<T: CpuFloat>(v: &[T]) -> Vec<u64> {
    v.iter().map(|x| x.to_f64c().to_bits()).collect()
}

/// Fused vs unfused on one shape; every output compared bit for bit.
fn fused_matches_unfused<T: CpuFloat>(n: usize, d: usize, seed: u64) {
    let be = CpuBackend::<T>::new();
    let mut g = rng(seed);
    let scale = |v: Vec<f64>, s: f64| v.into_iter().map(|a| a * s).collect::<Vec<_>>();
    let h0: Vec<T> = cast(&scale(uniform(&mut g, n * d), 3.0));
    let y: Vec<T> = cast(&uniform(&mut g, n * d));
    let w: Vec<T> = cast(&uniform(&mut g, d));
    let b: Vec<T> = cast(&uniform(&mut g, d));
    let z = |len: usize| vec![T::zero(); len];

    // RMSNorm
    let (mut h_f, mut out_f, mut rstd_f) = (h0.clone(), z(n * d), z(n));
    be.residual_rmsnorm_forward(
        Dst::all(&mut h_f),
        Src::all(&y),
        Src::all(&w),
        Dst::all(&mut out_f),
        Dst::all(&mut rstd_f),
        n,
        d,
        EPS,
        0.0,
    )
    .unwrap();
    let (mut h_u, mut out_u, mut rstd_u) = (h0.clone(), z(n * d), z(n));
    be.add_inplace(Dst::all(&mut h_u), Src::all(&y)).unwrap();
    be.rmsnorm_forward(
        Src::all(&h_u),
        Src::all(&w),
        Dst::all(&mut out_u),
        Dst::all(&mut rstd_u),
        n,
        d,
        EPS,
        0.0,
    )
    .unwrap();
    let tag = format!("{} [{n} x {d}]", T::NAME);
    assert_eq!(bits(&h_f), bits(&h_u), "residual_rmsnorm h {tag}");
    assert_eq!(bits(&out_f), bits(&out_u), "residual_rmsnorm out {tag}");
    assert_eq!(bits(&rstd_f), bits(&rstd_u), "residual_rmsnorm rstd {tag}");

    // LayerNorm
    let (mut h_f, mut out_f, mut mean_f, mut rstd_f) = (h0.clone(), z(n * d), z(n), z(n));
    be.residual_layernorm_forward(
        Dst::all(&mut h_f),
        Src::all(&y),
        Src::all(&w),
        Src::all(&b),
        Dst::all(&mut out_f),
        Dst::all(&mut mean_f),
        Dst::all(&mut rstd_f),
        n,
        d,
        EPS,
    )
    .unwrap();
    let (mut h_u, mut out_u, mut mean_u, mut rstd_u) = (h0.clone(), z(n * d), z(n), z(n));
    be.add_inplace(Dst::all(&mut h_u), Src::all(&y)).unwrap();
    be.layernorm_forward(
        Src::all(&h_u),
        Src::all(&w),
        Src::all(&b),
        Dst::all(&mut out_u),
        Dst::all(&mut mean_u),
        Dst::all(&mut rstd_u),
        n,
        d,
        EPS,
    )
    .unwrap();
    assert_eq!(bits(&h_f), bits(&h_u), "residual_layernorm h {tag}");
    assert_eq!(bits(&out_f), bits(&out_u), "residual_layernorm out {tag}");
    assert_eq!(
        bits(&mean_f),
        bits(&mean_u),
        "residual_layernorm mean {tag}"
    );
    assert_eq!(
        bits(&rstd_f),
        bits(&rstd_u),
        "residual_layernorm rstd {tag}"
    );
    println!("residual norms {tag}: fused == add_inplace + norm, bit for bit");
}

#[test]
fn fused_residual_norms_equal_add_then_norm_bitwise() {
    for (n, d, seed) in [(70, 33, 1), (3, 1000, 2), (1, 1, 3), (129, 64, 4)] {
        fused_matches_unfused::<f32>(n, d, seed);
        fused_matches_unfused::<f64>(n, d, seed);
    }
}

#[test]
fn regions_inside_larger_buffers() {
    // h, y, out and the statistics as regions at offsets: only the named regions change.
    let be = CpuBackend::<f32>::new();
    let (n, d) = (4, 8);
    let mut g = rng(5);
    let h0 = uniform_f32(&mut g, n * d + 3);
    let y = uniform_f32(&mut g, n * d + 1);
    let w = uniform_f32(&mut g, d);
    let (mut h, mut out, mut rstd) = (h0.clone(), vec![7f32; n * d + 2], vec![7f32; n + 2]);
    be.residual_rmsnorm_forward(
        Dst::range(&mut h, 3, n * d),
        Src::range(&y, 1, n * d),
        Src::all(&w),
        Dst::range(&mut out, 2, n * d),
        Dst::range(&mut rstd, 1, n),
        n,
        d,
        EPS,
        0.0,
    )
    .unwrap();
    assert_eq!(h[..3], h0[..3]);
    for i in 0..n * d {
        assert_eq!(h[3 + i], h0[3 + i] + y[1 + i]);
    }
    assert_eq!(out[..2], [7.0, 7.0]);
    assert_eq!(rstd[0], 7.0);
    assert_eq!(rstd[n + 1], 7.0);
}

// ---- backward: the existing norm backward is the fused op's backward -------------------------

const N: usize = 4;
const D: usize = 7;
type B64 = CpuBackend<f64>;

/// (h', out, mean, rstd) of the fused op; `ln` picks LayerNorm, else RMSNorm.
fn fused(h: &[f64], y: &[f64], w: &[f64], b: &[f64], ln: bool) -> [Vec<f64>; 4] {
    let be = B64::new();
    let (mut h, mut out, mut mean, mut rstd) =
        (h.to_vec(), vec![0.0; N * D], vec![0.0; N], vec![0.0; N]);
    let (y, w, b) = (y.to_vec(), w.to_vec(), b.to_vec());
    if ln {
        be.residual_layernorm_forward(
            Dst::all(&mut h),
            Src::all(&y),
            Src::all(&w),
            Src::all(&b),
            Dst::all(&mut out),
            Dst::all(&mut mean),
            Dst::all(&mut rstd),
            N,
            D,
            EPS,
        )
        .unwrap();
    } else {
        be.residual_rmsnorm_forward(
            Dst::all(&mut h),
            Src::all(&y),
            Src::all(&w),
            Dst::all(&mut out),
            Dst::all(&mut rstd),
            N,
            D,
            EPS,
            0.0,
        )
        .unwrap();
    }
    [h, out, mean, rstd]
}

#[test]
fn norm_backward_is_the_fused_backward() {
    for ln in [false, true] {
        let mut g = rng(if ln { 32 } else { 31 });
        let (h0, y, w, b) = (
            uniform(&mut g, N * D),
            uniform(&mut g, N * D),
            uniform(&mut g, D),
            uniform(&mut g, D),
        );
        let (r, s) = (uniform(&mut g, N * D), uniform(&mut g, N * D));
        let loss = |h: &[f64], y: &[f64], w: &[f64], b: &[f64]| {
            let [hn, out, _, _] = fused(h, y, w, b, ln);
            dot(&out, &r) + dot(&hn, &s)
        };
        let [hn, _, mean, rstd] = fused(&h0, &y, &w, &b, ln);
        // dres starts as the gradient arriving on the residual stream; the norm backward adds.
        let mut dres = s.clone();
        let mut unit = vec![0.0; 2 * D];
        let be = B64::new();
        if ln {
            be.layernorm_backward(
                Src::all(&hn),
                Src::all(&w),
                Src::all(&mean),
                Src::all(&rstd),
                Src::all(&r),
                Dst::all(&mut dres),
                WeightGrads::new(&mut unit, (0, D), Some((D, D))),
                N,
                D,
            )
            .unwrap();
        } else {
            be.rmsnorm_backward(
                Src::all(&hn),
                Src::all(&w),
                Src::all(&rstd),
                Src::all(&r),
                Dst::all(&mut dres),
                Dst::range(&mut unit, 0, D),
                N,
                D,
                0.0,
            )
            .unwrap();
        }
        let name = if ln {
            "residual_layernorm"
        } else {
            "residual_rmsnorm"
        };
        fd_check(&format!("{name} dh"), &h0, &dres, |h| loss(h, &y, &w, &b));
        fd_check(&format!("{name} dy"), &y, &dres, |y| loss(&h0, y, &w, &b));
        fd_check(&format!("{name} dw"), &w, &unit[..D], |w| {
            loss(&h0, &y, w, &b)
        });
        if ln {
            fd_check(&format!("{name} db"), &b, &unit[D..], |b| {
                loss(&h0, &y, &w, b)
            });
        }
    }
}
