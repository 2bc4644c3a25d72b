//! A spin-waiting thread team for the CPU backend's large products (what OpenMP runtimes do for
//! MKL and PyTorch): `run(parts, f)` calls f(0), …, f(parts − 1), each exactly once, on the
//! caller and the team's helpers, and returns when every call has returned.
//!
//! Why not rayon here: a rayon worker with nothing to do parks within microseconds, and on a
//! virtual machine a parked vCPU can take a millisecond or more to run again. Measured on a
//! 2-vCPU VM: `rayon::join` of two 1 ms tasks after a 10 ms pause took 2.0 ms (serial), and a
//! 1024 × 512 × 512 product split in two ran at 210 GFLOP/s through rayon against 280 on two
//! threads that were already running. The team's helpers instead spin (yielding the CPU to any
//! other runnable thread every ~50 µs) for a while after their last part (`set_spin`; 50 ms by
//! default), so the products of a training step, milliseconds apart, find them awake; then they
//! park.
//!
//! Protocol: one job at a time (a caller that finds the team busy runs on rayon instead, so
//! nested or concurrent callers never wait on each other). The job is (epoch, parts, next index)
//! packed in one atomic `ticket`; a part is claimed by a compare-exchange that succeeds only for
//! the current epoch and an index below `parts`, and the caller does not return (so the job's
//! closure stays alive) until `done` counts every part. Helpers read the closure only after a
//! successful claim. A part that panics is caught and counted done; the caller re-raises the
//! first such panic (its payload, so the message is the part's own).
//! Helpers: rayon's thread count (RAYON_NUM_THREADS) less one, started on first use; with none,
//! the caller runs every part itself.

use std::any::Any;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long an idle helper keeps spinning before it parks, unless `set_spin` says otherwise.
pub const DEFAULT_SPIN: Duration = Duration::from_millis(50);

/// Spin turns (each a pause instruction) between two yields of the CPU, about 50 µs: often
/// enough to let another runnable thread in, rarely enough that the syscalls stay a small share
/// of the process's time.
const YIELD_EVERY: u32 = 1024;

static SPIN_MICROS: AtomicU64 = AtomicU64::new(DEFAULT_SPIN.as_micros() as u64);

/// Sets how long idle helpers spin before they park (zero: park at once). A process that
/// shares its cores with other busy processes (several ranks on one machine) should not spin:
/// its spinning helpers would take time from the others.
pub fn set_spin(d: Duration) {
    SPIN_MICROS.store(
        d.as_micros().min(u64::MAX as u128) as u64,
        Ordering::Relaxed,
    );
}

type Part = dyn Fn(usize) + Sync;

struct Team {
    helpers: usize,
    /// epoch (high 32 bits) | parts (16) | next index (16)
    ticket: AtomicU64,
    /// The current job's closure; written only by the job's caller before it publishes the
    /// epoch, read only by a thread holding a claim on that epoch.
    job: Mutex<Option<&'static Part>>,
    done: AtomicUsize,
    /// The first panic of the current job's parts, re-raised by its caller.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
    /// Held by the caller of the current job.
    busy: Mutex<()>,
    parked: Mutex<usize>,
    wake: Condvar,
}

fn team() -> &'static Team {
    static TEAM: OnceLock<&'static Team> = OnceLock::new();
    TEAM.get_or_init(|| {
        let helpers = rayon::current_num_threads().saturating_sub(1);
        let t: &'static Team = Box::leak(Box::new(Team {
            helpers,
            ticket: AtomicU64::new(0),
            job: Mutex::new(None),
            done: AtomicUsize::new(0),
            panic: Mutex::new(None),
            busy: Mutex::new(()),
            parked: Mutex::new(0),
            wake: Condvar::new(),
        }));
        for i in 0..helpers {
            std::thread::Builder::new()
                .name(format!("ferrotron-gemm-{i}"))
                .spawn(move || helper(t))
                .expect("team: cannot start a helper thread");
        }
        t
    })
}

/// Most parts of one job (the ticket's 16-bit fields).
pub const MAX_PARTS: usize = u16::MAX as usize;

fn epoch_of(ticket: u64) -> u64 {
    ticket >> 32
}

/// Claims the next part of epoch `epoch`, if any is left.
fn claim(t: &Team, epoch: u64) -> Option<usize> {
    let mut cur = t.ticket.load(Ordering::Acquire);
    loop {
        let (parts, next) = ((cur >> 16) & 0xffff, cur & 0xffff);
        if epoch_of(cur) != epoch || next >= parts {
            return None;
        }
        match t
            .ticket
            .compare_exchange_weak(cur, cur + 1, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => return Some(next as usize),
            Err(now) => cur = now,
        }
    }
}

