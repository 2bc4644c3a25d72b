//! CPU ops: elementwise helpers, embedding, linear. Forward against naive loops, backward
//! against f64 central finite differences (see common/mod.rs), "adds into" semantics.

mod common;

use common::*;
use ferrotron_kernels::cpu::CpuBackend;
use ferrotron_kernels::{Backend, Dst, LinearDims, Src, WeightGrads, WeightLayout};

type B64 = CpuBackend<f64>;

#[test]
fn elementwise_add_scale_sum_copy_columns() {
    let be = B64::new();
    let mut r = rng(1);
    let n = 40_000; // several reduction chunks
    let x0 = uniform(&mut r, n);
    let y = uniform(&mut r, n);
    let mut x = x0.clone();
    be.add_acc(Dst::all(&mut x), Src::all(&y)).unwrap();
    assert!(x
        .iter()
        .zip(x0.iter().zip(&y))
        .all(|(s, (a, b))| *s == a + b));
    be.scale_acc(Dst::all(&mut x), -0.5).unwrap();
    assert!(x
        .iter()
        .zip(x0.iter().zip(&y))
        .all(|(s, (a, b))| *s == (a + b) * -0.5));
    let want_sum: f64 = x.iter().sum();
    let want_sq: f64 = x.iter().map(|v| v * v).sum();
    assert!((be.sum(Src::all(&x)).unwrap() - want_sum).abs() <= 1e-12 * n as f64);
    assert!((be.sum_squares(Src::all(&x)).unwrap() - want_sq).abs() <= 1e-12 * want_sq);
    // sum of a sub-region only
    assert_eq!(be.sum(Src::range(&x, 3, 2)).unwrap(), x[3] + x[4]);

    // copy_columns: rows 3, src [3 x 5] columns 1..3 -> dst [3 x 4] columns 2..4
    let src: Vec<f64> = (0..15).map(|v| v as f64).collect();
    let mut dst = vec![100.0; 12];
    be.copy_columns(Src::all(&src), 5, 1, Dst::all(&mut dst), 4, 2, 3, 2, false)
        .unwrap();
    assert_eq!(
        dst,
        [100., 100., 1., 2., 100., 100., 6., 7., 100., 100., 11., 12.]
    );
    be.copy_columns(Src::all(&src), 5, 1, Dst::all(&mut dst), 4, 2, 3, 2, true)
        .unwrap();
    assert_eq!(
        dst,
        [100., 100., 2., 4., 100., 100., 12., 14., 100., 100., 22., 24.]
    );
}

#[test]
fn embedding_forward_and_gradcheck() {
    let be = B64::new();
    let mut r = rng(2);
    let (v, d) = (11, 7);
    let ids: Vec<i32> = vec![3, 0, 10, 3, 5, 3, 9, 0]; // repeats must accumulate
    let n = ids.len();
    let table = uniform(&mut r, v * d);
    let mut out = vec![0.0; n * d];
    be.embedding_forward(Src::all(&ids), Src::all(&table), Dst::all(&mut out), n, d)
        .unwrap();
    for (t, &id) in ids.iter().enumerate() {
        assert_eq!(
            &out[t * d..(t + 1) * d],
            &table[id as usize * d..(id as usize + 1) * d]
        );
    }
    let rr = uniform(&mut r, n * d);
    let mut dtable = vec![0.0; v * d];
    be.embedding_backward(Src::all(&ids), Src::all(&rr), Dst::all(&mut dtable), n, d)
        .unwrap();
    let loss = |tab: &[f64]| {
        let mut o = vec![0.0; n * d];
        be.embedding_forward(
            Src::all(&ids),
            Src::all(&tab.to_vec()),
            Dst::all(&mut o),
            n,
            d,
        )
        .unwrap();
        dot(&o, &rr)
    };
    fd_check("embedding dtable", &table, &dtable, loss);
    // adds into: a second backward doubles the gradient
    let once = dtable.clone();
    be.embedding_backward(Src::all(&ids), Src::all(&rr), Dst::all(&mut dtable), n, d)
        .unwrap();
    assert!(dtable.iter().zip(&once).all(|(a, b)| *a == 2.0 * b));
}

struct LinearCase {
    x: Vec<f64>,
    w: Vec<f64>,
    b: Option<Vec<f64>>,
    r: Vec<f64>,
    dims: LinearDims,
}

