//! What a run says about itself before the first step: the plan (model, layout, batch, FLOPs,
//! estimated memory) and every rank's measured model-state bytes.

use super::comm_err;
use super::setup::Setup;
use crate::error::Result;
use ferrotron_zero::Collectives;
use serde_json::{json, Value};

impl<B: Collectives + 'static> Setup<B> {
    pub(super) fn print_plan(&self) {
        let t = &self.recipe.train;
        let dp = self.comms.dp.size();
        let params = self.model.layout.num_params();
        let accum = t.global_batch / dp / self.micro_batch;
        let c = &self.model.cfg;
        // fp32 master + compute copy + gradient + two Adam moments, before ZeRO sharding.
        let state_bytes = params as f64 * 20.0;
        // Activations forward keeps for backward, per micro-batch (exact; the working memory of
        // one block and the head's logits chunk come on top).
        let (act, acc) = self
            .model
            .activation_elements(self.micro_batch * self.seq_len);
        let act_bytes = (act as u64 * B::ACT_BYTES + acc as u64 * B::ACC_BYTES) as f64;
        crate::outln!(
            "ferrotron train: {} ({} layers, d={}, {} heads), {:.2} M parameters",
            c.model_type,
            c.layers,
            c.hidden,
            c.heads,
            params as f64 / 1e6
        );
        let device = if t.device == "cuda" {
            let comm = match self.comms.dp.nccl() {
                Some(_) => "nccl",
                None => "host-staged",
            };
            format!("cuda ({}), gpu comm {comm}", self.recipe.precision())
        } else {
            format!("cpu ({})", self.recipe.precision())
        };
        crate::outln!(
            "  world {} = pp {} x dp {dp} x tp {}; ZeRO stage {}; device {device}",
            self.comms.world.size(),
            self.recipe.parallel.pp,
            self.recipe.parallel.tp,
            self.recipe.parallel.zero_stage,
        );
        crate::outln!(
            "  global batch {} sequences x {} tokens = {} tokens/step; micro-batch {} per rank, {} accumulation step(s)",
            t.global_batch,
            self.seq_len,
            t.global_batch * self.seq_len,
            self.micro_batch,
            accum
        );
        crate::outln!(
            "  model FLOPs per token: {:.3e} (6 x {} matmul parameters + 12 x layers x d x seq_len)",
            self.model.flops_per_token(self.seq_len),
            self.model.matmul_params()
        );
        crate::outln!(
            "  estimated memory per rank: model state {} (before sharding), activations kept for backward {} per micro-batch (activation checkpointing: {})",
            binary_units(state_bytes),
            binary_units(act_bytes),
            t.activation_checkpointing
        );
        if let Some(p) = &self.pipeline {
            let tokens = self.micro_batch * self.seq_len;
            for line in p.describe(&self.model, tokens, B::ACT_BYTES) {
                crate::outln!("  {line}");
            }
        }
        crate::outln!("  {}", self.data.stats.summary());
        crate::outln!("  {} steps from step {}", t.steps, self.start_step);
    }

    /// Every rank's model-state bytes; rank 0 prints the table. Returns the JSON rows.
    pub fn memory_table(&self) -> Result<Value> {
        let m = self.engine.memory();
        let mine = [
            m.parameters as f64,
            m.gradients as f64,
            m.optimizer_states as f64,
            m.gathered_peak as f64,
            m.padding as f64,
        ];
        let world = &self.comms.world;
        let mut all = vec![0.0f64; mine.len() * world.size()];
        world
            .all_gather((&mine[..]).into(), (&mut all[..]).into())
            .map_err(comm_err)?;
        let rows: Vec<Value> = all
            .chunks(mine.len())
            .enumerate()
            .map(|(r, v)| {
                json!({"rank": r, "parameters": v[0], "gradients": v[1], "optimizer_states": v[2], "gathered_peak": v[3], "padding": v[4]})
            })
            .collect();
        if self.rank0 {
            crate::outln!(
                "  model-state bytes per rank (ZeRO stage {}):",
                self.engine.stage()
            );
            crate::outln!(
                "    rank   parameters    gradients  optim states  gathered peak  padding"
            );
            for v in all.chunks(mine.len()).enumerate() {
                let (r, v) = v;
                crate::outln!(
                    "    {r:4} {:12.0} {:12.0} {:13.0} {:14.0} {:8.0}",
                    v[0],
                    v[1],
                    v[2],
                    v[3],
                    v[4]
                );
            }
        }
        Ok(Value::Array(rows))
    }
}

/// A byte count in the largest binary unit that keeps it at least 1 (1536 → "1.5 KiB").
pub(super) fn binary_units(bytes: f64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut v = bytes;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{v:.0} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn byte_counts_read_in_binary_units() {
        assert_eq!(super::binary_units(512.0), "512 B");
        assert_eq!(super::binary_units(1536.0), "1.5 KiB");
        assert_eq!(super::binary_units(3.0 * 1048576.0), "3.0 MiB");
        assert_eq!(super::binary_units(24.8e9), "23.1 GiB");
    }
}
