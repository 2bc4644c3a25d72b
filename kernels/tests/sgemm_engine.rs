//! The f32 GEMM engine (kernels/src/cpu/sgemm) against matrixmultiply 0.3, which it replaced:
//! on an AVX-512 machine every element must be the same bits (the engine's arithmetic contract
//! is that of matrixmultiply's AVX-512 kernel); elsewhere the engine is not used and the test
//! checks the product `CpuFloat::gemm` gives against an f64 reference instead.
//! Shapes cover ragged tiles (m, n not multiples of 12/32/16), several K blocks (k > 256), every
//! operand layout (row-major, column-major, transposed views, C column-major) and the
//! alpha/beta combinations whose epilogues differ (alpha ≠ 1 with beta ≠ 0).

mod common;

use common::*;
use ferrotron_kernels::cpu::sgemm::{self, with_isa, Isa};
use ferrotron_kernels::cpu::CpuFloat;
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

#[derive(Debug)]
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

/// A case with its operands A, B and C's starting value.
type Operands = (Case, Vec<f32>, Vec<f32>, Vec<f32>);

/// `n` random cases over the shapes, layouts and coefficients of the top comment, with their
/// operands.
fn random_cases(seed: u64, n: usize) -> Vec<Operands> {
    let mut g = rng(seed);
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
    (0..n)
        .map(|_| {
            let (alpha, beta) = coefs[g.random_range(0..coefs.len())];
            let case = Case {
                m: dims[g.random_range(0..dims.len())],
                k: ks[g.random_range(0..ks.len())],
                n: dims[g.random_range(0..dims.len())],
                alpha,
                beta,
                la: layouts[g.random_range(0..2)],
                lb: layouts[g.random_range(0..2)],
                lc: layouts[g.random_range(0..2)],
            };
            let a = uniform_f32(&mut g, case.m * case.k);
            let b = uniform_f32(&mut g, case.k * case.n);
            let c0 = uniform_f32(&mut g, case.m * case.n);
            (case, a, b, c0)
        })
        .collect()
}

/// The first element whose bits differ, as a message.
fn first_difference(case: &Case, got: &[f32], want: &[f32], what: &str) -> Option<String> {
    let i = got
        .iter()
        .zip(want)
        .position(|(x, y)| x.to_bits() != y.to_bits())?;
    Some(format!(
        "m {} k {} n {} alpha {} beta {} {:?} {:?} {:?}: element {i} is {} ({what} {})",
        case.m, case.k, case.n, case.alpha, case.beta, case.la, case.lb, case.lc, got[i], want[i]
    ))
}

/// The engine's arithmetic contract (kernels/src/cpu/sgemm/mod.rs), element by element in
/// scalar f32: one FMA chain from zero in k order per block of KC, then the epilogue of the
/// element's place against the 16 × 16 grid.
#[allow(clippy::too_many_arguments)]
unsafe fn contract_reference(
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
    let (full_m, full_n) = (m - m % 16, n - n % 16);
    for i in 0..m {
        for j in 0..n {
            let c = c.offset(i as isize * rsc + j as isize * csc);
            for (kb, k0) in (0..k).step_by(sgemm::KC).enumerate() {
                let mut ab = 0f32;
                for kk in k0..k.min(k0 + sgemm::KC) {
                    let x = *a.offset(i as isize * rsa + kk as isize * csa);
                    let y = *b.offset(kk as isize * rsb + j as isize * csb);
                    ab = x.mul_add(y, ab);
                }
                let beta = if kb == 0 { beta } else { 1.0 };
                *c = if beta == 0.0 {
                    alpha * ab
                } else if i < full_m && j < full_n {
                    alpha.mul_add(ab, beta * *c)
                } else {
                    beta * *c + alpha * ab
                };
            }
        }
    }
}

