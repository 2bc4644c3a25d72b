//! Throughput of the CPU ops the small-GPT training loop spends its time in (f32).
//! Ignored by default; run with
//!   cargo test --release -p ferrotron-kernels --test bench_cpu -- --ignored --nocapture --test-threads 1
//! GFLOP/s count useful work only: linear fwd 2·N·I·O, bwd 4·N·I·O; attention fwd 4·P·Dh·H,
//! bwd 10·P·Dh·H (the 2 + 5 GEMMs of FlashAttention-2), with P the visible (query, key) pairs.

mod common;

use common::*;
use ferrotron_kernels::cpu::gemm::{gemm, View, ViewMut};
use ferrotron_kernels::cpu::CpuBackend;
use ferrotron_kernels::{AttnDims, Backend, Dst, LinearDims, Src, WeightGrads, WeightLayout};
use std::time::Instant;

/// Best wall time of `reps` runs of f, in seconds.
fn best_of(reps: usize, mut f: impl FnMut()) -> f64 {
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

#[test]
#[ignore]
fn bench_linear_4096x768x2304() {
    let be = CpuBackend::<f32>::new();
    let mut g = rng(1);
    let (n, inp, out) = (4096, 768, 2304);
    for layout in [WeightLayout::OutIn, WeightLayout::InOut] {
        let dims = LinearDims {
            n,
            inp,
            out,
            layout,
        };
        let x = uniform_f32(&mut g, n * inp);
        let w = uniform_f32(&mut g, out * inp);
        let b = uniform_f32(&mut g, out);
        let dy = uniform_f32(&mut g, n * out);
        let mut y = vec![0f32; n * out];
        let mut dx = vec![0f32; n * inp];
        let mut grads = vec![0f32; out * inp + out];
        let fwd = best_of(3, || {
            be.linear_forward(
                Src::all(&x),
                Src::all(&w),
                Some(Src::all(&b)),
                Dst::all(&mut y),
                dims,
            )
            .unwrap();
        });
        let bwd = best_of(3, || {
            let gr = WeightGrads::new(&mut grads, (0, out * inp), Some((out * inp, out)));
            be.linear_backward(
                Src::all(&x),
                Src::all(&w),
                Src::all(&dy),
                Some(Dst::all(&mut dx)),
                gr,
                dims,
            )
            .unwrap();
        });
        let flop = 2.0 * (n * inp * out) as f64;
        println!(
            "linear {layout:?} [{n}x{inp}]x[{inp}x{out}] f32: fwd {:.1} ms {:.1} GFLOP/s, bwd {:.1} ms {:.1} GFLOP/s, fwd+bwd {:.1} GFLOP/s",
            fwd * 1e3,
            flop / fwd / 1e9,
            bwd * 1e3,
            2.0 * flop / bwd / 1e9,
            3.0 * flop / (fwd + bwd) / 1e9
        );
    }
}

#[test]
#[ignore]
fn bench_tile_gemm() {
    for (m, n, k) in [(64, 64, 64), (128, 128, 64), (64, 64, 128), (128, 128, 128)] {
        let a = vec![0.5f32; m * k];
        let b = vec![0.25f32; n * k];
        let mut c = vec![0f32; m * n];
        let iters = 2000;
        let t = best_of(3, || {
            for _ in 0..iters {
                gemm(
                    1.0,
                    View::row_major(&a, m, k),
                    View::row_major(&b, n, k).t(),
                    0.0,
                    ViewMut::row_major(&mut c, m, n),
                );
            }
        });
        println!(
            "tile gemm {m}x{n}x{k} f32: {:.2} us, {:.1} GFLOP/s",
            t / iters as f64 * 1e6,
            2.0 * (m * n * k * iters) as f64 / t / 1e9
        );
    }
}

/// Sliding-window attention skips the key tiles wholly outside the window: at S 4096 a window
/// of 512 visits ~1/4.5 of the causal (query, key) tile pairs, so it must run faster than full
/// causal attention, forward and backward.
#[test]
#[ignore]
fn bench_attention_sliding_window() {
    let be = CpuBackend::<f32>::new();
    let mut g = rng(3);
    let (heads, kv_heads, dh, seg) = (8, 2, 64, 4096);
    let cu = vec![0, seg as i32];
    let q = uniform_f32(&mut g, seg * heads * dh);
    let k = uniform_f32(&mut g, seg * kv_heads * dh);
    let v = uniform_f32(&mut g, seg * kv_heads * dh);
    let dout = uniform_f32(&mut g, seg * heads * dh);
    let mut times = Vec::new();
    for window in [None, Some(2048), Some(512)] {
        let dims = AttnDims {
            tokens: seg,
            heads,
            kv_heads,
            head_dim: dh,
            segments: 1,
            max_seqlen: seg,
            causal: true,
            scale: 0.125,
            window,
            softcap: None,
        };
        let (mut o, mut lse) = (vec![0f32; q.len()], vec![0f32; heads * seg]);
        let (mut dq, mut dk, mut dv) = (
            vec![0f32; q.len()],
            vec![0f32; k.len()],
            vec![0f32; v.len()],
        );
        let fwd = best_of(2, || {
            be.attention_forward(
                Src::all(&q),
                Src::all(&k),
                Src::all(&v),
                Dst::all(&mut o),
                Dst::all(&mut lse),
                Src::all(&cu),
                &dims,
            )
            .unwrap();
        });
        let bwd = best_of(2, || {
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
                &dims,
            )
            .unwrap();
        });
        println!(
            "attention S={seg} H={heads}/{kv_heads} Dh={dh} causal window {window:?} f32: fwd {:.1} ms, bwd {:.1} ms",
            fwd * 1e3,
            bwd * 1e3
        );
        times.push((fwd, bwd));
    }
    for &(f, b) in &times[1..] {
        assert!(
            f < times[0].0 && b < times[0].1,
            "a window is slower than full causal: {times:?}"
        );
    }
}

