//! Where the model's weights and gradients live during a step.
//!
//! The model walks units in order (forward: embedding, blocks, final norm, head; backward in
//! reverse) and brackets each use with hooks. A plain store keeps everything resident and the
//! hooks do nothing; ZeRO-3 gathers a unit in `before_use` and frees it in `after_use`; ZeRO-2
//! reduce-scatters a unit's gradient in `after_grad`. The model never knows which one it runs on.

use ferrotron_kernels::{Backend, Result};

/// The hooks default to nothing (everything resident); the stages that move data override them.
pub trait ParamStore<B: Backend> {
    /// Unit `u`'s compute weights must be resident in `parts().0[u]` after this.
    fn before_use(&mut self, _b: &B, _u: usize) -> Result<()> {
        Ok(())
    }
    /// The model is done with unit `u`'s weights for now.
    fn after_use(&mut self, _b: &B, _u: usize) -> Result<()> {
        Ok(())
    }
    /// Unit `u`'s gradient accumulator must exist in `parts().1[u]` after this.
    fn before_grad(&mut self, _b: &B, _u: usize) -> Result<()> {
        Ok(())
    }
    /// Unit `u`'s backward for this micro-batch is complete.
    fn after_grad(&mut self, _b: &B, _u: usize) -> Result<()> {
        Ok(())
    }
    /// Compute weights and gradient accumulators, one buffer per unit (empty when not resident).
    fn parts(&mut self) -> (&[B::Act], &mut [B::Acc]);
}

/// Everything resident: compute weights and gradients for every unit.
pub struct ResidentStore<B: Backend> {
    pub weights: Vec<B::Act>,
    pub grads: Vec<B::Acc>,
}

impl<B: Backend> ParamStore<B> for ResidentStore<B> {
    fn parts(&mut self) -> (&[B::Act], &mut [B::Acc]) {
        (&self.weights, &mut self.grads)
    }
}
