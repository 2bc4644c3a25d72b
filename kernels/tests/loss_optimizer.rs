//! CPU ops: fused cross-entropy (forward values, stability, ignored targets, dlogits against f64
//! finite differences of grad_scale · Σ losses) and AdamW (two steps against the PyTorch update
//! written out by hand in f64; the multi-tensor form against per-region steps).

mod common;

use common::*;
use ferrotron_kernels::cpu::CpuBackend;
use ferrotron_kernels::{AdamWGroup, AdamWStep, Backend, Dst, Src};

type B64 = CpuBackend<f64>;

fn ce_losses(logits: &[f64], targets: &[i32], v: usize) -> Vec<f64> {
    let n = targets.len();
    let mut losses = vec![f64::NAN; n];
    B64::new()
        .cross_entropy(
            Src::all(&logits.to_vec()),
            Src::all(&targets.to_vec()),
            Dst::all(&mut losses),
            None,
            n,
            v,
            1.0,
        )
        .unwrap();
    losses
}

#[test]
fn cross_entropy_values_ignored_rows_and_gradcheck() {
    let (n, v) = (6, 11);
    let targets = vec![3, -100, 0, 10, -100, 7];
    let mut g = rng(31);
    let logits: Vec<f64> = uniform(&mut g, n * v)
        .into_iter()
        .map(|a| 3.0 * a)
        .collect();
    let grad_scale = 0.25; // 1 / (non-ignored targets), as the trainer's mean loss uses

    let mut losses = vec![f64::NAN; n];
    let mut dlogits = vec![f64::NAN; n * v]; // must be overwritten, ignored rows included
    B64::new()
        .cross_entropy(
            Src::all(&logits),
            Src::all(&targets),
            Dst::all(&mut losses),
            Some(Dst::all(&mut dlogits)),
            n,
            v,
            grad_scale,
        )
        .unwrap();
    for (row, &t) in targets.iter().enumerate() {
        let l = &logits[row * v..(row + 1) * v];
        if t == -100 {
            assert_eq!(losses[row], 0.0);
            assert!(
                dlogits[row * v..(row + 1) * v].iter().all(|d| *d == 0.0),
                "ignored row {row} has gradient"
            );
        } else {
            let naive = l.iter().map(|x| x.exp()).sum::<f64>().ln() - l[t as usize];
            assert!(
                (losses[row] - naive).abs() < 1e-14,
                "row {row}: {} vs {naive}",
                losses[row]
            );
        }
    }
    assert_eq!(
        ce_losses(&logits, &targets, v),
        losses,
        "the loss-only path differs"
    );
    let loss = |lg: &[f64]| grad_scale * ce_losses(lg, &targets, v).iter().sum::<f64>();
    fd_check("cross_entropy dlogits", &logits, &dlogits, loss);

    // Stability: logits far beyond exp's range.
    let big = ce_losses(&[1000.0, 1001.0, -1000.0], &[0], 3)[0];
    let want = (1.0 + (1.0f64).exp()).ln(); // −log softmax_0 with the shared offset removed
    assert!((big - want).abs() < 1e-12, "unstable: {big} vs {want}");
}

#[test]
fn adamw_two_steps_match_pytorch_formula() {
    let (lr, beta1, beta2, eps, wd) = (1e-2, 0.9, 0.95, 1e-8, 0.1);
    let mut g = rng(32);
    let n = 20_000; // several parallel chunks
    let p0 = uniform(&mut g, n);
    let grads = [uniform(&mut g, n), uniform(&mut g, n)];
    // one element with zero gradient in both steps
    let grads = grads.map(|mut gr| {
        gr[5] = 0.0;
        gr
    });

    // Reference, element by element (torch.optim.AdamW, single-tensor path):
    //   p ← p·(1 − lr·wd); m ← β1 m + (1 − β1) g; v ← β2 v + (1 − β2) g²
    //   p ← p − lr/(1 − β1^t) · m / (sqrt(v)/sqrt(1 − β2^t) + eps)
    let mut want = p0.clone();
    let (mut m_ref, mut v_ref) = (vec![0.0; n], vec![0.0; n]);
    for (t, gr) in grads.iter().enumerate() {
        let t = (t + 1) as i32;
        for i in 0..n {
            want[i] *= 1.0 - lr * wd;
            m_ref[i] = beta1 * m_ref[i] + (1.0 - beta1) * gr[i];
            v_ref[i] = beta2 * v_ref[i] + (1.0 - beta2) * gr[i] * gr[i];
            let denom = v_ref[i].sqrt() / (1.0 - beta2.powi(t)).sqrt() + eps;
            want[i] -= lr / (1.0 - beta1.powi(t)) * m_ref[i] / denom;
        }
    }

    let be = B64::new();
    let (mut p, mut m, mut v) = (p0.clone(), vec![0.0; n], vec![0.0; n]);
    for (t, gr) in grads.iter().enumerate() {
        let h = AdamWStep {
            lr,
            beta1,
            beta2,
            eps,
            weight_decay: wd,
            step: t as u64 + 1,
        };
        be.adamw_step(
            Dst::all(&mut p),
            Src::all(gr),
            Dst::all(&mut m),
            Dst::all(&mut v),
            &h,
        )
        .unwrap();
    }
    let (ep, em, ev) = (
        max_rel_diff(&p, &want),
        max_rel_diff(&m, &m_ref),
        max_rel_diff(&v, &v_ref),
    );
    println!("adamw 2 steps: param {ep:.2e} m {em:.2e} v {ev:.2e}");
    assert!(ep < 1e-14 && em < 1e-14 && ev < 1e-14);
    // The first step moves each parameter by about lr (|m̂/sqrt(v̂)| = 1): a sanity bound on scale.
    assert!(p.iter().zip(&p0).all(|(a, b)| (a - b).abs() < 2.5 * lr));
    // g = 0 throughout keeps m = v = 0, so the update is pure decay: p0·(1 − lr·wd)².
    assert!((p[5] - p0[5] * (1.0 - lr * wd).powi(2)).abs() < 1e-15);
}

