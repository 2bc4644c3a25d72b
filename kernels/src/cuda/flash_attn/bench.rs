//! `ferrotron bench attention`: speed of the FlashAttention kernels on the shapes of
//! shared/baselines/attention_bench.py (run that script in the same session for PyTorch's figures).
//!
//! FLOPs follow the FlashAttention papers: forward 4·B·H·S²·D (halved when causal), backward
//! 2.5× forward. Times are CUDA-event medians of `iters` runs after 3 warm-up runs, on random
//! inputs. Each row also reports the device memory free before minus after the timed backward
//! runs (the kernels allocate nothing, so it must be 0).

use cudarc::driver::{sys::CUevent_flags, CudaContext, CudaSlice};
use half::bf16;

use super::{FlashAttention, Tuning};
use crate::{AttnDims, Error, Result};

/// (batch, heads, seqlen, head_dim), as in attention_bench.py.
pub const BENCH_SHAPES: [(usize, usize, usize, usize); 5] = [
    (16, 16, 1024, 64),
    (8, 16, 2048, 128),
    (4, 16, 4096, 128),
    (2, 16, 8192, 128),
    (1, 16, 16384, 128),
];

/// One measured (shape, causal) point.
#[derive(Clone, Debug)]
pub struct BenchRow {
    pub batch: usize,
    pub heads: usize,
    pub seqlen: usize,
    pub head_dim: usize,
    pub causal: bool,
    pub fwd_ms: f64,
    pub bwd_ms: f64,
    pub fwd_tflops: f64,
    pub bwd_tflops: f64,
    /// Free device memory before minus after the timed backward runs, in bytes.
    pub mem_delta: i64,
}

fn random_bf16(n: usize, seed: u64) -> Vec<bf16> {
    // xorshift64*; sum of 4 uniforms, centred and scaled to unit variance (≈ N(0, 1)).
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
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2] as f64
}

fn cuda(e: impl std::fmt::Debug) -> Error {
    Error::Cuda(format!("bench attention: {e:?}"))
}

/// Measure forward and backward on `shapes` (causal and not), printing one line per point as
/// it goes (`print`), on device 0, with the default tuning.
pub fn bench_attention(
    shapes: &[(usize, usize, usize, usize)],
    iters: usize,
    print: bool,
) -> Result<Vec<BenchRow>> {
    bench_attention_with(shapes, iters, print, Tuning::default())
}

/// As [`bench_attention`] with explicit tile shapes and CTA order (tile sweeps).
pub fn bench_attention_with(
    shapes: &[(usize, usize, usize, usize)],
    iters: usize,
    print: bool,
    tuning: Tuning,
) -> Result<Vec<BenchRow>> {
    // SAFETY: only probes whether the driver library can be loaded (CudaContext::new panics without).
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err(Error::Unsupported(
            "no CUDA driver found: bench attention needs an NVIDIA GPU".into(),
        ));
    }
    let ctx = CudaContext::new(0).map_err(cuda)?;
    let stream = ctx.default_stream();
    let fa = FlashAttention::with_tuning(stream.clone(), tuning)?;
    let iters = iters.max(1);
    let mut rows = Vec::new();
    for &(b, h, s, d) in shapes {
        let n = b * s;
        let up = |seed| {
            stream
                .clone_htod(&random_bf16(n * h * d, seed))
                .map_err(cuda)
        };
        let (q, k, v, dout) = (up(1)?, up(2)?, up(3)?, up(4)?);
        let zeros = |len| -> Result<CudaSlice<bf16>> { stream.alloc_zeros(len).map_err(cuda) };
        let (mut o, mut dq, mut dk, mut dv) = (
            zeros(n * h * d)?,
            zeros(n * h * d)?,
            zeros(n * h * d)?,
            zeros(n * h * d)?,
        );
        let mut lse: CudaSlice<f32> = stream.alloc_zeros(h * n).map_err(cuda)?;
        let cu: Vec<i32> = (0..=b).map(|i| (i * s) as i32).collect();
        let cu = stream.clone_htod(&cu).map_err(cuda)?;
        for causal in [true, false] {
            let dims = AttnDims {
                tokens: n,
                heads: h,
                kv_heads: h,
                head_dim: d,
                segments: b,
                max_seqlen: s,
                causal,
                scale: 1.0 / (d as f64).sqrt(),
                window: None,
                softcap: None,
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
            };
            let time = |f: &mut dyn FnMut() -> Result<()>| -> Result<f64> {
                for _ in 0..3 {
                    f()?;
                }
                let mut t = Vec::with_capacity(iters);
                for _ in 0..iters {
                    let e0 = stream
                        .record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
                        .map_err(cuda)?;
                    f()?;
                    let e1 = stream
                        .record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
                        .map_err(cuda)?;
                    e1.synchronize().map_err(cuda)?;
                    t.push(e0.elapsed_ms(&e1).map_err(cuda)?);
                }
                Ok(median(t) * 1e-3)
            };
            let t_f = time(&mut fwd)?;
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
            };
            stream.synchronize().map_err(cuda)?;
            let free_before = ctx.mem_get_info().map_err(cuda)?.0 as i64;
            let t_b = time(&mut bwd)?;
            let free_after = ctx.mem_get_info().map_err(cuda)?.0 as i64;
            let flops = 4.0 * (b * h * s * s * d) as f64 * if causal { 0.5 } else { 1.0 };
            let row = BenchRow {
                batch: b,
                heads: h,
                seqlen: s,
                head_dim: d,
                causal,
                fwd_ms: t_f * 1e3,
                bwd_ms: t_b * 1e3,
                fwd_tflops: flops / t_f / 1e12,
                bwd_tflops: 2.5 * flops / t_b / 1e12,
                mem_delta: free_before - free_after,
            };
            if print {
                println!(
                    "{b}x{h}x{s}x{d} causal={} ferrotron fwd {:6.1} TF/s  bwd {:6.1} TF/s  ({:.3} / {:.3} ms)  mem delta {} B",
                    causal as i32, row.fwd_tflops, row.bwd_tflops, row.fwd_ms, row.bwd_ms, row.mem_delta
                );
            }
            rows.push(row);
        }
    }
    Ok(rows)
}