impl LinearCase {
    fn new(seed: u64, layout: WeightLayout, bias: bool) -> Self {
        let mut g = rng(seed);
        let dims = LinearDims {
            n: 7,
            inp: 5,
            out: 6,
            layout,
        };
        LinearCase {
            x: uniform(&mut g, dims.n * dims.inp),
            w: uniform(&mut g, dims.out * dims.inp),
            b: bias.then(|| uniform(&mut g, dims.out)),
            r: uniform(&mut g, dims.n * dims.out),
            dims,
        }
    }
    fn forward(&self, x: &[f64], w: &[f64], b: Option<&[f64]>) -> Vec<f64> {
        let (x, w, b) = (x.to_vec(), w.to_vec(), b.map(|b| b.to_vec()));
        let mut y = vec![f64::NAN; self.dims.n * self.dims.out]; // forward must overwrite
        B64::new()
            .linear_forward(
                Src::all(&x),
                Src::all(&w),
                b.as_ref().map(Src::all),
                Dst::all(&mut y),
                self.dims,
            )
            .unwrap();
        y
    }
    /// W[o, i] read from either storage layout.
    fn w_at(&self, o: usize, i: usize) -> f64 {
        match self.dims.layout {
            WeightLayout::OutIn => self.w[o * self.dims.inp + i],
            WeightLayout::InOut => self.w[i * self.dims.out + o],
        }
    }
    /// (dx, dw, db) after `times` backward calls into zeroed buffers. dw and db share one
    /// gradient buffer (as in a parameter unit): [3 padding | db | dw | 2 padding].
    fn backward(&self, times: usize) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let LinearDims { n, inp, out, .. } = self.dims;
        let (b_at, w_at) = (3, 3 + out);
        let mut dx = vec![0.0; n * inp];
        let mut unit = vec![0.0; w_at + out * inp + 2];
        for _ in 0..times {
            let b_region = self.b.as_ref().map(|_| (b_at, out));
            B64::new()
                .linear_backward(
                    Src::all(&self.x),
                    Src::all(&self.w),
                    Src::all(&self.r),
                    Some(Dst::all(&mut dx)),
                    WeightGrads::new(&mut unit, (w_at, out * inp), b_region),
                    self.dims,
                )
                .unwrap();
        }
        assert!(
            unit[..b_at]
                .iter()
                .chain(&unit[w_at + out * inp..])
                .all(|v| *v == 0.0),
            "padding written"
        );
        (
            dx,
            unit[w_at..w_at + out * inp].to_vec(),
            unit[b_at..b_at + out].to_vec(),
        )
    }
}

fn linear_case(layout: WeightLayout, bias: bool) {
    let c = LinearCase::new(3 + bias as u64, layout, bias);
    let LinearDims { n, inp, out, .. } = c.dims;
    let y = c.forward(&c.x, &c.w, c.b.as_deref());
    for t in 0..n {
        for o in 0..out {
            let want = c.b.as_ref().map_or(0.0, |b| b[o])
                + (0..inp)
                    .map(|i| c.x[t * inp + i] * c.w_at(o, i))
                    .sum::<f64>();
            assert!(
                (y[t * out + o] - want).abs() < 1e-12,
                "linear {layout:?} forward y[{t},{o}]"
            );
        }
    }
    let (dx, dw, db) = c.backward(1);
    let tag = format!("linear {layout:?} bias={bias}");
    fd_check(&format!("{tag} dx"), &c.x, &dx, |x| {
        dot(&c.forward(x, &c.w, c.b.as_deref()), &c.r)
    });
    fd_check(&format!("{tag} dw"), &c.w, &dw, |w| {
        dot(&c.forward(&c.x, w, c.b.as_deref()), &c.r)
    });
    if let Some(b) = &c.b {
        fd_check(&format!("{tag} db"), b, &db, |b| {
            dot(&c.forward(&c.x, &c.w, Some(b)), &c.r)
        });
    }
}

#[test]
fn linear_gradcheck_out_in_with_bias() {
    linear_case(WeightLayout::OutIn, true);
}

#[test]
fn linear_gradcheck_out_in_no_bias() {
    linear_case(WeightLayout::OutIn, false);
}

#[test]
fn linear_gradcheck_in_out_with_bias() {
    linear_case(WeightLayout::InOut, true);
}

#[test]
fn linear_gradcheck_in_out_no_bias() {
    linear_case(WeightLayout::InOut, false);
}

#[test]
fn linear_backward_adds_into_gradients() {
    for layout in [WeightLayout::OutIn, WeightLayout::InOut] {
        let c = LinearCase::new(9, layout, true);
        let (dx1, dw1, db1) = c.backward(1);
        let (dx2, dw2, db2) = c.backward(2);
        for (once, twice) in [(dx1, dx2), (dw1, dw2), (db1, db2)] {
            assert!(once.iter().any(|v| *v != 0.0));
            assert!(
                twice
                    .iter()
                    .zip(&once)
                    .all(|(t, o)| (t - 2.0 * o).abs() <= 1e-14 * o.abs().max(1.0)),
                "{layout:?}"
            );
        }
    }
}

