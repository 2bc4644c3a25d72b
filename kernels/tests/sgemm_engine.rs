//! The f32 GEMM engine (kernels/src/cpu/sgemm) against matrixmultiply 0.3, which it replaced:
//! on an AVX-512 machine every element must be the same bits (the engine's arithmetic contract
//! is that of matrixmultiply's AVX-512 kernel); elsewhere the engine is not used and the test
//! checks the product `CpuFloat::gemm` gives against an f64 reference instead.
//! Shapes cover ragged tiles (m, n not multiples of 12/32/16), several K blocks (k > 256), every
//! operand layout (row-major, column-major, transposed views, C column-major) and the
//! alpha/beta combinations whose epilogues differ (alpha ≠ 1 with beta ≠ 0).

mod common;

use common::*;
use ferrotron_kernels::cpu::{sgemm, CpuFloat};
use rand::Rng;

#[derive(Clone, Copy, Debug)]
enum Layout {
    RowMajor,
    ColMajor,
}

/// (rs, cs) of a rows × cols matrix stored in `layout`.
fn strides(layout: Layout, rows: usize, cols: usize) -> (isize, isize) {
    match layout {
        Layout::RowMajor => (cols as isize, 1),
        Layout::ColMajor => (1, rows as isize),
    }
}

struct Case {
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    beta: f32,
    la: Layout,
    lb: Layout,
    lc: Layout,
}

/// C after the product through `f` (matrixmultiply's or the engine's signature).
#[allow(clippy::type_complexity)]
fn run(
    case: &Case,
    a: &[f32],
    b: &[f32],
    c0: &[f32],
    f: unsafe fn(
        usize,
        usize,
        usize,
        f32,
        *const f32,
        isize,
        isize,
        *const f32,
        isize,
        isize,
        f32,
        *mut f32,
        isize,
        isize,
    ),
) -> Vec<f32> {
    let Case { m, k, n, .. } = *case;
    let (rsa, csa) = strides(case.la, m, k);
    let (rsb, csb) = strides(case.lb, k, n);
    let (rsc, csc) = strides(case.lc, m, n);
    let mut c = c0.to_vec();
    // SAFETY: every matrix is dense in its layout and sized for its shape.
    unsafe {
        f(
            m,
            k,
            n,
            case.alpha,
            a.as_ptr(),
            rsa,
            csa,
            b.as_ptr(),
            rsb,
            csb,
            case.beta,
            c.as_mut_ptr(),
            rsc,
            csc,
        )
    };
    c
}

#[test]
fn engine_matches_matrixmultiply_bit_for_bit() {
    let mut g = rng(7);
    let dims = [1, 5, 12, 16, 31, 33, 64, 100, 130];
    let ks = [1, 7, 64, 255, 256, 257, 600];
    let layouts = [Layout::RowMajor, Layout::ColMajor];
    let coefs = [
        (1.0, 0.0),
        (1.0, 1.0),
        (0.375, 1.0),
        (0.8, 0.5),
        (-1.5, 0.0),
    ];
    let mut cases = 0;
    for _ in 0..400 {
        let case = Case {
            m: dims[g.random_range(0..dims.len())],
            k: ks[g.random_range(0..ks.len())],
            n: dims[g.random_range(0..dims.len())],
            alpha: 0.0,
            beta: 0.0,
            la: layouts[g.random_range(0..2)],
            lb: layouts[g.random_range(0..2)],
            lc: layouts[g.random_range(0..2)],
        };
        let (alpha, beta) = coefs[g.random_range(0..coefs.len())];
        let case = Case {
            alpha,
            beta,
            ..case
        };
        let a = uniform_f32(&mut g, case.m * case.k);
        let b = uniform_f32(&mut g, case.k * case.n);
        let c0 = uniform_f32(&mut g, case.m * case.n);
        let reference = run(&case, &a, &b, &c0, matrixmultiply::sgemm);
        if sgemm::available() {
            let got = run(&case, &a, &b, &c0, sgemm::sgemm);
            let diff = got
                .iter()
                .zip(&reference)
                .position(|(x, y)| x.to_bits() != y.to_bits());
            assert!(
                diff.is_none(),
                "m {} k {} n {} alpha {alpha} beta {beta} {:?} {:?} {:?}: element {} is {} (matrixmultiply {})",
                case.m,
                case.k,
                case.n,
                case.la,
                case.lb,
                case.lc,
                diff.unwrap(),
                got[diff.unwrap()],
                reference[diff.unwrap()]
            );
        } else {
            let got = run(&case, &a, &b, &c0, <f32 as CpuFloat>::gemm);
            assert_eq!(got, reference, "CpuFloat::gemm is matrixmultiply here");
        }
        cases += 1;
    }
    assert_eq!(cases, 400);
}

