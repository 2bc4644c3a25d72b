//! CPU attention (tiled, FlashAttention-2 style): forward against a naive full-softmax f64
//! reference, backward against f64 central finite differences, f32 against f64 at a realistic
//! size, overwrite semantics of dq/dk/dv. Segment lengths are chosen not to be multiples of the
//! tile sizes (BLOCK_Q = BLOCK_K = 64), and to span one, two and three tiles.

mod common;

use common::*;
use ferrotron_kernels::cpu::attention::{self, scheme_for, BackwardScheme, BLOCK_K, BLOCK_Q};
use ferrotron_kernels::cpu::{CpuBackend, CpuFloat};
use ferrotron_kernels::{AttnDims, Backend, Dst, Src};

#[derive(Clone, Copy, Debug)]
struct Case {
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    causal: bool,
    /// Sliding window (causal only): query i sees keys i − w < j ≤ i.
    window: Option<usize>,
}

fn dims_for(case: Case, seg_lens: &[usize]) -> (AttnDims, Vec<i32>) {
    let mut cu = vec![0i32];
    for &l in seg_lens {
        cu.push(cu.last().unwrap() + l as i32);
    }
    let dims = AttnDims {
        tokens: *cu.last().unwrap() as usize,
        heads: case.heads,
        kv_heads: case.kv_heads,
        head_dim: case.head_dim,
        segments: seg_lens.len(),
        max_seqlen: seg_lens.iter().copied().max().unwrap_or(0),
        causal: case.causal,
        scale: 1.0 / (case.head_dim as f64).sqrt(),
        window: case.window,
        softcap: None,
    };
    (dims, cu)
}

/// (o, lse) from the backend.
fn attn_fwd<T: CpuFloat>(
    q: &[T],
    k: &[T],
    v: &[T],
    cu: &[i32],
    dims: &AttnDims,
) -> (Vec<T>, Vec<T>) {
    let be = CpuBackend::<T>::new();
    let mut o = vec![T::nan(); q.len()]; // forward must write every element
    let mut lse = vec![T::nan(); dims.heads * dims.tokens];
    be.attention_forward(
        Src::all(&q.to_vec()),
        Src::all(&k.to_vec()),
        Src::all(&v.to_vec()),
        Dst::all(&mut o),
        Dst::all(&mut lse),
        Src::all(&cu.to_vec()),
        dims,
    )
    .unwrap();
    (o, lse)
}

/// (dq, dk, dv) from the backend, gradient buffers pre-filled with `fill`.
#[allow(clippy::type_complexity)]
fn attn_bwd<T: CpuFloat>(
    q: &[T],
    k: &[T],
    v: &[T],
    dout: &[T],
    cu: &[i32],
    dims: &AttnDims,
    fill: T,
) -> (Vec<T>, Vec<T>, Vec<T>) {
    let be = CpuBackend::<T>::new();
    let (o, lse) = attn_fwd(q, k, v, cu, dims);
    let (mut dq, mut dk, mut dv) = (
        vec![fill; q.len()],
        vec![fill; k.len()],
        vec![fill; v.len()],
    );
    let (q, k, v, dout, cu) = (
        q.to_vec(),
        k.to_vec(),
        v.to_vec(),
        dout.to_vec(),
        cu.to_vec(),
    );
    be.attention_backward(
        Src::all(&q),
        Src::all(&k),
        Src::all(&v),
        Src::all(&o),
        Src::all(&dout),
        Src::all(&lse),
        Dst::all(&mut dq),
        Dst::all(&mut dk),
        Dst::all(&mut dv),
        Src::all(&cu),
        dims,
    )
    .unwrap();
    (dq, dk, dv)
}

