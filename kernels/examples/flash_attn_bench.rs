//! Speed of ferrotron's FlashAttention kernels on the shapes of shared/baselines/attention_bench.py.
//!
//! FLOPs follow the FlashAttention papers: forward 4·B·H·S²·D (halved when causal), backward
//! 2.5× forward. Times are CUDA-event medians of `--iters` runs after warm-up, on random inputs.
//! Also prints the device memory free before and after fwd+bwd at each shape (the kernels
//! allocate nothing, so the difference must be 0).
//! Usage: flash_attn_bench [--quick] [--iters N]

use cudarc::driver::{sys::CUevent_flags, CudaContext, CudaSlice};
use ferrotron_kernels::cuda::flash_attn::FlashAttention;
use ferrotron_kernels::AttnDims;
use half::bf16;

const SHAPES: [(usize, usize, usize, usize); 5] = [
    (16, 16, 1024, 64),
    (8, 16, 2048, 128),
    (4, 16, 4096, 128),
    (2, 16, 8192, 128),
    (1, 16, 16384, 128),
];

fn random_bf16(n: usize, seed: u64) -> Vec<bf16> {
    // xorshift64*, Irwin–Hall approximation of N(0, 1): sum of 4 uniforms, centred and scaled.
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            let mut acc = 0f32;
            for _ in 0..4 {
                s ^= s >> 12;
                s ^= s << 25;
                s ^= s >> 27;
                acc += (s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32;
            }
            bf16::from_f32((acc - 2.0) * 1.732)
        })
        .collect()
}

fn median(mut v: Vec<f32>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2] as f64
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let iters: usize = args
        .iter()
        .position(|a| a == "--iters")
        .map(|i| args[i + 1].parse().unwrap())
        .unwrap_or(20);
    let ctx = CudaContext::new(0).expect("CUDA device");
    let stream = ctx.default_stream();
    let fa = FlashAttention::new(stream.clone()).unwrap();
    println!("device: {}", ctx.name().unwrap());
    let shapes: Vec<_> = if quick {
        SHAPES[1..3].to_vec()
    } else {
        SHAPES.to_vec()
    };
    for (b, h, s, d) in shapes {
        let n = b * s;
        let up = |seed| stream.clone_htod(&random_bf16(n * h * d, seed)).unwrap();
        let (q, k, v, dout) = (up(1), up(2), up(3), up(4));
        let zeros = |len| -> CudaSlice<bf16> { stream.alloc_zeros(len).unwrap() };
        let (mut o, mut dq, mut dk, mut dv) = (
            zeros(n * h * d),
            zeros(n * h * d),
            zeros(n * h * d),
            zeros(n * h * d),
        );
        let mut lse: CudaSlice<f32> = stream.alloc_zeros(h * n).unwrap();
        let cu: Vec<i32> = (0..=b).map(|i| (i * s) as i32).collect();
        let cu = stream.clone_htod(&cu).unwrap();
        for causal in [true, false] {
            let dims = AttnDims {
                tokens: n,
                heads: h,
                kv_heads: h,
                head_dim: d,
                segments: b,
                max_seqlen: s,
                causal,
                scale: 1.0 / (d as f32).sqrt(),
            };
            let mut fwd = || {
                fa.forward(
                    &q.as_view(),
                    &k.as_view(),
                    &v.as_view(),
                    &mut o.as_view_mut(),
                    &mut lse.as_view_mut(),
                    &cu.as_view(),
                    &dims,
                )
                .unwrap()
            };
            for _ in 0..3 {
                fwd();
            }
            let mut t_f = Vec::new();
            for _ in 0..iters {
                let e0 = stream
                    .record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
                    .unwrap();
                fwd();
                let e1 = stream
                    .record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
                    .unwrap();
                e1.synchronize().unwrap();
                t_f.push(e0.elapsed_ms(&e1).unwrap());
            }
            let mut bwd = || {
                fa.backward(
                    &q.as_view(),
                    &k.as_view(),
                    &v.as_view(),
                    &o.as_view(),
                    &dout.as_view(),
                    &lse.as_view(),
                    &mut dq.as_view_mut(),
                    &mut dk.as_view_mut(),
                    &mut dv.as_view_mut(),
                    &cu.as_view(),
                    &dims,
                )
                .unwrap()
            };
            for _ in 0..3 {
                bwd();
            }
            stream.synchronize().unwrap();
            let free_before = ctx.mem_get_info().unwrap().0;
            let mut t_b = Vec::new();
            for _ in 0..iters {
                let e0 = stream
                    .record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
                    .unwrap();
                bwd();
                let e1 = stream
                    .record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
                    .unwrap();
                e1.synchronize().unwrap();
                t_b.push(e0.elapsed_ms(&e1).unwrap());
            }
            let free_after = ctx.mem_get_info().unwrap().0;
            let check = stream.clone_dtoh(&dq.slice(0..4096)).unwrap();
            let finite = check.iter().all(|x| x.to_f32().is_finite());
            let (tf, tb) = (median(t_f) * 1e-3, median(t_b) * 1e-3);
            let flops = 4.0 * (b * h * s * s * d) as f64 * if causal { 0.5 } else { 1.0 };
            println!(
                "{b}x{h}x{s}x{d} causal={} ferrotron fwd {:6.1} TF/s  bwd {:6.1} TF/s  ({:.3} / {:.3} ms)  mem delta {} B{}",
                causal as i32,
                flops / tf / 1e12,
                2.5 * flops / tb / 1e12,
                tf * 1e3,
                tb * 1e3,
                free_before as i64 - free_after as i64,
                if finite { "" } else { "  NON-FINITE dq" }
            );
        }
    }
}
