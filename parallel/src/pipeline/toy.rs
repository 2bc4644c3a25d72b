//! A toy model for checking the executor end to end (the self-test binary and the multi-rank
//! tests use it): C chunks, chunk c maps each of the `rows` vectors of a micro-batch by
//!   z = W_c x,  y = tanh(z)                       (W_c: dim × dim, known values)
//! and the last chunk's loss for micro-batch i is L_i = ½ Σ (y − t_i)² over its rows.
//! Backward: g_z = g_y ⊙ (1 − y²), g_x = W_cᵀ g_z, dW_c += g_z xᵀ, with g_y = y − t_i at the
//! end. `ToyModel::reference` runs all chunks in one process, micro-batches in order 0..m;
//! `ToyStage` holds one rank's chunks and computes the same arithmetic in the same order (every
//! schedule backwards each chunk in micro-batch order), so a pipelined step must give the
//! reference's losses and weight gradients bit for bit. It splits the backward (input gradient,
//! then weight gradient) for the zero-bubble schedule.

use std::collections::HashMap;

use super::executor::{ComputeError, StageCompute};

/// Sizes of the toy problem; every value in it follows from them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ToyModel {
    pub chunks: usize,
    pub dim: usize,
    pub rows: usize,
}

/// Losses per micro-batch and the weight gradient of every chunk.
#[derive(Clone, Debug, PartialEq)]
pub struct ToyResult {
    pub losses: Vec<f32>,
    pub weight_grads: Vec<Vec<f32>>,
}

fn pseudo(seed: usize) -> f32 {
    // A fixed scramble into [-0.5, 0.5).
    let h = seed.wrapping_mul(2_654_435_761) % 1_000_003;
    h as f32 / 1_000_003.0 - 0.5
}

impl ToyModel {
    /// W_c, row-major, scaled so that tanh stays in its curved range.
    pub fn weight(&self, chunk: usize) -> Vec<f32> {
        let scale = 2.0 / (self.dim as f32).sqrt();
        (0..self.dim * self.dim)
            .map(|k| scale * pseudo(1 + chunk * 7919 + k))
            .collect()
    }

    /// The micro-batch's input rows (rows × dim).
    pub fn input(&self, mb: usize) -> Vec<f32> {
        (0..self.rows * self.dim)
            .map(|k| 2.0 * pseudo(500_009 + mb * 104_729 + k))
            .collect()
    }

    /// The micro-batch's targets (rows × dim).
    pub fn target(&self, mb: usize) -> Vec<f32> {
        (0..self.rows * self.dim)
            .map(|k| pseudo(900_001 + mb * 15_485_863 + k))
            .collect()
    }

    /// y = tanh(W x) for every row.
    fn forward(&self, w: &[f32], x: &[f32]) -> Vec<f32> {
        let d = self.dim;
        let mut y = vec![0.0f32; x.len()];
        for (xr, yr) in x.chunks_exact(d).zip(y.chunks_exact_mut(d)) {
            for (i, out) in yr.iter_mut().enumerate() {
                let z: f32 = (0..d).map(|j| w[i * d + j] * xr[j]).sum();
                *out = z.tanh();
            }
        }
        y
    }

    /// g_z = g_y (1 − y²).
    fn pre_activation_grad(y: &[f32], gy: &[f32]) -> Vec<f32> {
        y.iter().zip(gy).map(|(y, g)| g * (1.0 - y * y)).collect()
    }

    /// g_x = Wᵀ g_z for every row.
    fn input_grad(&self, w: &[f32], gz: &[f32]) -> Vec<f32> {
        let d = self.dim;
        let mut gx = vec![0.0f32; gz.len()];
        for (gr, xr) in gz.chunks_exact(d).zip(gx.chunks_exact_mut(d)) {
            for (j, out) in xr.iter_mut().enumerate() {
                *out = (0..d).map(|i| w[i * d + j] * gr[i]).sum();
            }
        }
        gx
    }

    /// dW += g_z xᵀ summed over rows.
    fn accumulate_weight_grad(&self, dw: &mut [f32], x: &[f32], gz: &[f32]) {
        let d = self.dim;
        for (xr, gr) in x.chunks_exact(d).zip(gz.chunks_exact(d)) {
            for i in 0..d {
                for j in 0..d {
                    dw[i * d + j] += gr[i] * xr[j];
                }
            }
        }
    }

