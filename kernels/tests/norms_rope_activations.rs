//! CPU ops: RMSNorm, LayerNorm, RoPE, SwiGLU, tanh-GELU. Forward against naive formulas or known
//! values, backward against f64 central finite differences (common/mod.rs), "adds into" checks.

mod common;

use common::*;
use ferrotron_kernels::cpu::CpuBackend;
use ferrotron_kernels::{rope_inv_freq, Backend, Dst, Gelu, Glu, Src, WeightGrads};

type B64 = CpuBackend<f64>;
const EPS: f64 = 1e-5;
const N: usize = 5;
const D: usize = 9;

fn rmsnorm_fwd(x: &[f64], w: &[f64]) -> (Vec<f64>, Vec<f64>) {
    rmsnorm_fwd_offset(x, w, 0.0)
}

/// RMSNorm with the scale w + w_offset (Gemma's offset is 1).
fn rmsnorm_fwd_offset(x: &[f64], w: &[f64], w_offset: f64) -> (Vec<f64>, Vec<f64>) {
    let (mut y, mut rstd) = (vec![f64::NAN; N * D], vec![f64::NAN; N]);
    let (x, w) = (x.to_vec(), w.to_vec());
    B64::new()
        .rmsnorm_forward(
            Src::all(&x),
            Src::all(&w),
            Dst::all(&mut y),
            Dst::all(&mut rstd),
            N,
            D,
            EPS,
            w_offset,
        )
        .unwrap();
    (y, rstd)
}

/// (dx, dw) after `times` backward calls into zeroed buffers.
fn rmsnorm_bwd(x: &[f64], w: &[f64], dy: &[f64], times: usize) -> (Vec<f64>, Vec<f64>) {
    rmsnorm_bwd_offset(x, w, dy, times, 0.0)
}

fn rmsnorm_bwd_offset(
    x: &[f64],
    w: &[f64],
    dy: &[f64],
    times: usize,
    w_offset: f64,
) -> (Vec<f64>, Vec<f64>) {
    let (_, rstd) = rmsnorm_fwd_offset(x, w, w_offset);
    let (x, w, dy) = (x.to_vec(), w.to_vec(), dy.to_vec());
    let (mut dx, mut dw) = (vec![0.0; N * D], vec![0.0; D]);
    for _ in 0..times {
        B64::new()
            .rmsnorm_backward(
                Src::all(&x),
                Src::all(&w),
                Src::all(&rstd),
                Src::all(&dy),
                Dst::all(&mut dx),
                Dst::all(&mut dw),
                N,
                D,
                w_offset,
            )
            .unwrap();
    }
    (dx, dw)
}

fn layernorm_fwd(x: &[f64], w: &[f64], b: &[f64]) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (mut y, mut mean, mut rstd) = (vec![f64::NAN; N * D], vec![f64::NAN; N], vec![f64::NAN; N]);
    let (x, w, b) = (x.to_vec(), w.to_vec(), b.to_vec());
    B64::new()
        .layernorm_forward(
            Src::all(&x),
            Src::all(&w),
            Src::all(&b),
            Dst::all(&mut y),
            Dst::all(&mut mean),
            Dst::all(&mut rstd),
            N,
            D,
            EPS,
        )
        .unwrap();
    (y, mean, rstd)
}

/// (dx, dw, db) after `times` backward calls; dw and db share one unit buffer [dw | 1 pad | db].
fn layernorm_bwd(
    x: &[f64],
    w: &[f64],
    b: &[f64],
    dy: &[f64],
    times: usize,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (_, mean, rstd) = layernorm_fwd(x, w, b);
    let (x, w, dy) = (x.to_vec(), w.to_vec(), dy.to_vec());
    let mut dx = vec![0.0; N * D];
    let mut unit = vec![0.0; 2 * D + 1];
    for _ in 0..times {
        let grads = WeightGrads::new(&mut unit, (0, D), Some((D + 1, D)));
        B64::new()
            .layernorm_backward(
                Src::all(&x),
                Src::all(&w),
                Src::all(&mean),
                Src::all(&rstd),
                Src::all(&dy),
                Dst::all(&mut dx),
                grads,
                N,
                D,
            )
            .unwrap();
    }
    assert_eq!(unit[D], 0.0, "padding between dw and db written");
    (dx, unit[..D].to_vec(), unit[D + 1..].to_vec())
}