/// One row of attention_bench.py's `--out` JSON (only the fields the table needs).
#[derive(Clone, Debug, PartialEq)]
pub struct SdpaRow {
    pub key: (usize, usize, usize, usize, bool),
    pub backend: String,
    pub fwd_tflops: f64,
    pub bwd_tflops: f64,
}

/// Parse attention_bench.py's output: a JSON list of flat objects. A minimal reader (this crate
/// carries no JSON dependency): rows without `fwd_tflops` (unavailable backends) are skipped.
pub fn parse_sdpa_json(text: &str) -> Vec<SdpaRow> {
    let field = |obj: &str, name: &str| -> Option<String> {
        let at = obj.find(&format!("\"{name}\""))? + name.len() + 2;
        let rest = obj[at..].trim_start().strip_prefix(':')?.trim_start();
        let end = rest.find([',', '}', '\n']).unwrap_or(rest.len());
        Some(rest[..end].trim().trim_matches('"').to_string())
    };
    text.split('{')
        .skip(1)
        .filter_map(|obj| {
            let num = |n: &str| field(obj, n)?.parse::<f64>().ok();
            Some(SdpaRow {
                key: (
                    num("b")? as usize,
                    num("h")? as usize,
                    num("s")? as usize,
                    num("d")? as usize,
                    field(obj, "causal")? == "true",
                ),
                backend: field(obj, "backend")?,
                fwd_tflops: num("fwd_tflops")?,
                bwd_tflops: num("bwd_tflops")?,
            })
        })
        .collect()
}

/// `ferrotron bench attention [--quick] [--iters N] [--sdpa-json FILE]`: measure, then print a
/// table with PyTorch SDPA's flash and cuDNN figures from FILE (attention_bench.py --out, run on
/// the same GPU in the same session) beside ours.
pub fn bench_attention_cli(
    quick: bool,
    iters: usize,
    sdpa_json: Option<&std::path::Path>,
) -> Result<()> {
    let sdpa = match sdpa_json {
        Some(p) => parse_sdpa_json(
            &std::fs::read_to_string(p)
                .map_err(|e| Error::Unsupported(format!("cannot read {}: {e}", p.display())))?,
        ),
        None => Vec::new(),
    };
    let shapes = if quick {
        &BENCH_SHAPES[1..3]
    } else {
        &BENCH_SHAPES[..]
    };
    let rows = bench_attention(shapes, iters, false)?;
    let get = |r: &BenchRow, be: &str| {
        sdpa.iter()
            .find(|x| {
                x.key == (r.batch, r.heads, r.seqlen, r.head_dim, r.causal) && x.backend == be
            })
            .map(|x| {
                (
                    format!("{:.1}", x.fwd_tflops),
                    format!("{:.1}", x.bwd_tflops),
                )
            })
            .unwrap_or(("-".into(), "-".into()))
    };
    println!("attention TFLOP/s (FlashAttention FLOP convention; fwd | bwd), mem delta = free before - after bwd");
    println!(
        "{:16} {:>6} | {:>9} {:>9} {:>9} | {:>9} {:>9} {:>9} | {:>9}",
        "BxHxSxD", "causal", "ours", "sdpa-fa2", "cudnn", "ours", "sdpa-fa2", "cudnn", "mem delta"
    );
    for r in &rows {
        let (ff, fb) = get(r, "flash");
        let (cf, cb) = get(r, "cudnn");
        println!(
            "{:16} {:>6} | {:>9.1} {:>9} {:>9} | {:>9.1} {:>9} {:>9} | {:>9}",
            format!("{}x{}x{}x{}", r.batch, r.heads, r.seqlen, r.head_dim),
            r.causal as i32,
            r.fwd_tflops,
            ff,
            cf,
            r.bwd_tflops,
            fb,
            cb,
            r.mem_delta
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_attention_bench_json() {
        let text = r#"[
 {
  "b": 8, "h": 16, "s": 2048, "d": 128, "causal": true, "backend": "flash",
  "fwd_ms": 0.5, "bwd_ms": 1.8, "fwd_tflops": 269.7, "bwd_tflops": 185.9, "peak_mib": 962.0
 },
 {"b": 8, "h": 16, "s": 2048, "d": 128, "causal": false, "backend": "math", "error": "no"}
]"#;
        let rows = parse_sdpa_json(text);
        assert_eq!(
            rows,
            vec![SdpaRow {
                key: (8, 16, 2048, 128, true),
                backend: "flash".into(),
                fwd_tflops: 269.7,
                bwd_tflops: 185.9
            }]
        );
    }
}
