//! FlashAttention speed on the shapes of shared/baselines/attention_bench.py (one line per point).
//! The same as `ferrotron bench attention` without the PyTorch columns.
//! Usage: flash_attn_bench [--quick] [--shapes I,J,..] [--iters N] [--tuning SPEC]
//!   --shapes: indices into BENCH_SHAPES; --tuning (or $FA_TUNING, read only here): tile shapes
//!   and CTA order for sweeps, `Tuning::parse` syntax, e.g. `l2=32,kv_warps=4`.

use ferrotron_kernels::cuda::flash_attn::{bench_attention_with, Tuning, BENCH_SHAPES};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let opt = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let quick = args.iter().any(|a| a == "--quick");
    let iters: usize = opt("--iters").and_then(|v| v.parse().ok()).unwrap_or(20);
    let spec = opt("--tuning")
        .or_else(|| std::env::var("FA_TUNING").ok())
        .unwrap_or_default();
    let tuning = Tuning::parse(&spec).unwrap_or_else(|e| {
        eprintln!("flash_attn_bench: {e}");
        std::process::exit(2);
    });
    let shapes: Vec<_> = match opt("--shapes") {
        Some(list) => list
            .split(',')
            .filter_map(|i| BENCH_SHAPES.get(i.trim().parse::<usize>().ok()?).copied())
            .collect(),
        None if quick => BENCH_SHAPES[1..3].to_vec(),
        None => BENCH_SHAPES.to_vec(),
    };
    println!("tuning {spec:?}: {tuning:?}");
    if let Err(e) = bench_attention_with(&shapes, iters, true, tuning) {
        eprintln!("flash_attn_bench: {e}");
        std::process::exit(1);
    }
}
