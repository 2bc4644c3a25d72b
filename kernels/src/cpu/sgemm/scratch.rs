//! The engine's packing buffers: one pair per thread, grown to the largest size asked for and
//! then reused by every later product on that thread (no allocation in the steady state).
//! 64-byte aligned (packed panels are read with aligned vector loads), with a little slack
//! after each buffer for the packers' full-width stores.

use std::cell::RefCell;

/// Floats written past the end of a packed block by a full-width store.
const SLACK: usize = 64;
/// 64 bytes in floats.
const ALIGN: usize = 16;

#[derive(Default)]
struct Buffers {
    a: Vec<f32>,
    b: Vec<f32>,
}

thread_local! {
    static BUFFERS: RefCell<Buffers> = RefCell::new(Buffers::default());
}

/// A 64-byte aligned window of `len` (+ slack) floats inside `v`, growing `v` if needed.
fn aligned(v: &mut Vec<f32>, len: usize) -> &mut [f32] {
    let want = len + SLACK + ALIGN;
    if v.len() < want {
        v.resize(want, 0.0);
    }
    let off = v.as_ptr().align_offset(ALIGN * 4);
    &mut v[off..off + len + SLACK]
}

/// Runs `f(a, b)` with this thread's A and B packing buffers of at least `a_len` and `b_len`
/// floats. A nested call on the same thread (none exists today) gets fresh buffers.
pub(super) fn with_buffers<R>(
    a_len: usize,
    b_len: usize,
    f: impl FnOnce(&mut [f32], &mut [f32]) -> R,
) -> R {
    BUFFERS.with(|cell| match cell.try_borrow_mut() {
        Ok(mut bufs) => {
            let Buffers { a, b } = &mut *bufs;
            f(aligned(a, a_len), aligned(b, b_len))
        }
        Err(_) => {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            f(aligned(&mut a, a_len), aligned(&mut b, b_len))
        }
    })
}
