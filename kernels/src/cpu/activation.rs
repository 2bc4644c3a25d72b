//! Elementwise activations.
//! SwiGLU: out = silu(g)·u, silu(g) = g·σ(g); dg += dout·u·σ(g)(1 + g(1 − σ(g))); du += dout·silu(g).
//! tanh-GELU: y = ½x(1 + tanh(c(x + 0.044715x³))), c = √(2/π).

use super::CpuFloat;

pub fn swiglu_forward<T: CpuFloat>(gate: &[T], up: &[T], out: &mut [T]) {
    todo!()
}
pub fn swiglu_backward<T: CpuFloat>(gate: &[T], up: &[T], dout: &[T], dgate: &mut [T], dup: &mut [T]) {
    todo!()
}
pub fn gelu_forward<T: CpuFloat>(x: &[T], y: &mut [T]) {
    todo!()
}
pub fn gelu_backward<T: CpuFloat>(x: &[T], dy: &[T], dx: &mut [T]) {
    todo!()
}