#[test]
#[ignore]
fn bench_attention_gpt2_small_shape() {
    let be = CpuBackend::<f32>::new();
    let mut g = rng(2);
    let (heads, dh, seg, segments) = (12, 64, 1024, 4);
    let n = seg * segments;
    let cu: Vec<i32> = (0..=segments).map(|s| (s * seg) as i32).collect();
    let dims = AttnDims {
        tokens: n,
        heads,
        kv_heads: heads,
        head_dim: dh,
        segments,
        max_seqlen: seg,
        causal: true,
        scale: 0.125,
        window: None,
        softcap: None,
    };
    let q = uniform_f32(&mut g, n * heads * dh);
    let k = uniform_f32(&mut g, n * heads * dh);
    let v = uniform_f32(&mut g, n * heads * dh);
    let dout = uniform_f32(&mut g, n * heads * dh);
    let (mut o, mut lse) = (vec![0f32; n * heads * dh], vec![0f32; heads * n]);
    let (mut dq, mut dk, mut dv) = (
        vec![0f32; q.len()],
        vec![0f32; k.len()],
        vec![0f32; v.len()],
    );
    let fwd = best_of(3, || {
        be.attention_forward(
            Src::all(&q),
            Src::all(&k),
            Src::all(&v),
            Dst::all(&mut o),
            Dst::all(&mut lse),
            Src::all(&cu),
            &dims,
        )
        .unwrap();
    });
    let bwd = best_of(3, || {
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
            &dims,
        )
        .unwrap();
    });
    let two_pass = best_of(3, || {
        let scheme = ferrotron_kernels::cpu::attention::BackwardScheme::TwoPass;
        ferrotron_kernels::cpu::attention::backward_with(
            &q, &k, &v, &o, &dout, &lse, &mut dq, &mut dk, &mut dv, &cu, &dims, scheme,
        );
    });
    let pairs = (segments * seg * (seg + 1) / 2) as f64;
    let unit = pairs * (dh * heads) as f64;
    println!(
        "attention causal {segments}x{seg} tokens H={heads} Dh={dh} f32: fwd {:.1} ms {:.1} GFLOP/s, bwd {:.1} ms {:.1} GFLOP/s",
        fwd * 1e3,
        4.0 * unit / fwd / 1e9,
        bwd * 1e3,
        10.0 * unit / bwd / 1e9
    );
    println!(
        "  (backward forced to the TwoPass scheme: {:.1} ms)",
        two_pass * 1e3
    );
}