/// Naive reference: full S per (segment, head), softmax with explicit masking, in f64, with its
/// own 1/√head_dim (so an f64 backend that rounded the scale to f32 would be off by ~1e-8).
fn naive(q: &[f64], k: &[f64], v: &[f64], cu: &[i32], d: &AttnDims) -> (Vec<f64>, Vec<f64>) {
    let (h_n, kv_n, dh, n) = (d.heads, d.kv_heads, d.head_dim, d.tokens);
    let scale = 1.0 / (dh as f64).sqrt();
    assert_eq!(d.scale, scale, "dims_for's scale");
    let mut o = vec![0.0; n * h_n * dh];
    let mut lse = vec![0.0; h_n * n];
    for s in 0..d.segments {
        let (a, b) = (cu[s] as usize, cu[s + 1] as usize);
        for h in 0..h_n {
            let g = h / (h_n / kv_n);
            for i in a..b {
                let visible = |j: usize| match (d.causal, d.window) {
                    (false, _) => true,
                    (true, None) => j <= i,
                    (true, Some(w)) => j <= i && j + w > i,
                };
                let keys: Vec<usize> = (a..b).filter(|&j| visible(j)).collect();
                let sc: Vec<f64> = keys
                    .iter()
                    .map(|&j| {
                        let s = (0..dh)
                            .map(|x| q[(i * h_n + h) * dh + x] * k[(j * kv_n + g) * dh + x])
                            .sum::<f64>()
                            * scale;
                        d.softcap.map_or(s, |c| c * (s / c).tanh())
                    })
                    .collect();
                let z: f64 = sc.iter().map(|s| s.exp()).sum();
                lse[h * n + i] = z.ln();
                for (&j, s) in keys.iter().zip(&sc) {
                    for x in 0..dh {
                        o[(i * h_n + h) * dh + x] += s.exp() / z * v[(j * kv_n + g) * dh + x];
                    }
                }
            }
        }
    }
    (o, lse)
}

fn inputs(seed: u64, dims: &AttnDims, spread: f64) -> [Vec<f64>; 4] {
    let mut g = rng(seed);
    let qn = dims.tokens * dims.heads * dims.head_dim;
    let kn = dims.tokens * dims.kv_heads * dims.head_dim;
    let sc = |v: Vec<f64>| v.into_iter().map(|a| a * spread).collect::<Vec<_>>();
    [
        sc(uniform(&mut g, qn)),
        sc(uniform(&mut g, kn)),
        uniform(&mut g, kn),
        uniform(&mut g, qn),
    ]
}

const CASES: [Case; 4] = [
    Case {
        heads: 4,
        kv_heads: 2,
        head_dim: 8,
        causal: true,
        window: None,
    }, // GQA
    Case {
        heads: 4,
        kv_heads: 1,
        head_dim: 16,
        causal: true,
        window: None,
    }, // MQA
    Case {
        heads: 4,
        kv_heads: 2,
        head_dim: 16,
        causal: false,
        window: None,
    }, // GQA, full
    Case {
        heads: 3,
        kv_heads: 3,
        head_dim: 8,
        causal: false,
        window: None,
    }, // MHA, full
];

#[test]
fn attention_forward_matches_naive_softmax() {
    assert_eq!(
        (BLOCK_Q, BLOCK_K),
        (64, 64),
        "segment lengths below are chosen for 64-row tiles"
    );
    for (c, case) in CASES.iter().enumerate() {
        // 37 (< 1 tile), 70 (2 tiles), 1, 150 (3 tiles), 64 (exactly 1), 0 (empty)
        let (dims, cu) = dims_for(*case, &[37, 70, 1, 150, 64, 0]);
        let [q, k, v, _] = inputs(40 + c as u64, &dims, 2.0);
        let (o, lse) = attn_fwd(&q, &k, &v, &cu, &dims);
        let (o_ref, lse_ref) = naive(&q, &k, &v, &cu, &dims);
        let (eo, el) = (max_rel_diff(&o, &o_ref), max_rel_diff(&lse, &lse_ref));
        println!("attention forward {case:?}: o {eo:.2e} lse {el:.2e}");
        assert!(
            eo < 1e-13 && el < 1e-13,
            "{case:?}: o {eo:.2e} lse {el:.2e}"
        );
    }
}

fn gradcheck_case(case: Case, seed: u64) {
    gradcheck_on(case, &[37, 70], seed);
}

fn gradcheck_on(case: Case, seg_lens: &[usize], seed: u64) {
    let (dims, cu) = dims_for(case, seg_lens);
    // the FD-checked scheme; attention_backward_schemes_agree ties ByKvHead to it
    assert_eq!(scheme_for(&cu, &dims), BackwardScheme::TwoPass);
    gradcheck_dims(case, &dims, &cu, seg_lens, seed, 1.5);
}