/// Runs claimed parts of epoch `epoch` until none is left.
fn work(t: &Team, epoch: u64) {
    while let Some(i) = claim(t, epoch) {
        let f = t
            .job
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .expect("team: a claimed job");
        if let Err(payload) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(i))) {
            t.panic
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert(payload);
        }
        t.done.fetch_add(1, Ordering::Release);
    }
}

fn helper(t: &'static Team) {
    let mut seen = 0u64;
    loop {
        let mut idle_since = Instant::now();
        let mut turns = 0u32;
        let spin = Duration::from_micros(SPIN_MICROS.load(Ordering::Relaxed));
        loop {
            let e = epoch_of(t.ticket.load(Ordering::Acquire));
            if e != seen {
                seen = e;
                work(t, e);
                idle_since = Instant::now();
            }
            turns = turns.wrapping_add(1);
            if spin.is_zero() || turns.is_multiple_of(YIELD_EVERY) {
                if idle_since.elapsed() >= spin {
                    break;
                }
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        // park until a caller publishes a new epoch
        let mut parked = t.parked.lock().unwrap_or_else(|e| e.into_inner());
        *parked += 1;
        while epoch_of(t.ticket.load(Ordering::Acquire)) == seen {
            parked = t.wake.wait(parked).unwrap_or_else(|e| e.into_inner());
        }
        *parked -= 1;
    }
}

/// Calls f(i) for every i < parts, spread over the caller and the team; returns when all have
/// returned. Falls back to rayon when the team is busy with another caller's job.
pub fn run(parts: usize, f: &(dyn Fn(usize) + Sync)) {
    if parts <= 1 {
        if parts == 1 {
            f(0);
        }
        return;
    }
    let t = team();
    if t.helpers == 0 {
        (0..parts).for_each(f);
        return;
    }
    let guard = match (parts <= MAX_PARTS).then(|| t.busy.try_lock()) {
        Some(Ok(g)) => g,
        _ => {
            rayon::scope(|sc| {
                for i in 0..parts {
                    sc.spawn(move |_| f(i));
                }
            });
            return;
        }
    };
    // SAFETY: the reference is published for this job only, and this function does not return
    // (nor unwind) before every claimed part has finished with it (`done` below); no claim on
    // this epoch can succeed after that, since all its parts are taken.
    let job: &'static Part =
        unsafe { std::mem::transmute::<&(dyn Fn(usize) + Sync), &'static Part>(f) };
    *t.job.lock().unwrap_or_else(|e| e.into_inner()) = Some(job);
    t.done.store(0, Ordering::Relaxed);
    let epoch = epoch_of(t.ticket.load(Ordering::Relaxed)).wrapping_add(1) & 0xffff_ffff;
    t.ticket
        .store((epoch << 32) | ((parts as u64) << 16), Ordering::Release);
    if *t.parked.lock().unwrap_or_else(|e| e.into_inner()) > 0 {
        t.wake.notify_all();
    }
    work(t, epoch);
    let mut turns = 0u32;
    while t.done.load(Ordering::Acquire) < parts {
        turns = turns.wrapping_add(1);
        if turns.is_multiple_of(YIELD_EVERY) {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
    *t.job.lock().unwrap_or_else(|e| e.into_inner()) = None;
    let panic = t.panic.lock().unwrap_or_else(|e| e.into_inner()).take();
    drop(guard);
    if let Some(payload) = panic {
        std::panic::resume_unwind(payload);
    }
}

/// Most parts `for_ranges` makes of one call (its chunks grow past this many).
const MAX_RANGES: usize = 4096;

/// Calls f(range) for consecutive ranges of at most `chunk` indices (larger when 0..len would
/// make over `MAX_RANGES`) covering 0..len, over the team: `run` over the ranges. The ranges are
/// disjoint, so each part may write its own `Pieces` of a slice.
pub fn for_ranges(len: usize, chunk: usize, f: &(dyn Fn(std::ops::Range<usize>) + Sync)) {
    let chunk = chunk.max(1).max(len.div_ceil(MAX_RANGES));
    run(len.div_ceil(chunk), &|i| {
        f(i * chunk..((i + 1) * chunk).min(len))
    });
}

/// rayon's `par_chunks_mut(size).enumerate().for_each(f)` on the team: f(i, chunk) for the
/// consecutive `size`-element chunks of `data` (the last may be shorter), `per_part` chunks
/// to a part.
pub fn for_chunks_mut<T: Send>(
    data: &mut [T],
    size: usize,
    per_part: usize,
    f: &(dyn Fn(usize, &mut [T]) + Sync),
) {
    let size = size.max(1);
    let len = data.len();
    let pieces = Pieces::new(data);
    for_ranges(len.div_ceil(size), per_part, &|r| {
        for i in r {
            // SAFETY: distinct i address disjoint chunks
            f(i, unsafe {
                pieces.get(i * size..((i + 1) * size).min(len))
            });
        }
    });
}

/// x.fill(value), over the team where x is large (a memset on one core leaves the other idle).
pub fn fill<T: Copy + Send + Sync>(x: &mut [T], value: T) {
    const PER_PART: usize = 1 << 16;
    if x.len() <= PER_PART {
        x.fill(value);
    } else {
        for_chunks_mut(x, PER_PART, 1, &|_, part| part.fill(value));
    }
}

/// rayon's `items.par_iter_mut().for_each(f)` on the team: f(item), one item a part.
pub fn for_each_mut<I: Send>(items: &mut [I], f: &(dyn Fn(&mut I) + Sync)) {
    for_chunks_mut(items, 1, 1, &|_, item| f(&mut item[0]));
}

/// A mutable slice lent in disjoint pieces to the parts of one team job (what rayon's
/// `par_chunks_mut` does with its borrow splitting).
pub struct Pieces<'a, T> {
    ptr: *mut T,
    len: usize,
    _borrow: std::marker::PhantomData<&'a mut [T]>,
}

// SAFETY: a Pieces only hands out `&mut [T]` for ranges its users keep disjoint (`get`'s
// contract), so sharing it between threads is sharing disjoint `&mut [T]`, which needs T: Send.
unsafe impl<T: Send> Sync for Pieces<'_, T> {}

impl<'a, T> Pieces<'a, T> {
    pub fn new(slice: &'a mut [T]) -> Self {
        Pieces {
            ptr: slice.as_mut_ptr(),
            len: slice.len(),
            _borrow: std::marker::PhantomData,
        }
    }

    /// The elements `range`.
    ///
    /// # Safety
    /// No two pieces in use at the same time may overlap (distinct `for_ranges` ranges, scaled
    /// alike, do not).
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn get(&self, range: std::ops::Range<usize>) -> &'a mut [T] {
        assert!(
            range.start <= range.end && range.end <= self.len,
            "Pieces: range {range:?} of a slice of {}",
            self.len
        );
        std::slice::from_raw_parts_mut(self.ptr.add(range.start), range.end - range.start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_part_runs_once() {
        for parts in [0, 1, 2, 3, 7, 64, 1000] {
            let hits: Vec<AtomicUsize> = (0..parts).map(|_| AtomicUsize::new(0)).collect();
            run(parts, &|i| {
                hits[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(
                hits.iter().all(|h| h.load(Ordering::Relaxed) == 1),
                "{parts} parts"
            );
        }
    }

    #[test]
    fn concurrent_and_nested_callers_all_finish() {
        let total = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..200 {
                        run(4, &|_| {
                            run(3, &|_| {
                                total.fetch_add(1, Ordering::Relaxed);
                            });
                        });
                    }
                });
            }
        });
        assert_eq!(total.load(Ordering::Relaxed), 4 * 200 * 4 * 3);
    }

    #[test]
    fn ranges_cover_once_and_pieces_write_their_own() {
        for (len, chunk) in [(0, 4), (1, 4), (10, 3), (10_000, 1), (100_000, 7)] {
            let mut v = vec![0u32; len];
            let p = Pieces::new(&mut v);
            for_ranges(len, chunk, &|r| {
                // SAFETY: for_ranges's ranges are disjoint
                for x in unsafe { p.get(r) } {
                    *x += 1;
                }
            });
            assert!(v.iter().all(|&x| x == 1), "len {len} chunk {chunk}");
        }
    }

    #[test]
    fn a_panicking_part_panics_the_caller_and_the_team_goes_on() {
        let r = std::panic::catch_unwind(|| {
            run(4, &|i| {
                if i == 2 {
                    panic!("part 2");
                }
            })
        });
        let msg = r.expect_err("the caller panics");
        assert_eq!(msg.downcast_ref::<&str>(), Some(&"part 2"));
        let n = AtomicUsize::new(0);
        run(5, &|_| {
            n.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(n.load(Ordering::Relaxed), 5);
    }
}
