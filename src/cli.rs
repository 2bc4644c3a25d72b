//! Command line: `ferrotron <command> ...`. Each subcommand lives in its own module.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "ferrotron", version, about = "Train transformer language models")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Microbenchmarks on the local GPU.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Subcommand)]
enum BenchCommand {
    /// FlashAttention fwd/bwd TFLOP/s on the shapes of baselines/attention_bench.py.
    Attention {
        /// Only B8 S2048 and B4 S4096.
        #[arg(long)]
        quick: bool,
        #[arg(long, default_value_t = 20)]
        iters: usize,
        /// attention_bench.py --out FILE from the same GPU, printed beside ours.
        #[arg(long)]
        sdpa_json: Option<std::path::PathBuf>,
    },
}

/// Runs the CLI and returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    match cli.command {
        Command::Bench(BenchCommand::Attention { quick, iters, sdpa_json }) => {
            match ferrotron_kernels::cuda::flash_attn::bench_attention_cli(quick, iters, sdpa_json.as_deref()) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("ferrotron bench attention: {e}");
                    1
                }
            }
        }
    }
}
