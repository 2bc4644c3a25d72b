//! The f32 exp and tanh the CPU backend uses instead of per-element libm calls, against f64
//! references, in ulps of the correctly rounded f32 result, over every 61st f32 of their ranges
//! (both signs): `CpuFloat::exp_shifted` (softmax, attention, cross-entropy) and `exp_elem` /
//! `tanh_elem` (tanh softcapping). The bounds are what was measured (glibc on the dev machine:
//! expf 0.502 ulp, tanhf 2.16 ulp); each of ours must be at least as accurate as libm's.
//! σ and 1 − σ (`sigmoid_parts_elem`, SiLU) and the tanh GELU with its derivative
//! (`gelu_tanh_elem`, `gelu_tanh_and_grad_elem`), all in f32 arithmetic, against f64.
//! The exact GELU x·Φ(x) and its derivative Φ(x) + x·φ(x) (`gelu_erf_elem`,
//! `gelu_erf_grad_elem`) against f64 through libm's erfc.

use ferrotron_kernels::cpu::{float, CpuFloat};

/// xs ← exp(xs − shift), in one of its forms.
type ExpShifted = fn(&mut [f32], f32);

/// |y − exact| in units of the f32 spacing at the rounded exact value.
fn ulps(y: f32, exact: f64) -> f64 {
    let e = (exact as f32).abs();
    let ulp = if e == 0.0 {
        f32::from_bits(1) as f64
    } else if e.is_infinite() {
        return if y == exact as f32 {
            0.0
        } else {
            f64::INFINITY
        };
    } else {
        f32::from_bits(e.to_bits() + 1) as f64 - e as f64
    };
    ((y as f64) - exact).abs() / ulp
}

/// Every 61st f32 from 0 to `max` magnitude, both signs, as (x, f32 result, f64 reference).
fn sweep(max: f32, f: impl Fn(&[f32]) -> Vec<f32>, reference: impl Fn(f64) -> f64) -> (f64, f32) {
    let xs: Vec<f32> = (0..max.to_bits())
        .step_by(61)
        .flat_map(|b| [f32::from_bits(b), -f32::from_bits(b)])
        .collect();
    let ys = f(&xs);
    let mut worst = (0.0, 0.0);
    for (&x, &y) in xs.iter().zip(&ys) {
        let e = ulps(y, reference(x as f64));
        if e > worst.0 {
            worst = (e, x);
        }
    }
    worst
}

/// Both forms of the f32 exp (fused multiply-adds where the CPU has them, else unfused), and
/// `exp_shifted` itself, which picks one: under 1 ulp over the range.
#[test]
fn exp_shifted_f32_accuracy_and_special_values() {
    let forms: [(&str, ExpShifted); 3] = [
        ("exp_shifted", f32::exp_shifted),
        ("fused", float::exp_shifted_f32_fused),
        ("unfused", float::exp_shifted_f32_unfused),
    ];
    for (name, exp_shifted) in forms {
        let (worst, at) = sweep(
            88.0,
            |xs| {
                let mut ys: Vec<f32> = xs.iter().map(|&x| x.max(-87.3)).collect();
                exp_shifted(&mut ys, 0.0);
                ys
            },
            |x| x.max(-87.3f32 as f64).exp(),
        );
        println!("{name} (Cephes polynomial): max {worst:.3} ulp (at {at}) on [-87.3, 88]");
        assert!(worst < 1.0, "{name}: {worst} ulp at {at}");
    }
    exp_special_values(f32::exp_shifted);
    exp_special_values(float::exp_shifted_f32_fused);
    exp_special_values(float::exp_shifted_f32_unfused);
}