#[test]
fn rmsnorm_forward_and_gradcheck() {
    let mut g = rng(21);
    let (x, w, r) = (
        uniform(&mut g, N * D),
        uniform(&mut g, D),
        uniform(&mut g, N * D),
    );
    let (y, rstd) = rmsnorm_fwd(&x, &w);
    for n in 0..N {
        let row = &x[n * D..(n + 1) * D];
        let rs = 1.0 / (row.iter().map(|v| v * v).sum::<f64>() / D as f64 + EPS).sqrt();
        assert!((rstd[n] - rs).abs() < 1e-14 * rs);
        for j in 0..D {
            assert!((y[n * D + j] - row[j] * rs * w[j]).abs() < 1e-14);
        }
    }
    let (dx, dw) = rmsnorm_bwd(&x, &w, &r, 1);
    fd_check("rmsnorm dx", &x, &dx, |x| dot(&rmsnorm_fwd(x, &w).0, &r));
    fd_check("rmsnorm dw", &w, &dw, |w| dot(&rmsnorm_fwd(&x, w).0, &r));
}

#[test]
fn gemma_rmsnorm_scales_by_one_plus_w_and_gradchecks() {
    let mut g = rng(26);
    let (x, w, r) = (
        uniform(&mut g, N * D),
        uniform(&mut g, D),
        uniform(&mut g, N * D),
    );
    // the offset form equals the plain norm with the weight 1 + w
    let one_plus: Vec<f64> = w.iter().map(|v| 1.0 + v).collect();
    assert_eq!(rmsnorm_fwd_offset(&x, &w, 1.0), rmsnorm_fwd(&x, &one_plus));
    let (dx, dw) = rmsnorm_bwd_offset(&x, &w, &r, 1, 1.0);
    let (dx_plain, dw_plain) = rmsnorm_bwd(&x, &one_plus, &r, 1);
    assert_eq!((&dx, &dw), (&dx_plain, &dw_plain));
    let y = |x: &[f64], w: &[f64]| rmsnorm_fwd_offset(x, w, 1.0).0;
    fd_check("gemma rmsnorm dx", &x, &dx, |x| dot(&y(x, &w), &r));
    fd_check("gemma rmsnorm dw", &w, &dw, |w| dot(&y(&x, w), &r));
}

#[test]
fn layernorm_forward_and_gradcheck() {
    let mut g = rng(22);
    let (x, w, b, r) = (
        uniform(&mut g, N * D),
        uniform(&mut g, D),
        uniform(&mut g, D),
        uniform(&mut g, N * D),
    );
    let (y, mean, rstd) = layernorm_fwd(&x, &w, &b);
    for n in 0..N {
        let row = &x[n * D..(n + 1) * D];
        let mu = row.iter().sum::<f64>() / D as f64;
        let rs = 1.0 / (row.iter().map(|v| (v - mu).powi(2)).sum::<f64>() / D as f64 + EPS).sqrt();
        assert!((mean[n] - mu).abs() < 1e-15 && (rstd[n] - rs).abs() < 1e-14 * rs);
        for j in 0..D {
            assert!((y[n * D + j] - ((row[j] - mu) * rs * w[j] + b[j])).abs() < 1e-14);
        }
    }
    let (dx, dw, db) = layernorm_bwd(&x, &w, &b, &r, 1);
    fd_check("layernorm dx", &x, &dx, |x| {
        dot(&layernorm_fwd(x, &w, &b).0, &r)
    });
    fd_check("layernorm dw", &w, &dw, |w| {
        dot(&layernorm_fwd(&x, w, &b).0, &r)
    });
    fd_check("layernorm db", &b, &db, |b| {
        dot(&layernorm_fwd(&x, &w, b).0, &r)
    });
}