    /// ½ Σ (y − t)² and its gradient y − t.
    fn loss(y: &[f32], t: &[f32]) -> (f32, Vec<f32>) {
        let g: Vec<f32> = y.iter().zip(t).map(|(y, t)| y - t).collect();
        (0.5 * g.iter().map(|g| g * g).sum::<f32>(), g)
    }

    /// Every chunk in one process for `microbatches` micro-batches.
    pub fn reference(&self, microbatches: usize) -> ToyResult {
        let weights: Vec<Vec<f32>> = (0..self.chunks).map(|c| self.weight(c)).collect();
        let mut weight_grads = vec![vec![0.0f32; self.dim * self.dim]; self.chunks];
        let mut losses = Vec::new();
        for mb in 0..microbatches {
            let mut acts = vec![self.input(mb)];
            for w in &weights {
                let y = self.forward(w, &acts[acts.len() - 1]);
                acts.push(y);
            }
            let (loss, mut grad) = Self::loss(&acts[self.chunks], &self.target(mb));
            losses.push(loss);
            for c in (0..self.chunks).rev() {
                let gz = Self::pre_activation_grad(&acts[c + 1], &grad);
                grad = self.input_grad(&weights[c], &gz);
                self.accumulate_weight_grad(&mut weight_grads[c], &acts[c], &gz);
            }
        }
        ToyResult {
            losses,
            weight_grads,
        }
    }
}

/// One rank's chunks of a `ToyModel`.
pub struct ToyStage {
    model: ToyModel,
    weights: HashMap<usize, Vec<f32>>,
    /// Weight gradients of this rank's chunks.
    pub weight_grads: HashMap<usize, Vec<f32>>,
    /// Losses by micro-batch, on the rank holding the last chunk.
    pub losses: HashMap<usize, f32>,
    /// (input, output) kept from forward for backward.
    saved: HashMap<(usize, usize), (Vec<f32>, Vec<f32>)>,
    /// Loss gradients of the last chunk, from forward.
    loss_grads: HashMap<usize, Vec<f32>>,
    /// (input, g_z) kept from backward-input for backward-weight.
    deferred: HashMap<(usize, usize), (Vec<f32>, Vec<f32>)>,
}

impl ToyStage {
    pub fn new(model: ToyModel, chunks: &[usize]) -> ToyStage {
        ToyStage {
            model,
            weights: chunks.iter().map(|&c| (c, model.weight(c))).collect(),
            weight_grads: chunks
                .iter()
                .map(|&c| (c, vec![0.0; model.dim * model.dim]))
                .collect(),
            losses: HashMap::new(),
            saved: HashMap::new(),
            loss_grads: HashMap::new(),
            deferred: HashMap::new(),
        }
    }

    fn weight(&self, chunk: usize) -> Result<&Vec<f32>, ComputeError> {
        self.weights
            .get(&chunk)
            .ok_or_else(|| format!("chunk {chunk} is not on this rank").into())
    }

    /// The input-gradient half; keeps (x, g_z) for the weight half.
    fn input_half(
        &mut self,
        mb: usize,
        chunk: usize,
        grad_output: Option<Vec<f32>>,
    ) -> Result<Vec<f32>, ComputeError> {
        let (x, y) = self
            .saved
            .remove(&(mb, chunk))
            .ok_or_else(|| format!("backward of mb {mb} chunk {chunk} before its forward"))?;
        let gy = match grad_output {
            Some(g) => g,
            None => self
                .loss_grads
                .remove(&mb)
                .ok_or_else(|| format!("no loss for mb {mb}"))?,
        };
        let gz = ToyModel::pre_activation_grad(&y, &gy);
        let gx = self.model.input_grad(self.weight(chunk)?, &gz);
        self.deferred.insert((mb, chunk), (x, gz));
        Ok(gx)
    }
}

impl StageCompute for ToyStage {
    type Buf = Vec<f32>;

    fn boundary_len(&self, _mb: usize, _boundary: usize) -> usize {
        self.model.rows * self.model.dim
    }

    fn forward(
        &mut self,
        mb: usize,
        chunk: usize,
        input: Option<Vec<f32>>,
    ) -> Result<Option<Vec<f32>>, ComputeError> {
        let x = input.unwrap_or_else(|| self.model.input(mb));
        let y = self.model.forward(self.weight(chunk)?, &x);
        let last = chunk == self.model.chunks - 1;
        if last {
            let (loss, grad) = ToyModel::loss(&y, &self.model.target(mb));
            self.losses.insert(mb, loss);
            self.loss_grads.insert(mb, grad);
        }
        self.saved.insert((mb, chunk), (x, y.clone()));
        Ok((!last).then_some(y))
    }

