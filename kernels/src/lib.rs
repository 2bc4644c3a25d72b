//! ferrotron-kernels: device buffers and the ops every model is built from.
//!
//! There is no autograd. Each op is a pair `*_forward` / `*_backward` on the [`Backend`] trait;
//! model code calls them in a hand-written order and so knows its memory exactly.
//! `cpu` is the f32/f64 reference (also the target of the f64 finite-difference gradchecks);
//! `cuda` (added later) runs the same trait on NVIDIA GPUs.

pub mod backend;
pub mod cpu;
pub mod cuda;
pub mod error;

pub use backend::{
    rope_inv_freq, AdamWGroup, AdamWStep, AttnDims, Backend, Buffer, Dst, Gelu, Glu, KernelTime,
    LinearDims, Src, VocabSlice, WeightGrads, WeightLayout,
};
pub use error::{Error, Result};
