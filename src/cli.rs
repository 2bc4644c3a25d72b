//! Command line: `ferrotron <command> ...`. Each subcommand lives in its own module; this file
//! only parses arguments and maps errors to exit codes (user input: 2, everything else: 1).

use crate::error::{Error, Result};
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "ferrotron", version, about = "Train transformer language models")]
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
    /// Compare the model against a HF transformers reference (DIR/reference.safetensors).
    CheckHf {
        /// Directory with config.json, model.safetensors and reference.safetensors.
        dir: PathBuf,
        #[arg(long, value_enum, default_value = "cpu")]
        device: Device,
        #[arg(long, value_enum, default_value = "f32")]
        dtype: DType,
        /// Largest accepted relative error (default 1e-4; bf16 runs should pass 2e-2).
        #[arg(long)]
        tol: Option<f64>,
    },
    /// Export a checkpoint as a Hugging Face model directory.
    Export(crate::export::ExportArgs),
    /// Generate text from a HF model directory or a checkpoint (CPU).
    Sample(crate::sample::SampleArgs),
}

/// Runs the CLI and returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}

fn run(cli: Cli) -> Result<i32> {
    match cli.command {
        Command::CheckHf { dir, device, dtype, tol } => check_hf(&dir, device, dtype, tol),
        Command::Export(args) => crate::export::run_cli(&args),
        Command::Sample(args) => crate::sample::run_cli(&args),
    }
}

fn check_hf(dir: &std::path::Path, device: Device, dtype: DType, tol: Option<f64>) -> Result<i32> {
    use crate::check_hf::{print_report, run};
    use ferrotron_kernels::cpu::CpuBackend;
    match (device, dtype) {
        (Device::Cpu, DType::F32) => {
            let b = CpuBackend::<f32>::new();
            let report = run(&b, dir)?;
            Ok(print_report(&report, "cpu-f32", tol.unwrap_or(1e-4)))
        }
        (Device::Cpu, DType::F64) => {
            let b = CpuBackend::<f64>::new();
            let report = run(&b, dir)?;
            Ok(print_report(&report, "cpu-f64", tol.unwrap_or(1e-4)))
        }
        (Device::Cpu, DType::Bf16) => Err(Error::User(
            "--dtype bf16 is a GPU precision; the CPU backend computes in f32 (use --device cuda)".into(),
        )),
        (Device::Cuda, DType::F64) => Err(Error::User("--dtype f64 runs on the CPU only (use --device cpu)".into())),
        (Device::Cuda, _) => Err(Error::User(
            "--device cuda: the CUDA backend is not wired into check-hf in this build yet".into(),
        )),
    }
}
