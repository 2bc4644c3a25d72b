//! Every op of `CudaBackend<A>` against the CPU reference `CpuBackend<f32>` (attention also against
//! an f64 reference in this file), on fresh random inputs (seed printed; FERROTRON_TEST_SEED fixes it).
//! Inputs are rounded through A first, so both backends see the same numbers. Outputs that an op
//! overwrites are poisoned with NaN on the GPU first; outputs it adds into start from the same
//! random values on both sides. Pass: ‖cuda − ref‖/‖ref‖ ≤ 1e-5 (f32), ≤ 1e-2 (bf16), no NaN.
//! Each line "CUDA-OP <op> <dtype> rel=<err>" is collected by scripts/gpu-check.sh.
//!
//! The GPU tests are #[ignore = "needs a CUDA GPU"]; run with --include-ignored on the GPU machine.
//! `no_driver_is_an_error_not_a_panic` runs everywhere.

mod common;
use common::rel_err;

use ferrotron_kernels::backend::{
    AdamWGroup, AdamWStep, AttnDims, Backend, Buffer, Dst, Gelu, Glu, LinearDims, Src, VocabSlice,
    WeightGrads, WeightLayout,
};
use ferrotron_kernels::cpu::CpuBackend;
use ferrotron_kernels::cuda::{device, CudaAct, CudaBackend};
use half::bf16;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const TOL_F32: f64 = 1e-5;
const TOL_BF16: f64 = 1e-2;