fn assert_doubled(name: &str, once: &[f64], twice: &[f64]) {
    assert!(once.iter().any(|v| *v != 0.0), "{name}: gradient is zero");
    assert!(
        twice
            .iter()
            .zip(once)
            .all(|(t, o)| (t - 2.0 * o).abs() <= 1e-14 * o.abs().max(1.0)),
        "{name} not accumulated"
    );
}

#[test]
fn norms_backward_add_into_gradients() {
    let mut g = rng(23);
    let (x, w, b, r) = (
        uniform(&mut g, N * D),
        uniform(&mut g, D),
        uniform(&mut g, D),
        uniform(&mut g, N * D),
    );
    let (once, twice) = (rmsnorm_bwd(&x, &w, &r, 1), rmsnorm_bwd(&x, &w, &r, 2));
    assert_doubled("rmsnorm dx", &once.0, &twice.0);
    assert_doubled("rmsnorm dw", &once.1, &twice.1);
    let (once, twice) = (
        layernorm_bwd(&x, &w, &b, &r, 1),
        layernorm_bwd(&x, &w, &b, &r, 2),
    );
    assert_doubled("layernorm dx", &once.0, &twice.0);
    assert_doubled("layernorm dw", &once.1, &twice.1);
    assert_doubled("layernorm db", &once.2, &twice.2);
}

const ROPE_HEADS: usize = 3;
const ROPE_DH: usize = 8;
/// Positions spanning more values than there are tokens (cos and sin computed per token), and a
/// batch of two rows repeating positions 2..6 (tabulated once per position).
const ROPE_POSITIONS: [&[i32]; 2] = [&[0, 5, 1, 100, 7], &[2, 3, 4, 5, 6, 2, 3, 4, 5, 6]];

/// The rotary op (`inverse`: its backward) with the attention factor `scale` on cos and sin.
fn rope(x: &[f64], pos: &[i32], inv_freq: &[f64], scale: f64, inverse: bool) -> Vec<f64> {
    let mut y = x.to_vec();
    let pos = pos.to_vec();
    let be = B64::new();
    let n = pos.len();
    if inverse {
        be.rope_backward(
            Dst::all(&mut y),
            Src::all(&pos),
            n,
            ROPE_HEADS,
            ROPE_DH,
            inv_freq,
            scale,
        )
        .unwrap();
    } else {
        be.rope_forward(
            Dst::all(&mut y),
            Src::all(&pos),
            n,
            ROPE_HEADS,
            ROPE_DH,
            inv_freq,
            scale,
        )
        .unwrap();
    }
    y
}

/// Frequency tables: the default at two bases, linear scaling (every frequency / 4), a
/// llama3-shaped table (high band kept, middle band interpolated, low band / 8) and a partial
/// one (rotary dim 4 of head_dim 8: dims 4..8 pass through). The op takes the table as given;
/// src/model/rope.rs computes the real scaled tables.
fn rope_tables() -> Vec<(&'static str, Vec<f64>)> {
    let base = rope_inv_freq(500_000.0, ROPE_DH);
    vec![
        ("default theta=1e4", rope_inv_freq(10_000.0, ROPE_DH)),
        ("default theta=5e5", base.clone()),
        ("linear factor=4", base.iter().map(|f| f / 4.0).collect()),
        (
            "llama3-shaped",
            vec![base[0], base[1] * 0.6, base[2] / 8.0, base[3] / 8.0],
        ),
        ("partial rotary dim 4", rope_inv_freq(10_000.0, 4)),
    ]
}

