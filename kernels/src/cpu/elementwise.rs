//! Elementwise helpers: x += y, x *= s, Σx, Σx² (f64 accumulation), column-block copies.

use super::CpuFloat;

pub fn add<T: CpuFloat>(x: &mut [T], y: &[T]) {
    todo!()
}
pub fn scale<T: CpuFloat>(x: &mut [T], s: f64) {
    todo!()
}
pub fn sum<T: CpuFloat>(x: &[T]) -> f64 {
    todo!()
}
pub fn sum_squares<T: CpuFloat>(x: &[T]) -> f64 {
    todo!()
}
#[allow(clippy::too_many_arguments)]
pub fn copy_columns<T: CpuFloat>(
    src: &[T], src_cols: usize, src_col0: usize, dst: &mut [T], dst_cols: usize, dst_col0: usize, rows: usize,
    width: usize, accumulate: bool,
) {
    todo!()
}