/// The head's three products at the quickstart's shapes, single-threaded, engine against
/// matrixmultiply (thread CPU time, so other load on the machine does not count).
#[test]
#[ignore]
fn bench_engine_head_shapes() {
    fn cpu_now() -> f64 {
        let mut ts = libc_timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes the timespec.
        unsafe { clock_gettime(3, &mut ts) }; // CLOCK_THREAD_CPUTIME_ID
        ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
    }
    #[repr(C)]
    struct libc_timespec {
        tv_sec: i64,
        tv_nsec: i64,
    }
    extern "C" {
        fn clock_gettime(clk: i32, ts: *mut libc_timespec) -> i32;
    }
    let d: usize = std::env::var("BENCH_D")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(128);
    let (rows, v) = (165usize, 25_129usize);
    let mut g = rng(3);
    let h = uniform_f32(&mut g, rows * d);
    let w = uniform_f32(&mut g, v * d);
    let dl = uniform_f32(&mut g, rows * v);
    type F = unsafe fn(
        usize,
        usize,
        usize,
        f32,
        *const f32,
        isize,
        isize,
        *const f32,
        isize,
        isize,
        f32,
        *mut f32,
        isize,
        isize,
    );
    let engines: [(&str, F); 2] = [
        ("matrixmultiply", matrixmultiply::sgemm),
        ("engine", sgemm::sgemm),
    ];
    let gf = 2.0 * (rows * d * v) as f64 * 1e-9;
    for (name, f) in engines {
        let mut logits = vec![0f32; rows * v];
        let mut dw = vec![0f32; v * d];
        let mut dx = vec![0f32; rows * d];
        let mut best = [f64::INFINITY; 3];
        for _ in 0..8 {
            let t0 = cpu_now();
            // logits[rows, v] = h · Wᵀ
            unsafe {
                f(
                    rows,
                    d,
                    v,
                    1.0,
                    h.as_ptr(),
                    d as isize,
                    1,
                    w.as_ptr(),
                    1,
                    d as isize,
                    0.0,
                    logits.as_mut_ptr(),
                    v as isize,
                    1,
                )
            };
            let t1 = cpu_now();
            // dW[v, d] += dlᵀ · h
            unsafe {
                f(
                    v,
                    rows,
                    d,
                    1.0,
                    dl.as_ptr(),
                    1,
                    v as isize,
                    h.as_ptr(),
                    d as isize,
                    1,
                    1.0,
                    dw.as_mut_ptr(),
                    d as isize,
                    1,
                )
            };
            let t2 = cpu_now();
            // dx[rows, d] += dl · W
            unsafe {
                f(
                    rows,
                    v,
                    d,
                    1.0,
                    dl.as_ptr(),
                    v as isize,
                    1,
                    w.as_ptr(),
                    d as isize,
                    1,
                    1.0,
                    dx.as_mut_ptr(),
                    d as isize,
                    1,
                )
            };
            let t3 = cpu_now();
            for (b, t) in best.iter_mut().zip([t1 - t0, t2 - t1, t3 - t2]) {
                *b = b.min(t);
            }
        }
        println!(
            "{name:15} best of 8: fwd {:.0} GFLOP/s | dW {:.0} | dx {:.0}",
            gf / best[0],
            gf / best[1],
            gf / best[2]
        );
    }
}

