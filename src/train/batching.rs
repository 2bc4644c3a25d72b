//! Batch arithmetic: how a step's global batch splits over data-parallel ranks and micro-batches.
//!
//!   global_batch = dp × microbatches × micro_batch        (sequences)
//! `train.micro_batch` (sequences per forward/backward) and `parallel.microbatches` (forward/
//! backward passes per rank and step; the pipeline schedule's m) are two views of one number:
//! give either, or both when they agree; neither means one micro-batch of the whole per-rank
//! share.

use crate::error::Result;
use crate::recipe::Recipe;
use crate::user;

/// How one step is cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchPlan {
    /// Sequences per step on one data-parallel rank.
    pub per_rank: usize,
    /// Sequences per forward/backward.
    pub micro_batch: usize,
    /// Forward/backward passes per rank and step.
    pub microbatches: usize,
}

pub fn plan(recipe: &Recipe, dp: usize) -> Result<BatchPlan> {
    let t = &recipe.train;
    if t.global_batch % dp != 0 {
        return Err(user!(
            "train.global_batch = {} does not divide over {dp} data-parallel ranks",
            t.global_batch
        ));
    }
    let per_rank = t.global_batch / dp;
    let micro_batch = match (t.micro_batch, recipe.parallel.microbatches) {
        (Some(mb), None) => mb,
        (None, Some(m)) => {
            if m == 0 || per_rank % m != 0 {
                return Err(user!(
                    "parallel.microbatches = {m} does not divide the {per_rank} sequences each rank gets per step"
                ));
            }
            per_rank / m
        }
        (Some(mb), Some(m)) => {
            if mb * m != per_rank {
                return Err(user!(
                    "train.micro_batch = {mb} x parallel.microbatches = {m} is not the {per_rank} sequences each rank gets per step (train.global_batch / dp); set one of them"
                ));
            }
            mb
        }
        (None, None) => per_rank,
    };
    if micro_batch == 0 || per_rank % micro_batch != 0 {
        return Err(user!(
            "train.micro_batch = {micro_batch} does not divide the {per_rank} sequences each rank gets per step"
        ));
    }
    Ok(BatchPlan {
        per_rank,
        micro_batch,
        microbatches: per_rank / micro_batch,
    })
}

/// With sequence parallelism every forward's tokens (rows of `seq_len`: micro-batches, and the
/// one-row forwards evaluation may pad with) split evenly over the tp ranks.
pub fn check_sequence_split(recipe: &Recipe, seq_len: usize) -> Result<()> {
    let tp = recipe.parallel.tp;
    if recipe.parallel.sequence_parallel && seq_len % tp != 0 {
        return Err(user!(
            "parallel.sequence_parallel splits every row's tokens over parallel.tp = {tp} ranks, so data.seq_len = {seq_len} must be a multiple of {tp}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recipe(global: usize, mb: Option<usize>, m: Option<usize>) -> Recipe {
        let text = "[model]\nconfig = \"c.json\"\n[data]\nformat = \"text\"\npath = \"t.txt\"\n[train]\nsteps = 1\nglobal_batch = 1\nout_dir = \"o\"\n";
        let mut r = Recipe::parse(text, "test.toml", &[]).unwrap();
        r.train.global_batch = global;
        r.train.micro_batch = mb;
        r.parallel.microbatches = m;
        r
    }

    #[test]
    fn micro_batch_and_microbatches_are_two_views_of_one_split() {
        let p = plan(&recipe(16, None, None), 2).unwrap();
        assert_eq!((p.per_rank, p.micro_batch, p.microbatches), (8, 8, 1));
        let p = plan(&recipe(16, Some(2), None), 2).unwrap();
        assert_eq!((p.micro_batch, p.microbatches), (2, 4));
        let p = plan(&recipe(16, None, Some(4)), 2).unwrap();
        assert_eq!((p.micro_batch, p.microbatches), (2, 4));
        let p = plan(&recipe(16, Some(2), Some(4)), 2).unwrap();
        assert_eq!((p.micro_batch, p.microbatches), (2, 4));
        for (r, dp, says) in [
            (recipe(16, Some(2), Some(2)), 2, "is not the 8 sequences"),
            (
                recipe(16, None, Some(3)),
                2,
                "parallel.microbatches = 3 does not divide",
            ),
            (recipe(15, None, None), 2, "does not divide over 2"),
            (
                recipe(16, Some(3), None),
                2,
                "train.micro_batch = 3 does not divide",
            ),
        ] {
            let e = plan(&r, dp).unwrap_err().to_string();
            assert!(e.contains(says), "{e}");
        }
    }
}