/// `adamw_multi_step` over pieces = `adamw_step` piece by piece on the gradient scaled in place
/// first with `scale_acc` (how clipping used to run), bit for bit in f32, with weight decay only
/// where a piece asks for it, and nothing outside the pieces touched.
#[test]
fn adamw_multi_step_equals_per_piece_steps() {
    let n = 1000;
    let mut g = rng(41);
    let to32 = |v: Vec<f64>| v.into_iter().map(|x| x as f32).collect::<Vec<f32>>();
    let p0 = to32(uniform(&mut g, n));
    let grad = to32(uniform(&mut g, n));
    let pieces = vec![(0usize, 300usize, true), (301, 99, false), (400, 599, true)];
    let scale = 0.3;
    let h = AdamWStep {
        lr: 1e-2,
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
        weight_decay: 0.1,
        step: 1,
    };
    let be = CpuBackend::<f32>::new();
    let (mut p, mut m, mut v) = (p0.clone(), vec![0.0; n], vec![0.0; n]);
    let group = AdamWGroup {
        param: Dst::all(&mut p),
        grad: Src::all(&grad),
        m: Dst::all(&mut m),
        v: Dst::all(&mut v),
        pieces: pieces.clone(),
    };
    be.adamw_multi_step(vec![group], &h, scale).unwrap();

    let mut scaled = grad.clone();
    be.scale_acc(Dst::all(&mut scaled), scale).unwrap();
    let (mut pw, mut mw, mut vw) = (p0.clone(), vec![0.0; n], vec![0.0; n]);
    for &(s, l, decay) in &pieces {
        let hp = AdamWStep {
            weight_decay: if decay { 0.1 } else { 0.0 },
            ..h
        };
        be.adamw_step(
            Dst::range(&mut pw, s, l),
            Src::range(&scaled, s, l),
            Dst::range(&mut mw, s, l),
            Dst::range(&mut vw, s, l),
            &hp,
        )
        .unwrap();
    }
    let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&p), bits(&pw));
    assert_eq!((bits(&m), bits(&v)), (bits(&mw), bits(&vw)));
    assert_eq!((p[300], p[999]), (p0[300], p0[999]), "gaps untouched");
    assert!(
        p.iter().zip(&p0).filter(|(a, b)| a != b).count() == 998,
        "every piece stepped"
    );
    // A piece outside the regions is an error, not a panic.
    let group = AdamWGroup {
        param: Dst::all(&mut p),
        grad: Src::all(&grad),
        m: Dst::all(&mut m),
        v: Dst::all(&mut v),
        pieces: vec![(990, 20, true)],
    };
    assert!(be.adamw_multi_step(vec![group], &h, 1.0).is_err());
}

/// f32 (vectorized exp, f64 sums) against f64 at GPT-2's vocabulary size.
#[test]
fn cross_entropy_f32_matches_f64_at_gpt2_vocab() {
    let (n, v) = (24, 50_257);
    let mut g = rng(33);
    let logits: Vec<f64> = uniform(&mut g, n * v)
        .into_iter()
        .map(|a| 8.0 * a)
        .collect();
    let targets: Vec<i32> = (0..n)
        .map(|i| {
            if i % 5 == 3 {
                -100
            } else {
                (i * 2003 % v) as i32
            }
        })
        .collect();
    let logits32: Vec<f32> = logits.iter().map(|&x| x as f32).collect();
    let logits = logits32.iter().map(|&x| x as f64).collect::<Vec<f64>>(); // same inputs
    let grad_scale = 1.0 / 19.0;
    let (mut l64, mut d64) = (vec![0.0; n], vec![0.0; n * v]);
    B64::new()
        .cross_entropy(
            Src::all(&logits),
            Src::all(&targets),
            Dst::all(&mut l64),
            Some(Dst::all(&mut d64)),
            n,
            v,
            grad_scale,
        )
        .unwrap();
    let (mut l32, mut d32) = (vec![0f32; n], vec![0f32; n * v]);
    CpuBackend::<f32>::new()
        .cross_entropy(
            Src::all(&logits32),
            Src::all(&targets),
            Dst::all(&mut l32),
            Some(Dst::all(&mut d32)),
            n,
            v,
            grad_scale,
        )
        .unwrap();
    let up = |x: &[f32]| x.iter().map(|&a| a as f64).collect::<Vec<f64>>();
    let (el, ed) = (max_rel_diff(&up(&l32), &l64), max_rel_diff(&up(&d32), &d64));
    println!("cross_entropy f32 vs f64, V={v}: losses {el:.2e} dlogits {ed:.2e}");
    assert!(el < 1e-6 && ed < 1e-6, "losses {el:.2e} dlogits {ed:.2e}");
}
