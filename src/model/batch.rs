//! A batch on the device, in the layout every op expects: tokens flattened row-major, N = rows·S.
//!
//! `targets` are already shifted (HF convention: position t predicts token t+1 of the same
//! document; −100 where no loss is taken). `cu_seqlens` [segments + 1] marks documents: attention
//! never crosses them, and `positions` restart at 0 in each.

use ferrotron_kernels::{Backend, Result};

/// The host-side batch (what the data pipeline produces).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HostBatch {
    pub input_ids: Vec<i32>,
    pub targets: Vec<i32>,
    pub positions: Vec<i32>,
    pub cu_seqlens: Vec<i32>,
}

impl HostBatch {
    /// Unpacked rows: each of `rows` rows of `seq` tokens is one document; `labels` [rows·seq]
    /// in HF form (unshifted, −100 = ignore).
    pub fn from_rows(input_ids: &[i32], labels: &[i32], rows: usize, seq: usize) -> Self {
        assert_eq!(input_ids.len(), rows * seq);
        assert_eq!(labels.len(), rows * seq);
        let mut targets = vec![-100; rows * seq];
        for r in 0..rows {
            for t in 0..seq.saturating_sub(1) {
                targets[r * seq + t] = labels[r * seq + t + 1];
            }
        }
        HostBatch {
            input_ids: input_ids.to_vec(),
            targets,
            positions: (0..rows).flat_map(|_| 0..seq as i32).collect(),
            cu_seqlens: (0..=rows).map(|r| (r * seq) as i32).collect(),
        }
    }

    pub fn tokens(&self) -> usize {
        self.input_ids.len()
    }

    /// Tokens that carry a loss target.
    pub fn target_count(&self) -> usize {
        self.targets.iter().filter(|&&t| t != -100).count()
    }

    pub fn max_seqlen(&self) -> usize {
        self.cu_seqlens
            .windows(2)
            .map(|w| (w[1] - w[0]) as usize)
            .max()
            .unwrap_or(0)
    }
}

/// Global id `id` as a row of the vocabulary slice `start..start + rows`, −1 outside it.
fn local_row(id: i32, start: usize, rows: usize) -> i32 {
    match usize::try_from(id) {
        Ok(i) if (start..start + rows).contains(&i) => (i - start) as i32,
        _ => -1,
    }
}

pub struct DeviceBatch<B: Backend> {
    pub input_ids: B::Idx,
    /// Under tensor parallelism: each id as a row of this rank's vocabulary slice, −1 where
    /// another rank holds it (`with_vocab_rows`); None without.
    pub vocab_ids: Option<B::Idx>,
    /// The ids the embedding's gradient is scattered by, when they differ from the lookup's:
    /// the padding row's (`ModelConfig::embedding_padding_idx`) marked −1, so its lookups pass
    /// no gradient back (`without_padding_grad`); None: the lookup's ids.
    pub grad_ids: Option<B::Idx>,
    pub targets: B::Idx,
    pub positions: B::Idx,
    pub cu_seqlens: B::Idx,
    pub tokens: usize,
    pub segments: usize,
    pub max_seqlen: usize,
    /// The largest position + 1 (what transformers calls the forward's seq_len when it picks
    /// longrope's table).
    pub positions_end: usize,
}

impl<B: Backend> DeviceBatch<B> {
    pub fn upload(b: &B, h: &HostBatch) -> Result<Self> {
        Ok(DeviceBatch {
            input_ids: b.upload_idx(&h.input_ids)?,
            vocab_ids: None,
            grad_ids: None,
            targets: b.upload_idx(&h.targets)?,
            positions: b.upload_idx(&h.positions)?,
            cu_seqlens: b.upload_idx(&h.cu_seqlens)?,
            tokens: h.tokens(),
            segments: h.cu_seqlens.len() - 1,
            max_seqlen: h.max_seqlen(),
            positions_end: h
                .positions
                .iter()
                .max()
                .map_or(0, |&p| p.max(-1) as usize + 1),
        })
    }

    /// `upload` for a rank holding vocabulary rows `start..start + rows` (a vocab-parallel
    /// embedding): also the ids as rows of that slice, −1 for the others.
    pub fn upload_with_vocab_rows(b: &B, h: &HostBatch, start: usize, rows: usize) -> Result<Self> {
        let mut d = Self::upload(b, h)?;
        let local: Vec<i32> = h
            .input_ids
            .iter()
            .map(|&id| local_row(id, start, rows))
            .collect();
        d.vocab_ids = Some(b.upload_idx(&local)?);
        Ok(d)
    }

    /// Sets `grad_ids` when the batch holds the padding row `padding_idx` (a global id): the
    /// table ids (local under a vocab-parallel `start..start + rows`, else global) with that
    /// row's marked −1.
    pub fn without_padding_grad(
        mut self,
        b: &B,
        h: &HostBatch,
        padding_idx: Option<usize>,
        vocab_rows: Option<(usize, usize)>,
    ) -> Result<Self> {
        let Some(pad) = padding_idx.and_then(|p| i32::try_from(p).ok()) else {
            return Ok(self);
        };
        if !h.input_ids.contains(&pad) {
            return Ok(self);
        }
        let ids: Vec<i32> = h
            .input_ids
            .iter()
            .map(|&id| match (id == pad, vocab_rows) {
                (true, _) => -1,
                (false, None) => id,
                (false, Some((start, rows))) => local_row(id, start, rows),
            })
            .collect();
        self.grad_ids = Some(b.upload_idx(&ids)?);
        Ok(self)
    }
}