/// f32 against f64 at a size where matrixmultiply runs multi-threaded (m·k + k·n ≥ 2^15 for
/// every GEMM of forward and backward). N and O are not multiples of the kernel tiles.
#[test]
fn linear_f32_matches_f64_at_threaded_size() {
    let mut g = rng(11);
    for layout in [WeightLayout::OutIn, WeightLayout::InOut] {
        let dims = LinearDims {
            n: 517,
            inp: 256,
            out: 199,
            layout,
        };
        let x = uniform_f32(&mut g, dims.n * dims.inp);
        let w = uniform_f32(&mut g, dims.out * dims.inp);
        let b = uniform_f32(&mut g, dims.out);
        let dy = uniform_f32(&mut g, dims.n * dims.out);
        let single = linear_all::<f32>(&x, &w, &b, &dy, dims);
        let double = linear_all::<f64>(&x, &w, &b, &dy, dims);
        for (name, s, d) in ["y", "dx", "dw", "db"]
            .iter()
            .zip(&single)
            .zip(&double)
            .map(|((n, s), d)| (n, s, d))
        {
            let err = max_rel_diff(s, d);
            println!("linear {layout:?} f32 vs f64 {name}: {err:.2e}");
            assert!(err < 1e-5, "{layout:?} {name}: {err:.2e}");
        }
    }
}

fn linear_all<T: ferrotron_kernels::cpu::CpuFloat>(
    x: &[f32],
    w: &[f32],
    b: &[f32],
    dy: &[f32],
    dims: LinearDims,
) -> [Vec<f64>; 4] {
    let be = CpuBackend::<T>::new();
    let (x, w, b, dy) = (
        be.upload_act(x).unwrap(),
        be.upload_act(w).unwrap(),
        be.upload_act(b).unwrap(),
        be.upload_act(dy).unwrap(),
    );
    let mut y = be.zeros_act(dims.n * dims.out).unwrap();
    let mut dx = be.zeros_act(dims.n * dims.inp).unwrap();
    let mut grads = be.zeros_acc(dims.out * dims.inp + dims.out).unwrap();
    let (w_region, b_region) = (
        (0, dims.out * dims.inp),
        Some((dims.out * dims.inp, dims.out)),
    );
    be.linear_forward(
        Src::all(&x),
        Src::all(&w),
        Some(Src::all(&b)),
        Dst::all(&mut y),
        dims,
    )
    .unwrap();
    be.linear_backward(
        Src::all(&x),
        Src::all(&w),
        Src::all(&dy),
        Some(Dst::all(&mut dx)),
        WeightGrads::new(&mut grads, w_region, b_region),
        dims,
    )
    .unwrap();
    let (dw, db) = grads.split_at(dims.out * dims.inp);
    let f = |v: &[T]| v.iter().map(|a| a.to_f64c()).collect::<Vec<f64>>();
    [f(&y), f(&dx), f(dw), f(db)]
}

/// The checker itself: an analytic gradient off by 1e-5 (relative) in one element is rejected,
/// and the exact one passes.
#[test]
fn gradcheck_rejects_a_wrong_gradient() {
    let mut g = rng(12);
    let x = uniform(&mut g, 10);
    let loss = |x: &[f64]| x.iter().map(|v| v.sin() * v).sum::<f64>();
    let exact: Vec<f64> = x.iter().map(|v| v.cos() * v + v.sin()).collect();
    let numeric = fd_grad(&x, loss);
    assert!(grad_error(&exact, &numeric) <= FD_TOL);
    let mut wrong = exact.clone();
    wrong[7] *= 1.0 + 1e-5;
    assert!(grad_error(&wrong, &numeric) > FD_TOL);
}