/// exp of the special values, and the shift subtracted first, at every position of a block
/// and of its tail.
fn exp_special_values(exp_shifted: fn(&mut [f32], f32)) {
    let mut special = [
        f32::NEG_INFINITY,
        f32::INFINITY,
        f32::NAN,
        0.0,
        100.0,
        -100.0,
        1.0,
    ];
    exp_shifted(&mut special, 0.0);
    assert_eq!(special[0], 0.0);
    assert_eq!(special[1], f32::INFINITY);
    assert!(special[2].is_nan());
    assert_eq!(special[3], 1.0);
    assert_eq!(special[4], f32::INFINITY);
    assert_eq!(special[5], 0.0);
    assert!((special[6] as f64 - 1f64.exp()).abs() < 1e-6);

    // the shift is subtracted first
    let mut shifted = [3.0f32, 2.0];
    exp_shifted(&mut shifted, 3.0);
    assert_eq!(shifted[0], 1.0);
    assert!((shifted[1] as f64 - (-1f64).exp()).abs() < 1e-7);

    // an element's result does not depend on where it sits (block or tail, any length)
    let xs: Vec<f32> = (0..200)
        .map(|i| (i as f32 * 0.37).sin() * 30.0 - 20.0)
        .collect();
    let mut whole = xs.clone();
    exp_shifted(&mut whole, 1.5);
    for start in [0, 1, 5, 31, 32, 33, 100] {
        for len in [0, 1, 7, 31, 32, 33, 64, 67] {
            let end = (start + len).min(xs.len());
            let mut part = xs[start..end].to_vec();
            exp_shifted(&mut part, 1.5);
            let same = part
                .iter()
                .zip(&whole[start..end])
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(
                same,
                "exp of elements {start}..{end} depends on their position"
            );
        }
    }
}

/// `exp_shifted_sum` (the cross-entropy's row) gives the bits of `exp_shifted` followed by
/// `sum_lanes_f64`, in every form, at lengths around the exp's blocks and the sum's lanes.
#[test]
fn exp_shifted_sum_gives_the_bits_of_exp_then_sum() {
    use ferrotron_kernels::cpu::elementwise::sum_lanes_f64;
    type ExpSum = fn(&mut [f32], f32) -> f64;
    let forms: [(&str, ExpSum); 2] = [
        ("exp_shifted_sum", f32::exp_shifted_sum),
        ("fused", float::exp_shifted_sum_f32_fused),
    ];
    let xs: Vec<f32> = (0..50_300)
        .map(|i| (i as f32 * 0.113).sin() * 12.0 + (i % 7) as f32)
        .collect();
    for (name, exp_sum) in forms {
        for len in (0..80).chain([95, 96, 97, 1000, 50_257, 50_300]) {
            let mut want = xs[..len].to_vec();
            f32::exp_shifted(&mut want, 17.0);
            let want_sum = sum_lanes_f64(&want);
            let mut got = xs[..len].to_vec();
            let got_sum = exp_sum(&mut got, 17.0);
            assert_eq!(
                got_sum.to_bits(),
                want_sum.to_bits(),
                "{name}: sum of {len}: {got_sum} against {want_sum}"
            );
            let same = got
                .iter()
                .zip(&want)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{name}: the exps of {len} elements differ");
        }
    }
}

#[test]
fn exp_elem_f32_is_as_accurate_as_libm() {
    let (ours, at) = sweep(
        104.0,
        |xs| xs.iter().map(|&x| x.exp_elem()).collect(),
        f64::exp,
    );
    let (libm, _) = sweep(104.0, |xs| xs.iter().map(|&x| x.exp()).collect(), f64::exp);
    println!("exp_elem: max {ours:.4} ulp (at {at}); libm expf {libm:.4} ulp, over [-104, 104]");
    assert!(ours <= 0.501, "exp_elem: {ours} ulp at {at}");
    assert!(ours <= libm, "exp_elem {ours} ulp, libm {libm} ulp");
    for (x, want) in [
        (f32::NEG_INFINITY, 0.0),
        (-200.0, 0.0),
        (0.0, 1.0),
        (89.0, f32::INFINITY),
        (f32::INFINITY, f32::INFINITY),
        (-103.0, (-103f64).exp() as f32),
    ] {
        assert_eq!(x.exp_elem(), want, "exp({x})");
    }
    assert!(f32::NAN.exp_elem().is_nan());
}