#[test]
#[ignore]
fn bench_exp_and_cross_entropy() {
    let mut g = rng(3);
    let mut x = uniform_f32(&mut g, 1 << 20);
    let t = best_of(5, || {
        <f32 as ferrotron_kernels::cpu::CpuFloat>::exp_shifted(&mut x, 1.0)
    });
    let t_std = best_of(5, || x.iter_mut().for_each(|v| *v = (*v - 1.0).exp()));
    let per = |t: f64| t / (1 << 20) as f64 * 1e9;
    println!(
        "exp_shifted f32: {:.2} ns/element, std exp {:.2} ns/element (1 thread)",
        per(t),
        per(t_std)
    );
    let (n, v) = (512, 50_257);
    let logits: Vec<f32> = uniform_f32(&mut g, n * v)
        .into_iter()
        .map(|a| 8.0 * a)
        .collect();
    let targets: Vec<i32> = (0..n as i32).collect();
    let (mut losses, mut dlogits) = (vec![0f32; n], vec![0f32; n * v]);
    let be = CpuBackend::<f32>::new();
    let t = best_of(3, || {
        be.cross_entropy(
            Src::all(&logits),
            Src::all(&targets),
            Dst::all(&mut losses),
            Some(Dst::all(&mut dlogits)),
            n,
            v,
            1.0,
        )
        .unwrap();
    });
    println!(
        "cross_entropy f32 [{n} x {v}] with dlogits: {:.1} ms, {:.2} ns/logit",
        t * 1e3,
        t / (n * v) as f64 * 1e9
    );
}

/// The 75M Llama's products for one 4 × 256-token step (recipes/models/llama-75m.json), each
/// as the trainer calls it, at the machine's rayon thread count: per product best-of-5 time and
/// GFLOP/s, and the step's GEMM total. Compare with torch.mm at the same shapes and threads.
#[test]
#[ignore]
fn bench_llama75m_products() {
    let mut g = rng(5);
    let n = 1024;
    // (name, out, inp, layout, count per step)
    let layers = [
        ("qkv", 1024, 512, 8),
        ("o", 512, 512, 8),
        ("gate+up", 2816, 512, 8),
        ("down", 512, 1408, 8),
    ];
    let mut total = 0.0;
    let mut flops = 0.0;
    for (name, out, inp, count) in layers {
        let x = uniform_f32(&mut g, n * inp);
        let w = uniform_f32(&mut g, out * inp);
        let dy = uniform_f32(&mut g, n * out);
        let mut y = vec![0f32; n * out];
        let mut dx = vec![0f32; n * inp];
        let mut dw = vec![0f32; n.max(out) * inp];
        let wv = View::row_major(&w, out, inp);
        let fwd = best_of(5, || {
            gemm(
                1.0,
                View::row_major(&x, n, inp),
                wv.t(),
                0.0,
                ViewMut::row_major(&mut y, n, out),
            )
        });
        let bdx = best_of(5, || {
            gemm(
                1.0,
                View::row_major(&dy, n, out),
                wv,
                1.0,
                ViewMut::row_major(&mut dx, n, inp),
            )
        });
        let bdw = best_of(5, || {
            gemm(
                1.0,
                View::row_major(&dy, n, out).t(),
                View::row_major(&x, n, inp),
                1.0,
                ViewMut::row_major(&mut dw, out, inp),
            )
        });
        let f = 2.0 * (n * inp * out) as f64;
        println!(
            "{name:8} [{n}x{inp}]x[{inp}x{out}]: fwd {:.0} dx {:.0} dW {:.0} GFLOP/s",
            f / fwd / 1e9,
            f / bdx / 1e9,
            f / bdw / 1e9
        );
        total += count as f64 * (fwd + bdx + bdw);
        flops += count as f64 * 3.0 * f;
    }
    println!(
        "layers: {:.0} ms a step, {:.0} GFLOP/s",
        total * 1e3,
        flops / total / 1e9
    );
}

/// C[m × n] = A[m × k] · Wᵀ (W [n × k] row-major) for a range of widths n: how the engine's
/// throughput depends on the number of column blocks and on C's row stride.
#[test]
#[ignore]
fn bench_gemm_widths() {
    let mut g = rng(6);
    let (m, k) = (1024, 512);
    for n in [512, 1000, 1024, 1408, 1536, 2048, 2816, 3000] {
        let x = uniform_f32(&mut g, m * k);
        let w = uniform_f32(&mut g, n * k);
        let mut y = vec![0f32; m * n];
        let t = best_of(5, || {
            gemm(
                1.0,
                View::row_major(&x, m, k),
                View::row_major(&w, n, k).t(),
                0.0,
                ViewMut::row_major(&mut y, m, n),
            )
        });
        println!(
            "{m}x{k}x{n}: {:.0} GFLOP/s",
            2.0 * (m * k * n) as f64 / t / 1e9
        );
    }
}

