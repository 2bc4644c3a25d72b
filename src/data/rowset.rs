//! Rows: the unit the sampler permutes and a batch is made of. A row is `seq_len` tokens after
//! padding, made of segments (documents or pieces of one) that never attend to each other.
//!
//! - Text rows are windows `[start, start+len)` of a file's token stream (documents end at eos).
//!   A segment ends after each eos and at the row's end. Targets: the next token, -100 after an
//!   eos; at the row's last token the next stream token when the document goes on (`cont`).
//! - Example rows (alpaca/chat) hold whole examples; targets: the next token where it is labelled,
//!   else -100; -100 at each example's last token.

use std::sync::Arc;

use super::batch::{Batch, BatchBuilder, IGNORE_INDEX};
use super::cache::TokenFile;
use super::sft::Example;
use crate::error::{Error, Result};

pub enum Store {
    Text { files: Vec<TokenFile>, eos: u32 },
    Examples(Vec<Example>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Row {
    Text {
        file: u32,
        start: u64,
        len: u32,
        cont: bool,
    },
    Examples(Vec<u32>),
}

/// A split (train or validation): rows over a shared token store.
#[derive(Clone)]
pub struct RowSet {
    pub(crate) store: Arc<Store>,
    pub(crate) rows: Vec<Row>,
    pub(crate) seq_len: usize,
    pub(crate) pad_id: u32,
}

impl RowSet {
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn seq_len(&self) -> usize {
        self.seq_len
    }

    /// Tokens that are not padding, over all rows.
    pub fn filled_tokens(&self) -> usize {
        self.rows
            .iter()
            .map(|r| match (r, &*self.store) {
                (Row::Text { len, .. }, _) => *len as usize,
                (Row::Examples(ix), Store::Examples(ex)) => {
                    ix.iter().map(|&i| ex[i as usize].ids.len()).sum()
                }
                _ => 0,
            })
            .sum()
    }

    /// The batch of rows `ids` (indices into this split), in that order.
    pub fn batch(&self, ids: &[usize]) -> Result<Batch> {
        let mut b = BatchBuilder::new(ids.len(), self.seq_len, self.pad_id);
        let mut targets = Vec::with_capacity(self.seq_len);
        for &i in ids {
            let row = self.rows.get(i).ok_or_else(|| {
                Error::Internal(format!(
                    "row {i} requested from a split of {} rows",
                    self.rows.len()
                ))
            })?;
            match (row, &*self.store) {
                (
                    &Row::Text {
                        file,
                        start,
                        len,
                        cont,
                    },
                    Store::Text { files, eos },
                ) => {
                    let all = files[file as usize].tokens();
                    let (s, e) = (start as usize, start as usize + len as usize);
                    let next = if cont {
                        all.get(e).map(|&t| t as i32)
                    } else {
                        None
                    };
                    text_row(&mut b, &all[s..e], *eos, next, &mut targets);
                }
                (Row::Examples(ix), Store::Examples(ex)) => {
                    for &k in ix {
                        let ex = &ex[k as usize];
                        targets.clear();
                        targets.extend((0..ex.ids.len()).map(|t| match ex.label.get(t + 1) {
                            Some(true) => ex.ids[t + 1] as i32,
                            _ => IGNORE_INDEX,
                        }));
                        b.push_segment(&ex.ids, &targets);
                    }
                }
                _ => return Err(Error::Internal("row kind does not match its store".into())),
            }
            b.finish_row();
        }
        Ok(b.finish())
    }
}

fn text_row(
    b: &mut BatchBuilder,
    toks: &[u32],
    eos: u32,
    next: Option<i32>,
    targets: &mut Vec<i32>,
) {
    let mut seg = 0;
    for t in 0..toks.len() {
        let last = t + 1 == toks.len();
        if toks[t] == eos || last {
            targets.clear();
            targets.extend((seg..=t).map(|i| {
                if toks[i] == eos {
                    IGNORE_INDEX
                } else if i + 1 < toks.len() {
                    toks[i + 1] as i32
                } else {
                    next.unwrap_or(IGNORE_INDEX)
                }
            }));
            b.push_segment(&toks[seg..=t], targets);
            seg = t + 1;
        }
    }
}