#[test]
fn tanh_elem_f32_is_as_accurate_as_libm() {
    let (ours, at) = sweep(
        12.0,
        |xs| xs.iter().map(|&x| x.tanh_elem()).collect(),
        f64::tanh,
    );
    let (libm, _) = sweep(12.0, |xs| xs.iter().map(|&x| x.tanh()).collect(), f64::tanh);
    println!("tanh_elem: max {ours:.4} ulp (at {at}); libm tanhf {libm:.4} ulp, over [-12, 12]");
    assert!(ours <= 0.501, "tanh_elem: {ours} ulp at {at}");
    assert!(ours <= libm, "tanh_elem {ours} ulp, libm {libm} ulp");
    for (x, want) in [
        (0.0f32, 0.0f32),
        (f32::INFINITY, 1.0),
        (f32::NEG_INFINITY, -1.0),
        (50.0, 1.0),
        (1e-30, 1e-30),
    ] {
        assert_eq!(x.tanh_elem(), want, "tanh({x})");
    }
    assert!(f32::NAN.tanh_elem().is_nan());
    assert_eq!((-0.0f32).tanh_elem().to_bits(), (-0.0f32).to_bits());
}

/// x·Φ(x) and Φ(x) + x·φ(x) in f64 (libm's erfc), the references for the exact GELU.
fn exact_gelu(x: f64) -> f64 {
    0.5 * x * libm::erfc(-x * std::f64::consts::FRAC_1_SQRT_2)
}