#[test]
fn rope_forward_and_gradcheck() {
    let mut g = rng(24);
    // scale 1.25: an attention factor m on cos and sin (yarn, longrope)
    let cases = ROPE_POSITIONS.iter().flat_map(|p| {
        rope_tables()
            .into_iter()
            .flat_map(move |t| [1.0, 1.25].map(|m| (*p, t.clone(), m)))
    });
    for (pos, (name, table), m) in cases {
        let len = pos.len() * ROPE_HEADS * ROPE_DH;
        let (x, r) = (uniform(&mut g, len), uniform(&mut g, len));
        let y = rope(&x, pos, &table, m, false);
        // HF rotate-half over the rotary dim R = 2·table.len(): pairs (i, i + R/2), not
        // interleaved (2i, 2i+1); angle pos·inv_freq[i]; cos and sin times m; dims R..Dh
        // unchanged.
        let half = table.len();
        for (t, &p) in pos.iter().enumerate() {
            for h in 0..ROPE_HEADS {
                let base = (t * ROPE_HEADS + h) * ROPE_DH;
                for i in 0..half {
                    let a = p as f64 * table[i];
                    let (c, s) = (m * a.cos(), m * a.sin());
                    let (x1, x2) = (x[base + i], x[base + i + half]);
                    assert!((y[base + i] - (x1 * c - x2 * s)).abs() < 1e-14);
                    assert!((y[base + i + half] - (x2 * c + x1 * s)).abs() < 1e-14);
                }
                for i in 2 * half..ROPE_DH {
                    assert_eq!(
                        y[base + i],
                        x[base + i],
                        "{name}: dim {i} must pass through"
                    );
                }
            }
        }
        // the transpose m·R(−a) after m·R(a): m² on the rotated dims, the rest unchanged
        let back = rope(&y, pos, &table, m, true);
        let want: Vec<f64> = x
            .iter()
            .enumerate()
            .map(|(i, v)| {
                if i % ROPE_DH < 2 * half {
                    m * m * v
                } else {
                    *v
                }
            })
            .collect();
        assert!(
            max_rel_diff(&back, &want) < 1e-14,
            "{name} m {m}: rope_backward is not the transpose of rope_forward"
        );
        // rope_backward maps dout to dx in place.
        let dx = rope(&r, pos, &table, m, true);
        fd_check(&format!("rope {name} m {m} {pos:?} dx"), &x, &dx, |x| {
            dot(&rope(x, pos, &table, m, false), &r)
        });
    }
}

#[test]
fn rope_default_table_is_theta_powers() {
    let t = rope_inv_freq(10_000.0, 8);
    let want = [1.0, 0.1, 0.01, 0.001];
    for (a, b) in t.iter().zip(want) {
        assert!((a - b).abs() < 1e-15 * b.max(1.0), "{t:?}");
    }
}

fn glu(kind: Glu, gate: &[f64], up: &[f64]) -> Vec<f64> {
    let mut out = vec![f64::NAN; gate.len()];
    let (gate, up) = (gate.to_vec(), up.to_vec());
    B64::new()
        .glu_forward(kind, Src::all(&gate), Src::all(&up), Dst::all(&mut out))
        .unwrap();
    out
}

fn gelu_of(kind: Gelu, x: &[f64]) -> Vec<f64> {
    let mut y = vec![f64::NAN; x.len()];
    B64::new()
        .gelu_forward(kind, Src::all(&x.to_vec()), Dst::all(&mut y))
        .unwrap();
    y
}

fn gelu(x: &[f64]) -> Vec<f64> {
    gelu_of(Gelu::Tanh, x)
}

