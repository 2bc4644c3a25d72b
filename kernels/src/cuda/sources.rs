//! The `.cu` kernel sources and headers of kernels/cuda, embedded in the binary. `header` is the
//! resolver nvrtc.rs uses for `#include "..."`. Every file here is also compiled for sm_80 and
//! sm_90 by kernels/tests/nvrtc_compile.rs (which globs the directory, so it sees new files too).

pub const ELEMENTWISE: &str = include_str!("../../cuda/elementwise.cu");
pub const ACTIVATIONS: &str = include_str!("../../cuda/activations.cu");
pub const EMBEDDING: &str = include_str!("../../cuda/embedding.cu");
pub const NORMS: &str = include_str!("../../cuda/norms.cu");
pub const ROPE: &str = include_str!("../../cuda/rope.cu");
pub const CROSS_ENTROPY: &str = include_str!("../../cuda/cross_entropy.cu");
pub const REDUCE: &str = include_str!("../../cuda/reduce.cu");
pub const ADAMW: &str = include_str!("../../cuda/adamw.cu");
pub const ATTENTION: &str = include_str!("../../cuda/attention.cu");

/// (module name, source) of every kernel module the CUDA backend loads.
pub const MODULES: &[(&str, &str)] = &[
    ("elementwise", ELEMENTWISE),
    ("activations", ACTIVATIONS),
    ("embedding", EMBEDDING),
    ("norms", NORMS),
    ("rope", ROPE),
    ("cross_entropy", CROSS_ENTROPY),
    ("reduce", REDUCE),
    ("adamw", ADAMW),
    ("attention", ATTENTION),
];

/// The text of a local header (`#include "name"`), if it is one of ours.
pub fn header(name: &str) -> Option<&'static str> {
    match name {
        "ferrotron_common.cuh" => Some(include_str!("../../cuda/ferrotron_common.cuh")),
        _ => None,
    }
}
