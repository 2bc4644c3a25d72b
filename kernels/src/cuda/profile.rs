//! Profiling mode of the CUDA backend: device time per kernel from CUDA events.
//!
//! When on, every kernel launch, every cuBLASLt matmul and every FlashAttention call the backend
//! queues on its stream is bracketed by two timing events (recorded, not waited for). `take`
//! waits for the stream once, reads each pair's elapsed time and sums it per name, with the
//! FLOPs the caller counted (2·m·n·k for a matmul, 0 where none is counted). The backend has one
//! stream, so the spans never overlap: their sum is the time the device was busy with this
//! backend's work, and the wall time of the same steps minus that sum is time the GPU waited
//! (on the host, on transfers or on other streams such as ZeRO-3's prefetch, which are not
//! timed). The cost of profiling is two event records per launch on the host; training runs
//! with it off.
//!
//! A failing event call never fails the work it brackets: the span is dropped, profiling turns
//! itself off, and `take` reports the error.

use crate::backend::KernelTime;
use crate::{Error, Result};
use cudarc::driver::sys::CUevent_flags;
use cudarc::driver::{CudaEvent, CudaStream};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

struct Span {
    name: String,
    flops: f64,
    start: CudaEvent,
    end: CudaEvent,
}

#[derive(Default)]
pub(crate) struct Profiler {
    on: AtomicBool,
    spans: Mutex<Vec<Span>>,
    /// The first event error since the last `take`.
    failure: Mutex<Option<String>>,
}

impl Profiler {
    pub(crate) fn set(&self, on: bool) {
        self.on.store(on, Ordering::Relaxed);
    }

    pub(crate) fn is_on(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    fn fail(&self, what: String) {
        self.on.store(false, Ordering::Relaxed);
        if let Ok(mut f) = self.failure.lock() {
            f.get_or_insert(what);
        }
    }

    /// Runs `work` (which queues on `stream`) and, when profiling is on, times it under
    /// `name()` with `flops` floating-point operations.
    pub(crate) fn time<R>(
        &self,
        stream: &CudaStream,
        name: impl FnOnce() -> String,
        flops: f64,
        work: impl FnOnce() -> Result<R>,
    ) -> Result<R> {
        if !self.is_on() {
            return work();
        }
        let timing = Some(CUevent_flags::CU_EVENT_DEFAULT);
        let start = match stream.record_event(timing) {
            Ok(e) => e,
            Err(e) => {
                self.fail(format!("recording a start event: {e}"));
                return work();
            }
        };
        let out = work()?;
        match stream.record_event(timing) {
            Ok(end) => {
                let span = Span {
                    name: name(),
                    flops,
                    start,
                    end,
                };
                if let Ok(mut s) = self.spans.lock() {
                    s.push(span);
                }
            }
            Err(e) => self.fail(format!("recording an end event: {e}")),
        }
        Ok(out)
    }

    /// Waits for every timed span and returns the totals per name, largest first; clears them.
    pub(crate) fn take(&self) -> Result<Vec<KernelTime>> {
        let spans = std::mem::take(
            &mut *self
                .spans
                .lock()
                .map_err(|_| Error::Cuda("profiler poisoned".into()))?,
        );
        if let Some(f) = self.failure.lock().ok().and_then(|mut f| f.take()) {
            return Err(Error::Cuda(format!("profiling stopped: {f}")));
        }
        let mut by_name: HashMap<String, KernelTime> = HashMap::new();
        for s in spans {
            let ms = s
                .start
                .elapsed_ms(&s.end)
                .map_err(|e| Error::Cuda(format!("reading the time of {}: {e}", s.name)))?;
            let t = by_name.entry(s.name.clone()).or_insert_with(|| KernelTime {
                name: s.name,
                calls: 0,
                ms: 0.0,
                flops: 0.0,
            });
            t.calls += 1;
            t.ms += ms as f64;
            t.flops += s.flops;
        }
        let mut rows: Vec<KernelTime> = by_name.into_values().collect();
        rows.sort_by(|a, b| b.ms.total_cmp(&a.ms).then_with(|| a.name.cmp(&b.name)));
        Ok(rows)
    }
}
