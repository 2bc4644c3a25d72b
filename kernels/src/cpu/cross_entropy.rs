//! Fused softmax cross-entropy (see Backend::cross_entropy). logits [N, V], targets [N].

use super::CpuFloat;

#[allow(clippy::too_many_arguments)]
pub fn forward_backward<T: CpuFloat>(
    logits: &[T], targets: &[i32], losses: &mut [T], dlogits: Option<&mut [T]>, n: usize, v: usize, grad_scale: f64,
) {
    todo!()
}
