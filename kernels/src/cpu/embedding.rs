//! Token / position embedding. ids [N], table [V, D], out [N, D].
//! forward: out[n] = table[ids[n]];  backward: dtable[ids[n]] += dout[n].
//! A negative id selects no row: zeros forward, nothing backward (a vocab-parallel rank marks
//! the ids another rank holds so). An id ≥ V is a bug and panics.
//!
//! Backward is race-free without atomics: the table is split into blocks of rows, and each
//! parallel task scans all ids and adds the rows that fall into its block, in token order
//! (deterministic).

use super::rmsnorm::rows_per_part;
use super::team;
use super::CpuFloat;

/// Table rows per backward task.
const ROWS_PER_TASK: usize = 256;

/// The table row of `id`, None for a negative id (no row).
fn row_of(id: i32, v: usize) -> Option<usize> {
    match usize::try_from(id) {
        Ok(r) if r < v => Some(r),
        Ok(_) => panic!("embedding: id {id} outside the table of {v} rows"),
        Err(_) => None,
    }
}

pub fn forward<T: CpuFloat>(ids: &[i32], table: &[T], out: &mut [T], n: usize, d: usize) {
    assert!(
        ids.len() >= n && out.len() >= n * d && d > 0,
        "embedding_forward: buffers too small for [{n} x {d}]"
    );
    let v = table.len() / d;
    team::for_chunks_mut(
        &mut out[..n * d],
        d,
        rows_per_part(d),
        &|i, row| match row_of(ids[i], v) {
            Some(r) => row.copy_from_slice(&table[r * d..(r + 1) * d]),
            None => row.fill(T::zero()),
        },
    );
}

pub fn backward<T: CpuFloat>(ids: &[i32], dout: &[T], dtable: &mut [T], n: usize, d: usize) {
    assert!(
        ids.len() >= n && dout.len() >= n * d && d > 0,
        "embedding_backward: buffers too small for [{n} x {d}]"
    );
    let v = dtable.len() / d;
    let ids = &ids[..n];
    for &id in ids {
        row_of(id, v);
    }
    team::for_chunks_mut(&mut dtable[..v * d], ROWS_PER_TASK * d, 1, &|blk, block| {
        let first = blk * ROWS_PER_TASK;
        let last = first + block.len() / d;
        for (tok, &id) in ids.iter().enumerate() {
            let Ok(r) = usize::try_from(id) else {
                continue;
            };
            if r >= first && r < last {
                let dst = &mut block[(r - first) * d..(r - first + 1) * d];
                dst.iter_mut()
                    .zip(&dout[tok * d..(tok + 1) * d])
                    .for_each(|(a, &b)| *a = *a + b);
            }
        }
    });
}
