//! `CudaBackend<bf16>` attention through FlashAttention (the path the model takes on the GPU),
//! forward and backward, against the CPU reference `CpuBackend<f32>` and against the backend's
//! own fallback kernels (`set_flash_attention(false)`), on fresh random inputs rounded through
//! bf16 (seed printed; FERROTRON_TEST_SEED fixes it). Shapes cover GQA/MQA, causal and not, both
//! head dims, and ragged packed segments (lengths 1, tile multiples ± 1, long). Outputs are
//! poisoned with NaN first, so rows FlashAttention leaves unwritten fail.
//! Also: the lse of both paths is the natural-log logsumexp (each backward accepts the other's
//! lse), the dispatch rule (bf16, Dh 64/128, aligned regions; f32 and Dh 40 fall back), and
//! regions at offsets inside larger buffers. The same comparisons with Gemma 2's score softcap
//! (c·tanh(s / c), c = 5, scores up to ~20) run in `flash_path_softcap_matches_cpu_and_fallback`.
//! Pass: ‖gpu − ref‖/‖ref‖ ≤ 1e-2 (bf16). Lines "CUDA-OP <op> bf16 rel=<err>" feed
//! scripts/gpu-check.sh. All tests are #[ignore = "needs a CUDA GPU"].

mod common;
use common::rel_err;

use ferrotron_kernels::backend::{AttnDims, Backend, Dst, Src};
use ferrotron_kernels::cpu::CpuBackend;
use ferrotron_kernels::cuda::CudaBackend;
use half::bf16;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const TOL: f64 = 1e-2;

type G = CudaBackend<bf16>;
type Slice<T> = cudarc::driver::CudaSlice<T>;

