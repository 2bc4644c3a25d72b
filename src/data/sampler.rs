//! Deterministic sampling of training rows.
//!
//! Epoch e visits every row once in the order of a Fisher-Yates permutation driven by
//! ChaCha8(seed, stream = e) (our own shuffle, so the order never changes with a `rand` release).
//! `next_global_batch(G)` returns the next G row ids, crossing into the next epoch when needed.
//! Data parallelism slices the same global batch: rank r of dp takes rows [r*G/dp, (r+1)*G/dp),
//! then cuts its slice into microbatches, so 1, 2 or 4 ranks see the same global batch.
//! `SamplerState` (seed, epoch, cursor, n_rows) is saved with a checkpoint; `from_state` resumes
//! exactly where the run stopped. Validation rows are 0..n in fixed order (`eval_order` cuts them
//! into batches; the trainer takes its rows as train/eval.rs says).

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::user;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SamplerState {
    pub seed: u64,
    pub epoch: u64,
    /// Rows of `epoch` already handed out.
    pub cursor: usize,
    /// Training rows when the state was saved (a resumed run must see the same dataset).
    pub n_rows: usize,
}

#[derive(Debug, Clone)]
pub struct Sampler {
    state: SamplerState,
    perm: Vec<u32>,
}

/// The order of epoch `epoch` over `n` rows.
pub fn permutation(n: usize, seed: u64, epoch: u64) -> Vec<u32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(epoch);
    let mut p: Vec<u32> = (0..n as u32).collect();
    for i in (1..n).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        p.swap(i, j);
    }
    p
}

impl Sampler {
    pub fn new(n_rows: usize, seed: u64) -> Result<Self> {
        Self::from_state(
            SamplerState {
                seed,
                epoch: 0,
                cursor: 0,
                n_rows,
            },
            n_rows,
        )
    }

    /// Resumes from a saved state; `n_rows` is the training set now loaded.
    pub fn from_state(state: SamplerState, n_rows: usize) -> Result<Self> {
        if n_rows == 0 {
            return Err(user!(
                "the training set has no rows: add data or lower data.val_fraction"
            ));
        }
        if state.n_rows != n_rows {
            return Err(user!(
                "the checkpoint's data sampler was saved over {} training rows but the dataset now has {}; the data or data.seq_len changed",
                state.n_rows, n_rows
            ));
        }
        if state.cursor > n_rows {
            return Err(user!(
                "the checkpoint's data sampler cursor {} is past the {} training rows",
                state.cursor,
                n_rows
            ));
        }
        let perm = permutation(n_rows, state.seed, state.epoch);
        Ok(Self { state, perm })
    }

    pub fn state(&self) -> SamplerState {
        self.state.clone()
    }

    pub fn epoch(&self) -> u64 {
        self.state.epoch
    }

    /// The next `global_rows` row ids (all ranks compute the same list).
    pub fn next_global_batch(&mut self, global_rows: usize) -> Vec<usize> {
        let mut out = Vec::with_capacity(global_rows);
        while out.len() < global_rows {
            if self.state.cursor == self.perm.len() {
                self.state.epoch += 1;
                self.state.cursor = 0;
                self.perm = permutation(self.state.n_rows, self.state.seed, self.state.epoch);
            }
            out.push(self.perm[self.state.cursor] as usize);
            self.state.cursor += 1;
        }
        out
    }
}

/// Rank `rank`'s share of a global batch: rows [rank*G/dp, (rank+1)*G/dp).
pub fn rank_slice(global: &[usize], rank: usize, dp: usize) -> Result<&[usize]> {
    if dp == 0 || rank >= dp || global.len() % dp != 0 {
        return Err(user!(
            "the global batch of {} rows does not split over {} data-parallel ranks",
            global.len(),
            dp
        ));
    }
    let n = global.len() / dp;
    Ok(&global[rank * n..(rank + 1) * n])
}

/// Splits a rank's rows into microbatches of `micro_rows` rows.
pub fn microbatches(rows: &[usize], micro_rows: usize) -> Result<Vec<&[usize]>> {
    if micro_rows == 0 || rows.len() % micro_rows != 0 {
        return Err(user!(
            "{} rows per rank do not split into microbatches of {} rows",
            rows.len(),
            micro_rows
        ));
    }
    Ok(rows.chunks(micro_rows).collect())
}

/// Validation order: batches of `rows_per_batch` over rows 0..n_rows, in order, at most
/// `max_batches` (the last batch may be short).
pub fn eval_order(n_rows: usize, rows_per_batch: usize, max_batches: usize) -> Vec<Vec<usize>> {
    (0..n_rows)
        .collect::<Vec<_>>()
        .chunks(rows_per_batch.max(1))
        .take(max_batches)
        .map(<[usize]>::to_vec)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_is_a_permutation_and_depends_on_epoch_and_seed() {
        let p = permutation(100, 7, 0);
        let mut s = p.clone();
        s.sort();
        assert_eq!(s, (0..100).collect::<Vec<u32>>());
        assert_eq!(p, permutation(100, 7, 0));
        assert_ne!(p, permutation(100, 7, 1));
        assert_ne!(p, permutation(100, 8, 0));
    }

    #[test]
    fn epochs_cover_every_row_once() {
        let mut s = Sampler::new(10, 1).unwrap();
        let mut a = s.next_global_batch(4);
        a.extend(s.next_global_batch(4));
        a.extend(s.next_global_batch(4)); // crosses into epoch 1
        assert_eq!(s.epoch(), 1);
        let mut first: Vec<usize> = a[..10].to_vec();
        first.sort();
        assert_eq!(first, (0..10).collect::<Vec<_>>());
        assert_eq!(
            &a[10..],
            &permutation(10, 1, 1)[..2]
                .iter()
                .map(|&x| x as usize)
                .collect::<Vec<_>>()[..]
        );
    }
}
