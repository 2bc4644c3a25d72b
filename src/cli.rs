//! Command line: `ferrotron <command> ...`. Each subcommand lives in its own module; this file
//! only parses arguments and maps errors to exit codes (user input: 2, everything else: 1).

use crate::error::{Error, Result};
use clap::{Parser, Subcommand, ValueEnum};
use std::path::{Path, PathBuf};

#[derive(Parser)]
#[command(
    name = "ferrotron",
    version,
    about = "Train transformer language models"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Device {
    Cpu,
    Cuda,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DType {
    F32,
    Bf16,
    /// CPU only: the f64 reference (same code as f32), for exact comparisons.
    F64,
}

#[derive(Subcommand)]
enum Command {
    /// Train from a TOML recipe (under mpirun, srun or `ferrotron launch` for several ranks).
    Train {
        recipe: PathBuf,
        /// Override a recipe key: --set section.key=value (repeatable).
        #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
        overrides: Vec<String>,
        /// Continue from the latest checkpoint in the recipe's checkpoint directory.
        #[arg(long)]
        resume: bool,
    },
    /// Start N local ranks with torchrun's environment: launch --nproc-per-node N -- train R.toml
    Launch(ferrotron_launch::LaunchArgs),
    /// Compare the model against a HF transformers reference (DIR/reference.safetensors).
    CheckHf {
        /// Directory with config.json, model.safetensors and reference.safetensors.
        dir: PathBuf,
        #[arg(long, value_enum, default_value = "cpu")]
        device: Device,
        #[arg(long, value_enum, default_value = "f32")]
        dtype: DType,
        /// Largest accepted relative error (default 1e-4 for f32/f64, 2e-2 for bf16).
        #[arg(long)]
        tol: Option<f64>,
        /// Tensor-parallel ranks: run under a launcher with this many ranks (mpirun -np N).
        #[arg(long, default_value_t = 1)]
        tp: usize,
        /// With --tp: sequence parallelism (norms and residuals on N/tp tokens).
        #[arg(long)]
        sequence_parallel: bool,
    },
    /// Export a checkpoint as a Hugging Face model directory.
    Export(crate::export::ExportArgs),
    /// Generate text from a HF model directory or a checkpoint.
    Sample(crate::sample::SampleArgs),
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
        sdpa_json: Option<PathBuf>,
    },
}

/// Runs the CLI and returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            crate::error::print_error_line(&e);
            e.exit_code()
        }
    }
}

fn run(cli: Cli) -> Result<i32> {
    match cli.command {
        Command::Train {
            recipe,
            overrides,
            resume,
        } => crate::train::run(&recipe, &overrides, resume),
        Command::Launch(args) => {
            ferrotron_launch::run(args).map_err(|e| Error::User(format!("ferrotron launch: {e}")))
        }
        Command::CheckHf {
            dir,
            device,
            dtype,
            tol,
            tp,
            sequence_parallel,
        } => check_hf(&dir, device, dtype, tol, tp, sequence_parallel),
        Command::Export(args) => crate::export::run_cli(&args),
        Command::Sample(args) => crate::sample::run_cli(&args),
        Command::Bench(BenchCommand::Attention {
            quick,
            iters,
            sdpa_json,
        }) => ferrotron_kernels::cuda::flash_attn::bench_attention_cli(
            quick,
            iters,
            sdpa_json.as_deref(),
        )
        .map(|()| 0)
        .map_err(|e| Error::Internal(format!("bench attention: {e}"))),
    }
}

fn check_hf(
    dir: &Path,
    device: Device,
    dtype: DType,
    tol: Option<f64>,
    tp: usize,
    sequence_parallel: bool,
) -> Result<i32> {
    use crate::check_hf::tp_cli::{run_cli, TpBackend};
    use crate::check_hf::{print_report, run};
    if tp == 0 {
        return Err(Error::User("--tp must be at least 1".into()));
    }
    if sequence_parallel && tp == 1 {
        return Err(Error::User(
            "--sequence-parallel splits tokens over the tensor-parallel ranks: it needs --tp 2 or more".into(),
        ));
    }
    if tp > 1 {
        let (backend, default_tol) = match (device, dtype) {
            (Device::Cpu, DType::F32) => (TpBackend::CpuF32, 1e-4),
            (Device::Cuda, DType::F32) => (TpBackend::CudaF32, 1e-4),
            (Device::Cuda, DType::Bf16) => (TpBackend::CudaBf16, 2e-2),
            (Device::Cpu, DType::Bf16) => return Err(Error::User(
                "--dtype bf16 is a GPU precision; the CPU backend computes in f32 (use --device cuda)".into(),
            )),
            (_, DType::F64) => return Err(Error::User(
                "--tp runs in f32 or bf16: the f64 reference backend has no tensor-parallel collectives (use --dtype f32)".into(),
            )),
        };
        return run_cli(
            dir,
            backend,
            tol.unwrap_or(default_tol),
            tp,
            sequence_parallel,
        );
    }
    use ferrotron_kernels::cpu::CpuBackend;
    use ferrotron_kernels::cuda::CudaBackend;
    let report = |b: &dyn Fn() -> Result<crate::check_hf::Report>,
                  name: &str,
                  default_tol: f64|
     -> Result<i32> { Ok(print_report(&b()?, name, tol.unwrap_or(default_tol))) };
    let no_gpu = |e: ferrotron_kernels::Error| Error::User(format!("--device cuda: {e}"));
    match (device, dtype) {
        (Device::Cpu, DType::F32) => report(&|| run(&CpuBackend::<f32>::new(), dir), "cpu-f32", 1e-4),
        (Device::Cpu, DType::F64) => report(&|| run(&CpuBackend::<f64>::new(), dir), "cpu-f64", 1e-4),
        (Device::Cpu, DType::Bf16) => Err(Error::User(
            "--dtype bf16 is a GPU precision; the CPU backend computes in f32 or f64 (use --device cuda)".into(),
        )),
        (Device::Cuda, DType::F64) => Err(Error::User("--dtype f64 runs on the CPU only (use --device cpu)".into())),
        (Device::Cuda, DType::F32) => {
            let b = CudaBackend::<f32>::new(0).map_err(no_gpu)?;
            report(&|| run(&b, dir), "cuda-f32", 1e-4)
        }
        (Device::Cuda, DType::Bf16) => {
            let b = CudaBackend::<half::bf16>::new(0).map_err(no_gpu)?;
            report(&|| run(&b, dir), "cuda-bf16", 2e-2)
        }
    }
}