fn rng() -> ChaCha8Rng {
    let seed = std::env::var("FERROTRON_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    eprintln!("seed {seed}");
    ChaCha8Rng::seed_from_u64(seed)
}

/// n values uniform in [-s, s), rounded through bf16.
fn rand(rng: &mut ChaCha8Rng, n: usize, s: f32) -> Vec<f32> {
    (0..n)
        .map(|_| bf16::from_f32(rng.random_range(-s..s)).to_f32())
        .collect()
}

fn check(op: &str, got: &[f32], reference: &[f32]) {
    let rel = rel_err(got, reference);
    eprintln!("CUDA-OP {op} bf16 rel={rel:.3e}");
    assert!(rel <= TOL, "{op}: relative error {rel:.3e} over {TOL:.1e}");
}

/// As `check` for a gradient. `zero`: the gradient is exactly 0 in exact arithmetic (a window of
/// 1 key: P = 1 and o = v, so dS = dP − D = 0 and dq = dk = 0); every path then holds rounding
/// noise of its own summation order, which a relative error cannot judge: |x| <= 1e-3 instead.
fn check_grad(op: &str, got: &[f32], reference: &[f32], zero: bool) {
    if !zero {
        return check(op, got, reference);
    }
    let worst = got.iter().chain(reference).fold(0f32, |m, x| {
        if x.is_finite() {
            m.max(x.abs())
        } else {
            f32::INFINITY
        }
    });
    eprintln!("CUDA-OP {op} bf16 max|x|={worst:.3e} (exactly 0 in exact arithmetic)");
    assert!(
        worst <= 1e-3,
        "{op}: max |x| {worst:.3e} where the gradient is exactly 0"
    );
}

fn dims(cu: &[i32], heads: usize, kv_heads: usize, head_dim: usize, causal: bool) -> AttnDims {
    windowed(cu, heads, kv_heads, head_dim, causal, None)
}

fn windowed(
    cu: &[i32],
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    causal: bool,
    window: Option<usize>,
) -> AttnDims {
    capped(cu, heads, kv_heads, head_dim, causal, window, None)
}

fn capped(
    cu: &[i32],
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    causal: bool,
    window: Option<usize>,
    softcap: Option<f64>,
) -> AttnDims {
    AttnDims {
        tokens: *cu.last().unwrap() as usize,
        heads,
        kv_heads,
        head_dim,
        segments: cu.len() - 1,
        max_seqlen: cu.windows(2).map(|w| (w[1] - w[0]) as usize).max().unwrap(),
        causal,
        scale: 1.0 / (head_dim as f64).sqrt(),
        window,
        softcap,
    }
}

fn tag(d: &AttnDims) -> String {
    format!(
        "[{}{}{}Dh{}H{}/{}S{}N{}]",
        if d.causal { "causal," } else { "" },
        d.window.map(|w| format!("window{w},")).unwrap_or_default(),
        d.softcap
            .map(|c| format!("softcap{c},"))
            .unwrap_or_default(),
        d.head_dim,
        d.heads,
        d.kv_heads,
        d.segments,
        d.tokens
    )
}

/// Host copies of one attention problem.
struct Problem {
    d: AttnDims,
    cu: Vec<i32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    dout: Vec<f32>,
}

impl Problem {
    /// q, k in [-2, 2) (scores of standard deviation ~1.3); with a softcap in [-4, 4) (~5.3,
    /// magnitudes up to ~20, so the cap of 5 squeezes most scores and saturates many).
    #[allow(clippy::too_many_arguments)]
    fn new(
        rng: &mut ChaCha8Rng,
        cu: &[i32],
        h: usize,
        hkv: usize,
        dh: usize,
        causal: bool,
        window: Option<usize>,
        softcap: Option<f64>,
    ) -> Self {
        let d = capped(cu, h, hkv, dh, causal, window, softcap);
        let n = d.tokens;
        let qk_amp = if softcap.is_some() { 4.0 } else { 2.0 };
        Problem {
            cu: cu.to_vec(),
            q: rand(rng, n * h * dh, qk_amp),
            k: rand(rng, n * hkv * dh, qk_amp),
            v: rand(rng, n * hkv * dh, 1.0),
            dout: rand(rng, n * h * dh, 1.0),
            d,
        }
    }
    fn nq(&self) -> usize {
        self.d.tokens * self.d.heads * self.d.head_dim
    }
    fn nkv(&self) -> usize {
        self.d.tokens * self.d.kv_heads * self.d.head_dim
    }
}

/// (o, lse) on the CPU.
fn cpu_forward(p: &Problem) -> (Vec<f32>, Vec<f32>) {
    let c = CpuBackend::<f32>::new();
    let (mut o, mut lse) = (vec![0f32; p.nq()], vec![0f32; p.d.heads * p.d.tokens]);
    c.attention_forward(
        Src::all(&p.q),
        Src::all(&p.k),
        Src::all(&p.v),
        Dst::all(&mut o),
        Dst::all(&mut lse),
        Src::all(&p.cu),
        &p.d,
    )
    .unwrap();
    (o, lse)
}

/// (dq, dk, dv) on the CPU, from the given o and lse.
fn cpu_backward(p: &Problem, o: &[f32], lse: &[f32]) -> [Vec<f32>; 3] {
    let (o, lse) = (o.to_vec(), lse.to_vec());
    let c = CpuBackend::<f32>::new();
    let (mut dq, mut dk, mut dv) = (vec![0f32; p.nq()], vec![0f32; p.nkv()], vec![0f32; p.nkv()]);
    c.attention_backward(
        Src::all(&p.q),
        Src::all(&p.k),
        Src::all(&p.v),
        Src::all(&o),
        Src::all(&p.dout),
        Src::all(&lse),
        Dst::all(&mut dq),
        Dst::all(&mut dk),
        Dst::all(&mut dv),
        Src::all(&p.cu),
        &p.d,
    )
    .unwrap();
    [dq, dk, dv]
}

fn up(g: &G, h: &[f32]) -> Slice<bf16> {
    g.upload_act(h).unwrap()
}
fn nan_act(g: &G, n: usize) -> Slice<bf16> {
    g.upload_act(&vec![f32::NAN; n]).unwrap()
}
fn nan_acc(g: &G, n: usize) -> Slice<f32> {
    g.upload_acc(&vec![f32::NAN; n]).unwrap()
}
fn get(g: &G, b: &Slice<bf16>) -> Vec<f32> {
    g.download_act(Src::all(b)).unwrap()
}

/// (o, lse) on the GPU, with FlashAttention allowed or not.
fn gpu_forward(g: &G, p: &Problem, flash: bool) -> (Vec<f32>, Vec<f32>) {
    g.set_flash_attention(flash);
    assert_eq!(g.uses_flash_attention(&p.d, &[0; 4]).unwrap(), flash);
    let (q, k, v) = (up(g, &p.q), up(g, &p.k), up(g, &p.v));
    let cu = g.upload_idx(&p.cu).unwrap();
    let (mut o, mut lse) = (nan_act(g, p.nq()), nan_acc(g, p.d.heads * p.d.tokens));
    g.attention_forward(
        Src::all(&q),
        Src::all(&k),
        Src::all(&v),
        Dst::all(&mut o),
        Dst::all(&mut lse),
        Src::all(&cu),
        &p.d,
    )
    .unwrap();
    (get(g, &o), g.download_acc(Src::all(&lse)).unwrap())
}

/// (dq, dk, dv) on the GPU from the given o and lse, with FlashAttention allowed or not.
fn gpu_backward(g: &G, p: &Problem, o: &[f32], lse: &[f32], flash: bool) -> [Vec<f32>; 3] {
    g.set_flash_attention(flash);
    let (q, k, v, o, dout) = (
        up(g, &p.q),
        up(g, &p.k),
        up(g, &p.v),
        up(g, o),
        up(g, &p.dout),
    );
    let lse = g.upload_acc(lse).unwrap();
    let cu = g.upload_idx(&p.cu).unwrap();
    let (mut dq, mut dk, mut dv) = (nan_act(g, p.nq()), nan_act(g, p.nkv()), nan_act(g, p.nkv()));
    g.attention_backward(
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
        &p.d,
    )
    .unwrap();
    [get(g, &dq), get(g, &dk), get(g, &dv)]
}

fn bf16_round(x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| bf16::from_f32(v).to_f32()).collect()
}

