//! Runtime dispatch of the CPU backend's own loops to the widest vector ISA of the machine.
//!
//! The crate is built for baseline x86-64 (SSE2, 4 floats a vector), so one binary serves every
//! x86-64 CPU. `simd_fn!` defines a function whose body is compiled three times on x86-64 —
//! for AVX-512 (16 floats), AVX2 + FMA (8) and the baseline — and picks one at run time by
//! `level()`, detected once. On aarch64 (NEON is baseline there) the body is compiled once.
//! The body is plain scalar Rust that the compiler vectorizes; it never uses `mul_add`
//! (which the compiler does not form on its own), so every level computes the same bits.
//! (One exception, float.rs's f32 exp, picks a fused body itself where the CPU has FMA.)
//! Helpers a body calls must be `#[inline(always)]`, so that they are compiled inside it.

use std::sync::atomic::{AtomicU8, Ordering};

/// The vector ISA the dispatched loops run with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Avx512,
    Avx2,
    Baseline,
}

static LEVEL: AtomicU8 = AtomicU8::new(0);

/// The detected level (cached after the first call).
#[inline]
pub fn level() -> Level {
    match LEVEL.load(Ordering::Relaxed) {
        1 => Level::Avx512,
        2 => Level::Avx2,
        3 => Level::Baseline,
        _ => {
            let l = detect();
            LEVEL.store(
                match l {
                    Level::Avx512 => 1,
                    Level::Avx2 => 2,
                    Level::Baseline => 3,
                },
                Ordering::Relaxed,
            );
            l
        }
    }
}

fn detect() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f")
            && has!("avx512vl")
            && has!("avx512bw")
            && has!("avx512dq")
            && has!("avx2")
            && has!("fma")
        {
            return Level::Avx512;
        }
        if has!("avx2") && has!("fma") {
            return Level::Avx2;
        }
    }
    Level::Baseline
}

/// `simd_fn! { /// docs  pub fn name<T: Bound>(a: A, b: B) -> R { body } }` (generics optional):
/// a function whose body runs compiled for the machine's vector level (see the top comment).
#[macro_export]
#[doc(hidden)]
macro_rules! simd_fn {
    (
        $(#[$attr:meta])*
        $vis:vis fn $name:ident $(< $($gen:ident : $bound:path),* >)? ( $($arg:ident : $ty:ty),* $(,)? ) $(-> $ret:ty)?
        $body:block
    ) => {
        $(#[$attr])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name $(< $($gen: $bound),* >)? ( $($arg: $ty),* ) $(-> $ret)? {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn body $(< $($gen: $bound),* >)? ( $($arg: $ty),* ) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,bmi1,bmi2,lzcnt,popcnt,f16c")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn v512 $(< $($gen: $bound),* >)? ( $($arg: $ty),* ) $(-> $ret)? {
                    body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma,bmi1,bmi2,lzcnt,popcnt,f16c")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn v256 $(< $($gen: $bound),* >)? ( $($arg: $ty),* ) $(-> $ret)? {
                    body($($arg),*)
                }
                match $crate::cpu::simd::level() {
                    // SAFETY: the level was detected on this CPU.
                    $crate::cpu::simd::Level::Avx512 => return unsafe { v512($($arg),*) },
                    $crate::cpu::simd::Level::Avx2 => return unsafe { v256($($arg),*) },
                    $crate::cpu::simd::Level::Baseline => {}
                }
            }
            body($($arg),*)
        }
    };
}