/// Fork-join cost on this machine: two 1 ms busy tasks through rayon::join and through the GEMM
/// team, timed per call (ideal 1 ms), after an idle pause and back to back.
#[test]
#[ignore]
fn bench_rayon_join_latency() {
    fn busy(us: u128) {
        let t = std::time::Instant::now();
        while t.elapsed().as_micros() < us {
            std::hint::spin_loop();
        }
    }
    for pause_ms in [0u64, 1, 10] {
        for via in ["rayon::join", "team::run"] {
            let mut ts = Vec::new();
            for _ in 0..20 {
                std::thread::sleep(std::time::Duration::from_millis(pause_ms));
                let t = std::time::Instant::now();
                match via {
                    "rayon::join" => {
                        rayon::join(|| busy(1000), || busy(1000));
                    }
                    _ => ferrotron_kernels::cpu::team::run(2, &|_| busy(1000)),
                }
                ts.push(t.elapsed().as_micros());
            }
            ts.sort();
            println!(
                "pause {pause_ms} ms: {via} of 2 x 1 ms: median {} us, max {} us",
                ts[10], ts[19]
            );
        }
    }
}

/// The head of one training step as the trainer runs it (model/transformer/head.rs): N = 1024
/// tokens, vocabulary 50257, rows in chunks of 2^24 / V; per chunk the logits from the prepared
/// W_head, cross-entropy in place, then dx and dW_head. Prints each phase's time a step (best
/// of 3 steps) for d = 128 (the quickstart) and d = 512 (the 75M Llama).
#[test]
#[ignore]
fn bench_head_step() {
    let be = CpuBackend::<f32>::new();
    let mut g = rng(7);
    let (n, v) = (1024, 50_257);
    let chunk = (1usize << 24) / v;
    for d in [128, 512] {
        let h = uniform_f32(&mut g, n * d);
        let w = uniform_f32(&mut g, v * d);
        let targets: Vec<i32> = (0..n as i32).map(|i| (i * 37) % v as i32).collect();
        let mut logits = vec![0f32; chunk * v];
        let mut losses = vec![0f32; n];
        let mut dh = vec![0f32; n * d];
        let mut dw = vec![0f32; v * d];
        let whole = LinearDims {
            n,
            inp: d,
            out: v,
            layout: WeightLayout::OutIn,
        };
        let mut best = [f64::INFINITY; 4];
        for _ in 0..3 {
            let mut t = [0f64; 4];
            let t0 = Instant::now();
            let prepared = be.prepare_linear_weight(Src::all(&w), whole).unwrap();
            t[0] += t0.elapsed().as_secs_f64();
            let mut r0 = 0;
            while r0 < n {
                let rows = chunk.min(n - r0);
                let dims = LinearDims { n: rows, ..whole };
                let xin = Src::range(&h, r0 * d, rows * d);
                let t0 = Instant::now();
                be.linear_forward_prepared(
                    xin,
                    Src::all(&w),
                    Src::all(&prepared),
                    None,
                    Dst::range(&mut logits, 0, rows * v),
                    dims,
                )
                .unwrap();
                let t1 = Instant::now();
                be.cross_entropy_in_place(
                    Dst::range(&mut logits, 0, rows * v),
                    Src::range(&targets, r0, rows),
                    Dst::range(&mut losses, r0, rows),
                    rows,
                    v,
                    Some(1.0 / n as f64),
                )
                .unwrap();
                let t2 = Instant::now();
                let gr = WeightGrads::new(&mut dw, (0, v * d), None);
                be.linear_backward(
                    xin,
                    Src::all(&w),
                    Src::range(&logits, 0, rows * v),
                    Some(Dst::range(&mut dh, r0 * d, rows * d)),
                    gr,
                    dims,
                )
                .unwrap();
                let t3 = Instant::now();
                t[1] += (t1 - t0).as_secs_f64();
                t[2] += (t2 - t1).as_secs_f64();
                t[3] += (t3 - t2).as_secs_f64();
                r0 += rows;
            }
            for (b, x) in best.iter_mut().zip(t) {
                *b = b.min(x);
            }
        }
        let flop = 2.0 * (n * d * v) as f64;
        println!(
            "head d={d}: prepare {:.1} ms, logits {:.1} ms ({:.0} GFLOP/s), cross-entropy {:.1} ms, backward {:.1} ms ({:.0} GFLOP/s); total {:.1} ms",
            best[0] * 1e3,
            best[1] * 1e3,
            flop / best[1] / 1e9,
            best[2] * 1e3,
            best[3] * 1e3,
            2.0 * flop / best[3] / 1e9,
            best.iter().sum::<f64>() * 1e3
        );
    }
}

