//! FlashAttention speed on the shapes of shared/baselines/attention_bench.py (one line per point).
//! The same as `ferrotron bench attention` without the PyTorch columns.
//! Usage: flash_attn_bench [--quick] [--iters N]

use ferrotron_kernels::cuda::flash_attn::{bench_attention, BENCH_SHAPES};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let iters: usize = args
        .iter()
        .position(|a| a == "--iters")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(20);
    let shapes = if quick {
        &BENCH_SHAPES[1..3]
    } else {
        &BENCH_SHAPES[..]
    };
    if let Err(e) = bench_attention(shapes, iters, true) {
        eprintln!("flash_attn_bench: {e}");
        std::process::exit(1);
    }
}