fn gradcheck_dims(
    case: Case,
    dims: &AttnDims,
    cu: &[i32],
    seg_lens: &[usize],
    seed: u64,
    spread: f64,
) {
    let dims = *dims;
    let [q, k, v, r] = inputs(seed, &dims, spread);
    let (dq, dk, dv) = attn_bwd(&q, &k, &v, &r, cu, &dims, 0.0);
    let loss = |q: &[f64], k: &[f64], v: &[f64]| dot(&attn_fwd(q, k, v, cu, &dims).0, &r);
    let tag = format!(
        "attention H={} Hkv={} Dh={} causal={} window={:?} softcap={:?} segments {seg_lens:?}",
        case.heads, case.kv_heads, case.head_dim, case.causal, case.window, dims.softcap
    );
    fd_check(&format!("{tag} dq"), &q, &dq, |x| loss(x, &k, &v));
    fd_check(&format!("{tag} dk"), &k, &dk, |x| loss(&q, x, &v));
    fd_check(&format!("{tag} dv"), &v, &dv, |x| loss(&q, &k, x));
}

/// Gradchecks on segments of 37 and 70 tokens (1 and 2 tiles, neither a multiple of 64).
/// Every element of dq, dk and dv is checked; the MHA case is left to the forward test to keep
/// the number of forward evaluations (4 per element) in check.
#[test]
fn attention_gradcheck_causal_gqa_and_mqa() {
    gradcheck_case(CASES[0], 50);
    gradcheck_case(CASES[1], 51);
}

#[test]
fn attention_gradcheck_full_gqa() {
    gradcheck_case(
        Case {
            head_dim: 8,
            ..CASES[2]
        },
        52,
    );
}

/// Sliding windows (key j seen by query i iff i − w < j ≤ i): windows of 1 key, below a tile
/// (5), exactly one tile (64), above a tile (90, 130) and wider than every segment (500: plain
/// causal), with GQA, MQA and MHA, on the ragged segments of the forward test.
#[test]
fn attention_window_forward_matches_naive_softmax() {
    for (c, (window, heads, kv_heads)) in [
        (1, 4, 2),
        (5, 4, 2),
        (64, 4, 1),
        (90, 3, 3),
        (130, 4, 2),
        (500, 4, 1),
    ]
    .into_iter()
    .enumerate()
    {
        let case = Case {
            heads,
            kv_heads,
            head_dim: 8,
            causal: true,
            window: Some(window),
        };
        let (dims, cu) = dims_for(case, &[37, 70, 1, 150, 64, 0, 300]);
        let [q, k, v, _] = inputs(70 + c as u64, &dims, 2.0);
        let (o, lse) = attn_fwd(&q, &k, &v, &cu, &dims);
        let (o_ref, lse_ref) = naive(&q, &k, &v, &cu, &dims);
        let (eo, el) = (max_rel_diff(&o, &o_ref), max_rel_diff(&lse, &lse_ref));
        println!("attention forward {case:?}: o {eo:.2e} lse {el:.2e}");
        assert!(
            eo < 1e-13 && el < 1e-13,
            "{case:?}: o {eo:.2e} lse {el:.2e}"
        );
    }
    // A window at least as long as every segment is plain causal attention, bit for bit.
    let full = Case {
        window: None,
        ..CASES[0]
    };
    let wide = Case {
        window: Some(150),
        ..CASES[0]
    };
    let (dn, cu) = dims_for(full, &[37, 150]);
    let (dw, _) = dims_for(wide, &[37, 150]);
    let [q, k, v, _] = inputs(77, &dn, 2.0);
    assert_eq!(
        attn_fwd(&q, &k, &v, &cu, &dn),
        attn_fwd(&q, &k, &v, &cu, &dw)
    );
}

/// Gradchecks with a sliding window smaller than a tile (5, GQA) and larger than one (90, MQA),
/// on varlen segments where the window cuts (150 tokens) and where it does not (20, 37).
#[test]
fn attention_gradcheck_window_smaller_than_a_tile() {
    let case = Case {
        window: Some(5),
        ..CASES[0]
    };
    gradcheck_on(case, &[37, 150], 53);
}

#[test]
fn attention_gradcheck_window_larger_than_a_tile() {
    let case = Case {
        window: Some(90),
        head_dim: 8,
        ..CASES[1]
    };
    gradcheck_on(case, &[20, 150], 57);
}