/// Square-ish products (packing amortised): the tile kernel's own rate.
#[test]
#[ignore]
fn bench_engine_square() {
    fn cpu_now() -> f64 {
        let t = std::time::Instant::now();
        let _ = t;
        #[repr(C)]
        struct Ts {
            s: i64,
            ns: i64,
        }
        extern "C" {
            fn clock_gettime(clk: i32, ts: *mut Ts) -> i32;
        }
        let mut ts = Ts { s: 0, ns: 0 };
        unsafe { clock_gettime(3, &mut ts) };
        ts.s as f64 + ts.ns as f64 * 1e-9
    }
    type F = unsafe fn(
        usize,
        usize,
        usize,
        f32,
        *const f32,
        isize,
        isize,
        *const f32,
        isize,
        isize,
        f32,
        *mut f32,
        isize,
        isize,
    );
    let mut g = rng(5);
    for (m, k, n) in [
        (1020usize, 1024usize, 1024usize),
        (1024, 512, 1408),
        (1024, 1408, 512),
    ] {
        let a = uniform_f32(&mut g, m * k);
        let b = uniform_f32(&mut g, k * n);
        let engines: [(&str, F); 2] = [
            ("matrixmultiply", matrixmultiply::sgemm),
            ("engine", sgemm::sgemm),
        ];
        for (name, f) in engines {
            let mut c = vec![0f32; m * n];
            let mut best = f64::INFINITY;
            for _ in 0..6 {
                let t0 = cpu_now();
                unsafe {
                    f(
                        m,
                        k,
                        n,
                        1.0,
                        a.as_ptr(),
                        k as isize,
                        1,
                        b.as_ptr(),
                        n as isize,
                        1,
                        0.0,
                        c.as_mut_ptr(),
                        n as isize,
                        1,
                    )
                };
                best = best.min(cpu_now() - t0);
            }
            println!(
                "{m}x{k}x{n} {name:15} {:.0} GFLOP/s",
                2.0 * (m * k * n) as f64 / best * 1e-9
            );
        }
    }
}

/// A B prepared once (gemm::prepare) and multiplied by several A through gemm_prepared gives the
/// bits of gemm, for ragged widths, several K blocks, threaded splits and beta 0 / 1.
#[test]
fn prepared_b_gives_the_bits_of_gemm() {
    use ferrotron_kernels::cpu::gemm::{gemm, gemm_prepared, prepare, prepared_len, View, ViewMut};
    let mut g = rng(11);
    for &(m, k, n) in &[
        (5, 7, 33),
        (40, 300, 1000),
        (330, 128, 5000),
        (64, 600, 97),
        (1, 1, 1),
    ] {
        let Some(len) = prepared_len::<f32>(k, n) else {
            assert!(!sgemm::available(), "the engine has a prepared form");
            return;
        };
        // Bᵀ row-major [n × k], as the head's W_head [V × D]
        let bt = uniform_f32(&mut g, n * k);
        let mut packed = vec![f32::NAN; len];
        prepare(View::row_major(&bt, n, k).t(), &mut packed);
        for beta in [0.0f32, 1.0] {
            let a = uniform_f32(&mut g, m * k);
            let c0 = uniform_f32(&mut g, m * n);
            let (mut want, mut got) = (c0.clone(), c0.clone());
            gemm(
                1.0,
                View::row_major(&a, m, k),
                View::row_major(&bt, n, k).t(),
                beta,
                ViewMut::row_major(&mut want, m, n),
            );
            gemm_prepared(
                View::row_major(&a, m, k),
                &packed,
                n,
                beta,
                ViewMut::row_major(&mut got, m, n),
            );
            let same = got
                .iter()
                .zip(&want)
                .all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(
                same,
                "[{m} x {k}] · [{k} x {n}] beta {beta}: prepared differs"
            );
        }
    }
}