/// The strided GEMM wrapper against a naive triple loop, for every combination of transposed
/// A / B and row- / column-major C, at a multi-threaded size with odd dimensions; beta = 1
/// checks accumulation, alpha a scale.
#[test]
fn gemm_strided_views_match_naive() {
    use ferrotron_kernels::cpu::gemm::{gemm, View, ViewMut};
    let (m, k, n) = (261, 250, 270);
    let mut g = rng(13);
    let (a, b, c0) = (
        uniform(&mut g, m * k),
        uniform(&mut g, k * n),
        uniform(&mut g, m * n),
    );
    for (ta, tb, tc) in (0..8).map(|bits| (bits & 1 == 1, bits & 2 == 2, bits & 4 == 4)) {
        // the same logical A [m, k], B [k, n], C [m, n], stored transposed or not
        let av = if ta {
            View::row_major(&a, k, m).t()
        } else {
            View::row_major(&a, m, k)
        };
        let bv = if tb {
            View::row_major(&b, n, k).t()
        } else {
            View::row_major(&b, k, n)
        };
        let at = |i: usize, j: usize| if ta { a[j * m + i] } else { a[i * k + j] };
        let bt = |i: usize, j: usize| if tb { b[j * k + i] } else { b[i * n + j] };
        let c_idx = |i: usize, j: usize| if tc { j * m + i } else { i * n + j };
        let mut c = c0.clone();
        let cv = if tc {
            ViewMut::row_major(&mut c, n, m).t()
        } else {
            ViewMut::row_major(&mut c, m, n)
        };
        gemm(0.5, av, bv, 1.0, cv);
        let mut worst = 0f64;
        for i in 0..m {
            for j in 0..n {
                let want = c0[c_idx(i, j)] + 0.5 * (0..k).map(|x| at(i, x) * bt(x, j)).sum::<f64>();
                worst = worst.max((c[c_idx(i, j)] - want).abs());
            }
        }
        assert!(
            worst < 1e-12,
            "A^T {ta} B^T {tb} C col-major {tc}: max error {worst:.2e}"
        );
    }
}

/// The lane-parallel row reductions against plain folds, for lengths around the lane count.
#[test]
fn row_helpers_match_naive() {
    use ferrotron_kernels::cpu::elementwise::{max_lanes, sum_lanes, sum_lanes_f64};
    let mut g = rng(14);
    for len in [0, 1, 7, 8, 9, 17, 64, 70] {
        let x = uniform(&mut g, len);
        assert_eq!(
            max_lanes(&x),
            x.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v))
        );
        let want: f64 = x.iter().sum();
        assert!((sum_lanes(&x) - want).abs() <= 1e-15 * len as f64);
        assert!((sum_lanes_f64(&x) - want).abs() <= 1e-15 * len as f64);
    }
}

/// The backward with W prepared once for dx (`prepare_linear_weight_dx`, the head's chunks)
/// gives the bits of `linear_backward`: f32, both weight layouts, with and without a bias, at
/// shapes that cover ragged panels and the GEMM's thread split (and one too small to split).
#[test]
fn linear_backward_prepared_gives_the_bits_of_linear_backward() {
    let be = CpuBackend::<f32>::new();
    let mut r = rng(7);
    for (n, inp, out) in [(333, 128, 2_000), (7, 33, 45), (70, 96, 5_003)] {
        for layout in [WeightLayout::OutIn, WeightLayout::InOut] {
            for bias in [false, true] {
                let dims = LinearDims {
                    n,
                    inp,
                    out,
                    layout,
                };
                let x = uniform_f32(&mut r, n * inp);
                let w = uniform_f32(&mut r, out * inp);
                let dy = uniform_f32(&mut r, n * out);
                let dx0 = uniform_f32(&mut r, n * inp);
                let g0 = uniform_f32(&mut r, out * inp + out);
                let (bias_at, grads_len) = match bias {
                    true => (Some((out * inp, out)), out * inp + out),
                    false => (None, out * inp),
                };
                let run = |prepared: bool| {
                    let (mut dx, mut g) = (dx0.clone(), g0[..grads_len].to_vec());
                    let grads = WeightGrads::new(&mut g, (0, out * inp), bias_at);
                    let dxd = Some(Dst::all(&mut dx));
                    let (xs, ws, dys) = (Src::all(&x), Src::all(&w), Src::all(&dy));
                    if prepared {
                        let p = be.prepare_linear_weight_dx(ws, dims).unwrap();
                        assert!(!p.is_empty() || !ferrotron_kernels::cpu::sgemm::available());
                        be.linear_backward_prepared(xs, ws, Src::all(&p), dys, dxd, grads, dims)
                    } else {
                        be.linear_backward(xs, ws, dys, dxd, grads, dims)
                    }
                    .unwrap();
                    (dx, g)
                };
                let (want, got) = (run(false), run(true));
                let same =
                    |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(p, q)| p.to_bits() == q.to_bits());
                assert!(
                    same(&got.0, &want.0) && same(&got.1, &want.1),
                    "{dims:?} bias {bias}: the prepared backward differs"
                );
            }
        }
    }
}
