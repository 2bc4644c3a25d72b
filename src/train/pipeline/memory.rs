//! What each pipeline stage holds, for the preflight (src/train/preflight.rs), before anything
//! is allocated.
//!
//! Per stage r:
//!   parameters   the units it holds (src/model/stages.rs): its blocks, the embedding on stage 0
//!                (and the tied table's copy on the last stage), the final norm and head on the
//!                last; counted from the layout, or in f64 from the config (coarse: absurd
//!                configs are rejected before a layout is built);
//!   activations  in-flight(r) × the largest (micro-batch, chunk) `Forward` among its chunks:
//!                `Transformer::blocks_activation_elements` of the chunk's blocks (coarse: the
//!                residual stream, (blocks + 1)·N·D), and in-flight(r) the schedule's exact
//!                peak (`Schedule::expected_peak_in_flight`; 1F1B: p − r, ≤ p on stage 0).
//! With one stage this is the whole model and one micro-batch's activations.

use crate::error::Result;
use crate::model::{Arch, Holding, ModelConfig, ParamLayout, StageSplit, Transformer};
use crate::recipe::Recipe;
use crate::user;
use ferrotron_parallel::pipeline::Schedule;

/// One stage's share of the model: parameters and activation elements (activation and
/// accumulation precision) kept for backward at its peak.
#[derive(Clone, Debug, PartialEq)]
pub struct StageShare {
    /// The pipeline stage (None without a pipeline).
    pub stage: Option<usize>,
    pub params: f64,
    pub act: f64,
    pub acc: f64,
}

/// Every stage's share for `recipe` at `tokens` tokens per micro-batch and `microbatches` per
/// step; exact with `model`, coarse (f64 from the config) without.
pub fn stage_shares(
    recipe: &Recipe,
    cfg: &ModelConfig,
    model: Option<&Transformer>,
    tokens: usize,
    microbatches: usize,
) -> Result<Vec<StageShare>> {
    let p = &recipe.parallel;
    let (stages, v) = (p.pp.max(1), p.pp_virtual_stages.max(1));
    let split =
        StageSplit::new(cfg.layers, stages, v, p.pp_layers.as_deref()).map_err(|e| user!("{e}"))?;
    let schedule =
        Schedule::new(&p.pp_schedule, stages, microbatches.max(1), v).map_err(|e| user!("{e}"))?;
    let kept = |blocks: usize| -> (f64, f64) {
        match model {
            Some(m) => {
                let (act, acc) = m.blocks_activation_elements(tokens, blocks);
                (act as f64, acc as f64)
            }
            None => (
                (blocks as f64 + 1.0) * tokens as f64 * cfg.hidden as f64,
                0.0,
            ),
        }
    };
    let shares = (0..stages)
        .map(|r| {
            let params = match model {
                Some(m) => exact_params(&m.layout, &split, r),
                None => coarse_params(cfg, &split, r),
            };
            let largest = split
                .chunks_of(r)
                .into_iter()
                .map(|c| kept(split.blocks[c].len()))
                .fold((0.0, 0.0), |a, b| if b.0 + b.1 > a.0 + a.1 { b } else { a });
            let in_flight = if stages == 1 {
                1.0 // the plain loop keeps one micro-batch at a time
            } else {
                schedule.expected_peak_in_flight(r) as f64
            };
            StageShare {
                stage: (stages > 1).then_some(r),
                params,
                act: in_flight * largest.0,
                acc: in_flight * largest.1,
            }
        })
        .collect();
    Ok(shares)
}

/// Parameters of the units stage `r` holds.
fn exact_params(layout: &ParamLayout, split: &StageSplit, r: usize) -> f64 {
    (0..layout.units.len())
        .filter(|&u| split.holding(layout, r, u) != Holding::Absent)
        .map(|u| layout.units[u].numel as f64)
        .sum()
}

/// The same from the config in f64: embedding tables, head, and per block the attention and
/// MLP matrices (norms and biases left out).
fn coarse_params(c: &ModelConfig, split: &StageSplit, r: usize) -> f64 {
    let (d, v, f) = (c.hidden as f64, c.vocab_size as f64, c.ffn as f64);
    let (qd, kvd) = (
        c.heads as f64 * c.head_dim as f64,
        c.kv_heads as f64 * c.head_dim as f64,
    );
    let mlp = if c.arch == Arch::Llama { 3.0 } else { 2.0 };
    let block = d * (2.0 * qd + 2.0 * kvd) + mlp * d * f;
    let positions = if c.arch == Arch::Gpt2 {
        c.max_positions as f64 * d
    } else {
        0.0
    };
    let chunks = split.chunks_of(r);
    let first = chunks.contains(&0);
    let last = chunks.contains(&split.last_chunk());
    let blocks: usize = chunks.iter().map(|&ch| split.blocks[ch].len()).sum();
    let embedding = if first || (last && c.tie_embeddings) {
        v * d + positions
    } else {
        0.0
    };
    let head = if last && !c.tie_embeddings {
        v * d
    } else {
        0.0
    };
    embedding + head + blocks as f64 * block
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recipe(sets: &[&str]) -> Recipe {
        let text = "[model]\nconfig = \"c.json\"\n[data]\npath = \"x\"\n[train]\nsteps = 1\nglobal_batch = 8\nout_dir = \"o\"\n";
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        Recipe::parse(text, "r.toml", &sets).unwrap()
    }

    #[test]
    fn stages_hold_their_units_and_one_f_one_b_keeps_p_minus_r_micro_batches() {
        let cfg = ModelConfig::from_json_str(
            r#"{"model_type": "gpt2", "vocab_size": 64, "n_embd": 16, "n_layer": 8, "n_head": 2, "n_positions": 32}"#,
            "c.json",
        )
        .unwrap();
        let model = Transformer::new(cfg.clone());
        let r = recipe(&["parallel.pp=4"]);
        let shares = stage_shares(&r, &cfg, Some(&model), 32, 8).unwrap();
        let total: f64 = shares.iter().map(|s| s.params).sum();
        // The tied table (and GPT-2's position table) is held twice: by stage 0 and the last.
        let embedding = model.layout.units[0].numel as f64;
        assert_eq!(total, model.layout.num_params() as f64 + embedding);
        let per_chunk = model.blocks_activation_elements(32, 2);
        for (r, s) in shares.iter().enumerate() {
            assert_eq!(s.stage, Some(r));
            assert_eq!(s.act, ((4 - r) * per_chunk.0) as f64, "stage {r}");
            assert_eq!(s.acc, ((4 - r) * per_chunk.1) as f64, "stage {r}");
        }
        // The coarse count is close to the exact one (norms and biases left out).
        let coarse = stage_shares(&r, &cfg, None, 32, 8).unwrap();
        for (c, e) in coarse.iter().zip(&shares) {
            assert!(c.params <= e.params && c.params > 0.9 * e.params);
        }
        // Without a pipeline: the whole model, one micro-batch.
        let one = stage_shares(&recipe(&[]), &cfg, Some(&model), 32, 8).unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].params, model.layout.num_params() as f64);
        assert_eq!(one[0].act, model.activation_elements(32).0 as f64);
    }
}
