//! Rough GPU timings of the CUDA backend's ops (median of 20 runs after 3 warm-ups, host clock
//! around a stream synchronize), printed as "CUDA-BENCH <op> <shape> <ms> <rate>". Not a gate:
//! a figure for docs/gpu-runs and for spotting a slow path. #[ignore = "needs a CUDA GPU"].

mod common;
use common::median_ms as time;
use ferrotron_kernels::backend::{
    AttnDims, Backend, Dst, LinearDims, Src, WeightGrads, WeightLayout,
};
use ferrotron_kernels::cuda::CudaBackend;
use half::bf16;

fn host(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 2654435761usize) % 1000) as f32 / 1000.0 - 0.5)
        .collect()
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn bench_bf16() {
    let be = CudaBackend::<bf16>::new(0).unwrap();
    be.warm_up().unwrap();
    let line = |op: &str, shape: &str, ms: f64, rate: String| {
        eprintln!("CUDA-BENCH {op} {shape} {ms:.3} ms {rate}")
    };

    // linear forward / backward, bf16 in, fp32 accumulate (dW into fp32).
    let (n, i, o) = (8192, 4096, 4096);
    let (x, w) = (
        be.upload_act(&host(n * i)).unwrap(),
        be.upload_act(&host(i * o)).unwrap(),
    );
    let mut y = be.zeros_act(n * o).unwrap();
    let dims = LinearDims {
        n,
        inp: i,
        out: o,
        layout: WeightLayout::OutIn,
    };
    let ms = time(&be, || {
        be.linear_forward(Src::all(&x), Src::all(&w), None, Dst::all(&mut y), dims)
            .unwrap()
    });
    let fl = 2.0 * (n * i * o) as f64;
    line(
        "linear_forward",
        "8192x4096x4096",
        ms,
        format!("{:.0} TFLOP/s", fl / ms / 1e9),
    );
    let mut dx = be.zeros_act(n * i).unwrap();
    let mut dw = be.zeros_acc(i * o).unwrap();
    let ms = time(&be, || {
        let g = WeightGrads::new(&mut dw, (0, i * o), None);
        be.linear_backward(
            Src::all(&x),
            Src::all(&w),
            Src::all(&y),
            Some(Dst::all(&mut dx)),
            g,
            dims,
        )
        .unwrap()
    });
    line(
        "linear_backward",
        "8192x4096x4096",
        ms,
        format!("{:.0} TFLOP/s", 2.0 * fl / ms / 1e9),
    );

    // rmsnorm forward: bytes = read x + write y (bf16) per element.
    let (rn, rd) = (16384, 4096);
    let xr = be.upload_act(&host(rn * rd)).unwrap();
    let wr = be.upload_act(&host(rd)).unwrap();
    let mut yr = be.zeros_act(rn * rd).unwrap();
    let mut rstd = be.zeros_acc(rn).unwrap();
    let ms = time(&be, || {
        be.rmsnorm_forward(
            Src::all(&xr),
            Src::all(&wr),
            Dst::all(&mut yr),
            Dst::all(&mut rstd),
            rn,
            rd,
            1e-5,
            0.0,
        )
        .unwrap()
    });
    line(
        "rmsnorm_forward",
        "16384x4096",
        ms,
        format!("{:.0} GB/s", (4 * rn * rd) as f64 / ms / 1e6),
    );

    // cross-entropy with dlogits: read logits twice + write dlogits (bf16).
    let (cn, cv) = (8192, 50304);
    let logits = be.upload_act(&host(cn * cv)).unwrap();
    let tg = be
        .upload_idx(
            &(0..cn as i32)
                .map(|k| k * 7 % cv as i32)
                .collect::<Vec<_>>(),
        )
        .unwrap();
    let mut losses = be.zeros_acc(cn).unwrap();
    let mut dl = be.zeros_act(cn * cv).unwrap();
    let ms = time(&be, || {
        be.cross_entropy(
            Src::all(&logits),
            Src::all(&tg),
            Dst::all(&mut losses),
            Some(Dst::all(&mut dl)),
            cn,
            cv,
            1.0,
        )
        .unwrap()
    });
    line(
        "cross_entropy",
        "8192x50304",
        ms,
        format!("{:.0} GB/s", (6 * cn * cv) as f64 / ms / 1e6),
    );

    // fallback attention, causal, B1 H16 S2048 D128.
    let (s, h, d) = (2048, 16, 128);
    let q = be.upload_act(&host(s * h * d)).unwrap();
    let mut oo = be.zeros_act(s * h * d).unwrap();
    let mut lse = be.zeros_acc(h * s).unwrap();
    let cu = be.upload_idx(&[0, s as i32]).unwrap();
    let dims = AttnDims {
        tokens: s,
        heads: h,
        kv_heads: h,
        head_dim: d,
        segments: 1,
        max_seqlen: s,
        causal: true,
        scale: 0.088,
        window: None,
        softcap: None,
    };
    let ms = time(&be, || {
        be.attention_forward(
            Src::all(&q),
            Src::all(&q),
            Src::all(&q),
            Dst::all(&mut oo),
            Dst::all(&mut lse),
            Src::all(&cu),
            &dims,
        )
        .unwrap()
    });
    let fl = 4.0 * (s * s * h * d) as f64 / 2.0;
    line(
        "attention_fwd_fallback",
        "S2048H16D128causal",
        ms,
        format!("{:.1} TFLOP/s", fl / ms / 1e9),
    );
    let (mut dq, mut dk, mut dv) = (
        be.zeros_act(s * h * d).unwrap(),
        be.zeros_act(s * h * d).unwrap(),
        be.zeros_act(s * h * d).unwrap(),
    );
    let ms = time(&be, || {
        be.attention_backward(
            Src::all(&q),
            Src::all(&q),
            Src::all(&q),
            Src::all(&oo),
            Src::all(&q),
            Src::all(&lse),
            Dst::all(&mut dq),
            Dst::all(&mut dk),
            Dst::all(&mut dv),
            Src::all(&cu),
            &dims,
        )
        .unwrap()
    });
    line(
        "attention_bwd_fallback",
        "S2048H16D128causal",
        ms,
        format!("{:.1} TFLOP/s", 2.5 * fl / ms / 1e9),
    );
}
