//! Model FLOPs per token, the convention MFU figures use (PaLM appendix B, nanoGPT, torchtitan,
//! and the PyTorch baseline this project is measured against):
//!
//!   flops/token = 6·N_matmul + 12·D·Σ_l S_l
//!
//!   N_matmul  every parameter of the whole model (logical tensors, whatever slice of them this
//!             rank holds under tensor parallelism) except the token and position embeddings
//!             (their forward is a lookup), plus V·D for the output projection, tied or not;
//!   6         forward (2) and backward (4) multiply-adds per weight and token;
//!   12·D·S_l  attention's scores and weighted values of layer l, forward and backward, with S_l
//!             the keys a query may see: the sequence length S, counted in full (causal masking
//!             is not halved), or min(S, w) in a layer with a sliding window w. Without windows
//!             this is the usual 12·L·D·S.
//! Recomputation (activation checkpointing) is not counted: it is work, not model FLOPs.

use super::super::layout::Role;
use super::Transformer;

impl Transformer {
    /// Matmul parameters N_matmul (see the top of the file).
    pub fn matmul_params(&self) -> usize {
        let lookups = |r: Role| matches!(r, Role::TokenEmbedding | Role::PositionEmbedding);
        let weights: usize = self
            .layout
            .tensors()
            .filter(|(_, t)| !lookups(t.role))
            .map(|(_, t)| t.slice.global_numel())
            .sum();
        weights
            + if self.tied_head() {
                self.cfg.vocab_size * self.cfg.hidden
            } else {
                0
            }
    }

    /// Model FLOPs per trained token at sequence length `seq_len`.
    pub fn flops_per_token(&self, seq_len: usize) -> f64 {
        let c = &self.cfg;
        let keys: usize = (0..c.layers)
            .map(|l| c.sliding_window.of(l).map_or(seq_len, |w| w.min(seq_len)))
            .sum();
        6.0 * self.matmul_params() as f64 + 12.0 * (c.hidden * keys) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::config::ModelConfig;
    use super::Transformer;
    use std::path::Path;

    fn model(file: &str) -> Transformer {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("recipes/models")
            .join(file);
        Transformer::new(ModelConfig::from_file(&path).unwrap())
    }

    /// The two benchmark shapes, counted by hand as the PyTorch baseline counts them.
    #[test]
    fn benchmark_shapes_count_like_the_baseline() {
        // GPT-2 124M: per block two LayerNorms (2·2D), c_attn D·3D + 3D, c_proj D² + D,
        // c_fc D·4D + 4D, mlp c_proj 4D·D + D; final LayerNorm 2D; tied head V·D.
        let (d, l, v, s) = (768usize, 12usize, 50257usize, 1024usize);
        let block =
            4 * d + (3 * d * d + 3 * d) + (d * d + d) + (4 * d * d + 4 * d) + (4 * d * d + d);
        let n = l * block + 2 * d + v * d;
        let gpt2 = model("gpt2-124m.json");
        assert_eq!(gpt2.matmul_params(), n);
        assert_eq!(n, 123_653_376);
        assert_eq!(gpt2.flops_per_token(s), (6 * n + 12 * l * d * s) as f64);
        // Llama-3.2-1B shape: per block two RMSNorms (2D), q D·D, k and v D·512 each, o D·D,
        // gate/up/down 3·D·F; final RMSNorm D; tied head V·D.
        let (d, l, v, f, kv, s) = (
            2048usize,
            16usize,
            128256usize,
            8192usize,
            512usize,
            2048usize,
        );
        let block = 2 * d + d * d + 2 * d * kv + d * d + 3 * d * f;
        let n = l * block + d + v * d;
        let llama = model("llama-1b-shape.json");
        assert_eq!(llama.matmul_params(), n);
        assert_eq!(llama.flops_per_token(s), (6 * n + 12 * l * d * s) as f64);
        // Tensor parallelism does not change the model's FLOPs; a window of 512 caps S_l.
        let tp = super::super::super::TpShape {
            size: 4,
            rank: 1,
            sequence_parallel: true,
        };
        let sliced = Transformer::with_tp(llama.cfg.clone(), tp).unwrap();
        assert_eq!(sliced.matmul_params(), n);
        let mut windowed = llama.cfg.clone();
        windowed.sliding_window.window = Some(512);
        windowed.sliding_window.layers = (0..l).map(|i| i % 2 == 0).collect();
        let w = Transformer::new(windowed).flops_per_token(s);
        assert_eq!(w, (6 * n + 12 * d * (l / 2 * 512 + l / 2 * s)) as f64);
    }
}
