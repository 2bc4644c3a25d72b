//! The batch the trainer consumes, token-major flattened over `rows x seq_len`.
//!
//! R = rows, S = seq_len, N = R*S.
//! - `input_ids[N]`: token ids; padding uses the tokenizer's pad id.
//! - `targets[N]`: already shifted (HF convention: position t predicts token t+1):
//!   `targets[t]` = id of the next token of the same document, or `IGNORE_INDEX` (-100) at a
//!   document's last token, where the loss is masked (prompts), and on padding.
//! - `positions[N]`: restart at 0 at every segment start (document or row start).
//! - `cu_seqlens`: segment offsets over the flattened N tokens, starting at 0 and ending at N;
//!   every row boundary is a segment boundary (padding is its own segment). Attention stays
//!   inside a segment (FlashAttention varlen convention); `max_seqlen` is the longest segment.
//! - `n_target_tokens`: number of targets != -100 (the loss denominator).

pub const IGNORE_INDEX: i32 = -100;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub rows: usize,
    pub seq_len: usize,
    pub input_ids: Vec<i32>,
    pub targets: Vec<i32>,
    pub positions: Vec<i32>,
    pub cu_seqlens: Vec<i32>,
    pub max_seqlen: usize,
    pub n_target_tokens: usize,
}

impl Batch {
    /// The segments of row `r` as (start, end) offsets within the row.
    pub fn row_segments(&self, r: usize) -> Vec<(usize, usize)> {
        let (lo, hi) = ((r * self.seq_len) as i32, ((r + 1) * self.seq_len) as i32);
        self.cu_seqlens
            .windows(2)
            .filter(|w| w[0] >= lo && w[1] <= hi)
            .map(|w| ((w[0] - lo) as usize, (w[1] - lo) as usize))
            .collect()
    }
}

/// Fills a `Batch` row by row, segment by segment.
pub struct BatchBuilder {
    b: Batch,
    pad_id: i32,
    row_fill: usize,
}

impl BatchBuilder {
    pub fn new(rows: usize, seq_len: usize, pad_id: u32) -> Self {
        let n = rows * seq_len;
        Self {
            b: Batch {
                rows,
                seq_len,
                input_ids: Vec::with_capacity(n),
                targets: Vec::with_capacity(n),
                positions: Vec::with_capacity(n),
                cu_seqlens: vec![0],
                max_seqlen: 0,
                n_target_tokens: 0,
            },
            pad_id: pad_id as i32,
            row_fill: 0,
        }
    }

    /// Room left in the current row.
    pub fn room(&self) -> usize {
        self.b.seq_len - self.row_fill
    }

    /// Appends one segment (a document or a piece of one) with its shifted targets.
    /// `ids.len()` must be at most `room()` and equal to `targets.len()`.
    pub fn push_segment(&mut self, ids: &[u32], targets: &[i32]) {
        assert!(ids.len() <= self.room() && ids.len() == targets.len());
        if ids.is_empty() {
            return;
        }
        self.b.input_ids.extend(ids.iter().map(|&t| t as i32));
        self.b.targets.extend_from_slice(targets);
        self.b.positions.extend(0..ids.len() as i32);
        self.b.n_target_tokens += targets.iter().filter(|&&t| t != IGNORE_INDEX).count();
        self.close_segment(ids.len());
    }

    fn close_segment(&mut self, len: usize) {
        self.row_fill += len;
        self.b.max_seqlen = self.b.max_seqlen.max(len);
        let end = self.b.input_ids.len() as i32;
        self.b.cu_seqlens.push(end);
    }

    /// Pads the current row to `seq_len` (one padding segment) and starts the next row.
    pub fn finish_row(&mut self) {
        let pad = self.room();
        if pad > 0 {
            let n = self.b.input_ids.len();
            self.b.input_ids.resize(n + pad, self.pad_id);
            self.b.targets.resize(n + pad, IGNORE_INDEX);
            self.b.positions.extend(0..pad as i32);
            self.close_segment(pad);
        }
        self.row_fill = 0;
    }

    pub fn finish(self) -> Batch {
        assert_eq!(
            self.b.input_ids.len(),
            self.b.rows * self.b.seq_len,
            "rows left unfinished"
        );
        self.b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_padding_and_offsets() {
        let mut b = BatchBuilder::new(2, 4, 9);
        b.push_segment(&[1, 2], &[2, IGNORE_INDEX]);
        b.push_segment(&[3], &[IGNORE_INDEX]);
        b.finish_row();
        b.push_segment(&[4, 5, 6, 7], &[5, 6, 7, 8]);
        b.finish_row();
        let b = b.finish();
        assert_eq!(b.input_ids, vec![1, 2, 3, 9, 4, 5, 6, 7]);
        assert_eq!(b.positions, vec![0, 1, 0, 0, 0, 1, 2, 3]);
        assert_eq!(b.cu_seqlens, vec![0, 2, 3, 4, 8]);
        assert_eq!(b.targets[3], IGNORE_INDEX);
        assert_eq!(b.n_target_tokens, 5);
        assert_eq!(b.max_seqlen, 4);
        assert_eq!(b.row_segments(0), vec![(0, 2), (2, 3), (3, 4)]);
        assert_eq!(b.row_segments(1), vec![(0, 4)]);
    }
}
