//! Command line: `ferrotron <command> ...`. Each subcommand lives in its own module.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "ferrotron", version, about = "Train transformer language models")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {}

/// Runs the CLI and returns the process exit code.
pub fn main() -> i32 {
    let _cli = Cli::parse();
    0
}
