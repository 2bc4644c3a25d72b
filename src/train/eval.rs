//! Validation loss: one number per recipe, whatever the layout.
//!
//! Rows: the first R rows of the validation split, R = min(validation rows, eval_batches × G)
//! with G = train.global_batch. A validation batch is a global batch, so which rows count depends
//! on the recipe alone, never on dp, the micro-batch or the ZeRO stage.
//!
//!   val_loss = Σ_{rows < R} Σ_{target tokens t} CE_t  /  #target tokens in those rows
//!
//! Split: rank r of dp takes rows [r·R/dp, (r+1)·R/dp) (contiguous; sizes differ by at most one)
//! and runs them in forwards of at most `micro_batch` rows. Every rank runs the same number of
//! forwards, F = ⌈⌈R/dp⌉ / micro_batch⌉: a rank with fewer rows pads with one-row forwards whose
//! loss is discarded, because under ZeRO-3 every forward all-gathers every unit and each gather
//! needs every rank of the group. Then one all-reduce of (loss sum, target count) over dp.

use super::comm_err;
use crate::data::Datasets;
use crate::error::Result;
use crate::model::{DeviceBatch, HostBatch, Transformer};
use ferrotron_kernels::Backend;
use ferrotron_parallel::{Comm, ReduceOp};
use ferrotron_zero::Engine;
use std::ops::Range;

/// What one evaluation measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EvalResult {
    /// Mean cross-entropy per target token over the evaluated rows.
    pub loss: f64,
    /// Validation rows evaluated (R).
    pub rows: usize,
    /// Target tokens in those rows (the denominator).
    pub tokens: u64,
}

/// R: the validation rows an evaluation covers.
pub fn eval_rows(val_rows: usize, eval_batches: usize, global_batch: usize) -> usize {
    val_rows.min(eval_batches.saturating_mul(global_batch))
}

/// The forwards of rank `rank` of `dp` over R = `total` rows: a row range, or None for a padding
/// forward. Every rank gets the same number of entries.
pub fn rank_forwards(
    total: usize,
    rank: usize,
    dp: usize,
    micro: usize,
) -> Vec<Option<Range<usize>>> {
    let micro = micro.max(1);
    let (lo, hi) = (rank * total / dp, (rank + 1) * total / dp);
    let forwards = total.div_ceil(dp).div_ceil(micro);
    (0..forwards)
        .map(|i| {
            let start = lo + i * micro;
            (start < hi).then(|| start..(start + micro).min(hi))
        })
        .collect()
}

/// Mean held-out loss over `eval_rows(...)` validation rows, split over the dp ranks as above.
/// Collective over `dp` (and, at ZeRO-3, the engine's gathers). None when there are no rows.
#[allow(clippy::too_many_arguments)]
pub fn evaluate<B: Backend>(
    b: &B,
    model: &Transformer,
    engine: &mut dyn Engine<B>,
    data: &Datasets,
    dp: &dyn Comm,
    micro_batch: usize,
    eval_batches: usize,
    global_batch: usize,
) -> Result<Option<EvalResult>> {
    let total = eval_rows(data.val.len(), eval_batches, global_batch);
    if total == 0 {
        return Ok(None);
    }
    let (mut loss_sum, mut targets) = (0.0f64, 0.0f64);
    for forward in rank_forwards(total, dp.rank(), dp.size(), micro_batch) {
        let ids: Vec<usize> = forward.clone().unwrap_or(0..1).collect();
        let batch = data.val.batch(&ids)?;
        let n_targets = batch.n_target_tokens as f64;
        let dev = DeviceBatch::upload(b, &HostBatch::from(batch))?;
        let fwd = model.forward(b, engine, &dev)?;
        let (loss, _) = model.head(b, engine, &dev, &fwd, None, None)?;
        if forward.is_some() {
            loss_sum += loss;
            targets += n_targets;
        }
    }
    let mut sums = [loss_sum, targets];
    dp.all_reduce((&mut sums[..]).into(), ReduceOp::Sum)
        .map_err(comm_err)?;
    let [loss_sum, targets] = sums;
    Ok((targets > 0.0).then(|| EvalResult {
        loss: loss_sum / targets,
        rows: total,
        tokens: targets as u64,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every rank runs the same number of forwards, and together they cover rows 0..R once.
    #[test]
    fn ranks_cover_every_row_once_in_equal_numbers_of_forwards() {
        for total in [0, 1, 2, 5, 13, 48] {
            for dp in 1..=5 {
                for micro in 1..=4 {
                    let plans: Vec<_> = (0..dp)
                        .map(|r| rank_forwards(total, r, dp, micro))
                        .collect();
                    assert!(plans.iter().all(|p| p.len() == plans[0].len()));
                    let mut rows: Vec<usize> = plans
                        .iter()
                        .flatten()
                        .flatten()
                        .cloned()
                        .flatten()
                        .collect();
                    rows.sort_unstable();
                    assert_eq!(
                        rows,
                        (0..total).collect::<Vec<_>>(),
                        "R {total} dp {dp} micro {micro}"
                    );
                    assert!(plans.iter().flatten().flatten().all(|r| r.len() <= micro));
                }
            }
        }
        // 13 rows over 3 ranks, 2 rows per forward: 4 + 4 + 5 rows, 3 forwards each.
        assert_eq!(
            rank_forwards(13, 0, 3, 2),
            vec![Some(0..2), Some(2..4), None]
        );
        assert_eq!(
            rank_forwards(13, 2, 3, 2),
            vec![Some(8..10), Some(10..12), Some(12..13)]
        );
    }

    #[test]
    fn rows_follow_the_global_batch_not_the_layout() {
        assert_eq!(eval_rows(123, 8, 8), 64);
        assert_eq!(eval_rows(13, 8, 6), 13);
        assert_eq!(eval_rows(10, usize::MAX, 2), 10);
    }
}
