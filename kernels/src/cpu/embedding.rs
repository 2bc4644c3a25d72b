//! Token / position embedding. ids [N], table [V, D], out [N, D].
//! forward: out[n] = table[ids[n]];  backward: dtable[ids[n]] += dout[n].

use super::CpuFloat;

pub fn forward<T: CpuFloat>(ids: &[i32], table: &[T], out: &mut [T], n: usize, d: usize) {
    todo!()
}

pub fn backward<T: CpuFloat>(ids: &[i32], dout: &[T], dtable: &mut [T], n: usize, d: usize) {
    todo!()
}
