//! Scratch vectors for the kernels' own temporaries (attention tiles and per-task gradients,
//! norm partial sums): `zeroed(n)` takes a vector from a process-wide cache (or allocates one)
//! and zero-fills n elements; dropping it returns it to the cache, whichever thread drops it
//! (tasks make them on rayon's workers, the caller often drops them). A step that asks for the
//! same temporaries as the step before allocates none. At most `KEEP` vectors are kept per
//! element type; a request takes the smallest cached one that fits.

use super::memory::Element;
use std::ops::{Deref, DerefMut};
use std::sync::Mutex;

/// Vectors kept per element type.
const KEEP: usize = 512;

/// The cache of one element type.
pub trait Cached: Element {
    /// f on the cache.
    fn with_cache<R>(f: impl FnOnce(&mut Vec<Vec<Self>>) -> R) -> Option<R>;
    /// Puts v into the calling thread's cache (or frees it when the cache is full or gone).
    fn give_back(v: Vec<Self>) {
        if v.capacity() > 0 {
            Self::with_cache(|c| {
                if c.len() < KEEP {
                    c.push(v);
                }
            });
        }
    }
}

macro_rules! cached {
    ($t:ty, $name:ident) => {
        static $name: Mutex<Vec<Vec<$t>>> = Mutex::new(Vec::new());
        impl Cached for $t {
            fn with_cache<R>(f: impl FnOnce(&mut Vec<Vec<$t>>) -> R) -> Option<R> {
                // a panic elsewhere while holding the lock leaves a valid list: keep using it
                let mut c = $name.lock().unwrap_or_else(|e| e.into_inner());
                Some(f(&mut c))
            }
        }
    };
}
cached!(f32, CACHE_F32);
cached!(f64, CACHE_F64);

/// A scratch vector; returns to a thread cache when dropped.
pub struct Work<T> {
    v: Vec<T>,
    home: fn(Vec<T>),
}

/// n zeros, from the cache when it holds a vector large enough.
pub fn zeroed<T: Cached>(n: usize) -> Work<T> {
    let hit = T::with_cache(|c| {
        let best = c
            .iter()
            .enumerate()
            .filter(|(_, v)| v.capacity() >= n)
            .min_by_key(|(_, v)| v.capacity())
            .map(|(i, _)| i);
        best.map(|i| c.swap_remove(i))
    })
    .flatten();
    let mut v = hit.unwrap_or_else(|| Vec::with_capacity(n));
    v.clear();
    v.resize(n, T::default());
    Work {
        v,
        home: T::give_back,
    }
}

impl<T> Deref for Work<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.v
    }
}
impl<T> DerefMut for Work<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.v
    }
}
impl<T> Drop for Work<T> {
    fn drop(&mut self) {
        (self.home)(std::mem::take(&mut self.v));
    }
}
