//! Random initialisation of a model built from a config (no pretrained weights), as HF does:
//! matrices and embeddings ~ N(0, std²), norm weights 1 (Gemma's, which store the scale minus
//! one, 0), biases 0, the token embedding's padding
//! row (`pad_token_id`, nn.Embedding's padding_idx) 0; GPT-2 additionally scales the residual
//! output projections (attn.c_proj, mlp.c_proj) by 1/√(2·layers).
//!
//! Counter-based, so that no rank ever draws more than its own slice and every layout starts
//! from the same bits: the value of element g (global row-major index) of logical tensor T is a
//! function of (seed, T's name, g) alone. Normal values come from Box–Muller on pairs: elements
//! 2j and 2j+1 share the uniforms (u₁, u₂) that a ChaCha20 stream keyed by
//! SHA-256("ferrotron-init-v1", seed, name) yields at 32-bit word positions 4j..4j+4 (ChaCha is a
//! counter-mode generator: `set_word_pos` jumps to any position at once). A ZeRO shard, a tensor-
//! parallel slice and the whole tensor therefore hold the same values at the same global indices.

use crate::model::{Arch, ModelConfig, ParamLayout, Role, TensorSpec};
use ferrotron_zero::{StatePart, StateSource};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use std::ops::Range;

/// Values per parallel task when drawing a long run.
const CHUNK: usize = 1 << 16;

/// The initial master weights of a model as a `StateSource` (see the module comment).
pub struct InitSource {
    layout: ParamLayout,
    std: f64,
    residual_std: f64,
    gpt2: bool,
    /// The stored value of a norm weight whose scale is 1: 1, or 0 under Gemma's 1 + w.
    norm_one: f64,
    /// The token embedding's global elements that start at zero (the padding row).
    padding_row: Option<Range<usize>>,
    seed: u64,
}

impl InitSource {
    pub fn new(cfg: &ModelConfig, layout: &ParamLayout, std: f64, seed: u64) -> Self {
        InitSource {
            layout: layout.clone(),
            std,
            residual_std: std / (2.0 * cfg.layers as f64).sqrt(),
            gpt2: cfg.arch == Arch::Gpt2,
            norm_one: 1.0 - cfg.norm_weight_offset,
            padding_row: cfg
                .embedding_padding_idx
                .map(|p| p * cfg.hidden..(p + 1) * cfg.hidden),
            seed,
        }
    }

    /// The standard deviation of tensor `t`, or its constant value (norm weights, biases).
    fn law(&self, t: &TensorSpec) -> Law {
        match t.role {
            r if r.is_norm_weight() => Law::Constant(self.norm_one as f32),
            r if !r.decays_by_default() => Law::Constant(0.0), // biases
            Role::O | Role::Down if self.gpt2 => Law::Normal(self.residual_std),
            _ => Law::Normal(self.std),
        }
    }

    fn key(&self, name: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"ferrotron-init-v1");
        h.update(self.seed.to_le_bytes());
        h.update(name.as_bytes());
        h.finalize().into()
    }

    /// Every unit whole (single-process uses and tests).
    pub fn units(&self) -> Vec<Vec<f32>> {
        (0..self.layout.units.len())
            .map(|u| {
                let mut out = vec![0.0; self.layout.units[u].numel];
                self.fill_unit(u, 0..out.len(), &mut out);
                out
            })
            .collect()
    }

    fn fill_unit(&self, unit: usize, range: Range<usize>, out: &mut [f32]) {
        for t in &self.layout.units[unit].tensors {
            let (s, e) = (
                range.start.max(t.offset),
                range.end.min(t.offset + t.numel()),
            );
            if s >= e {
                continue;
            }
            let rel = s - t.offset..e - t.offset;
            let dst = &mut out[s - range.start..e - range.start];
            match self.law(t) {
                Law::Constant(c) => {
                    // Padding (a slice past the logical tensor) is zero, constants or not.
                    dst.fill(0.0);
                    t.slice.for_each_run(rel.clone(), |r| {
                        if r.global.is_some() {
                            let at = r.local - rel.start;
                            dst[at..at + r.len].fill(c);
                        }
                    });
                }
                Law::Normal(std) => {
                    let key = self.key(&t.name);
                    let mut tasks: Vec<(usize, usize, usize)> = Vec::new();
                    t.slice.for_each_run(rel.clone(), |r| {
                        let at = r.local - rel.start;
                        match r.global {
                            Some(g) => {
                                for c in (0..r.len).step_by(CHUNK) {
                                    tasks.push((at + c, g + c, CHUNK.min(r.len - c)));
                                }
                            }
                            None => tasks.push((at, usize::MAX, r.len)),
                        }
                    });
                    let mut pieces: Vec<(&mut [f32], usize)> = Vec::with_capacity(tasks.len());
                    let mut rest: &mut [f32] = dst;
                    let mut consumed = 0;
                    for &(at, g, len) in &tasks {
                        let (_, tail) = std::mem::take(&mut rest).split_at_mut(at - consumed);
                        let (piece, tail) = tail.split_at_mut(len);
                        pieces.push((piece, g));
                        rest = tail;
                        consumed = at + len;
                    }
                    let zero = match t.role {
                        Role::TokenEmbedding => self.padding_row.clone(),
                        _ => None,
                    };
                    pieces.into_par_iter().for_each(|(piece, g)| {
                        if g == usize::MAX {
                            piece.fill(0.0);
                            return;
                        }
                        normal_at(piece, g, std, key);
                        if let Some(z) = &zero {
                            let (s, e) = (z.start.max(g), z.end.min(g + piece.len()));
                            if s < e {
                                piece[s - g..e - g].fill(0.0);
                            }
                        }
                    });
                }
            }
        }
    }
}

