//! `Timed`: a `StageCompute` wrapper that makes every call last what the `TimeModel` says
//! (forward t_f/v, backward t_b/v, or (t_b − t_w)/v and t_w/v when split; seconds), by sleeping
//! for the rest of the duration after the wrapped call. Sleeping ranks do not compete for
//! cores, so even oversubscribed on a small machine a step's measured idle time is the
//! schedule's, and can be compared with the simulator's formula (selftest.rs).

use std::time::{Duration, Instant};

use super::executor::{ComputeError, StageCompute};
use super::time_model::TimeModel;

pub struct Timed<S> {
    pub inner: S,
    time: TimeModel,
    virtual_stages: usize,
}

impl<S> Timed<S> {
    /// `time` in seconds, for a rank holding `virtual_stages` chunks.
    pub fn new(inner: S, time: TimeModel, virtual_stages: usize) -> Self {
        Timed {
            inner,
            time,
            virtual_stages,
        }
    }

    /// Runs `call` on the wrapped stage, then sleeps until `stage_seconds / v` have passed
    /// since it began.
    fn lasting<R>(&mut self, stage_seconds: f64, call: impl FnOnce(&mut S) -> R) -> R {
        let start = Instant::now();
        let out = call(&mut self.inner);
        let target = Duration::from_secs_f64(stage_seconds / self.virtual_stages as f64);
        if let Some(rest) = target.checked_sub(start.elapsed()) {
            std::thread::sleep(rest);
        }
        out
    }
}

impl<S: StageCompute> StageCompute for Timed<S> {
    type Buf = S::Buf;

    fn boundary_len(&self, mb: usize, boundary: usize) -> usize {
        self.inner.boundary_len(mb, boundary)
    }

    fn forward(
        &mut self,
        mb: usize,
        chunk: usize,
        input: Option<S::Buf>,
    ) -> Result<Option<S::Buf>, ComputeError> {
        let t = self.time.forward;
        self.lasting(t, |s| s.forward(mb, chunk, input))
    }

    fn backward(
        &mut self,
        mb: usize,
        chunk: usize,
        grad_output: Option<S::Buf>,
    ) -> Result<Option<S::Buf>, ComputeError> {
        let t = self.time.backward;
        self.lasting(t, |s| s.backward(mb, chunk, grad_output))
    }

    fn backward_input(
        &mut self,
        mb: usize,
        chunk: usize,
        grad_output: Option<S::Buf>,
    ) -> Result<Option<S::Buf>, ComputeError> {
        let t = self.time.backward_input();
        self.lasting(t, |s| s.backward_input(mb, chunk, grad_output))
    }

    fn backward_weight(&mut self, mb: usize, chunk: usize) -> Result<(), ComputeError> {
        let t = self.time.backward_weight;
        self.lasting(t, |s| s.backward_weight(mb, chunk))
    }
}