/// (causal, window, Dh, H, Hkv, cu_seqlens): GQA/MQA, causal and not, both head dims, ragged
/// packed segments, and sliding windows of 1 key, below a tile (50), one tile (64), above the
/// 128-row query tile (200), and wider than every segment (4096: full causal attention).
#[allow(clippy::type_complexity)]
fn cases() -> Vec<(bool, Option<usize>, usize, usize, usize, Vec<i32>)> {
    vec![
        // segments of 1, 129, 1, 169, 217 tokens: below, around and across the 64/128 tiles
        (true, None, 64, 8, 2, vec![0, 1, 130, 131, 300, 517]),
        (true, None, 128, 4, 1, vec![0, 257, 384]),
        (false, None, 64, 4, 4, vec![0, 100, 356]),
        (false, None, 128, 6, 3, vec![0, 77, 78, 333]),
        (true, None, 128, 2, 2, vec![0, 1000]),
        (true, None, 64, 4, 2, vec![0, 63, 127, 192, 320]),
        (true, Some(1), 64, 4, 2, vec![0, 70, 300]),
        (true, Some(50), 64, 8, 2, vec![0, 1, 130, 131, 300, 517]),
        (true, Some(64), 128, 4, 1, vec![0, 257, 384]),
        (true, Some(200), 128, 6, 3, vec![0, 77, 78, 1000]),
        (true, Some(4096), 64, 4, 2, vec![0, 63, 127, 192, 320]),
    ]
}

