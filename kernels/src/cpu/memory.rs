//! Host memory behind the CPU backend's buffers, chosen by the backend's type parameter:
//!   `Plain`   buffers are `Vec<E>`, allocated and freed as usual (tests, tools, one-off runs);
//!   `Pooled`  buffers are `PoolBuf<E>`, taken from and returned (on drop) to size-classed free
//!             lists that the backend owns, so a training step that asks for the same shapes as
//!             the step before allocates nothing: no malloc, no fresh zeroed pages from the
//!             kernel, no page faults.
//! Both give `&[E]` / `&mut [E]` to the ops, which never see the difference.
//!
//! Pool rules. A request for n elements is served from the class of capacity
//! class(n) = n rounded up to 3 significant bits (≤ 12.5% over; one class serves a range of
//! lengths, so batches of varying length reuse too). `zeros` fills the n elements with 0;
//! `empty` only guarantees they are initialised (old contents stay). A fresh allocation comes
//! from the system allocator lazily zeroed (calloc: pages are touched only when written).
//! Idle buffers are kept while they total at most twice the peak of live bytes (at least
//! 256 MiB); beyond that a returned buffer is freed. Counters (`PoolStats`) say how many
//! requests needed fresh memory, which is how tests show the steady state allocates nothing.

use crate::backend::Buffer;
use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};

/// Element types the backend keeps in buffers.
pub trait Element: Copy + Default + Send + Sync + std::fmt::Debug + 'static {
    /// This element type's pool in a pool set.
    fn pool(set: &PoolSet) -> &Pool<Self>;
}

impl Element for f32 {
    fn pool(set: &PoolSet) -> &Pool<f32> {
        &set.f32s
    }
}
impl Element for f64 {
    fn pool(set: &PoolSet) -> &Pool<f64> {
        &set.f64s
    }
}
impl Element for i32 {
    fn pool(set: &PoolSet) -> &Pool<i32> {
        &set.i32s
    }
}

/// Where the CPU backend's buffers come from (see the top comment).
pub trait HostMemory: Clone + Default + Send + Sync + 'static {
    type Buf<E: Element>: Buffer + Deref<Target = [E]> + DerefMut;
    /// n zeros.
    fn zeros<E: Element>(&self, n: usize) -> Self::Buf<E>;
    /// n initialised elements of unspecified value (for outputs that are overwritten whole).
    fn empty<E: Element>(&self, n: usize) -> Self::Buf<E>;
}

/// Plain `Vec` buffers.
#[derive(Clone, Copy, Default, Debug)]
pub struct Plain;

impl HostMemory for Plain {
    type Buf<E: Element> = Vec<E>;
    fn zeros<E: Element>(&self, n: usize) -> Vec<E> {
        vec![E::default(); n]
    }
    fn empty<E: Element>(&self, n: usize) -> Vec<E> {
        vec![E::default(); n]
    }
}

/// Pooled buffers; clones share one pool set.
#[derive(Clone, Default)]
pub struct Pooled(Arc<PoolSet>);

impl Pooled {
    /// The counters of all element types together.
    pub fn stats(&self) -> PoolStats {
        let s = &self.0;
        [s.f32s.stats(), s.f64s.stats(), s.i32s.stats()]
            .into_iter()
            .fold(PoolStats::default(), |a, b| a.plus(&b))
    }
}

impl HostMemory for Pooled {
    type Buf<E: Element> = PoolBuf<E>;
    fn zeros<E: Element>(&self, n: usize) -> PoolBuf<E> {
        E::pool(&self.0).take(&self.0, n, true)
    }
    fn empty<E: Element>(&self, n: usize) -> PoolBuf<E> {
        E::pool(&self.0).take(&self.0, n, false)
    }
}

