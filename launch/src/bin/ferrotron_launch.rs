//! `ferrotron-launch`: the launcher on its own, for any program (the way `torchrun
//! --no-python` runs one): `ferrotron-launch --nproc-per-node N -- PROGRAM ARGS...`.
//! `ferrotron launch` is the same launcher starting the ferrotron executable itself.

use clap::Parser;
use ferrotron_launch::{run, LaunchArgs};

#[derive(Parser)]
#[command(
    name = "ferrotron-launch",
    about = "Start N ranks of a program with torchrun's variables"
)]
struct Cli {
    #[command(flatten)]
    launch: LaunchArgs,
}

fn main() {
    let mut args = Cli::parse().launch;
    let program = args.args.remove(0);
    args.program = Some(program.into());
    match run(args) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("ferrotron-launch: {e}");
            std::process::exit(2);
        }
    }
}