/// The softcap cases (c = 5, see `Problem::new`): causal and not, sliding windows below, at and
/// above a tile, GQA and MQA, both head dims, ragged packed segments. (No window of 1 key: there
/// P = 1 and dS = dP − D is rounding noise on both sides, which a relative error cannot judge.)
#[allow(clippy::type_complexity)]
fn softcap_cases() -> Vec<(bool, Option<usize>, usize, usize, usize, Vec<i32>)> {
    vec![
        (true, None, 64, 8, 2, vec![0, 1, 130, 131, 300, 517]),
        (true, None, 128, 4, 1, vec![0, 257, 384]),
        (false, None, 64, 4, 4, vec![0, 100, 356]),
        (false, None, 128, 6, 3, vec![0, 77, 78, 333]),
        (true, Some(50), 64, 8, 2, vec![0, 1, 130, 131, 300, 517]),
        (true, Some(200), 128, 6, 3, vec![0, 77, 78, 1000]),
        (true, Some(64), 128, 4, 1, vec![0, 257, 384]),
    ]
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn flash_path_matches_cpu_and_fallback() {
    compare_paths(cases(), None);
}

/// As `flash_path_matches_cpu_and_fallback` with Gemma 2's attention softcap c = 5 (the
/// `*_softcap` FlashAttention kernels and the fallback's capped path, against the CPU backend).
#[test]
#[ignore = "needs a CUDA GPU"]
fn flash_path_softcap_matches_cpu_and_fallback() {
    compare_paths(softcap_cases(), Some(5.0));
}

/// FlashAttention against the CPU backend and the fallback kernels, forward and backward, on
/// each case; each backward also from the other path's lse.
#[allow(clippy::type_complexity)]
fn compare_paths(
    cases: Vec<(bool, Option<usize>, usize, usize, usize, Vec<i32>)>,
    softcap: Option<f64>,
) {
    let mut rng = rng();
    let g = G::new(0).expect("a CUDA device");
    for (causal, window, dh, h, hkv, cu) in cases {
        let p = Problem::new(&mut rng, &cu, h, hkv, dh, causal, window, softcap);
        let t = tag(&p.d);
        let (co, clse) = cpu_forward(&p);
        let (fo, flse) = gpu_forward(&g, &p, true);
        let (bo, blse) = gpu_forward(&g, &p, false);
        check(&format!("fa_backend_forward_o{t}"), &fo, &co);
        check(&format!("fa_backend_forward_lse{t}"), &flse, &clse);
        check(&format!("fa_backend_forward_o_vs_fallback{t}"), &fo, &bo);
        check(
            &format!("fa_backend_forward_lse_vs_fallback{t}"),
            &flse,
            &blse,
        );

        // Backward from one o and lse for all three (the CPU's o rounded through bf16, as the
        // model would hold it, and the CPU's natural-log lse).
        let o_in = bf16_round(&co);
        let cref = cpu_backward(&p, &o_in, &clse);
        let fa = gpu_backward(&g, &p, &o_in, &clse, true);
        let fb = gpu_backward(&g, &p, &o_in, &clse, false);
        // a window of 1 key: dq and dk are exactly 0 (see check_grad)
        let zero = |i: usize| p.d.window == Some(1) && i < 2;
        for (i, name) in ["dq", "dk", "dv"].iter().enumerate() {
            check_grad(
                &format!("fa_backend_backward_{name}{t}"),
                &fa[i],
                &cref[i],
                zero(i),
            );
            check_grad(
                &format!("fa_backend_backward_{name}_vs_fallback{t}"),
                &fa[i],
                &fb[i],
                zero(i),
            );
        }
        // Each backward accepts the other path's lse (same natural-log convention).
        let fa_on_fallback_lse = gpu_backward(&g, &p, &bf16_round(&bo), &blse, true);
        let fb_on_flash_lse = gpu_backward(&g, &p, &bf16_round(&fo), &flse, false);
        for (i, name) in ["dq", "dk", "dv"].iter().enumerate() {
            check_grad(
                &format!("fa_backend_backward_{name}_fallback_lse{t}"),
                &fa_on_fallback_lse[i],
                &cref[i],
                zero(i),
            );
            check_grad(
                &format!("fallback_backward_{name}_flash_lse{t}"),
                &fb_on_flash_lse[i],
                &cref[i],
                zero(i),
            );
        }
    }
    g.set_flash_attention(true);
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn dispatch_rule() {
    let g = G::new(0).expect("a CUDA device");
    let cc = g.context().compute_capability().unwrap();
    assert!(
        cc.0 >= 8,
        "this test expects an Ampere or newer GPU (got {cc:?})"
    );
    let d64 = dims(&[0, 100, 300], 4, 2, 64, true);
    assert!(g.uses_flash_attention(&d64, &[0, 0, 0, 0]).unwrap());
    assert!(g
        .uses_flash_attention(&dims(&[0, 10], 2, 1, 128, false), &[8, 16, 0, 24])
        .unwrap());
    // unaligned region start, other head dims, f32, switched off, bad max_seqlen: fallback.
    assert!(!g.uses_flash_attention(&d64, &[3, 0, 0, 0]).unwrap());
    assert!(!g
        .uses_flash_attention(&dims(&[0, 100], 4, 2, 40, true), &[0; 4])
        .unwrap());
    assert!(!g
        .uses_flash_attention(&dims(&[0, 100], 4, 2, 256, true), &[0; 4])
        .unwrap());
    let zero_max = AttnDims {
        max_seqlen: 0,
        ..d64
    };
    assert!(!g.uses_flash_attention(&zero_max, &[0; 4]).unwrap());
    // a softcap runs through FlashAttention too (its *_softcap kernels)
    let capped64 = AttnDims {
        softcap: Some(50.0),
        ..d64
    };
    assert!(g.uses_flash_attention(&capped64, &[0; 4]).unwrap());
    g.set_flash_attention(false);
    assert!(!g.uses_flash_attention(&d64, &[0; 4]).unwrap());
    g.set_flash_attention(true);
    let f = CudaBackend::<f32>::new(0).unwrap();
    assert!(!f.uses_flash_attention(&d64, &[0; 4]).unwrap());
}

/// A softcap no kernel can apply (not a positive finite number, also after rounding to f32) is
/// `Error::Unsupported` on both paths, forward and backward, and nothing is written.
#[test]
#[ignore = "needs a CUDA GPU"]
fn invalid_softcap_is_unsupported() {
    let g = G::new(0).expect("a CUDA device");
    let cu_h = [0, 50, 190];
    for flash in [true, false] {
        g.set_flash_attention(flash);
        for c in [0.0, -5.0, f64::NAN, f64::INFINITY, 1e-300, 1e300] {
            let d = capped(&cu_h, 4, 2, 64, true, None, Some(c));
            let n = d.tokens;
            let (nq, nkv) = (n * 4 * 64, n * 2 * 64);
            let (q, k, v) = (
                up(&g, &vec![0.5; nq]),
                up(&g, &vec![0.5; nkv]),
                up(&g, &vec![0.5; nkv]),
            );
            let cu = g.upload_idx(&cu_h).unwrap();
            let (mut o, mut lse) = (nan_act(&g, nq), nan_acc(&g, 4 * n));
            let r = g.attention_forward(
                Src::all(&q),
                Src::all(&k),
                Src::all(&v),
                Dst::all(&mut o),
                Dst::all(&mut lse),
                Src::all(&cu),
                &d,
            );
            assert!(
                matches!(r, Err(ferrotron_kernels::Error::Unsupported(_))),
                "softcap {c} (flash {flash}): forward gave {r:?}"
            );
            assert!(
                get(&g, &o).iter().all(|x| x.is_nan()),
                "softcap {c}: o written"
            );
            let dout = up(&g, &vec![0.5; nq]);
            let (mut dq, mut dk, mut dv) = (nan_act(&g, nq), nan_act(&g, nkv), nan_act(&g, nkv));
            let lse_in = g.upload_acc(&vec![1.0; 4 * n]).unwrap();
            let r = g.attention_backward(
                Src::all(&q),
                Src::all(&k),
                Src::all(&v),
                Src::all(&dout),
                Src::all(&dout),
                Src::all(&lse_in),
                Dst::all(&mut dq),
                Dst::all(&mut dk),
                Dst::all(&mut dv),
                Src::all(&cu),
                &d,
            );
            assert!(
                matches!(r, Err(ferrotron_kernels::Error::Unsupported(_))),
                "softcap {c} (flash {flash}): backward gave {r:?}"
            );
            assert!(
                get(&g, &dq).iter().all(|x| x.is_nan()),
                "softcap {c}: dq written"
            );
        }
    }
    g.set_flash_attention(true);
}

/// Regions inside larger buffers: at an aligned offset (FlashAttention) and at an unaligned
/// one (fallback); both must read and write exactly their regions.
#[test]
#[ignore = "needs a CUDA GPU"]
fn regions_at_offsets() {
    let mut rng = rng();
    let g = G::new(0).expect("a CUDA device");
    let p = Problem::new(&mut rng, &[0, 50, 190], 4, 2, 64, true, None, None);
    let (co, clse) = cpu_forward(&p);
    let o_in = bf16_round(&co);
    let cref = cpu_backward(&p, &o_in, &clse);
    for off in [8usize, 3] {
        let flash = off % 8 == 0;
        assert_eq!(
            g.uses_flash_attention(&p.d, &[off; 8]).unwrap(),
            flash,
            "offset {off}"
        );
        let pad = |x: &[f32]| {
            let mut v = vec![0.5f32; off];
            v.extend_from_slice(x);
            v.extend(std::iter::repeat_n(0.25f32, 5));
            v
        };
        let (nq, nkv, nl) = (p.nq(), p.nkv(), p.d.heads * p.d.tokens);
        let (q, k, v) = (up(&g, &pad(&p.q)), up(&g, &pad(&p.k)), up(&g, &pad(&p.v)));
        let cu = g.upload_idx(&p.cu).unwrap();
        let mut o = up(&g, &pad(&vec![f32::NAN; nq]));
        let mut lse = g.upload_acc(&pad(&vec![f32::NAN; nl])).unwrap();
        g.attention_forward(
            Src::range(&q, off, nq),
            Src::range(&k, off, nkv),
            Src::range(&v, off, nkv),
            Dst::range(&mut o, off, nq),
            Dst::range(&mut lse, off, nl),
            Src::range(&cu, 0, p.cu.len()),
            &p.d,
        )
        .unwrap();
        let t = format!("[offset{off}]");
        let oh = get(&g, &o);
        assert!(oh[..off].iter().all(|&x| x == 0.5) && oh[off + nq..].iter().all(|&x| x == 0.25));
        check(&format!("fa_backend_region_o{t}"), &oh[off..off + nq], &co);
        let lh = g.download_acc(Src::all(&lse)).unwrap();
        check(
            &format!("fa_backend_region_lse{t}"),
            &lh[off..off + nl],
            &clse,
        );

        let (o2, dout) = (up(&g, &pad(&o_in)), up(&g, &pad(&p.dout)));
        let lse2 = g.upload_acc(&pad(&clse)).unwrap();
        let mut dq = up(&g, &pad(&vec![f32::NAN; nq]));
        let mut dk = up(&g, &pad(&vec![f32::NAN; nkv]));
        let mut dv = up(&g, &pad(&vec![f32::NAN; nkv]));
        g.attention_backward(
            Src::range(&q, off, nq),
            Src::range(&k, off, nkv),
            Src::range(&v, off, nkv),
            Src::range(&o2, off, nq),
            Src::range(&dout, off, nq),
            Src::range(&lse2, off, nl),
            Dst::range(&mut dq, off, nq),
            Dst::range(&mut dk, off, nkv),
            Dst::range(&mut dv, off, nkv),
            Src::all(&cu),
            &p.d,
        )
        .unwrap();
        for (i, (name, buf, len)) in [("dq", &dq, nq), ("dk", &dk, nkv), ("dv", &dv, nkv)]
            .into_iter()
            .enumerate()
        {
            let h = get(&g, buf);
            assert!(
                h[..off].iter().all(|&x| x == 0.5) && h[off + len..].iter().all(|&x| x == 0.25),
                "{name}: wrote outside its region"
            );
            check(
                &format!("fa_backend_region_{name}{t}"),
                &h[off..off + len],
                &cref[i],
            );
        }
    }
}

/// Inputs and outputs of one [S, H, D] causal attention for the speed tests: random q, k, v and
/// dout, one segment, NaN-poisoned outputs.
struct BenchBuffers {
    q: Slice<bf16>,
    k: Slice<bf16>,
    v: Slice<bf16>,
    dout: Slice<bf16>,
    cu: Slice<i32>,
    o: Slice<bf16>,
    lse: Slice<f32>,
    dq: Slice<bf16>,
    dk: Slice<bf16>,
    dv: Slice<bf16>,
}

impl BenchBuffers {
    fn new(g: &G, s: usize, h: usize, d: usize) -> Self {
        let mut rng = rng();
        let mut x = || up(g, &rand(&mut rng, s * h * d, 1.0));
        let (q, k, v, dout) = (x(), x(), x(), x());
        BenchBuffers {
            q,
            k,
            v,
            dout,
            cu: g.upload_idx(&[0, s as i32]).unwrap(),
            o: nan_act(g, s * h * d),
            lse: nan_acc(g, h * s),
            dq: nan_act(g, s * h * d),
            dk: nan_act(g, s * h * d),
            dv: nan_act(g, s * h * d),
        }
    }

    /// Median (forward, backward) milliseconds of attention with `dims`.
    fn time(&mut self, g: &G, dims: &AttnDims) -> (f64, f64) {
        let fwd_ms = common::median_ms(g, || {
            g.attention_forward(
                Src::all(&self.q),
                Src::all(&self.k),
                Src::all(&self.v),
                Dst::all(&mut self.o),
                Dst::all(&mut self.lse),
                Src::all(&self.cu),
                dims,
            )
            .unwrap()
        });
        let bwd_ms = common::median_ms(g, || {
            g.attention_backward(
                Src::all(&self.q),
                Src::all(&self.k),
                Src::all(&self.v),
                Src::all(&self.o),
                Src::all(&self.dout),
                Src::all(&self.lse),
                Dst::all(&mut self.dq),
                Dst::all(&mut self.dk),
                Dst::all(&mut self.dv),
                Src::all(&self.cu),
                dims,
            )
            .unwrap()
        });
        (fwd_ms, bwd_ms)
    }
}

/// Sliding-window speed: FlashAttention forward and backward at B1 H16 S8192 D128 bf16, full
/// causal beside windows of 4096 and 1024 keys (tiles wholly outside the window are skipped, so
/// the work is S·w − w²/2 score elements instead of S²/2). Prints "CUDA-BENCH" lines for the
/// docs/gpu-runs record; fails when a window is slower than full causal attention.
#[test]
#[ignore = "needs a CUDA GPU"]
fn window_speed_s8192() {
    let g = G::new(0).expect("a CUDA device");
    let (s, h, d) = (8192usize, 16usize, 128usize);
    let mut bufs = BenchBuffers::new(&g, s, h, d);
    let mut times = Vec::new();
    for window in [None, Some(4096), Some(1024)] {
        let dims = windowed(&[0, s as i32], h, h, d, true, window);
        assert!(g.uses_flash_attention(&dims, &[0; 4]).unwrap());
        let (fwd_ms, bwd_ms) = bufs.time(&g, &dims);
        let w = window.unwrap_or(s) as f64;
        let scores = s as f64 * w - w * w / 2.0;
        let fl = 4.0 * scores * (h * d) as f64;
        let name = window.map_or("causal".to_string(), |w| format!("window{w}"));
        eprintln!(
            "CUDA-BENCH flash_attention_{name} B1H16S8192D128 fwd {fwd_ms:.3} ms ({:.0} TFLOP/s) bwd {bwd_ms:.3} ms ({:.0} TFLOP/s)",
            fl / fwd_ms / 1e9,
            2.5 * fl / bwd_ms / 1e9
        );
        times.push((name, fwd_ms, bwd_ms));
    }
    let (_, causal_fwd, causal_bwd) = times[0].clone();
    for (name, f, b) in &times[1..] {
        assert!(
            *f <= causal_fwd && *b <= causal_bwd,
            "{name} ({f:.3} / {b:.3} ms) is slower than full causal ({causal_fwd:.3} / {causal_bwd:.3} ms)"
        );
    }
}

/// Softcap cost: FlashAttention forward and backward at B1 H16 S8192 D128 bf16 causal, without
/// a cap (the plain kernels) and with Gemma 2's c = 50 (the `*_softcap` kernels: one tanh per
/// score more, and 1 − t² in the backward). Prints "CUDA-BENCH" lines; asserts only that both
/// ran.
#[test]
#[ignore = "needs a CUDA GPU"]
fn softcap_speed_s8192() {
    let g = G::new(0).expect("a CUDA device");
    let (s, h, d) = (8192usize, 16usize, 128usize);
    let mut bufs = BenchBuffers::new(&g, s, h, d);
    let fl = 4.0 * (s * s) as f64 / 2.0 * (h * d) as f64;
    for softcap in [None, Some(50.0)] {
        let dims = capped(&[0, s as i32], h, h, d, true, None, softcap);
        assert!(g.uses_flash_attention(&dims, &[0; 4]).unwrap());
        let (fwd_ms, bwd_ms) = bufs.time(&g, &dims);
        let name = softcap.map_or("causal".to_string(), |c| format!("causal_softcap{c}"));
        eprintln!(
            "CUDA-BENCH flash_attention_{name} B1H16S8192D128 fwd {fwd_ms:.3} ms ({:.0} TFLOP/s) bwd {bwd_ms:.3} ms ({:.0} TFLOP/s)",
            fl / fwd_ms / 1e9,
            2.5 * fl / bwd_ms / 1e9
        );
        assert!(g
            .download_acc(Src::all(&bufs.lse))
            .unwrap()
            .iter()
            .all(|x| x.is_finite()));
    }
}
