//! Rotary position embedding, HF rotate-half convention, in place on x [N, heads, Dh].
//! For i < Dh/2: a = pos[n]·theta^(−2i/Dh); (x_i, x_{i+Dh/2}) ← (x_i cos a − x_{i+Dh/2} sin a,
//! x_{i+Dh/2} cos a + x_i sin a). backward applies the inverse rotation (angle −a) to dx.

use super::CpuFloat;

pub fn forward<T: CpuFloat>(x: &mut [T], pos: &[i32], n: usize, heads: usize, head_dim: usize, theta: f64) {
    todo!()
}

pub fn backward<T: CpuFloat>(dx: &mut [T], pos: &[i32], n: usize, heads: usize, head_dim: usize, theta: f64) {
    todo!()
}
