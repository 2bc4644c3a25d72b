//! FlashAttention kernels against an fp64 reference, FlashAttention's own rule: our max |error|
//! on O, dQ, dK, dV must be at most twice PyTorch SDPA-in-bf16's on the same inputs (with a
//! sliding window, SDPA runs with the window as an explicit mask).
//!
//! The cases (fresh random inputs each time, fp64 reference, SDPA's error) come from
//! scripts/attention_vs_sdpa.py run on the GPU machine: FLASH_CASES=DIR names its output.
//! Every output buffer is poisoned with NaN before each run, so unwritten elements fail; each
//! case runs twice and must give bit-identical results (the kernels use no atomics).
//! FA_TUNING (a `Tuning::parse` spec) checks a non-default tile configuration (tile sweeps).

use std::path::PathBuf;

use cudarc::driver::{CudaContext, CudaSlice, CudaStream};
use ferrotron_kernels::cuda::flash_attn::{params::AttnParams, FlashAttention, Tuning};
use ferrotron_kernels::AttnDims;
use half::bf16;
use safetensors::{Dtype, SafeTensors};

#[test]
fn params_struct_matches_the_kernel_layout() {
    // 10 pointers, then 10 four-byte fields: the C struct in flash_attn.cu.
    assert_eq!(std::mem::size_of::<AttnParams>(), 10 * 8 + 10 * 4);
    assert_eq!(std::mem::align_of::<AttnParams>(), 8);
}

fn raw<'a>(st: &'a SafeTensors, name: &str, dtype: Dtype) -> &'a [u8] {
    let t = st
        .tensor(name)
        .unwrap_or_else(|e| panic!("tensor {name}: {e}"));
    assert_eq!(t.dtype(), dtype, "tensor {name}");
    t.data()
}
fn bf16s(st: &SafeTensors, name: &str) -> Vec<bf16> {
    raw(st, name, Dtype::BF16)
        .chunks_exact(2)
        .map(|b| bf16::from_le_bytes([b[0], b[1]]))
        .collect()
}
fn f32s(st: &SafeTensors, name: &str) -> Vec<f32> {
    raw(st, name, Dtype::F32)
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}
fn i32s(st: &SafeTensors, name: &str) -> Vec<i32> {
    raw(st, name, Dtype::I32)
        .chunks_exact(4)
        .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// (max |x - ref|, ||x - ref|| / ||ref||, count of non-finite x)
fn errors(x: &[f32], r: &[f32]) -> (f64, f64, usize) {
    let (mut max, mut num, mut den, mut bad) = (0f64, 0f64, 0f64, 0usize);
    for (&a, &b) in x.iter().zip(r) {
        if !a.is_finite() {
            bad += 1;
            continue;
        }
        let d = (a as f64 - b as f64).abs();
        max = max.max(d);
        num += d * d;
        den += (b as f64) * (b as f64);
    }
    (max, (num / den.max(1e-300)).sqrt(), bad)
}

struct Outputs {
    o: Vec<f32>,
    lse: Vec<f32>,
    dq: Vec<f32>,
    dk: Vec<f32>,
    dv: Vec<f32>,
}

fn run_once(
    fa: &FlashAttention,
    stream: &std::sync::Arc<CudaStream>,
    st: &SafeTensors,
    dims: &AttnDims,
) -> Outputs {
    let up = |v: Vec<bf16>| stream.clone_htod(&v).unwrap();
    let (q, k, v, dout) = (
        up(bf16s(st, "q")),
        up(bf16s(st, "k")),
        up(bf16s(st, "v")),
        up(bf16s(st, "do")),
    );
    let cu = stream.clone_htod(&i32s(st, "cu_seqlens")).unwrap();
    let poison = |n: usize| -> CudaSlice<bf16> { stream.clone_htod(&vec![bf16::NAN; n]).unwrap() };
    let (mut o, mut dq) = (poison(q.len()), poison(q.len()));
    let (mut dk, mut dv) = (poison(k.len()), poison(k.len()));
    let mut lse = stream
        .clone_htod(&vec![f32::NAN; dims.heads * dims.tokens])
        .unwrap();
    fa.forward(
        &q.as_view(),
        &k.as_view(),
        &v.as_view(),
        &mut o.as_view_mut(),
        &mut lse.as_view_mut(),
        &cu.as_view(),
        dims,
    )
    .unwrap();
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
        dims,
    )
    .unwrap();
    stream.synchronize().unwrap();
    let down = |x: &CudaSlice<bf16>| -> Vec<f32> {
        stream
            .clone_dtoh(x)
            .unwrap()
            .iter()
            .map(|v| v.to_f32())
            .collect()
    };
    Outputs {
        o: down(&o),
        lse: stream.clone_dtoh(&lse).unwrap(),
        dq: down(&dq),
        dk: down(&dk),
        dv: down(&dv),
    }
}