/// Gemma 2's softcap c·tanh(s/c) on the scaled scores, before the mask: forward against the
/// naive reference (scores spread to ±9 around c = 2.5, so most rows bend), and f64 finite
/// differences of the backward (its dS times 1 − (s/c)²) causal with GQA, windowed with MQA, full,
/// and on enough segments that the one-pass ByKvHead scheme runs.
#[test]
fn attention_softcap_matches_naive_and_gradchecks() {
    let capped = |case: Case, lens: &[usize]| {
        let (mut dims, cu) = dims_for(case, lens);
        dims.softcap = Some(2.5);
        (dims, cu)
    };
    let windowed = Case {
        window: Some(5),
        head_dim: 8,
        ..CASES[1]
    };
    for (c, case) in [CASES[0], windowed, CASES[2]].into_iter().enumerate() {
        let (dims, cu) = capped(case, &[37, 70, 1, 150, 0]);
        let [q, k, v, _] = inputs(90 + c as u64, &dims, 3.0);
        let (o, lse) = attn_fwd(&q, &k, &v, &cu, &dims);
        let (o_ref, lse_ref) = naive(&q, &k, &v, &cu, &dims);
        let (eo, el) = (max_rel_diff(&o, &o_ref), max_rel_diff(&lse, &lse_ref));
        println!("attention forward softcap {case:?}: o {eo:.2e} lse {el:.2e}");
        assert!(
            eo < 1e-13 && el < 1e-13,
            "{case:?}: o {eo:.2e} lse {el:.2e}"
        );
        // the cap changes the output
        let (plain, _) = dims_for(case, &[37, 70, 1, 150, 0]);
        let uncapped = attn_fwd(&q, &k, &v, &cu, &plain).0;
        assert!(
            max_rel_diff(&o, &uncapped) > 1e-2,
            "{case:?}: the cap did not bite"
        );
    }
    let full = Case {
        head_dim: 8,
        ..CASES[2]
    };
    for (seed, case, lens) in [
        (93, CASES[0], &[11usize, 66][..]),
        (94, windowed, &[20, 33][..]),
        (95, full, &[19, 14][..]),
        (96, CASES[0], &[9, 13, 6, 11][..]),
    ] {
        let (dims, cu) = capped(case, lens);
        let want = match lens.len() * case.kv_heads >= 8 {
            true => BackwardScheme::ByKvHead,
            false => BackwardScheme::TwoPass,
        };
        assert_eq!(scheme_for(&cu, &dims), want);
        gradcheck_dims(case, &dims, &cu, lens, seed, 3.0);
    }
}

#[test]
fn attention_backward_overwrites_gradients() {
    let (dims, cu) = dims_for(CASES[1], &[37, 70]);
    let [q, k, v, r] = inputs(54, &dims, 1.0);
    let clean = attn_bwd(&q, &k, &v, &r, &cu, &dims, 0.0);
    let dirty = attn_bwd(&q, &k, &v, &r, &cu, &dims, f64::NAN);
    assert_eq!(clean, dirty, "dq/dk/dv depend on their previous contents");
}

