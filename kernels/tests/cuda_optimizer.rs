//! The optimizer step of a GPT-2-124M-shaped parameter set (148 tensors, 124M fp32 elements) on
//! the GPU, two ways in one run:
//!   per tensor:   sum_squares per tensor (a wait each), scale_acc by the clip factor, adamw_step
//!                 (how the ZeRO engines called the backend before the multi-tensor path);
//!   multi tensor: one sum_squares_many (one wait), one adamw_multi_step with the clip factor
//!                 folded into the kernel's read of g (32 tensors per launch, no pass to scale g).
//! With the same clip factor both must give bit-identical weights and moments (the kernel computes
//! float(g·s) as scale_acc stores it); the two norms add the same partials in another order, so
//! they agree to f64 rounding, not bitwise. The times are printed as a CUDA-BENCH line. Ignored
//! without a GPU.

mod common;
use common::median_ms;
use ferrotron_kernels::cuda::CudaBackend;
use ferrotron_kernels::{AdamWGroup, AdamWStep, Backend, Dst, Src};

/// GPT-2 small: per block ln_1 (w, b), c_attn (w, b), attn c_proj (w, b), ln_2 (w, b), c_fc (w, b),
/// mlp c_proj (w, b); then wte, wpe, ln_f (w, b). Decay on matrices only.
fn gpt2_small_tensors() -> Vec<(usize, bool)> {
    let (d, v, ctx) = (768, 50257, 1024);
    let mut t = Vec::new();
    for _ in 0..12 {
        t.extend([
            (d, false),
            (d, false),
            (d * 3 * d, true),
            (3 * d, false),
            (d * d, true),
            (d, false),
            (d, false),
            (d, false),
            (d * 4 * d, true),
            (4 * d, false),
            (4 * d * d, true),
            (d, false),
        ]);
    }
    t.extend([(v * d, true), (ctx * d, true), (d, false), (d, false)]);
    t
}

struct State {
    p: Vec<cudarc::driver::CudaSlice<f32>>,
    g: Vec<cudarc::driver::CudaSlice<f32>>,
    m: Vec<cudarc::driver::CudaSlice<f32>>,
    v: Vec<cudarc::driver::CudaSlice<f32>>,
}

fn state(b: &CudaBackend<f32>, tensors: &[(usize, bool)]) -> State {
    let fill = |n: usize, k: usize, s: f32| -> Vec<f32> {
        (0..n)
            .map(|i| s * (((i * 2654435761 + k * 40503) % 1000) as f32 / 500.0 - 1.0))
            .collect()
    };
    let up = |k: usize, s: f32| -> Vec<cudarc::driver::CudaSlice<f32>> {
        tensors
            .iter()
            .enumerate()
            .map(|(i, &(n, _))| b.upload_acc(&fill(n, i * 7 + k, s)).unwrap())
            .collect()
    };
    State {
        p: up(1, 0.02),
        g: up(2, 3.0),
        m: up(3, 0.0),
        v: up(4, 0.0),
    }
}

const H: AdamWStep = AdamWStep {
    lr: 6e-4,
    beta1: 0.9,
    beta2: 0.95,
    eps: 1e-8,
    weight_decay: 0.1,
    step: 1,
};
const CLIP: f64 = 1.0;

/// The clip factor for a squared gradient norm.
fn clip_factor(sq: f64) -> f64 {
    (CLIP / (sq.sqrt() + 1e-6)).min(1.0)
}

/// Σ g² the old way: one sum_squares (and one wait) per tensor.
fn norm_per_tensor(b: &CudaBackend<f32>, s: &State) -> f64 {
    s.g.iter()
        .map(|g| b.sum_squares(Src::all(g)).unwrap())
        .sum()
}

/// Σ g² the new way: one sum_squares_many (one wait).
fn norm_multi(b: &CudaBackend<f32>, s: &State) -> f64 {
    let regions: Vec<_> = s.g.iter().map(Src::all).collect();
    b.sum_squares_many(&regions).unwrap()
}

