//! Plain data parallelism (ZeRO stage 0): the global batch is split into equal contiguous row
//! ranges, one per data-parallel rank, so that 1, 2 and 4 ranks see the same global batch; each
//! rank averages its loss over its local rows, and the gradients are averaged over the dp group
//! (sum / dp), which equals the gradient of the mean loss over the global batch.

use std::ops::Range;

use crate::comm::error::CommError;
use crate::comm::Comm;
use crate::ReduceOp;

/// Rows of the global batch per data-parallel rank; the batch must divide evenly.
pub fn local_batch_size(global_batch: usize, dp_size: usize) -> Result<usize, String> {
    if dp_size == 0 || global_batch == 0 || !global_batch.is_multiple_of(dp_size) {
        return Err(format!(
            "the global batch of {global_batch} rows does not split evenly over {dp_size} data-parallel ranks"
        ));
    }
    Ok(global_batch / dp_size)
}

/// The rows of the global batch that data-parallel rank `dp_rank` trains on.
pub fn local_rows(
    global_batch: usize,
    dp_rank: usize,
    dp_size: usize,
) -> Result<Range<usize>, String> {
    let per_rank = local_batch_size(global_batch, dp_size)?;
    if dp_rank >= dp_size {
        return Err(format!(
            "data-parallel rank {dp_rank} is not below {dp_size}"
        ));
    }
    Ok(dp_rank * per_rank..(dp_rank + 1) * per_rank)
}

/// Averages a flat gradient buffer over the data-parallel group (in place).
pub fn average_gradients(dp: &dyn Comm, grads: &mut [f32]) -> Result<(), CommError> {
    dp.all_reduce(grads.into(), ReduceOp::Avg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::comm::local::LocalComm;

    #[test]
    fn ranks_cover_the_global_batch_once_in_order() {
        for dp in [1, 2, 4] {
            let rows: Vec<usize> = (0..dp)
                .flat_map(|r| local_rows(8, r, dp).unwrap())
                .collect();
            assert_eq!(rows, (0..8).collect::<Vec<_>>());
        }
        assert_eq!(local_rows(8, 1, 4).unwrap(), 2..4);
    }

    #[test]
    fn uneven_batches_are_rejected_with_the_numbers() {
        assert_eq!(
            local_batch_size(6, 4).unwrap_err(),
            "the global batch of 6 rows does not split evenly over 4 data-parallel ranks"
        );
        assert!(local_rows(8, 4, 4).is_err());
    }

    #[test]
    fn averaging_on_one_rank_leaves_gradients_unchanged() {
        let mut g = vec![0.5f32, -2.0];
        average_gradients(&LocalComm::named("dp"), &mut g).unwrap();
        assert_eq!(g, vec![0.5, -2.0]);
    }
}