thread_local! {
    /// Set by the multi-stream tests: the backend's context then also has a side stream, which
    /// switches cudarc into per-buffer event tracking.
    static SIDE_STREAM: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

struct T<A: CudaAct> {
    _side: Option<std::sync::Arc<cudarc::driver::CudaStream>>,
    g: CudaBackend<A>,
    c: CpuBackend<f32>,
    rng: ChaCha8Rng,
    tol: f64,
}

fn setup<A: CudaAct>() -> T<A> {
    let seed = std::env::var("FERROTRON_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    eprintln!("seed {seed} ({})", A::NAME);
    let g = CudaBackend::<A>::new(0).expect("a CUDA device");
    let tol = if A::NAME == "f32" { TOL_F32 } else { TOL_BF16 };
    let _side = SIDE_STREAM
        .get()
        .then(|| g.context().new_stream().expect("a side stream"));
    T {
        _side,
        g,
        c: CpuBackend::new(),
        rng: ChaCha8Rng::seed_from_u64(seed),
        tol,
    }
}

impl<A: CudaAct> T<A> {
    /// n values uniform in [-s, s), rounded through A.
    fn rand(&mut self, n: usize, s: f32) -> Vec<f32> {
        (0..n)
            .map(|_| A::from_f32(self.rng.random_range(-s..s)).to_f32())
            .collect()
    }
    fn ids(&mut self, n: usize, v: usize) -> Vec<i32> {
        (0..n).map(|_| self.rng.random_range(0..v as i32)).collect()
    }
    fn act(&self, h: &[f32]) -> cudarc::driver::CudaSlice<A> {
        self.g.upload_act(h).unwrap()
    }
    fn acc(&self, h: &[f32]) -> cudarc::driver::CudaSlice<f32> {
        self.g.upload_acc(h).unwrap()
    }
    fn idx(&self, h: &[i32]) -> cudarc::driver::CudaSlice<i32> {
        self.g.upload_idx(h).unwrap()
    }
    fn nan_act(&self, n: usize) -> cudarc::driver::CudaSlice<A> {
        self.act(&vec![f32::NAN; n])
    }
    fn nan_acc(&self, n: usize) -> cudarc::driver::CudaSlice<f32> {
        self.acc(&vec![f32::NAN; n])
    }
    fn get_act(&self, b: &cudarc::driver::CudaSlice<A>) -> Vec<f32> {
        self.g.download_act(Src::all(b)).unwrap()
    }
    fn get_acc(&self, b: &cudarc::driver::CudaSlice<f32>) -> Vec<f32> {
        self.g.download_acc(Src::all(b)).unwrap()
    }
    /// Asserts ‖gpu − reference‖/‖reference‖ ≤ tol (tol scaled by `slack` for inherently lossy ops).
    fn check(&self, op: &str, gpu: &[f32], reference: &[f32], slack: f64) {
        let rel = rel_err(gpu, reference);
        eprintln!("CUDA-OP {op} {} rel={rel:.3e}", A::NAME);
        assert!(
            rel <= self.tol * slack,
            "{op} ({}): relative error {rel:.3e} over {:.1e}",
            A::NAME,
            self.tol * slack
        );
    }
}

macro_rules! gpu_tests {
    ($($name:ident),* $(,)?) => {
        mod f32_ {
            $( #[test] #[ignore = "needs a CUDA GPU"] fn $name() { super::$name::<f32>(); } )*
        }
        mod bf16_ {
            $( #[test] #[ignore = "needs a CUDA GPU"] fn $name() { super::$name::<super::bf16>(); } )*
        }
    };
}

gpu_tests!(
    memory,
    copy_columns,
    embedding,
    linear,
    rmsnorm,
    layernorm,
    residual_norms,
    rope,
    activations,
    cross_entropy,
    vocab_parallel_cross_entropy,
    reductions,
    adamw,
    attention
);

/// The same op checks with a second stream on the context (cudarc's multi-stream mode).
#[test]
#[ignore = "needs a CUDA GPU"]
fn multi_stream_mode() {
    SIDE_STREAM.set(true);
    memory::<bf16>();
    linear::<bf16>();
    layernorm::<f32>();
    cross_entropy::<bf16>();
    reductions::<f32>();
    adamw::<f32>();
    attention::<bf16>();
    residual_norms::<bf16>();
}

#[test]
fn no_driver_is_an_error_not_a_panic() {
    if device::driver_present() {
        eprintln!("libcuda present: the no-driver path cannot be exercised here");
        return;
    }
    let err = CudaBackend::<f32>::new(0)
        .err()
        .expect("an error without a driver");
    assert!(
        err.to_string().contains("no NVIDIA driver/libcuda"),
        "{err}"
    );
    assert!(CudaBackend::<bf16>::new(0).is_err());
}

fn memory<A: CudaAct>() {
    let mut t = setup::<A>();
    let h = t.rand(1000, 2.0);
    let a = t.act(&h);
    t.check("upload_download_act", &t.get_act(&a), &h, 1.0);
    let mut acc = t.acc(&h);
    t.g.fill_zero_acc(Dst::range(&mut acc, 100, 200)).unwrap();
    let mut want = h.clone();
    want[100..300].iter_mut().for_each(|x| *x = 0.0);
    t.check("fill_zero_acc", &t.get_acc(&acc), &want, 1.0);
    let mut a2 = t.act(&h);
    t.g.fill_zero_act(Dst::range(&mut a2, 5, 7)).unwrap();
    let mut want = h.clone();
    want[5..12].iter_mut().for_each(|x| *x = 0.0);
    t.check("fill_zero_act", &t.get_act(&a2), &want, 1.0);
    let mut dst = t.nan_acc(600);
    t.g.copy_acc(Src::range(&acc, 300, 600), Dst::all(&mut dst))
        .unwrap();
    t.check("copy_acc", &t.get_acc(&dst), &h[300..900], 1.0);
    let master = t.rand(777, 3.0);
    let m = t.acc(&master);
    let mut out = t.nan_act(777);
    t.g.acc_to_act(Src::all(&m), Dst::all(&mut out)).unwrap();
    t.check("acc_to_act", &t.get_act(&out), &master, 1.0);
    assert_eq!(
        t.g.download_acc(Src::all(&t.acc(&[]))).unwrap(),
        Vec::<f32>::new()
    );
}

fn copy_columns<A: CudaAct>() {
    let mut t = setup::<A>();
    let (rows, sc, dc, w) = (37, 96, 40, 32);
    let src = t.rand(rows * sc, 1.0);
    for acc in [false, true] {
        let init = t.rand(rows * dc, 1.0);
        let (gs, mut gd) = (t.act(&src), t.act(&init));
        let (cs, mut cd) = (src.clone(), init.clone());
        t.g.copy_columns(
            Src::all(&gs),
            sc,
            64,
            Dst::all(&mut gd),
            dc,
            5,
            rows,
            w,
            acc,
        )
        .unwrap();
        t.c.copy_columns(
            Src::all(&cs),
            sc,
            64,
            Dst::all(&mut cd),
            dc,
            5,
            rows,
            w,
            acc,
        )
        .unwrap();
        t.check(
            if acc {
                "copy_columns_acc"
            } else {
                "copy_columns"
            },
            &t.get_act(&gd),
            &cd,
            1.0,
        );
    }
}

fn embedding<A: CudaAct>() {
    let mut t = setup::<A>();
    let (n, v, d) = (300, 50, 72);
    let ids = t.ids(n, v);
    let table = t.rand(v * d, 1.0);
    let mut out = t.nan_act(n * d);
    let mut cout = vec![0f32; n * d];
    t.g.embedding_forward(
        Src::all(&t.idx(&ids)),
        Src::all(&t.act(&table)),
        Dst::all(&mut out),
        n,
        d,
    )
    .unwrap();
    t.c.embedding_forward(Src::all(&ids), Src::all(&table), Dst::all(&mut cout), n, d)
        .unwrap();
    t.check("embedding_forward", &t.get_act(&out), &cout, 1.0);
    let dout = t.rand(n * d, 1.0);
    let init = t.rand(v * d, 1.0);
    let mut gdt = t.acc(&init);
    let mut cdt = init.clone();
    t.g.embedding_backward(
        Src::all(&t.idx(&ids)),
        Src::all(&t.act(&dout)),
        Dst::all(&mut gdt),
        n,
        d,
    )
    .unwrap();
    t.c.embedding_backward(Src::all(&ids), Src::all(&dout), Dst::all(&mut cdt), n, d)
        .unwrap();
    t.check("embedding_backward", &t.get_acc(&gdt), &cdt, 1.0);
}

fn linear<A: CudaAct>() {
    let mut t = setup::<A>();
    let (n, i, o) = (67, 96, 80);
    for layout in [WeightLayout::OutIn, WeightLayout::InOut] {
        for bias in [false, true] {
            let tag = format!("{layout:?}{}", if bias { "+b" } else { "" });
            let dims = LinearDims {
                n,
                inp: i,
                out: o,
                layout,
            };
            // x starts at an odd offset: cuBLASLt must cope with unaligned regions.
            let x = t.rand(n * i + 3, 1.0);
            let w = t.rand(i * o, 0.3);
            let b = t.rand(o, 1.0);
            let (gx, gw, gb) = (t.act(&x), t.act(&w), t.act(&b));
            let mut gy = t.nan_act(n * o);
            let mut cy = vec![0f32; n * o];
            let gbs = bias.then(|| Src::all(&gb));
            t.g.linear_forward(
                Src::range(&gx, 3, n * i),
                Src::all(&gw),
                gbs,
                Dst::all(&mut gy),
                dims,
            )
            .unwrap();
            let cbs = bias.then(|| Src::all(&b));
            t.c.linear_forward(
                Src::range(&x, 3, n * i),
                Src::all(&w),
                cbs,
                Dst::all(&mut cy),
                dims,
            )
            .unwrap();
            t.check(&format!("linear_forward[{tag}]"), &t.get_act(&gy), &cy, 1.0);

            let dy = t.rand(n * o, 1.0);
            let dx0 = t.rand(n * i, 1.0);
            // grads buffer: [bias o][pad 1][weight i*o]: the weight region starts unaligned.
            let g0 = t.rand(o + 1 + i * o, 1.0);
            let (wr, br) = ((o + 1, i * o), bias.then_some((0, o)));
            let (mut gdx, mut ggr) = (t.act(&dx0), t.acc(&g0));
            let (mut cdx, mut cgr) = (dx0.clone(), g0.clone());
            let gdy = t.act(&dy);
            t.g.linear_backward(
                Src::range(&gx, 3, n * i),
                Src::all(&gw),
                Src::all(&gdy),
                Some(Dst::all(&mut gdx)),
                WeightGrads::new(&mut ggr, wr, br),
                dims,
            )
            .unwrap();
            t.c.linear_backward(
                Src::range(&x, 3, n * i),
                Src::all(&w),
                Src::all(&dy),
                Some(Dst::all(&mut cdx)),
                WeightGrads::new(&mut cgr, wr, br),
                dims,
            )
            .unwrap();
            t.check(
                &format!("linear_backward_dx[{tag}]"),
                &t.get_act(&gdx),
                &cdx,
                1.0,
            );
            assert!(
                rel_err(&cgr, &g0) > 1e-2,
                "the reference did not change dW/db"
            );
            let gg = t.get_acc(&ggr);
            t.check(
                &format!("linear_backward_dw[{tag}]"),
                &gg[o + 1..],
                &cgr[o + 1..],
                1.0,
            );
            t.check(
                &format!("linear_backward_db_pad[{tag}]"),
                &gg[..o + 1],
                &cgr[..o + 1],
                1.0,
            );
        }
    }
}

fn rmsnorm<A: CudaAct>() {
    let mut t = setup::<A>();
    // (2400, 128) .. (700, 32): Qwen3's q/k norms, RMSNorm over the N·H rows of one head; the
    // offset 1: Gemma's scale 1 + w
    for (n, d, off) in [
        (64, 96, 0.0),
        (9, 1000, 0.0),
        (3, 2048, 0.0),
        (2400, 128, 0.0),
        (1500, 64, 0.0),
        (700, 32, 0.0),
        (64, 96, 1.0),
        (700, 32, 1.0),
    ] {
        let (x, w) = (t.rand(n * d, 2.0), t.rand(d, 1.0));
        let (gx, gw) = (t.act(&x), t.act(&w));
        let (mut gy, mut gr) = (t.nan_act(n * d), t.nan_acc(n));
        let (mut cy, mut cr) = (vec![0f32; n * d], vec![0f32; n]);
        t.g.rmsnorm_forward(
            Src::all(&gx),
            Src::all(&gw),
            Dst::all(&mut gy),
            Dst::all(&mut gr),
            n,
            d,
            1e-5,
            off,
        )
        .unwrap();
        t.c.rmsnorm_forward(
            Src::all(&x),
            Src::all(&w),
            Dst::all(&mut cy),
            Dst::all(&mut cr),
            n,
            d,
            1e-5,
            off,
        )
        .unwrap();
        t.check("rmsnorm_forward_y", &t.get_act(&gy), &cy, 1.0);
        t.check("rmsnorm_forward_rstd", &t.get_acc(&gr), &cr, 1.0);
        let (dy, dx0, dw0) = (t.rand(n * d, 1.0), t.rand(n * d, 1.0), t.rand(d, 1.0));
        let (mut gdx, mut gdw) = (t.act(&dx0), t.acc(&dw0));
        let (mut cdx, mut cdw) = (dx0.clone(), dw0.clone());
        let gdy = t.act(&dy);
        t.g.rmsnorm_backward(
            Src::all(&gx),
            Src::all(&gw),
            Src::all(&gr),
            Src::all(&gdy),
            Dst::all(&mut gdx),
            Dst::all(&mut gdw),
            n,
            d,
            off,
        )
        .unwrap();
        t.c.rmsnorm_backward(
            Src::all(&x),
            Src::all(&w),
            Src::all(&cr),
            Src::all(&dy),
            Dst::all(&mut cdx),
            Dst::all(&mut cdw),
            n,
            d,
            off,
        )
        .unwrap();
        t.check("rmsnorm_backward_dx", &t.get_act(&gdx), &cdx, 1.0);
        t.check("rmsnorm_backward_dw", &t.get_acc(&gdw), &cdw, 1.0);
    }
}

fn layernorm<A: CudaAct>() {
    let mut t = setup::<A>();
    for (n, d) in [(64, 96), (9, 1000), (3, 2048)] {
        let (x, w, b) = (t.rand(n * d, 2.0), t.rand(d, 1.0), t.rand(d, 1.0));
        let (gx, gw, gb) = (t.act(&x), t.act(&w), t.act(&b));
        let (mut gy, mut gm, mut gr) = (t.nan_act(n * d), t.nan_acc(n), t.nan_acc(n));
        let (mut cy, mut cm, mut cr) = (vec![0f32; n * d], vec![0f32; n], vec![0f32; n]);
        t.g.layernorm_forward(
            Src::all(&gx),
            Src::all(&gw),
            Src::all(&gb),
            Dst::all(&mut gy),
            Dst::all(&mut gm),
            Dst::all(&mut gr),
            n,
            d,
            1e-5,
        )
        .unwrap();
        t.c.layernorm_forward(
            Src::all(&x),
            Src::all(&w),
            Src::all(&b),
            Dst::all(&mut cy),
            Dst::all(&mut cm),
            Dst::all(&mut cr),
            n,
            d,
            1e-5,
        )
        .unwrap();
        t.check("layernorm_forward_y", &t.get_act(&gy), &cy, 1.0);
        t.check("layernorm_forward_mean", &t.get_acc(&gm), &cm, 1.0);
        t.check("layernorm_forward_rstd", &t.get_acc(&gr), &cr, 1.0);
        let (dy, dx0, g0) = (t.rand(n * d, 1.0), t.rand(n * d, 1.0), t.rand(2 * d, 1.0));
        let (mut gdx, mut ggr) = (t.act(&dx0), t.acc(&g0));
        let (mut cdx, mut cgr) = (dx0.clone(), g0.clone());
        let gdy = t.act(&dy);
        let (wr, br) = ((0, d), Some((d, d)));
        t.g.layernorm_backward(
            Src::all(&gx),
            Src::all(&gw),
            Src::all(&gm),
            Src::all(&gr),
            Src::all(&gdy),
            Dst::all(&mut gdx),
            WeightGrads::new(&mut ggr, wr, br),
            n,
            d,
        )
        .unwrap();
        t.c.layernorm_backward(
            Src::all(&x),
            Src::all(&w),
            Src::all(&cm),
            Src::all(&cr),
            Src::all(&dy),
            Dst::all(&mut cdx),
            WeightGrads::new(&mut cgr, wr, br),
            n,
            d,
        )
        .unwrap();
        t.check("layernorm_backward_dx", &t.get_act(&gdx), &cdx, 1.0);
        let gg = t.get_acc(&ggr);
        t.check("layernorm_backward_dw", &gg[..d], &cgr[..d], 1.0);
        t.check("layernorm_backward_db", &gg[d..], &cgr[d..], 1.0);
    }
}

/// The residual add fused with RMSNorm / LayerNorm: against the CPU reference (which is itself
/// bit for bit add_inplace + norm, kernels/tests/residual_norm.rs), and against the GPU's own
/// add_inplace + norm: h must match exactly, the outputs and statistics to 1e-6 (the kernels
/// share the reduction order, so in practice they match bit for bit; the count is printed).
fn residual_norms<A: CudaAct>() {
    let mut t = setup::<A>();
    for (n, d) in [(64, 96), (9, 1000), (3, 2048), (5, 4096)] {
        let (h0, y) = (t.rand(n * d, 2.0), t.rand(n * d, 1.0));
        let (w, b) = (t.rand(d, 1.0), t.rand(d, 1.0));
        let (gy, gw, gb) = (t.act(&y), t.act(&w), t.act(&b));
        for ln in [false, true] {
            let op = if ln {
                "residual_layernorm"
            } else {
                "residual_rmsnorm"
            };
            // fused, on the GPU
            let (mut gh, mut gout) = (t.act(&h0), t.nan_act(n * d));
            let (mut gm, mut gr) = (t.nan_acc(n), t.nan_acc(n));
            // unfused, on the GPU
            let (mut uh, mut uout) = (t.act(&h0), t.nan_act(n * d));
            let (mut um, mut ur) = (t.nan_acc(n), t.nan_acc(n));
            // CPU
            let (mut ch, mut cout) = (h0.clone(), vec![0f32; n * d]);
            let (mut cm, mut cr) = (vec![0f32; n], vec![0f32; n]);
            t.g.add_inplace(Dst::all(&mut uh), Src::all(&gy)).unwrap();
            if ln {
                t.g.residual_layernorm_forward(
                    Dst::all(&mut gh),
                    Src::all(&gy),
                    Src::all(&gw),
                    Src::all(&gb),
                    Dst::all(&mut gout),
                    Dst::all(&mut gm),
                    Dst::all(&mut gr),
                    n,
                    d,
                    1e-5,
                )
                .unwrap();
                t.g.layernorm_forward(
                    Src::all(&uh),
                    Src::all(&gw),
                    Src::all(&gb),
                    Dst::all(&mut uout),
                    Dst::all(&mut um),
                    Dst::all(&mut ur),
                    n,
                    d,
                    1e-5,
                )
                .unwrap();
                t.c.residual_layernorm_forward(
                    Dst::all(&mut ch),
                    Src::all(&y),
                    Src::all(&w),
                    Src::all(&b),
                    Dst::all(&mut cout),
                    Dst::all(&mut cm),
                    Dst::all(&mut cr),
                    n,
                    d,
                    1e-5,
                )
                .unwrap();
            } else {
                t.g.residual_rmsnorm_forward(
                    Dst::all(&mut gh),
                    Src::all(&gy),
                    Src::all(&gw),
                    Dst::all(&mut gout),
                    Dst::all(&mut gr),
                    n,
                    d,
                    1e-5,
                    0.0,
                )
                .unwrap();
                t.g.rmsnorm_forward(
                    Src::all(&uh),
                    Src::all(&gw),
                    Dst::all(&mut uout),
                    Dst::all(&mut ur),
                    n,
                    d,
                    1e-5,
                    0.0,
                )
                .unwrap();
                t.c.residual_rmsnorm_forward(
                    Dst::all(&mut ch),
                    Src::all(&y),
                    Src::all(&w),
                    Dst::all(&mut cout),
                    Dst::all(&mut cr),
                    n,
                    d,
                    1e-5,
                    0.0,
                )
                .unwrap();
            }
            // The CPU adds in f32; on bf16 the GPU rounds h to bf16, and so must the reference.
            let ch_a: Vec<f32> = ch.iter().map(|&x| A::from_f32(x).to_f32()).collect();
            let (h_g, out_g, r_g) = (t.get_act(&gh), t.get_act(&gout), t.get_acc(&gr));
            t.check(&format!("{op}_h"), &h_g, &ch_a, 1.0);
            t.check(&format!("{op}_out"), &out_g, &cout, 1.0);
            t.check(&format!("{op}_rstd"), &r_g, &cr, 1.0);
            if ln {
                t.check(&format!("{op}_mean"), &t.get_acc(&gm), &cm, 1.0);
            }
            // fused vs unfused on the GPU
            let (h_u, out_u, r_u) = (t.get_act(&uh), t.get_act(&uout), t.get_acc(&ur));
            assert_eq!(
                h_g.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                h_u.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                "{op}: fused h differs from add_inplace"
            );
            let mut pairs = vec![(&out_g, &out_u), (&r_g, &r_u)];
            let (m_g, m_u) = (t.get_acc(&gm), t.get_acc(&um));
            if ln {
                pairs.push((&m_g, &m_u));
            }
            let mut differ = 0;
            for (f, u) in pairs {
                let rel = rel_err(f, u);
                assert!(rel <= 1e-6, "{op}: fused vs unfused rel {rel:.3e}");
                differ += f
                    .iter()
                    .zip(u)
                    .filter(|(a, b)| a.to_bits() != b.to_bits())
                    .count();
            }
            eprintln!(
                "{op} {} [{n} x {d}]: {differ} elements differ in bits from add_inplace + norm",
                A::NAME
            );
        }
    }
}

/// The default table and a llama3-style scaled one (low band / 8, a smoothed middle band, high
/// band unchanged), a linear-scaled one and a partial one (rotary dim 48 of 64): the op takes
/// any table.
fn rope<A: CudaAct>() {
    let mut t = setup::<A>();
    let (n, h, dh) = (50, 3, 64);
    let pos: Vec<i32> = (0..n as i32).map(|i| i * 37 % 4096).collect();
    let default = ferrotron_kernels::rope_inv_freq(10000.0, dh);
    let llama3: Vec<f64> = ferrotron_kernels::rope_inv_freq(500000.0, dh)
        .iter()
        .enumerate()
        .map(|(i, f)| {
            if i < 8 {
                *f
            } else if i < 16 {
                f * (0.5 + i as f64 / 64.0)
            } else {
                f / 8.0
            }
        })
        .collect();
    let linear: Vec<f64> = default.iter().map(|f| f / 4.0).collect();
    // partial rotary (Phi-4-mini's factor 0.75): dims 48..64 pass through
    let partial = ferrotron_kernels::rope_inv_freq(10000.0, 48);
    // m: the attention factor on cos and sin (yarn, longrope), 1 otherwise
    for (name, table, m) in [
        ("default", &default, 1.0),
        ("llama3", &llama3, 1.0),
        ("linear", &linear, 1.0),
        ("partial", &partial, 1.0),
        ("partial_scaled", &partial, 1.18),
    ] {
        let x = t.rand(n * h * dh, 1.0);
        let gpos = t.idx(&pos);
        let mut gx = t.act(&x);
        let mut cx = x.clone();
        t.g.rope_forward(Dst::all(&mut gx), Src::all(&gpos), n, h, dh, table, m)
            .unwrap();
        t.c.rope_forward(Dst::all(&mut cx), Src::all(&pos), n, h, dh, table, m)
            .unwrap();
        t.check(&format!("rope_forward_{name}"), &t.get_act(&gx), &cx, 1.0);
        let dy = t.rand(n * h * dh, 1.0);
        let (mut gd, mut cd) = (t.act(&dy), dy.clone());
        t.g.rope_backward(Dst::all(&mut gd), Src::all(&gpos), n, h, dh, table, m)
            .unwrap();
        t.c.rope_backward(Dst::all(&mut cd), Src::all(&pos), n, h, dh, table, m)
            .unwrap();
        t.check(&format!("rope_backward_{name}"), &t.get_act(&gd), &cd, 1.0);
    }
}

fn activations<A: CudaAct>() {
    let mut t = setup::<A>();
    let n = 10_007;
    let (g, u, d) = (t.rand(n, 4.0), t.rand(n, 2.0), t.rand(n, 1.0));
    let (gg, gu, gdo) = (t.act(&g), t.act(&u), t.act(&d));
    let (i1, i2) = (t.rand(n, 1.0), t.rand(n, 1.0));
    for kind in [Glu::Silu, Glu::Gelu(Gelu::Tanh), Glu::Gelu(Gelu::Erf)] {
        let mut go = t.nan_act(n);
        let mut co = vec![0f32; n];
        t.g.glu_forward(kind, Src::all(&gg), Src::all(&gu), Dst::all(&mut go))
            .unwrap();
        t.c.glu_forward(kind, Src::all(&g), Src::all(&u), Dst::all(&mut co))
            .unwrap();
        t.check(&format!("glu_forward {kind:?}"), &t.get_act(&go), &co, 1.0);
        let (mut gdg, mut gdu) = (t.act(&i1), t.act(&i2));
        let (mut cdg, mut cdu) = (i1.clone(), i2.clone());
        t.g.glu_backward(
            kind,
            Src::all(&gg),
            Src::all(&gu),
            Src::all(&gdo),
            Dst::all(&mut gdg),
            Dst::all(&mut gdu),
        )
        .unwrap();
        t.c.glu_backward(
            kind,
            Src::all(&g),
            Src::all(&u),
            Src::all(&d),
            Dst::all(&mut cdg),
            Dst::all(&mut cdu),
        )
        .unwrap();
        t.check(
            &format!("glu_backward_dgate {kind:?}"),
            &t.get_act(&gdg),
            &cdg,
            1.0,
        );
        t.check(
            &format!("glu_backward_dup {kind:?}"),
            &t.get_act(&gdu),
            &cdu,
            1.0,
        );
    }
    for kind in [Gelu::Tanh, Gelu::Erf] {
        let mut gy = t.nan_act(n);
        let mut cy = vec![0f32; n];
        t.g.gelu_forward(kind, Src::all(&gg), Dst::all(&mut gy))
            .unwrap();
        t.c.gelu_forward(kind, Src::all(&g), Dst::all(&mut cy))
            .unwrap();
        t.check(&format!("gelu_forward {kind:?}"), &t.get_act(&gy), &cy, 1.0);
        let (mut gdx, mut cdx) = (t.act(&i1), i1.clone());
        t.g.gelu_backward(kind, Src::all(&gg), Src::all(&gdo), Dst::all(&mut gdx))
            .unwrap();
        t.c.gelu_backward(kind, Src::all(&g), Src::all(&d), Dst::all(&mut cdx))
            .unwrap();
        t.check(
            &format!("gelu_backward {kind:?}"),
            &t.get_act(&gdx),
            &cdx,
            1.0,
        );
    }
    let (mut gx, mut cx) = (t.act(&i2), i2.clone());
    t.g.add_inplace(Dst::all(&mut gx), Src::all(&gu)).unwrap();
    t.c.add_inplace(Dst::all(&mut cx), Src::all(&u)).unwrap();
    t.check("add_inplace", &t.get_act(&gx), &cx, 1.0);
    // Granite's multipliers
    let (mut gx, mut cx) = (t.act(&i2), i2.clone());
    t.g.scale_inplace(Dst::all(&mut gx), 0.22).unwrap();
    t.c.scale_inplace(Dst::all(&mut cx), 0.22).unwrap();
    t.check("scale_inplace", &t.get_act(&gx), &cx, 1.0);
}

fn cross_entropy<A: CudaAct>() {
    let mut t = setup::<A>();
    for (n, v) in [(33, 1000), (4, 50_257), (5, 17)] {
        let logits = t.rand(n * v, 8.0);
        let mut tg = t.ids(n, v);
        tg[1] = -100;
        let (gl, gt) = (t.act(&logits), t.idx(&tg));
        for with_grad in [true, false] {
            let (mut gloss, mut gd) = (t.nan_acc(n), t.nan_act(n * v));
            let (mut closs, mut cd) = (vec![0f32; n], vec![0f32; n * v]);
            let gdd = with_grad.then(|| Dst::all(&mut gd));
            t.g.cross_entropy(
                Src::all(&gl),
                Src::all(&gt),
                Dst::all(&mut gloss),
                gdd,
                n,
                v,
                1.0 / 29.0,
            )
            .unwrap();
            let cdd = with_grad.then(|| Dst::all(&mut cd));
            t.c.cross_entropy(
                Src::all(&logits),
                Src::all(&tg),
                Dst::all(&mut closs),
                cdd,
                n,
                v,
                1.0 / 29.0,
            )
            .unwrap();
            t.check(
                &format!("cross_entropy_loss[V={v}]"),
                &t.get_acc(&gloss),
                &closs,
                1.0,
            );
            if with_grad {
                t.check(
                    &format!("cross_entropy_dlogits[V={v}]"),
                    &t.get_act(&gd),
                    &cd,
                    1.0,
                );
            }
            // In place (the head's path): the same kernel with dlogits over the logits gives
            // the same bits as with a buffer of its own.
            let mut inplace = t.act(&logits);
            let mut iloss = t.nan_acc(n);
            t.g.cross_entropy_in_place(
                Dst::all(&mut inplace),
                Src::all(&gt),
                Dst::all(&mut iloss),
                n,
                v,
                with_grad.then_some(1.0 / 29.0),
            )
            .unwrap();
            let same = |a: Vec<f32>, b: Vec<f32>| {
                a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits())
            };
            assert!(
                same(t.get_acc(&iloss), t.get_acc(&gloss)),
                "in-place CE losses, V={v}"
            );
            if with_grad {
                assert!(
                    same(t.get_act(&inplace), t.get_act(&gd)),
                    "in-place CE dlogits, V={v}"
                );
            }
            eprintln!(
                "CUDA-OP cross_entropy_in_place_bitwise[V={v},grad={with_grad}] {} rel=0.000e0",
                A::NAME
            );
        }
    }
}

/// The two vocab-parallel cross-entropy steps on a rank's columns (padding included), CUDA
/// against the CPU, with the stats of three ranks gathered.
fn vocab_parallel_cross_entropy<A: CudaAct>() {
    let mut t = setup::<A>();
    let (n, v, parts) = (9, 700, 3);
    let tg: Vec<i32> = (0..n as i32)
        .map(|i| if i == 2 { -100 } else { i * 233 % 2100 })
        .collect();
    let gt = t.idx(&tg);
    let slice = |r: usize| VocabSlice {
        n,
        v,
        valid: if r + 1 == parts { 650 } else { v },
        start: r * v,
    };
    let logits: Vec<Vec<f32>> = (0..parts).map(|_| t.rand(n * v, 8.0)).collect();
    let mut all_c = Vec::new();
    let mut all_g = Vec::new();
    for (r, x) in logits.iter().enumerate() {
        let (mut cs, mut gs) = (vec![0f32; 3 * n], t.nan_acc(3 * n));
        t.c.cross_entropy_stats(Src::all(x), Src::all(&tg), Dst::all(&mut cs), slice(r))
            .unwrap();
        let gx = t.act(x);
        t.g.cross_entropy_stats(Src::all(&gx), Src::all(&gt), Dst::all(&mut gs), slice(r))
            .unwrap();
        let got = t.get_acc(&gs);
        t.check("cross_entropy_stats", &got, &cs, 1.0);
        all_c.extend(cs);
        all_g.extend(got);
    }
    let g_all = t.acc(&all_g);
    for (r, x) in logits.iter().enumerate() {
        let (mut cl, mut cd) = (vec![0f32; n], vec![0f32; n * v]);
        t.c.cross_entropy_finish(
            Src::all(x),
            Src::all(&tg),
            Src::all(&all_c),
            parts,
            Dst::all(&mut cl),
            Some(Dst::all(&mut cd)),
            slice(r),
            0.1,
        )
        .unwrap();
        let (mut gl, mut gd) = (t.nan_acc(n), t.nan_act(n * v));
        let gx = t.act(x);
        t.g.cross_entropy_finish(
            Src::all(&gx),
            Src::all(&gt),
            Src::all(&g_all),
            parts,
            Dst::all(&mut gl),
            Some(Dst::all(&mut gd)),
            slice(r),
            0.1,
        )
        .unwrap();
        t.check("cross_entropy_finish_loss", &t.get_acc(&gl), &cl, 1.0);
        t.check("cross_entropy_finish_dlogits", &t.get_act(&gd), &cd, 1.0);
    }
}

fn reductions<A: CudaAct>() {
    let mut t = setup::<A>();
    let x = t.rand(1_000_003, 1.0);
    let y = t.rand(1_000_003, 1.0);
    let (gx, gy) = (t.acc(&x), t.acc(&y));
    let (s, cs) = (
        t.g.sum(Src::range(&gx, 1, 999_999)).unwrap(),
        t.c.sum(Src::range(&x, 1, 999_999)).unwrap(),
    );
    t.check("sum", &[s as f32], &[cs as f32], 1.0);
    let (s, cs) = (
        t.g.sum_squares(Src::all(&gx)).unwrap(),
        t.c.sum_squares(Src::all(&x)).unwrap(),
    );
    t.check("sum_squares", &[s as f32], &[cs as f32], 1.0);
    // Many regions, one of them empty: one wait on the GPU, the sum of the parts on the CPU.
    let spans = [
        (0usize, 1000usize),
        (5, 0),
        (77_777, 500_001),
        (995_000, 5003),
    ];
    let (s, cs) = (
        t.g.sum_squares_many(&spans.map(|(a, n)| Src::range(&gx, a, n)))
            .unwrap(),
        t.c.sum_squares_many(&spans.map(|(a, n)| Src::range(&x, a, n)))
            .unwrap(),
    );
    let parts: f64 = spans
        .iter()
        .map(|&(a, n)| {
            x[a..a + n]
                .iter()
                .map(|&v| v as f64 * v as f64)
                .sum::<f64>()
        })
        .sum();
    assert!(
        (cs - parts).abs() <= 1e-9 * parts,
        "cpu sum_squares_many {cs} vs {parts}"
    );
    t.check("sum_squares_many", &[s as f32], &[cs as f32], 1.0);
    let (mut gs, mut cs) = (t.acc(&x), x.clone());
    t.g.scale_acc(Dst::range(&mut gs, 10, 5000), 0.37).unwrap();
    t.c.scale_acc(Dst::range(&mut cs, 10, 5000), 0.37).unwrap();
    t.check("scale_acc", &t.get_acc(&gs), &cs, 1.0);
    let (mut ga, mut ca) = (t.acc(&x), x.clone());
    t.g.add_acc(Dst::all(&mut ga), Src::all(&gy)).unwrap();
    t.c.add_acc(Dst::all(&mut ca), Src::all(&y)).unwrap();
    t.check("add_acc", &t.get_acc(&ga), &ca, 1.0);
}

/// Pieces of an n-element buffer for the multi-tensor AdamW test: every `step` elements one piece
/// of step − 1, decay alternating, leaving a one-element gap (like shard padding) after each.
fn adamw_pieces(n: usize) -> Vec<(usize, usize, bool)> {
    let step = (n / 10).max(2);
    (0..n)
        .step_by(step)
        .enumerate()
        .map(|(k, s)| (s, (step - 1).min(n - s), k % 2 == 0))
        .collect()
}

/// One group per (param, m, v) buffer triple, pieces from `adamw_pieces`.
fn adamw_groups<'a, B: Buffer>(
    state: &'a mut [(B, B, B)],
    grads: &'a [B],
) -> Vec<AdamWGroup<'a, B>> {
    state
        .iter_mut()
        .zip(grads)
        .map(|((p, m, v), g)| AdamWGroup {
            pieces: adamw_pieces(p.len()),
            param: Dst::all(p),
            grad: Src::all(g),
            m: Dst::all(m),
            v: Dst::all(v),
        })
        .collect()
}

fn adamw<A: CudaAct>() {
    let mut t = setup::<A>();
    // 35 pieces over 4 buffers: two launches of the 32-piece kernel.
    let sizes = [1000usize, 7, 4097, 330];
    assert_eq!(
        sizes.iter().map(|&n| adamw_pieces(n).len()).sum::<usize>(),
        35
    );
    let mut gp = Vec::new();
    let mut cp = Vec::new();
    for &n in &sizes {
        let (p, m) = (t.rand(n, 1.0), t.rand(n, 0.1));
        let v: Vec<f32> = t.rand(n, 0.1).iter().map(|x| x * x).collect();
        gp.push((t.acc(&p), t.acc(&m), t.acc(&v)));
        cp.push((p, m, v));
    }
    let p0 = t.get_acc(&gp[0].0);
    for (step, grad_scale) in [(1u64, 1.0), (2, 0.7), (3, 0.25)] {
        let h = AdamWStep {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
            step,
        };
        let grads: Vec<Vec<f32>> = sizes.iter().map(|&n| t.rand(n, 1.0)).collect();
        let gg: Vec<_> = grads.iter().map(|g| t.acc(g)).collect();
        t.g.adamw_multi_step(adamw_groups(&mut gp, &gg), &h, grad_scale)
            .unwrap();
        t.c.adamw_multi_step(adamw_groups(&mut cp, &grads), &h, grad_scale)
            .unwrap();
    }
    // The gaps between pieces are untouched.
    let p_now = t.get_acc(&gp[0].0);
    for gap in [99, 199, 999] {
        assert_eq!(p_now[gap], p0[gap], "adamw touched gap element {gap}");
    }
    assert_ne!(p_now[0], p0[0]);
    // and the trait's single-tensor path
    let h = AdamWStep {
        lr: 3e-4,
        beta1: 0.8,
        beta2: 0.99,
        eps: 1e-6,
        weight_decay: 0.0,
        step: 4,
    };
    let g = t.rand(sizes[0], 1.0);
    let gg = t.acc(&g);
    let (p, m, v) = &mut gp[0];
    t.g.adamw_step(Dst::all(p), Src::all(&gg), Dst::all(m), Dst::all(v), &h)
        .unwrap();
    let (p, m, v) = &mut cp[0];
    t.c.adamw_step(Dst::all(p), Src::all(&g), Dst::all(m), Dst::all(v), &h)
        .unwrap();
    for (k, ((p, m, v), (cpv, cm, cv))) in gp.iter().zip(&cp).enumerate() {
        t.check(&format!("adamw_param[{k}]"), &t.get_acc(p), cpv, 1.0);
        t.check(&format!("adamw_m[{k}]"), &t.get_acc(m), cm, 1.0);
        t.check(&format!("adamw_v[{k}]"), &t.get_acc(v), cv, 1.0);
    }
}

/// f64 reference attention: returns (o, lse) and, given dout, (dq, dk, dv). With `d.softcap`
/// = Some(c) every score s becomes c·tanh(s / c) before the softmax and dS gets the factor
/// 1 − (s_capped / c)².
#[allow(clippy::type_complexity)]
fn attention_ref(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    dout: &[f32],
    cu: &[i32],
    d: &AttnDims,
) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
    let (n, hq, hk, dh) = (d.tokens, d.heads, d.kv_heads, d.head_dim);
    let g = hq / hk;
    let qi = |t: usize, h: usize| (t * hq + h) * dh;
    let ki = |t: usize, h: usize| (t * hk + h) * dh;
    let (mut o, mut lse) = (vec![0f64; n * hq * dh], vec![0f64; hq * n]);
    let (mut dq, mut dk, mut dv) = (
        vec![0f64; n * hq * dh],
        vec![0f64; n * hk * dh],
        vec![0f64; n * hk * dh],
    );
    for s in 0..d.segments {
        let (s0, s1) = (cu[s] as usize, cu[s + 1] as usize);
        for h in 0..hq {
            let kh = h / g;
            for i in s0..s1 {
                let (lo, hi) = d.key_range(i - s0, s1 - s0);
                let keys: Vec<usize> = (s0 + lo..s0 + hi).collect();
                let cap = |s: f64| d.softcap.map_or(s, |c| c * (s / c).tanh());
                let sc: Vec<f64> = keys
                    .iter()
                    .map(|&j| {
                        cap(d.scale
                            * (0..dh)
                                .map(|e| q[qi(i, h) + e] as f64 * k[ki(j, kh) + e] as f64)
                                .sum::<f64>())
                    })
                    .collect();
                let m = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let l = m + sc.iter().map(|x| (x - m).exp()).sum::<f64>().ln();
                lse[h * n + i] = l;
                let p: Vec<f64> = sc.iter().map(|x| (x - l).exp()).collect();
                for (&j, &pj) in keys.iter().zip(&p) {
                    for e in 0..dh {
                        o[qi(i, h) + e] += pj * v[ki(j, kh) + e] as f64;
                    }
                }
                let dp: Vec<f64> = keys
                    .iter()
                    .map(|&j| {
                        (0..dh)
                            .map(|e| dout[qi(i, h) + e] as f64 * v[ki(j, kh) + e] as f64)
                            .sum()
                    })
                    .collect();
                let delta: f64 = p.iter().zip(&dp).map(|(a, b)| a * b).sum();
                for (((&j, &pj), &dpj), &sj) in keys.iter().zip(&p).zip(&dp).zip(&sc) {
                    let cap_grad = d.softcap.map_or(1.0, |c| 1.0 - (sj / c) * (sj / c));
                    let ds = pj * (dpj - delta) * cap_grad * d.scale;
                    for e in 0..dh {
                        dq[qi(i, h) + e] += ds * k[ki(j, kh) + e] as f64;
                        dk[ki(j, kh) + e] += ds * q[qi(i, h) + e] as f64;
                        dv[ki(j, kh) + e] += pj * dout[qi(i, h) + e] as f64;
                    }
                }
            }
        }
    }
    let f = |x: Vec<f64>| x.into_iter().map(|v| v as f32).collect::<Vec<f32>>();
    (f(o), f(lse), f(dq), f(dk), f(dv))
}

