//! Random initialisation of a model built from a config (no pretrained weights), as HF does:
//! matrices and embeddings ~ N(0, std²), norm weights 1, biases 0; GPT-2 additionally scales the
//! residual output projections (attn.c_proj, mlp.c_proj) by 1/√(2·layers). Seeded: every rank
//! draws the same weights.

use crate::model::{Arch, ModelConfig, ParamLayout, Role};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

/// One f32 buffer per unit, initialised from `seed`.
pub fn init_units(cfg: &ModelConfig, layout: &ParamLayout, std: f64, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let residual_std = std / (2.0 * cfg.layers as f64).sqrt();
    layout
        .units
        .iter()
        .map(|unit| {
            let mut buf = vec![0.0f32; unit.numel];
            for t in &unit.tensors {
                let out = &mut buf[t.offset..t.offset + t.numel()];
                match t.role {
                    Role::AttnNorm | Role::MlpNorm | Role::FinalNorm => out.fill(1.0),
                    r if !r.decays_by_default() => out.fill(0.0), // biases
                    Role::O | Role::Down if cfg.arch == Arch::Gpt2 => {
                        fill_normal(out, residual_std, &mut rng)
                    }
                    _ => fill_normal(out, std, &mut rng),
                }
            }
            buf
        })
        .collect()
}

/// Box–Muller normal samples.
fn fill_normal(out: &mut [f32], std: f64, rng: &mut ChaCha20Rng) {
    for pair in out.chunks_mut(2) {
        let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
        let u2: f64 = rng.random();
        let r = (-2.0 * u1.ln()).sqrt() * std;
        let a = std::f64::consts::TAU * u2;
        pair[0] = (r * a.cos()) as f32;
        if pair.len() > 1 {
            pair[1] = (r * a.sin()) as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_is_seeded_and_has_the_requested_spread() {
        let cfg = ModelConfig::from_file(std::path::Path::new(
            "tests/fixtures/hf/tiny-gpt2/config.json",
        ))
        .unwrap();
        let layout = ParamLayout::new(&cfg);
        let a = init_units(&cfg, &layout, 0.02, 7);
        assert_eq!(a, init_units(&cfg, &layout, 0.02, 7));
        assert_ne!(a, init_units(&cfg, &layout, 0.02, 8));
        let wte = layout.units[0].tensor(Role::TokenEmbedding);
        let v = &a[0][wte.offset..wte.offset + wte.numel()];
        let sd = (v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>() / v.len() as f64).sqrt();
        assert!((sd - 0.02).abs() < 0.001, "std {sd}");
        let ln = layout.units[1].tensor(Role::AttnNorm);
        assert!(a[1][ln.offset..ln.offset + ln.numel()]
            .iter()
            .all(|&x| x == 1.0));
        let b = layout.units[1].tensor(Role::QkvBias);
        assert!(a[1][b.offset..b.offset + b.numel()]
            .iter()
            .all(|&x| x == 0.0));
    }
}