/// Every kernel family this CPU has (isa.rs) gives the contract's bits, for every shape,
/// layout and epilogue of `random_cases`, through `sgemm` and through a prepared B.
#[test]
fn engine_follows_its_contract_on_every_isa() {
    let isas: Vec<Isa> = [Isa::Avx512, Isa::Avx2]
        .into_iter()
        .filter(|i| i.supported())
        .collect();
    println!("kernel families on this CPU: {isas:?}");
    assert_eq!(
        isas.is_empty(),
        !sgemm::available(),
        "the engine runs where a family does"
    );
    let cases = random_cases(7, 300);
    for &isa in &isas {
        for (case, a, b, c0) in &cases {
            let want = run(case, a, b, c0, contract_reference);
            let got = with_isa(isa, || run(case, a, b, c0, sgemm::sgemm));
            if let Some(msg) = first_difference(case, &got, &want, "contract") {
                panic!("{isa:?}: {msg}");
            }
        }
        // prepared B (the head's logits): Bᵀ row-major, beta 0 and 1, a column window
        let mut g = rng(13);
        for &(m, k, n, first) in &[(5, 7, 33, 0), (40, 300, 200, 64), (30, 600, 97, 32)] {
            let bt = uniform_f32(&mut g, n * k);
            let mut packed = vec![f32::NAN; sgemm::prepared_len(k, n)];
            let panels = n.div_ceil(sgemm::PREPARED_COLS);
            with_isa(isa, || unsafe {
                sgemm::prepare_b(
                    k,
                    n,
                    bt.as_ptr(),
                    1,
                    k as isize,
                    packed.as_mut_ptr(),
                    0..panels,
                )
            });
            let cols = n - first;
            for beta in [0.0f32, 1.0] {
                let case = Case {
                    m,
                    k,
                    n: cols,
                    alpha: 1.0,
                    beta,
                    la: Layout::RowMajor,
                    lb: Layout::ColMajor,
                    lc: Layout::RowMajor,
                };
                let a = uniform_f32(&mut g, m * k);
                let c0 = uniform_f32(&mut g, m * cols);
                let b_window: Vec<f32> = (0..cols)
                    .flat_map(|j| bt[(first + j) * k..(first + j + 1) * k].iter().copied())
                    .collect();
                let want = run(&case, &a, &b_window, &c0, contract_reference);
                let mut got = c0.clone();
                with_isa(isa, || unsafe {
                    sgemm::sgemm_prepared(
                        m,
                        k,
                        cols,
                        a.as_ptr(),
                        k as isize,
                        1,
                        packed.as_ptr(),
                        n,
                        first,
                        beta,
                        got.as_mut_ptr(),
                        cols as isize,
                    )
                });
                if let Some(msg) = first_difference(&case, &got, &want, "contract") {
                    panic!("{isa:?} prepared, first column {first}: {msg}");
                }
            }
        }
    }
}

/// |alpha|·Σ_k |a[i, k]·b[k, j]| + |beta·c0[i, j]| per element of C (in C's layout), in f64.
fn abs_product(case: &Case, a: &[f32], b: &[f32], c0: &[f32]) -> Vec<f64> {
    let (rsa, csa) = strides(case.la, case.m, case.k);
    let (rsb, csb) = strides(case.lb, case.k, case.n);
    let (rsc, csc) = strides(case.lc, case.m, case.n);
    let mut out = vec![0f64; case.m * case.n];
    for i in 0..case.m {
        for j in 0..case.n {
            let at = (i as isize * rsc + j as isize * csc) as usize;
            let sum: f64 = (0..case.k)
                .map(|k| {
                    let x = a[(i as isize * rsa + k as isize * csa) as usize] as f64;
                    let y = b[(k as isize * rsb + j as isize * csb) as usize] as f64;
                    (x * y).abs()
                })
                .sum();
            out[at] = case.alpha.abs() as f64 * sum + (case.beta * c0[at]).abs() as f64;
        }
    }
    out
}

/// The engine against matrixmultiply, whose AVX-512 kernel its contract was taken from: on an
/// AVX-512 CPU every element is the same bits (the training bits did not change when the
/// engine came); on an AVX2 CPU matrixmultiply's own 8 × 8 kernel rounds alpha·ab + beta·c on
/// another grid, so the bits agree wherever the two epilogue forms do (alpha = 1, or beta = 0
/// within one K block: every product of a training step but attention's scaled tiles) and the
/// rest are held to a rounding of the epilogue. Without the engine, `CpuFloat::gemm` is matrixmultiply.
#[test]
fn engine_matches_matrixmultiply_bit_for_bit() {
    let detected = Isa::detected();
    println!("engine on this CPU: {detected:?}");
    let mut near = 0;
    for (case, a, b, c0) in &random_cases(7, 400) {
        let reference = run(case, a, b, c0, matrixmultiply::sgemm);
        let got = run(case, a, b, c0, <f32 as CpuFloat>::gemm);
        // a product over several K blocks adds each block with beta' = 1
        let uniform_epilogue = case.alpha == 1.0 || (case.beta == 0.0 && case.k <= sgemm::KC);
        match detected {
            Some(Isa::Avx2) if !uniform_epilogue => {
                // each of the (at most 3) K blocks' epilogues rounds differently once, at most
                // half an ulp of a partial result bounded by |alpha|·Σ|a·b| + |beta·c0|
                let magnitude = abs_product(case, a, b, c0);
                for ((x, y), bound) in got.iter().zip(&reference).zip(&magnitude) {
                    let tol = 4.0 * f32::EPSILON as f64 * bound;
                    assert!(
                        ((x - y) as f64).abs() <= tol,
                        "{x} vs matrixmultiply {y} (bound {tol:e}): {case:?}"
                    );
                }
                near += 1;
            }
            _ => {
                if let Some(msg) = first_difference(case, &got, &reference, "matrixmultiply") {
                    panic!("{msg}");
                }
            }
        }
    }
    println!("{near} of 400 cases held to a rounding per K block (scaled epilogue on AVX2)");
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
    // the shape, from the environment where set
    let env_or = |name: &str, default: usize| -> usize {
        std::env::var(name)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(default)
    };
    let (d, rows, v) = (
        env_or("BENCH_D", 128),
        env_or("BENCH_ROWS", 165),
        env_or("BENCH_V", 25_129),
    );
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