/// Through the Backend call, so on bf16 the Dh 64/128 cases run FlashAttention (the backend's
/// dispatch, see ops_attention.rs) and Dh 40 the fallback; f32 always runs the fallback.
/// tests/cuda_flash_backend.rs compares the two paths directly.
fn attention<A: CudaAct>() {
    let mut t = setup::<A>();
    // (causal, window, Dh, H, Hkv, cu_seqlens, softcap): windows smaller and larger than a tile,
    // with GQA / MQA and several segments; on bf16 the Dh 64/128 cases run FlashAttention.
    // The softcap cases (Gemma 2's c·tanh(s / c), c = 5) draw q and k from [-4, 4), so the
    // scores' standard deviation is ~5.3 and their magnitude reaches ~20: most of them are
    // squeezed by the cap and many saturate it.
    for (causal, window, dh, hq, hk, cu, softcap) in [
        (true, None, 64, 4, 2, vec![0, 37, 100, 161], None),
        (false, None, 64, 4, 4, vec![0, 80, 81, 150], None),
        (true, None, 128, 2, 1, vec![0, 300], None),
        (false, None, 40, 3, 1, vec![0, 45, 90], None),
        (true, Some(7), 64, 4, 2, vec![0, 37, 100, 261], None),
        (true, Some(100), 128, 4, 1, vec![0, 300, 301, 450], None),
        (true, Some(40), 40, 3, 1, vec![0, 45, 190], None),
        (true, None, 64, 4, 2, vec![0, 37, 100, 161], Some(5.0)),
        (false, None, 128, 6, 3, vec![0, 80, 81, 150], Some(5.0)),
        (true, Some(96), 128, 4, 1, vec![0, 300, 301, 450], Some(5.0)),
        (true, Some(7), 64, 4, 2, vec![0, 37, 100, 261], Some(5.0)),
        (false, None, 40, 3, 1, vec![0, 45, 90], Some(5.0)),
        (true, Some(40), 40, 4, 2, vec![0, 45, 190], Some(5.0)),
    ] {
        let n = *cu.last().unwrap() as usize;
        let d = AttnDims {
            tokens: n,
            heads: hq,
            kv_heads: hk,
            head_dim: dh,
            segments: cu.len() - 1,
            max_seqlen: cu.windows(2).map(|w| (w[1] - w[0]) as usize).max().unwrap(),
            causal,
            scale: 1.0 / (dh as f64).sqrt(),
            window,
            softcap,
        };
        let tag = format!(
            "[{}{}{}Dh{dh}H{hq}/{hk}S{}]",
            if causal { "causal," } else { "" },
            window.map(|w| format!("window{w},")).unwrap_or_default(),
            softcap.map(|c| format!("softcap{c},")).unwrap_or_default(),
            d.segments
        );
        let qk_amp = if softcap.is_some() { 4.0 } else { 2.0 };
        let (q, k, v, dout) = (
            t.rand(n * hq * dh, qk_amp),
            t.rand(n * hk * dh, qk_amp),
            t.rand(n * hk * dh, 1.0),
            t.rand(n * hq * dh, 1.0),
        );
        let (ro, rlse, rdq, rdk, rdv) = attention_ref(&q, &k, &v, &dout, &cu, &d);
        let (gq, gk, gv, gcu) = (t.act(&q), t.act(&k), t.act(&v), t.idx(&cu));
        let (mut go, mut glse) = (t.nan_act(n * hq * dh), t.nan_acc(hq * n));
        t.g.attention_forward(
            Src::all(&gq),
            Src::all(&gk),
            Src::all(&gv),
            Dst::all(&mut go),
            Dst::all(&mut glse),
            Src::all(&gcu),
            &d,
        )
        .unwrap();
        t.check(
            &format!("attention_forward_o{tag}"),
            &t.get_act(&go),
            &ro,
            1.0,
        );
        t.check(
            &format!("attention_forward_lse{tag}"),
            &t.get_acc(&glse),
            &rlse,
            1.0,
        );
        // backward from the reference o (rounded through A), as a trainer would pass the saved o.
        // and against the CPU backend's tiled attention
        let (mut co, mut clse) = (vec![0f32; n * hq * dh], vec![0f32; hq * n]);
        t.c.attention_forward(
            Src::all(&q),
            Src::all(&k),
            Src::all(&v),
            Dst::all(&mut co),
            Dst::all(&mut clse),
            Src::all(&cu),
            &d,
        )
        .unwrap();
        t.check(
            &format!("attention_forward_o_vs_cpu{tag}"),
            &t.get_act(&go),
            &co,
            1.0,
        );
        t.check(
            &format!("attention_forward_lse_vs_cpu{tag}"),
            &t.get_acc(&glse),
            &clse,
            1.0,
        );
        let o_in: Vec<f32> = ro.iter().map(|&x| A::from_f32(x).to_f32()).collect();
        let (go_in, gdo) = (t.act(&o_in), t.act(&dout));
        let (mut gdq, mut gdk, mut gdv) = (
            t.nan_act(n * hq * dh),
            t.nan_act(n * hk * dh),
            t.nan_act(n * hk * dh),
        );
        t.g.attention_backward(
            Src::all(&gq),
            Src::all(&gk),
            Src::all(&gv),
            Src::all(&go_in),
            Src::all(&gdo),
            Src::all(&glse),
            Dst::all(&mut gdq),
            Dst::all(&mut gdk),
            Dst::all(&mut gdv),
            Src::all(&gcu),
            &d,
        )
        .unwrap();
        t.check(
            &format!("attention_backward_dq{tag}"),
            &t.get_act(&gdq),
            &rdq,
            1.0,
        );
        t.check(
            &format!("attention_backward_dk{tag}"),
            &t.get_act(&gdk),
            &rdk,
            1.0,
        );
        t.check(
            &format!("attention_backward_dv{tag}"),
            &t.get_act(&gdv),
            &rdv,
            1.0,
        );
        let clse_in = t.get_acc(&glse);
        let (mut cdq, mut cdk, mut cdv) = (
            vec![0f32; n * hq * dh],
            vec![0f32; n * hk * dh],
            vec![0f32; n * hk * dh],
        );
        t.c.attention_backward(
            Src::all(&q),
            Src::all(&k),
            Src::all(&v),
            Src::all(&o_in),
            Src::all(&dout),
            Src::all(&clse_in),
            Dst::all(&mut cdq),
            Dst::all(&mut cdk),
            Dst::all(&mut cdv),
            Src::all(&cu),
            &d,
        )
        .unwrap();
        t.check(
            &format!("attention_backward_dq_vs_cpu{tag}"),
            &t.get_act(&gdq),
            &cdq,
            1.0,
        );
        t.check(
            &format!("attention_backward_dk_vs_cpu{tag}"),
            &t.get_act(&gdk),
            &cdk,
            1.0,
        );
        t.check(
            &format!("attention_backward_dv_vs_cpu{tag}"),
            &t.get_act(&gdv),
            &cdv,
            1.0,
        );
    }
}
