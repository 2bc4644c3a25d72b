//! ferrotron-launch: a torchrun-style launcher. `ferrotron launch --nproc-per-node N [--nnodes M
//! --node-rank R --master-addr A --master-port P] -- <args...>` starts N copies of the current
//! executable with torchrun's variables, prefixes their output with `[rank R]`, stops all ranks
//! when one fails, and forwards SIGINT/SIGTERM. Environment detection (which launcher started
//! a rank) lives in ferrotron-parallel (`env`), next to the backends it selects.

mod args;
mod child_env;
mod output;
mod signals;
mod supervise;

pub use args::{LaunchArgs, LaunchError};
pub use child_env::rank_env;
pub use supervise::run;