    fn backward(
        &mut self,
        mb: usize,
        chunk: usize,
        grad_output: Option<Vec<f32>>,
    ) -> Result<Option<Vec<f32>>, ComputeError> {
        let gx = self.input_half(mb, chunk, grad_output)?;
        self.backward_weight(mb, chunk)?;
        Ok((chunk > 0).then_some(gx))
    }

    fn backward_input(
        &mut self,
        mb: usize,
        chunk: usize,
        grad_output: Option<Vec<f32>>,
    ) -> Result<Option<Vec<f32>>, ComputeError> {
        let gx = self.input_half(mb, chunk, grad_output)?;
        Ok((chunk > 0).then_some(gx))
    }

    fn backward_weight(&mut self, mb: usize, chunk: usize) -> Result<(), ComputeError> {
        let (x, gz) = self.deferred.remove(&(mb, chunk)).ok_or_else(|| {
            format!("weight gradient of mb {mb} chunk {chunk} before its input gradient")
        })?;
        let model = self.model;
        let dw = self
            .weight_grads
            .get_mut(&chunk)
            .ok_or_else(|| format!("chunk {chunk} is not on this rank"))?;
        model.accumulate_weight_grad(dw, &x, &gz);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// f64 finite differences of the reference loss against its weight gradient.
    #[test]
    fn reference_weight_gradients_match_finite_differences() {
        let model = ToyModel {
            chunks: 3,
            dim: 4,
            rows: 2,
        };
        let grads = model.reference(2).weight_grads;
        // The loss as a function of one weight, in f64, through the same formulas.
        let loss64 = |chunk: usize, k: usize, delta: f64| -> f64 {
            let mut total = 0.0;
            for mb in 0..2 {
                let mut x: Vec<f64> = model.input(mb).iter().map(|&v| v as f64).collect();
                for c in 0..model.chunks {
                    let mut w: Vec<f64> = model.weight(c).iter().map(|&v| v as f64).collect();
                    if c == chunk {
                        w[k] += delta;
                    }
                    let d = model.dim;
                    x = x
                        .chunks(d)
                        .flat_map(|r| {
                            (0..d)
                                .map(|i| (0..d).map(|j| w[i * d + j] * r[j]).sum::<f64>().tanh())
                                .collect::<Vec<_>>()
                        })
                        .collect();
                }
                let t = model.target(mb);
                total += 0.5
                    * x.iter()
                        .zip(&t)
                        .map(|(y, t)| (y - *t as f64).powi(2))
                        .sum::<f64>();
            }
            total
        };
        let h = 1e-6;
        for (chunk, grad) in grads.iter().enumerate() {
            for k in [0, 5, 15] {
                let numeric = (loss64(chunk, k, h) - loss64(chunk, k, -h)) / (2.0 * h);
                let analytic = grad[k] as f64;
                assert!(
                    (numeric - analytic).abs() <= 1e-4 * numeric.abs().max(1e-2),
                    "chunk {chunk} weight {k}: finite difference {numeric}, backward {analytic}"
                );
            }
        }
    }

    #[test]
    fn a_stage_holding_every_chunk_reproduces_the_reference() {
        let model = ToyModel {
            chunks: 2,
            dim: 3,
            rows: 2,
        };
        let mut stage = ToyStage::new(model, &[0, 1]);
        for mb in 0..3 {
            let y0 = stage.forward(mb, 0, None).unwrap();
            assert!(stage.forward(mb, 1, y0).unwrap().is_none());
            let g = stage.backward_input(mb, 1, None).unwrap();
            stage.backward_weight(mb, 1).unwrap();
            assert!(stage.backward(mb, 0, g).unwrap().is_none());
        }
        let reference = model.reference(3);
        assert_eq!(stage.weight_grads[&0], reference.weight_grads[0]);
        assert_eq!(stage.weight_grads[&1], reference.weight_grads[1]);
        let losses: Vec<f32> = (0..3).map(|mb| stage.losses[&mb]).collect();
        assert_eq!(losses, reference.losses);
    }
}