#[test]
#[ignore = "needs a CUDA GPU and FLASH_CASES from scripts/attention_vs_sdpa.py"]
fn flash_attention_within_twice_sdpa_error_of_fp64() {
    let dir = PathBuf::from(
        std::env::var("FLASH_CASES")
            .expect("set FLASH_CASES to the output of attention_vs_sdpa.py"),
    );
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.retain(|p| p.extension().is_some_and(|e| e == "safetensors"));
    files.sort();
    // attention_vs_sdpa.py writes 20 cases (4 with a sliding window); fewer means it was cut
    // short.
    assert_eq!(
        files.len(),
        20,
        "expected the 20 cases of attention_vs_sdpa.py in {}",
        dir.display()
    );
    let ctx = CudaContext::new(0).unwrap();
    let stream = ctx.default_stream();
    let tuning = Tuning::parse(&std::env::var("FA_TUNING").unwrap_or_default()).unwrap();
    println!("tuning: {tuning:?}");
    let fa = FlashAttention::with_tuning(stream.clone(), tuning).unwrap();
    let mut failures = Vec::new();
    println!(
        "{:28} {:>5} | {:>22} | {:>22} | {:>22} | {:>22} | lse max|e|",
        "case", "N", "O ours/sdpa max|e|", "dQ", "dK", "dV"
    );
    for path in &files {
        let bytes = std::fs::read(path).unwrap();
        let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
        let meta = meta.metadata().clone().unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let num = |k: &str| -> f64 { meta[k].parse().unwrap_or_else(|_| panic!("metadata {k}")) };
        let heads = num("heads") as usize;
        let head_dim = num("head_dim") as usize;
        let tokens = st.tensor("q").unwrap().shape()[0];
        let dims = AttnDims {
            tokens,
            heads,
            kv_heads: num("kv_heads") as usize,
            head_dim,
            segments: num("segments") as usize,
            max_seqlen: num("max_seqlen") as usize,
            causal: num("causal") != 0.0,
            scale: num("scale"),
            window: match meta.get("window").map(|w| w.parse::<usize>().unwrap()) {
                None | Some(0) => None,
                Some(w) => Some(w),
            },
            softcap: None,
        };
        let a = run_once(&fa, &stream, &st, &dims);
        let b = run_once(&fa, &stream, &st, &dims);
        let name = &meta["name"];
        let same = |x: &[f32], y: &[f32]| x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits());
        if !(same(&a.o, &b.o)
            && same(&a.lse, &b.lse)
            && same(&a.dq, &b.dq)
            && same(&a.dk, &b.dk)
            && same(&a.dv, &b.dv))
        {
            failures.push(format!(
                "{name}: two runs on the same inputs differ (race?)"
            ));
        }
        let mut line = format!("{name:28} {tokens:>5} |");
        for (key, x) in [("o", &a.o), ("dq", &a.dq), ("dk", &a.dk), ("dv", &a.dv)] {
            let (max, rel, bad) = errors(x, &f32s(&st, &format!("ref_{key}")));
            let sdpa = num(&format!("sdpa_maxabs_{key}"));
            line += &format!(" {max:9.2e}/{sdpa:9.2e} {rel:.0e} |");
            if bad > 0 {
                failures.push(format!("{name}: {bad} non-finite elements in {key}"));
            }
            if max > 2.0 * sdpa {
                failures.push(format!(
                    "{name}: {key} max|err| {max:.3e} > 2 x SDPA bf16 {sdpa:.3e}"
                ));
            }
        }
        let (lmax, _, lbad) = errors(&a.lse, &f32s(&st, "ref_lse"));
        line += &format!(" {lmax:.1e}");
        if lbad > 0 || lmax > 1e-3 {
            failures.push(format!(
                "{name}: lse max|err| {lmax:.3e}, {lbad} non-finite"
            ));
        }
        println!("{line}");
    }
    assert!(failures.is_empty(), "failures:\n{}", failures.join("\n"));
}

/// The kernel source compiles for both head dims on Ampere and Hopper wherever libnvrtc is
/// present (no GPU needed); skipped, with a note, where it is not.
#[test]
fn source_compiles_with_nvrtc() {
    // SAFETY: only probes whether the shared library can be loaded.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        eprintln!("skipped: libnvrtc not found");
        return;
    }
    for d in [64, 128] {
        for arch in ["sm_80", "sm_90"] {
            let ptx = FlashAttention::compile_ptx(d, arch)
                .unwrap_or_else(|e| panic!("D={d} {arch}: {e}"));
            let text = ptx.to_src();
            for k in [
                "flash_fwd",
                "flash_bwd_dot_do_o",
                "flash_bwd_dkdv",
                "flash_bwd_dq",
            ] {
                assert!(
                    text.contains(&format!(".entry {k}")),
                    "D={d} {arch}: no entry {k}"
                );
            }
            assert!(text.contains("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32"));
            assert!(text.contains("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16"));
            assert!(text.contains("cp.async.cg.shared.global"));
        }
    }
    assert!(FlashAttention::compile_ptx(96, "sm_90").is_err());
}