/// x = 0 (`zero` is the element whose bits are all 0: 0.0 of f32 and f64), without writing the
/// whole pages inside x: on Linux they are handed back to the system (MADV_DONTNEED on private
/// anonymous memory, which every heap allocation is), read as zeros from then on and take memory
/// again only where written. The partial pages at either end are written.
pub fn release_zero<T: Copy>(x: &mut [T], zero: T) {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as usize;
        let size = std::mem::size_of::<T>();
        let start = x.as_ptr() as usize;
        let end = start + std::mem::size_of_val(x);
        let (lo, hi) = (start.next_multiple_of(page), end / page * page);
        if size > 0
            && hi > lo
            && (lo - start).is_multiple_of(size)
            && (end - hi).is_multiple_of(size)
        {
            let (head, tail) = ((lo - start) / size, (end - hi) / size);
            // SAFETY: [lo, hi) is whole pages inside x, which this &mut borrows alone; x is heap
            // memory (private and anonymous), whose released pages read back as zero bytes.
            let released =
                unsafe { libc::madvise(lo as *mut libc::c_void, hi - lo, libc::MADV_DONTNEED) };
            if released == 0 {
                let n = x.len();
                x[..head].fill(zero);
                x[n - tail..].fill(zero);
                return;
            }
        }
    }
    x.fill(zero);
}

/// The pools of one `Pooled` memory, one per element type.
#[derive(Default)]
pub struct PoolSet {
    f32s: Pool<f32>,
    f64s: Pool<f64>,
    i32s: Pool<i32>,
}

/// A buffer from a pool; returns its memory to the pool when dropped.
pub struct PoolBuf<E: Element> {
    data: Vec<E>,
    /// Elements of the allocation known to be initialised (≥ data.len()).
    init: usize,
    /// None for empty buffers, which own no memory.
    set: Option<Arc<PoolSet>>,
}

impl<E: Element> Deref for PoolBuf<E> {
    type Target = [E];
    fn deref(&self) -> &[E] {
        &self.data
    }
}
impl<E: Element> DerefMut for PoolBuf<E> {
    fn deref_mut(&mut self) -> &mut [E] {
        &mut self.data
    }
}
impl<E: Element> Buffer for PoolBuf<E> {
    fn len(&self) -> usize {
        self.data.len()
    }
}
impl<E: Element> Drop for PoolBuf<E> {
    fn drop(&mut self) {
        if let Some(set) = self.set.take() {
            E::pool(&set).put(std::mem::take(&mut self.data), self.init);
        }
    }
}
impl<E: Element> std::fmt::Debug for PoolBuf<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolBuf")
            .field("len", &self.data.len())
            .field("capacity", &self.data.capacity())
            .finish()
    }
}

/// What a pool has done so far (bytes count whole class capacities).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Requests served with fresh memory from the system allocator.
    pub fresh: u64,
    pub fresh_bytes: u64,
    /// Requests served from a free list.
    pub reused: u64,
    /// Returned buffers freed to the system (idle limit reached).
    pub released: u64,
    pub live_bytes: u64,
    pub peak_live_bytes: u64,
    pub idle_bytes: u64,
}

impl PoolStats {
    fn plus(&self, o: &PoolStats) -> PoolStats {
        PoolStats {
            fresh: self.fresh + o.fresh,
            fresh_bytes: self.fresh_bytes + o.fresh_bytes,
            reused: self.reused + o.reused,
            released: self.released + o.released,
            live_bytes: self.live_bytes + o.live_bytes,
            peak_live_bytes: self.peak_live_bytes + o.peak_live_bytes,
            idle_bytes: self.idle_bytes + o.idle_bytes,
        }
    }
}

/// Free lists of one element type, by class capacity.
pub struct Pool<E> {
    state: Mutex<State<E>>,
}

struct State<E> {
    free: HashMap<usize, Vec<(Vec<E>, usize)>>,
    stats: PoolStats,
}

impl<E> Default for Pool<E> {
    fn default() -> Self {
        Pool {
            state: Mutex::new(State {
                free: HashMap::new(),
                stats: PoolStats::default(),
            }),
        }
    }
}

/// Idle memory kept at least up to this many bytes.
const MIN_IDLE_LIMIT: u64 = 256 << 20;

/// The capacity class of a request: n rounded up to its 3 leading significant bits.
pub fn class_of(n: usize) -> usize {
    if n <= 16 {
        return 16;
    }
    let shift = (usize::BITS - 1 - n.leading_zeros()).saturating_sub(3);
    n.div_ceil(1 << shift) << shift
}