/// The per-tensor step with clip factor `clip`: scale_acc, then adamw_step per tensor.
fn step_per_tensor(b: &CudaBackend<f32>, s: &mut State, tensors: &[(usize, bool)], clip: f64) {
    for (i, &(_, decay)) in tensors.iter().enumerate() {
        if clip < 1.0 {
            b.scale_acc(Dst::all(&mut s.g[i]), clip).unwrap();
        }
        let h = AdamWStep {
            weight_decay: if decay { H.weight_decay } else { 0.0 },
            ..H
        };
        b.adamw_step(
            Dst::all(&mut s.p[i]),
            Src::all(&s.g[i]),
            Dst::all(&mut s.m[i]),
            Dst::all(&mut s.v[i]),
            &h,
        )
        .unwrap();
    }
}

/// The multi-tensor step with clip factor `clip` folded into the kernel's read of g.
fn step_multi(b: &CudaBackend<f32>, s: &mut State, tensors: &[(usize, bool)], clip: f64) {
    let groups = (s.p.iter_mut().zip(&mut s.m).zip(&mut s.v))
        .zip(&s.g)
        .zip(tensors)
        .map(|((((p, m), v), g), &(n, decay))| AdamWGroup {
            param: Dst::all(p),
            grad: Src::all(g),
            m: Dst::all(m),
            v: Dst::all(v),
            pieces: vec![(0, n, decay)],
        })
        .collect();
    b.adamw_multi_step(groups, &H, clip).unwrap();
}

fn download(b: &CudaBackend<f32>, xs: &[cudarc::driver::CudaSlice<f32>]) -> Vec<Vec<f32>> {
    xs.iter()
        .map(|x| b.download_acc(Src::all(x)).unwrap())
        .collect()
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn multi_tensor_step_is_bitwise_the_per_tensor_step() {
    let b = CudaBackend::<f32>::new(0).expect("a CUDA device");
    let tensors = gpt2_small_tensors();
    let numel: usize = tensors.iter().map(|t| t.0).sum();
    assert_eq!(tensors.len(), 148);

    // Correctness: the two norms agree to f64 rounding (they add the same per-block partials in
    // another order), and one step each from the same state with the same clip factor (gradients
    // large enough to clip) gives the same bits.
    let mut a = state(&b, &tensors);
    let mut c = state(&b, &tensors);
    let (sq_a, sq_c) = (norm_per_tensor(&b, &a), norm_multi(&b, &c));
    assert!(
        (sq_a - sq_c).abs() <= 1e-12 * sq_a,
        "gradient norms differ: {sq_a} vs {sq_c}"
    );
    let clip = clip_factor(sq_c);
    assert!(clip < 1.0, "the test gradient should be clipped ({clip})");
    step_per_tensor(&b, &mut a, &tensors, clip);
    step_multi(&b, &mut c, &tensors, clip);
    for (what, x, y) in [("param", &a.p, &c.p), ("m", &a.m, &c.m), ("v", &a.v, &c.v)] {
        let (x, y) = (download(&b, x), download(&b, y));
        for (i, (x, y)) in x.iter().zip(&y).enumerate() {
            assert!(
                x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits()),
                "{what} of tensor {i} differs between the two paths"
            );
        }
    }

    // Speed: steps continue on each path's own state. Each step computes its norm (and waits for
    // it) but applies a fixed clip factor of 0.5: the per-tensor path scales g in place, so a
    // factor taken from the norm would reach 1 after one step and skip the scale pass.
    let per_tensor = median_ms(&b, || {
        norm_per_tensor(&b, &a);
        step_per_tensor(&b, &mut a, &tensors, 0.5);
    });
    let multi = median_ms(&b, || {
        norm_multi(&b, &c);
        step_multi(&b, &mut c, &tensors, 0.5);
    });
    let gbytes = (numel * 4 * 7) as f64 / 1e9; // reads p, g, m, v; writes p, m, v
    println!(
        "CUDA-BENCH optimizer step, GPT-2-124M shaped ({} tensors, {numel} fp32 params, clipped): per tensor {per_tensor:.3} ms, multi tensor {multi:.3} ms ({:.0} GB/s of the 7 streams)",
        tensors.len(),
        gbytes / (multi / 1e3)
    );
}