/// f32 against f64 for a GPT-2-small-like head shape with unequal packed segments.
#[test]
fn attention_f32_matches_f64_realistic_size() {
    let case = Case {
        heads: 12,
        kv_heads: 4,
        head_dim: 64,
        causal: true,
        window: None,
    };
    let (dims, cu) = dims_for(case, &[700, 324]);
    assert_eq!(scheme_for(&cu, &dims), BackwardScheme::ByKvHead);
    let [q, k, v, r] = inputs(55, &dims, 1.0);
    let to32 = |x: &[f64]| x.iter().map(|&a| a as f32).collect::<Vec<f32>>();
    let (q32, k32, v32, r32) = (to32(&q), to32(&k), to32(&v), to32(&r));
    let (o64, lse64) = attn_fwd(&q, &k, &v, &cu, &dims);
    let t = std::time::Instant::now();
    let (o32, lse32) = attn_fwd(&q32, &k32, &v32, &cu, &dims);
    let t_fwd = t.elapsed().as_secs_f64();
    let t = std::time::Instant::now();
    let g32 = attn_bwd(&q32, &k32, &v32, &r32, &cu, &dims, 0.0);
    let t_bwd = t.elapsed().as_secs_f64() - t_fwd; // attn_bwd reruns the forward
    let g64 = attn_bwd(&q, &k, &v, &r, &cu, &dims, 0.0);
    let up = |x: &[f32]| x.iter().map(|&a| a as f64).collect::<Vec<f64>>();
    let errs = [
        ("o", max_rel_diff(&up(&o32), &o64)),
        ("lse", max_rel_diff(&up(&lse32), &lse64)),
        ("dq", max_rel_diff(&up(&g32.0), &g64.0)),
        ("dk", max_rel_diff(&up(&g32.1), &g64.1)),
        ("dv", max_rel_diff(&up(&g32.2), &g64.2)),
    ];
    println!("attention f32 vs f64 N=1024 H=12 Hkv=4 Dh=64 causal: {errs:?}; f32 fwd {t_fwd:.3}s bwd {t_bwd:.3}s");
    for (name, e) in errs {
        assert!(e < 1e-5, "{name}: {e:.2e}");
    }
}

/// Race-freedom and determinism: forward and backward in f32 give bitwise the same results on
/// a 1-thread and a 2-thread rayon pool (no atomics, no order-dependent reductions), for both
/// backward schemes.
#[test]
fn attention_is_bitwise_deterministic_across_thread_counts() {
    let gqa8 = Case {
        heads: 8,
        kv_heads: 4,
        head_dim: 32,
        causal: true,
        window: None,
    };
    let mqa = Case {
        heads: 4,
        kv_heads: 1,
        head_dim: 32,
        causal: true,
        window: None,
    };
    for (case, scheme) in [
        (gqa8, BackwardScheme::ByKvHead),
        (mqa, BackwardScheme::TwoPass),
    ] {
        let (dims, cu) = dims_for(case, &[300, 77, 150]);
        assert_eq!(scheme_for(&cu, &dims), scheme);
        let to32 = |x: &[f64]| x.iter().map(|&a| a as f32).collect::<Vec<f32>>();
        let [q, k, v, r] = inputs(56, &dims, 1.0).map(|x| to32(&x));
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                (
                    attn_fwd(&q, &k, &v, &cu, &dims),
                    attn_bwd(&q, &k, &v, &r, &cu, &dims, 0.0),
                )
            })
        };
        let (one, two) = (run(1), run(2));
        assert!(one == two, "{scheme:?}: results depend on the thread count");
    }
}

/// The one-pass ByKvHead scheme against the FD-checked TwoPass scheme, in f64, on the gradcheck
/// shapes (which `backward` itself runs with TwoPass) and on more segments.
#[test]
fn attention_backward_schemes_agree() {
    let windowed = [
        Case {
            window: Some(5),
            ..CASES[0]
        },
        Case {
            window: Some(90),
            ..CASES[1]
        },
        Case {
            window: Some(64),
            ..CASES[0]
        },
    ];
    for (c, case) in CASES.iter().chain(&windowed).enumerate() {
        for lens in [&[37usize, 70][..], &[37, 70, 1, 150, 64, 0], &[300, 200]] {
            let (dims, cu) = dims_for(*case, lens);
            let [q, k, v, r] = inputs(60 + c as u64, &dims, 1.5);
            let (o, lse) = attn_fwd(&q, &k, &v, &cu, &dims);
            let grads = |scheme| {
                let (mut dq, mut dk, mut dv) = (
                    vec![f64::NAN; q.len()],
                    vec![f64::NAN; k.len()],
                    vec![f64::NAN; v.len()],
                );
                attention::backward_with(
                    &q, &k, &v, &o, &r, &lse, &mut dq, &mut dk, &mut dv, &cu, &dims, scheme,
                );
                [dq, dk, dv]
            };
            let (two, one) = (
                grads(BackwardScheme::TwoPass),
                grads(BackwardScheme::ByKvHead),
            );
            for (name, (a, b)) in ["dq", "dk", "dv"].iter().zip(one.iter().zip(&two)) {
                let e = max_rel_diff(a, b);
                assert!(e < 1e-13, "{case:?} {lens:?} {name}: {e:.2e}");
            }
        }
    }
}
