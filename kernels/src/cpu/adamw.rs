//! Decoupled AdamW (see backend::AdamWStep for the exact update, PyTorch semantics).

use super::CpuFloat;
use crate::backend::AdamWStep;

pub fn step<T: CpuFloat>(param: &mut [T], grad: &[T], m: &mut [T], v: &mut [T], h: &AdamWStep) {
    todo!()
}