enum Law {
    Constant(f32),
    Normal(f64),
}

/// Fills `out` with the N(0, std²) values of global elements `g0..g0 + out.len()` of the tensor
/// whose stream key is `key`.
fn normal_at(out: &mut [f32], g0: usize, std: f64, key: [u8; 32]) {
    let mut rng = ChaCha20Rng::from_seed(key);
    let mut pair = g0 / 2;
    rng.set_word_pos(4 * pair as u128);
    let end = g0 + out.len();
    while 2 * pair < end {
        let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
        let u2: f64 = rng.random();
        let r = (-2.0 * u1.ln()).sqrt() * std;
        let a = std::f64::consts::TAU * u2;
        for (g, z) in [(2 * pair, r * a.cos()), (2 * pair + 1, r * a.sin())] {
            if (g0..end).contains(&g) {
                out[g - g0] = z as f32;
            }
        }
        pair += 1;
    }
}

impl StateSource for InitSource {
    fn fill(
        &self,
        part: StatePart,
        unit: usize,
        range: Range<usize>,
        out: &mut [f32],
    ) -> ferrotron_kernels::Result<()> {
        if part != StatePart::Master {
            return Err(ferrotron_kernels::Error::Unsupported(format!(
                "random init has no {}",
                part.name()
            )));
        }
        self.fill_unit(unit, range, out);
        Ok(())
    }
    fn has_moments(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TensorSlice;

    fn tiny_gpt2() -> (ModelConfig, ParamLayout) {
        let cfg = ModelConfig::from_file(std::path::Path::new(
            "tests/fixtures/hf/tiny-gpt2/config.json",
        ))
        .unwrap();
        let layout = ParamLayout::new(&cfg);
        (cfg, layout)
    }

    /// Gemma stores each norm's scale minus one (x̂·(1 + w)): its norm weights start at 0, every
    /// one of the four per block and the final norm; a Llama's at 1.
    #[test]
    fn gemma_norm_weights_start_at_zero() {
        let cfg = ModelConfig::from_file(std::path::Path::new(
            "tests/fixtures/hf/var-gemma2/config.json",
        ))
        .unwrap();
        let layout = ParamLayout::new(&cfg);
        let units = InitSource::new(&cfg, &layout, 0.02, 7).units();
        let mut norms = 0;
        for (u, t) in layout.tensors() {
            let v = &units[u][t.offset..t.offset + t.numel()];
            if t.role.is_norm_weight() {
                norms += 1;
                assert!(v.iter().all(|&x| x == 0.0), "{}", t.name);
            }
        }
        assert_eq!(norms, 4 * cfg.layers + 1);
    }

    #[test]
    fn init_is_seeded_and_has_the_requested_spread() {
        let (cfg, layout) = tiny_gpt2();
        let a = InitSource::new(&cfg, &layout, 0.02, 7).units();
        assert_eq!(a, InitSource::new(&cfg, &layout, 0.02, 7).units());
        assert_ne!(a, InitSource::new(&cfg, &layout, 0.02, 8).units());
        let wte = layout.units[0].tensor(Role::TokenEmbedding);
        let v = &a[0][wte.offset..wte.offset + wte.numel()];
        let mean = v.iter().map(|x| *x as f64).sum::<f64>() / v.len() as f64;
        let sd = (v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>() / v.len() as f64).sqrt();
        assert!((sd - 0.02).abs() < 0.001, "std {sd}");
        assert!(mean.abs() < 0.001, "mean {mean}");
        let ln = layout.units[1].tensor(Role::AttnNorm);
        assert!(a[1][ln.offset..ln.offset + ln.numel()]
            .iter()
            .all(|&x| x == 1.0));
        let b = layout.units[1].tensor(Role::QkvBias);
        assert!(a[1][b.offset..b.offset + b.numel()]
            .iter()
            .all(|&x| x == 0.0));
        // Different tensors draw different streams.
        let wpe = layout.units[0].tensor(Role::PositionEmbedding);
        assert_ne!(
            a[0][wte.offset..wte.offset + 8],
            a[0][wpe.offset..wpe.offset + 8]
        );
    }

    #[test]
    fn any_range_of_a_unit_draws_the_same_values_as_the_whole() {
        let (cfg, layout) = tiny_gpt2();
        let src = InitSource::new(&cfg, &layout, 0.02, 3);
        let whole = src.units();
        for (u, w) in whole.iter().enumerate() {
            for (a, b) in [
                (0, w.len()),
                (1, w.len() - 1),
                (w.len() / 3, w.len() / 2),
                (5, 6),
            ] {
                let mut part = vec![f32::NAN; b - a];
                src.fill(StatePart::Master, u, a..b, &mut part).unwrap();
                assert_eq!(part, w[a..b], "unit {u} range {a}..{b}");
            }
        }
    }

    #[test]
    fn a_tensor_parallel_slice_holds_the_whole_tensors_values() {
        let (cfg, mut layout) = tiny_gpt2();
        let whole = InitSource::new(&cfg, &layout, 0.02, 5).units();
        // Slice block 0's fused c_attn [D, 3D] as part 1 of 2 (three column blocks).
        let u = layout.block_unit(0);
        let qkv = layout.units[u].tensor(Role::Qkv).clone();
        let full = &whole[u][qkv.offset..qkv.offset + qkv.numel()];
        let slice = TensorSlice::strided(&qkv.shape, 1, 3, 2, 1);
        let (d, cols) = (qkv.shape[0], qkv.shape[1]);
        {
            let t = layout.units[u]
                .tensors
                .iter_mut()
                .find(|t| t.role == Role::Qkv)
                .unwrap();
            t.slice = slice.clone();
            t.shape = slice.local_shape.clone();
        }
        let sliced = InitSource::new(&cfg, &layout, 0.02, 5);
        let n = slice.local_numel();
        let mut local = vec![0.0; n];
        sliced
            .fill(StatePart::Master, u, qkv.offset..qkv.offset + n, &mut local)
            .unwrap();
        let w = cols / 3 / 2;
        for row in 0..d {
            for blk in 0..3 {
                for c in 0..w {
                    let g = row * cols + blk * (cols / 3) + w + c;
                    assert_eq!(local[row * 3 * w + blk * w + c], full[g]);
                }
            }
        }
    }

    /// The padding row starts at zero, as transformers' _init_weights leaves it, in the whole
    /// tensor and in a vocab-parallel rank's rows alike; the other rows are drawn.
    #[test]
    fn the_padding_row_starts_at_zero() {
        let cfg = ModelConfig::from_file(std::path::Path::new(
            "tests/fixtures/hf/var-phi3/config.json",
        ))
        .unwrap();
        let (pad, d) = (cfg.embedding_padding_idx.unwrap(), cfg.hidden);
        let layout = ParamLayout::new(&cfg);
        let whole = InitSource::new(&cfg, &layout, 0.02, 9).units();
        let wte = layout.units[0].tensor(Role::TokenEmbedding);
        let row = |r: usize| &whole[0][wte.offset + r * d..wte.offset + (r + 1) * d];
        assert!(row(pad).iter().all(|&x| x == 0.0));
        assert!(row(pad - 1).iter().all(|&x| x != 0.0) && row(pad + 1).iter().all(|&x| x != 0.0));
        // tp rank 1 of 2 holds rows 31..61 (padded to 31): the padding row 51 is its local 20
        let tp = crate::model::TpShape {
            size: 2,
            rank: 1,
            sequence_parallel: false,
        };
        let sliced = ParamLayout::sliced(&cfg, tp);
        let local = InitSource::new(&cfg, &sliced, 0.02, 9).units();
        let lt = sliced.units[0].tensor(Role::TokenEmbedding);
        let (start, _, _) = tp.vocab_rows(cfg.vocab_size);
        for r in 0..cfg.vocab_size - start {
            let got = &local[0][lt.offset + r * d..lt.offset + (r + 1) * d];
            assert_eq!(got, row(start + r), "row {}", start + r);
        }
    }
}