/// The head's two backward products for one logits chunk (333 rows of a 50257 vocabulary, the
/// trainer's 2^24-element chunk) as linear_backward calls them: dx = dlogits · W_head and
/// dW_head += dlogitsᵀ · h, for d = 128 (the quickstart) and 512 (the 75M Llama); median and best
/// GFLOP/s of 9 runs.
#[test]
#[ignore]
fn bench_head_products() {
    let mut g = rng(8);
    let (v, rows) = (50_257, 333);
    for d in [128, 512] {
        let h = uniform_f32(&mut g, rows * d);
        let w = uniform_f32(&mut g, v * d);
        let dl = uniform_f32(&mut g, rows * v);
        let mut dh = vec![0f32; rows * d];
        let mut dw = vec![0f32; v * d];
        let f = 2.0 * (rows * d * v) as f64;
        let (mut dx_rates, mut dw_rates) = (Vec::new(), Vec::new());
        for _ in 0..9 {
            let t = best_of(1, || {
                let (dl, w) = (View::row_major(&dl, rows, v), View::row_major(&w, v, d));
                gemm(1.0, dl, w, 1.0, ViewMut::row_major(&mut dh, rows, d))
            });
            dx_rates.push(f / t / 1e9);
            let t = best_of(1, || {
                let (dlt, h) = (
                    View::row_major(&dl, rows, v).t(),
                    View::row_major(&h, rows, d),
                );
                gemm(1.0, dlt, h, 1.0, ViewMut::row_major(&mut dw, v, d))
            });
            dw_rates.push(f / t / 1e9);
        }
        for r in [&mut dx_rates, &mut dw_rates] {
            r.sort_by(f64::total_cmp);
        }
        println!(
            "head d={d} [{rows}x{v}]: dx {:.0} GFLOP/s (best {:.0}), dW {:.0} GFLOP/s (best {:.0})",
            dx_rates[4], dx_rates[8], dw_rates[4], dw_rates[8]
        );
    }
}

/// The element-wise activations at the quickstart's and the 75M Llama's sizes (4 layers ×
/// 1024 tokens × 512, f32): ns per element on the thread team.
#[test]
#[ignore]
fn bench_activations() {
    use ferrotron_kernels::cpu::activation::{
        gelu_backward, gelu_forward, glu_backward, glu_forward,
    };
    use ferrotron_kernels::{Gelu, Glu};
    let n = 1 << 21;
    let mut g = rng(9);
    let x = uniform_f32(&mut g, n)
        .iter()
        .map(|v| 4.0 * v)
        .collect::<Vec<_>>();
    let u = uniform_f32(&mut g, n);
    let d = uniform_f32(&mut g, n);
    let (mut y, mut dx, mut du) = (vec![0f32; n], vec![0f32; n], vec![0f32; n]);
    let per = |t: f64| t / n as f64 * 1e9;
    for _ in 0..3 {
        let fwd = best_of(10, || gelu_forward(Gelu::Tanh, &x, &mut y));
        let bwd = best_of(10, || gelu_backward(Gelu::Tanh, &x, &d, &mut dx));
        let sfwd = best_of(10, || glu_forward(Glu::Silu, &x, &u, &mut y));
        let sbwd = best_of(10, || glu_backward(Glu::Silu, &x, &u, &d, &mut dx, &mut du));
        println!(
            "ns/element: tanh-GELU fwd {:.3} bwd {:.3} | SwiGLU fwd {:.3} bwd {:.3}",
            per(fwd),
            per(bwd),
            per(sfwd),
            per(sbwd)
        );
    }
}