impl<E: Element> Pool<E> {
    fn stats(&self) -> PoolStats {
        self.lock().stats
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<E>> {
        // a panic while holding the lock leaves consistent lists: keep going
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn take(&self, set: &Arc<PoolSet>, n: usize, zero: bool) -> PoolBuf<E> {
        if n == 0 {
            return PoolBuf {
                data: Vec::new(),
                init: 0,
                set: None,
            };
        }
        let class = class_of(n);
        let bytes = (class * std::mem::size_of::<E>()) as u64;
        let reused = {
            let mut st = self.lock();
            let hit = st.free.get_mut(&class).and_then(Vec::pop);
            let s = &mut st.stats;
            s.live_bytes += bytes;
            s.peak_live_bytes = s.peak_live_bytes.max(s.live_bytes);
            match hit {
                Some(v) => {
                    s.reused += 1;
                    s.idle_bytes -= bytes;
                    Some(v)
                }
                None => {
                    s.fresh += 1;
                    s.fresh_bytes += bytes;
                    None
                }
            }
        };
        let (data, init) = match reused {
            Some((mut v, init)) => {
                // SAFETY: the first `init` elements of the allocation are initialised (from
                // the allocation's fresh zeroing, or writes since), and init ≤ capacity.
                unsafe { v.set_len(n.min(init)) };
                if zero {
                    super::team::fill(&mut v, E::default());
                }
                v.resize(n, E::default());
                (v, init.max(n))
            }
            None => {
                let mut v = vec![E::default(); class];
                v.truncate(n);
                (v, class)
            }
        };
        PoolBuf {
            data,
            init,
            set: Some(set.clone()),
        }
    }

    fn put(&self, data: Vec<E>, init: usize) {
        let class = data.capacity();
        let bytes = (class * std::mem::size_of::<E>()) as u64;
        let mut st = self.lock();
        let s = &mut st.stats;
        s.live_bytes -= bytes;
        let limit = (2 * s.peak_live_bytes).max(MIN_IDLE_LIMIT);
        if s.idle_bytes + bytes > limit {
            s.released += 1;
            drop(st);
            drop(data);
            return;
        }
        s.idle_bytes += bytes;
        st.free.entry(class).or_default().push((data, init));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_zero_zeroes_every_element_and_the_buffer_stays_usable() {
        // 3 MiB and a bit, from an odd offset: partial pages at both ends, whole ones between.
        let mut v = vec![1.5f32; (3 << 18) + 1001];
        let x = &mut v[7..];
        release_zero(x, 0.0);
        assert!(x.iter().all(|&e| e == 0.0));
        assert_eq!(v[..7], [1.5; 7]);
        v[100_000] = 2.0;
        release_zero(&mut v, 0.0);
        assert!(v.iter().all(|&e| e == 0.0));
        let mut tiny = [3.0f64; 5];
        release_zero(&mut tiny, 0.0);
        assert_eq!(tiny, [0.0; 5]);
    }

    #[test]
    fn classes_round_up_to_three_significant_bits() {
        assert_eq!(class_of(1), 16);
        assert_eq!(class_of(17), 18);
        assert_eq!(class_of(1000), 1024);
        assert_eq!(class_of(1024), 1024);
        assert_eq!(class_of(1025), 1152);
        assert_eq!(class_of(50257 * 333), 16_777_216);
        for n in [17usize, 100, 4097, 123_457, 16_777_216 + 1] {
            let c = class_of(n);
            assert!(c >= n && (c - n) * 8 <= n, "class {c} of {n}");
        }
    }

    #[test]
    fn returned_buffers_are_reused_and_zeros_are_zero() {
        let m = Pooled::default();
        let mut a: PoolBuf<f32> = m.zeros(1000);
        a.fill(7.0);
        drop(a);
        let s = m.stats();
        assert_eq!(
            (s.fresh, s.reused, s.live_bytes, s.idle_bytes),
            (1, 0, 0, 4096)
        );
        // same class: served from the free list, zeroed on request
        let b: PoolBuf<f32> = m.zeros(1010);
        assert!(b.iter().all(|&x| x == 0.0) && b.len() == 1010);
        drop(b);
        // `empty` keeps old contents but only initialised ones
        let c: PoolBuf<f32> = m.empty(1020);
        assert_eq!(c.len(), 1020);
        drop(c);
        let s = m.stats();
        assert_eq!((s.fresh, s.reused), (1, 2));
        // another element type, and an empty buffer, which owns nothing
        let mut d: PoolBuf<i32> = m.empty(3);
        d.copy_from_slice(&[1, 2, 3]);
        assert_eq!(&d[..], &[1, 2, 3]);
        let e: PoolBuf<f64> = m.zeros(0);
        assert!(e.is_empty());
        assert_eq!(m.stats().fresh, 2);
    }
}