fn exact_gelu_grad_parts(x: f64) -> (f64, f64) {
    let cdf = 0.5 * libm::erfc(-x * std::f64::consts::FRAC_1_SQRT_2);
    let pdf = (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
    (cdf, x * pdf)
}

#[test]
fn exact_gelu_f32_is_correctly_rounded_nearly() {
    // Every 61st f32 of [-16, 16]: below −14.8 every result is 0 (or −0) in f32, above 16 it is x.
    let (ours, at) = sweep(
        16.0,
        |xs| xs.iter().map(|&x| x.gelu_erf_elem()).collect(),
        exact_gelu,
    );
    println!("gelu_erf_elem: max {ours:.4} ulp (at {at}) over [-16, 16]");
    assert!(ours <= 0.51, "gelu_erf_elem: {ours} ulp at {at}");
    assert_eq!(0f32.gelu_erf_elem(), 0.0);
    assert_eq!(f32::INFINITY.gelu_erf_elem(), f32::INFINITY);
    assert_eq!((-30f32).gelu_erf_elem(), 0.0);
    assert!(f32::NAN.gelu_erf_elem().is_nan());

    // The derivative crosses 0 near x = −0.75 (Φ and x·φ cancel), so it is measured against the
    // size of its two terms: |g − exact| / (Φ + |x·φ|), where f32 rounding alone gives ≤ 6e-8
    // (the size floored at 1e-30: below x ≈ −11 the terms leave f32's normal range, where a
    // subnormal step is the rounding).
    let xs: Vec<f32> = (0..16f32.to_bits())
        .step_by(61)
        .flat_map(|b| [f32::from_bits(b), -f32::from_bits(b)])
        .collect();
    let mut worst = (0.0f64, 0.0f32);
    for &x in &xs {
        let (cdf, xpdf) = exact_gelu_grad_parts(x as f64);
        let size = (cdf + xpdf.abs()).max(1e-30);
        let err = (x.gelu_erf_grad_elem() as f64 - (cdf + xpdf)).abs() / size;
        if err > worst.0 {
            worst = (err, x);
        }
    }
    println!(
        "gelu_erf_grad_elem: max {:.3e} of (Φ + |xφ|) (at {})",
        worst.0, worst.1
    );
    assert!(
        worst.0 < 1e-7,
        "gelu_erf_grad_elem: {:e} at {}",
        worst.0,
        worst.1
    );
    assert_eq!((-30f32).gelu_erf_grad_elem(), 0.0);
    assert_eq!(30f32.gelu_erf_grad_elem(), 1.0);
    assert!(f32::NAN.gelu_erf_grad_elem().is_nan());
}

/// ns per element of the two exp forms on L1-resident data (1,024 floats, 200,000 calls each,
/// interleaved, three rounds), one thread: the figures in
/// docs/cpu-runs/team-and-exp-2026-12-04.md.
#[test]
#[ignore = "a benchmark"]
fn bench_exp_shifted_forms() {
    // exp(x − 5) of values in [0, 1] stays in [0, 1]: the same range every call
    let mut row: Vec<f32> = (0..1024)
        .map(|i| ((i * 7919) % 1000) as f32 * 0.001)
        .collect();
    // both dispatched to this CPU's vector level (`exp_shifted_f32_fused` called directly
    // would be compiled for baseline x86-64, where each `mul_add` is a library call)
    let forms: [(&str, ExpShifted); 2] = [
        (
            "exp_shifted (fused where the CPU has FMA)",
            f32::exp_shifted,
        ),
        ("unfused", float::exp_shifted_f32_unfused),
    ];
    for round in 0..3 {
        for (name, exp_shifted) in forms {
            let reps = 200_000;
            let t = std::time::Instant::now();
            for _ in 0..reps {
                exp_shifted(std::hint::black_box(&mut row), 5.0);
            }
            let ns = t.elapsed().as_secs_f64() / (reps * row.len()) as f64 * 1e9;
            println!("round {round}: {name} {ns:.3} ns/element");
        }
    }
}

/// The tanh GELU in f64 by the sigmoid form (no cancellation): (y, s, slope) with
/// y = x·s, y' = s + slope, s = σ(2u), slope = 2c·x·s(1 − s)(1 + 3·0.044715x²).
fn tanh_gelu_parts(x: f64) -> (f64, f64, f64) {
    let c = (2.0 / std::f64::consts::PI).sqrt();
    let u = c * (x + 0.044715 * x * x * x);
    let s = 1.0 / (1.0 + (-2.0 * u).exp());
    let one_minus_s = 1.0 / (1.0 + (2.0 * u).exp());
    let slope = 2.0 * c * x * s * one_minus_s * (1.0 + 3.0 * 0.044715 * x * x);
    (x * s, s, slope)
}

/// The f32 tanh GELU (`gelu_tanh_elem`, `gelu_tanh_and_grad_elem`) against f64 over every
/// 61st f32 of [−16, 16], beside the textbook f32 form ½x(1 + tanh_elem(u)) (and its
/// derivative from the same t), whose 1 + t and 1 − t² cancel as x goes negative. Errors in
/// ulps of y, and of the derivative against the size of its terms, s + |slope|, as the exact
/// GELU's; by ranges of x, since below x ≈ −2 every f32 evaluation inherits the rounding of
/// u = c(x + 0.044715x³) amplified by |u| (y is 4e-4 at −3, 1e-27 at −9).
#[test]
fn tanh_gelu_f32_against_f64() {
    let c = (2.0 / std::f64::consts::PI).sqrt() as f32;
    let textbook = |x: f32| {
        let t = (c * (x + 0.044715 * x * x * x)).tanh_elem();
        let dt = (1.0 - t * t) * c * (1.0 + 3.0 * 0.044715 * x * x);
        (0.5 * x * (1.0 + t), 0.5 * (1.0 + t) + 0.5 * x * dt)
    };
    let ranges = [
        (-16.0, -9.0),
        (-9.0, -5.0),
        (-5.0, -3.0),
        (-3.0, -1.0),
        (-1.0, 16.0),
    ];
    // per range: (ours y ulp, textbook y ulp, ours y' rel, textbook y' rel)
    let mut worst = [[0f64; 4]; 5];
    for b in (0..16f32.to_bits()).step_by(61) {
        for x in [f32::from_bits(b), -f32::from_bits(b)] {
            let (y, s, slope) = tanh_gelu_parts(x as f64);
            let (ours, grad) = x.gelu_tanh_and_grad_elem();
            assert_eq!(
                ours.to_bits(),
                x.gelu_tanh_elem().to_bits(),
                "forms differ at {x}"
            );
            let (ty, tgrad) = textbook(x);
            let size = (s + slope.abs()).max(1e-30);
            let r = ranges
                .iter()
                .position(|&(lo, hi)| x >= lo && x <= hi)
                .unwrap();
            let errs = [
                ulps(ours, y),
                ulps(ty, y),
                (grad as f64 - (s + slope)).abs() / size,
                (tgrad as f64 - (s + slope)).abs() / size,
            ];
            for (w, e) in worst[r].iter_mut().zip(errs) {
                *w = w.max(e);
            }
        }
    }
    // what was measured (the record docs/cpu-runs/), rounded up; below −9, y < 1e-27 and its
    // ulps are those of numbers near f32's smallest: it is bounded in absolute terms below
    let bounds = [
        [f64::INFINITY, 1.3e-5],
        [160.0, 1.2e-5],
        [45.0, 3e-6],
        [15.0, 9e-7],
        [2.9, 2e-7],
    ];
    for ((&(lo, hi), w), b) in ranges.iter().zip(&worst).zip(bounds) {
        println!(
            "x in [{lo}, {hi}]: y ours {:.3} ulp, textbook {:.3e} ulp | y' ours {:.2e}, textbook {:.2e}",
            w[0], w[1], w[2], w[3]
        );
        assert!(
            w[0] <= b[0] && w[2] <= b[1],
            "tanh GELU on [{lo}, {hi}]: {w:?}"
        );
    }
    for b in (9f32.to_bits()..16f32.to_bits()).step_by(61) {
        let x = -f32::from_bits(b);
        let (y, _, _) = tanh_gelu_parts(x as f64);
        assert!(
            (x.gelu_tanh_elem() as f64 - y).abs() < 1e-26,
            "tanh GELU at {x}"
        );
    }
    assert_eq!(0f32.gelu_tanh_and_grad_elem(), (0.0, 0.5));
    assert_eq!(30f32.gelu_tanh_and_grad_elem(), (30.0, 1.0));
    assert_eq!((-30f32).gelu_tanh_and_grad_elem(), (-0.0, 0.0));
    assert_eq!(f32::INFINITY.gelu_tanh_elem(), f32::INFINITY);
    let (y, g) = f32::NAN.gelu_tanh_and_grad_elem();
    assert!(y.is_nan() && g.is_nan());
}

/// σ(z) and 1 − σ(z) in f32 (`sigmoid_parts_elem`, SiLU's) against f64, in ulps, over every
/// 61st f32 of [−87, 87]; beyond, the special values.
#[test]
fn sigmoid_f32_against_f64() {
    let (mut worst_s, mut worst_c) = ((0f64, 0f32), (0f64, 0f32));
    // the textbook f32 form 1/(1 + exp_elem(−z)) and 1 − that, for comparison
    let mut textbook = (0f64, 0f64);
    for b in (0..87f32.to_bits()).step_by(61) {
        for z in [f32::from_bits(b), -f32::from_bits(b)] {
            let (s, c) = z.sigmoid_parts_elem();
            let zd = z as f64;
            let (es, ec) = (1.0 / (1.0 + (-zd).exp()), 1.0 / (1.0 + zd.exp()));
            let (us, uc) = (ulps(s, es), ulps(c, ec));
            if us > worst_s.0 {
                worst_s = (us, z);
            }
            if uc > worst_c.0 {
                worst_c = (uc, z);
            }
            let ts = 1.0 / (1.0 + (-z).exp_elem());
            textbook.0 = textbook.0.max(ulps(ts, es));
            textbook.1 = textbook.1.max(ulps(1.0 - ts, ec));
        }
    }
    println!(
        "sigmoid_parts_elem: σ max {:.3} ulp (at {}), 1 − σ max {:.3} ulp (at {}) over [-87, 87]; \
         textbook f32 form: σ {:.3} ulp, 1 − σ {:.3e} ulp",
        worst_s.0, worst_s.1, worst_c.0, worst_c.1, textbook.0, textbook.1
    );
    // what was measured, rounded up (glibc's tanhf: 2.16 ulp)
    assert!(worst_s.0 <= 2.5, "σ: {} ulp at {}", worst_s.0, worst_s.1);
    assert!(
        worst_c.0 <= 3.0,
        "1 − σ: {} ulp at {}",
        worst_c.0,
        worst_c.1
    );
    for (z, want) in [
        (0.0f32, (0.5, 0.5)),
        (-88.0, (0.0, 1.0)),
        (f32::NEG_INFINITY, (0.0, 1.0)),
        (88.0, (1.0, 0.0)),
        (f32::INFINITY, (1.0, 0.0)),
    ] {
        assert_eq!(z.sigmoid_parts_elem(), want, "σ({z})");
    }
    let (s, c) = f32::NAN.sigmoid_parts_elem();
    assert!(s.is_nan() && c.is_nan());
}