#[test]
fn glu_forward_and_gradcheck() {
    // silu(1) = σ(1) = 0.7310585786300049; silu(-2)·3 = −2/(1+e²)·3
    let out = glu(Glu::Silu, &[1.0, -2.0], &[1.0, 3.0]);
    assert!(
        (out[0] - 0.7310585786300049).abs() < 1e-15
            && (out[1] - 3.0 * -0.2384058440442351).abs() < 1e-15
    );
    let mut g = rng(25);
    let n = 37;
    let scale4 = |v: Vec<f64>| v.into_iter().map(|a| 4.0 * a).collect::<Vec<_>>();
    let (gate, up, r) = (
        scale4(uniform(&mut g, n)),
        uniform(&mut g, n),
        uniform(&mut g, n),
    );
    for kind in [Glu::Silu, Glu::Gelu(Gelu::Tanh), Glu::Gelu(Gelu::Erf)] {
        // GeGLU's forward is the GELU op's output times up, bit for bit
        if let Glu::Gelu(gelu) = kind {
            let want: Vec<f64> = gelu_of(gelu, &gate)
                .iter()
                .zip(&up)
                .map(|(a, u)| a * u)
                .collect();
            assert_eq!(glu(kind, &gate, &up), want, "{kind:?} forward");
        }
        let (mut dgate, mut dup) = (vec![0.5; n], vec![-0.25; n]);
        B64::new()
            .glu_backward(
                kind,
                Src::all(&gate),
                Src::all(&up),
                Src::all(&r),
                Dst::all(&mut dgate),
                Dst::all(&mut dup),
            )
            .unwrap();
        // the backward accumulates into what dgate and dup held
        dgate.iter_mut().for_each(|v| *v -= 0.5);
        dup.iter_mut().for_each(|v| *v += 0.25);
        fd_check(&format!("{kind:?} dgate"), &gate, &dgate, |gt| {
            dot(&glu(kind, gt, &up), &r)
        });
        fd_check(&format!("{kind:?} dup"), &up, &dup, |u| {
            dot(&glu(kind, &gate, u), &r)
        });
    }
}

#[test]
fn gelu_forward_and_gradcheck() {
    // Values of 0.5x(1 + tanh(√(2/π)(x + 0.044715x³))) from Python's math module.
    let y = gelu(&[1.0, -1.0, 3.0]);
    for (got, want) in y
        .iter()
        .zip([0.8411919906082768, -0.15880800939172324, 2.996362607918227])
    {
        assert!((got - want).abs() < 1e-15, "gelu {got} != {want}");
    }
    let mut g = rng(26);
    let n = 37;
    let x: Vec<f64> = uniform(&mut g, n).into_iter().map(|a| 4.0 * a).collect();
    let r = uniform(&mut g, n);
    let mut dx = vec![0.0; n];
    B64::new()
        .gelu_backward(Gelu::Tanh, Src::all(&x), Src::all(&r), Dst::all(&mut dx))
        .unwrap();
    fd_check("gelu dx", &x, &dx, |x| dot(&gelu(x), &r));
}

#[test]
fn exact_gelu_forward_and_gradcheck() {
    // x·Φ(x) = ½x(1 + erf(x/√2)), from Python's math.erf; −8 checks the lower tail (no
    // cancellation: ½·erfc(8/√2) = 6.2e-16).
    let y = gelu_of(Gelu::Erf, &[1.0, -1.0, 3.0, -8.0]);
    for (got, want) in y.iter().zip([
        0.8413447460685429,
        -0.15865525393145707,
        2.99595030590511,
        -4.9767684594174555e-15,
    ]) {
        assert!(
            (got - want).abs() <= 2e-14 * want.abs(), // erfc's slope at 8/√2 is 11× its value
            "exact gelu {got} != {want}"
        );
    }
    let mut g = rng(27);
    let n = 41;
    let x: Vec<f64> = uniform(&mut g, n).into_iter().map(|a| 5.0 * a).collect();
    let r = uniform(&mut g, n);
    let mut dx = vec![0.0; n];
    B64::new()
        .gelu_backward(Gelu::Erf, Src::all(&x), Src::all(&r), Dst::all(&mut dx))
        .unwrap();
    fd_check("exact gelu dx", &x, &dx, |x| {
        dot(&gelu_of(Gelu::Erf, x), &r)
    });
    // the two GELUs differ by about 1e-4 at x = 2 (1.9545977 against 1.9544997): the kind
    // is not ignored
    let (tanh, erf) = (gelu_of(Gelu::Tanh, &[2.0]), gelu_of(Gelu::Erf, &[2.0]));
    assert!((tanh[0] - erf[0]).abs() > 9e-5, "{tanh:?} vs {erf:?}");
}
