//! Pipeline stages as a statement about units: which blocks each model chunk runs and which
//! units each pipeline rank holds.
//!
//! The model is cut into C = p·v chunks in a chain; chunk c runs blocks [s_c, e_c) and lives on
//! pipeline rank c mod p (parallel/src/pipeline/action.rs; v = 1: chunk = stage = rank). Chunk 0
//! also runs the embedding, chunk C − 1 the final norm and the head. Blocks per chunk: the
//! recipe's `parallel.pp_layers` (C counts, each ≥ 1, summing to L), or balanced: ⌊L/C⌋ each and
//! one more for the first L mod C chunks (so the last chunk, which also runs the head, gets the
//! fewer).
//!
//! A rank holds the units its chunks run. With tied embeddings (no head unit) the output
//! projection is the token table, so the rank of chunk C − 1 also holds a copy of the embedding
//! unit (unless it holds chunk 0 itself, p = 1): the whole unit, so that the two copies shard
//! alike over dp and their gradients can be summed range for range (GPT-2's position table rides
//! along in the copy, unused: its gradient there is 0).

use super::layout::{ParamLayout, UnitKind};
use std::ops::Range;

/// How one rank holds one unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Holding {
    /// Not on this rank.
    Absent,
    /// Run by one of this rank's chunks.
    Own,
    /// The last stage's copy of a tied embedding (see the module comment).
    TiedCopy,
}

/// The blocks of every chunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StageSplit {
    /// p: pipeline ranks.
    pub stages: usize,
    /// v: chunks per rank.
    pub virtual_stages: usize,
    /// Per chunk (global order): its blocks, contiguous, in order, covering 0..L.
    pub blocks: Vec<Range<usize>>,
}

impl StageSplit {
    /// The split of `layers` blocks over `stages` × `virtual_stages` chunks, balanced or as
    /// `pp_layers` gives it; a split that cannot be made is one sentence naming the keys.
    pub fn new(
        layers: usize,
        stages: usize,
        virtual_stages: usize,
        pp_layers: Option<&[usize]>,
    ) -> Result<StageSplit, String> {
        let chunks = stages * virtual_stages;
        if chunks == 0 {
            return Err("parallel.pp and parallel.pp_virtual_stages must be at least 1".into());
        }
        let counts: Vec<usize> = match pp_layers {
            Some(given) => {
                if given.len() != chunks {
                    return Err(format!(
                        "parallel.pp_layers lists {} chunks, but parallel.pp = {stages} x parallel.pp_virtual_stages = {virtual_stages} makes {chunks}",
                        given.len()
                    ));
                }
                if let Some(i) = given.iter().position(|&n| n == 0) {
                    return Err(format!(
                        "parallel.pp_layers gives chunk {i} no blocks; every chunk needs at least one"
                    ));
                }
                let sum: usize = given.iter().sum();
                if sum != layers {
                    return Err(format!(
                        "parallel.pp_layers = {given:?} adds up to {sum} blocks, but the model has {layers} (num_hidden_layers / n_layer of its config.json)"
                    ));
                }
                given.to_vec()
            }
            None => {
                if layers < chunks {
                    return Err(format!(
                        "parallel.pp = {stages} x parallel.pp_virtual_stages = {virtual_stages} needs {chunks} model chunks of at least one block each, but the model has {layers} blocks (num_hidden_layers / n_layer of its config.json)"
                    ));
                }
                let (base, extra) = (layers / chunks, layers % chunks);
                (0..chunks).map(|c| base + usize::from(c < extra)).collect()
            }
        };
        let mut at = 0;
        let blocks = counts
            .iter()
            .map(|&n| {
                at += n;
                at - n..at
            })
            .collect();
        Ok(StageSplit {
            stages,
            virtual_stages,
            blocks,
        })
    }

    /// C = p·v.
    pub fn chunks(&self) -> usize {
        self.blocks.len()
    }
    pub fn last_chunk(&self) -> usize {
        self.chunks() - 1
    }
    /// The rank that runs `chunk`: chunk mod p.
    pub fn owner(&self, chunk: usize) -> usize {
        chunk % self.stages
    }
    /// `rank`'s chunks in model order: rank, rank + p, …
    pub fn chunks_of(&self, rank: usize) -> Vec<usize> {
        (0..self.virtual_stages)
            .map(|j| j * self.stages + rank)
            .collect()
    }
    /// Whether the blocks are not all split alike (the plan says so).
    pub fn is_uneven(&self) -> bool {
        self.blocks.iter().any(|b| b.len() != self.blocks[0].len())
    }

    /// The chunk that runs unit `u` of `layout`.
    pub fn chunk_of(&self, layout: &ParamLayout, u: usize) -> usize {
        match layout.units[u].kind {
            UnitKind::Embedding => 0,
            UnitKind::Block(l) => self
                .blocks
                .iter()
                .position(|b| b.contains(&l))
                .expect("the split covers every block"),
            UnitKind::FinalNorm | UnitKind::Head => self.last_chunk(),
        }
    }

    /// How `rank` holds unit `u` of `layout` (see the module comment).
    pub fn holding(&self, layout: &ParamLayout, rank: usize, u: usize) -> Holding {
        let chunk = self.chunk_of(layout, u);
        if self.owner(chunk) == rank {
            return Holding::Own;
        }
        let tied = layout.unit_of(UnitKind::Head).is_none();
        let embedding = layout.units[u].kind == UnitKind::Embedding;
        if tied && embedding && self.owner(self.last_chunk()) == rank {
            return Holding::TiedCopy;
        }
        Holding::Absent
    }

    /// What `rank` runs, for the plan: "embedding, blocks 0-3, blocks 8-9".
    pub fn describe(&self, rank: usize) -> String {
        let mut parts = Vec::new();
        for c in self.chunks_of(rank) {
            if c == 0 {
                parts.push("embedding".to_string());
            }
            let b = &self.blocks[c];
            parts.push(match b.len() {
                1 => format!("block {}", b.start),
                _ => format!("blocks {}-{}", b.start, b.end - 1),
            });
            if c == self.last_chunk() {
                parts.push("final norm and head".to_string());
            }
        }
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelConfig;

    fn layout(layers: usize, tied: bool) -> ParamLayout {
        let text = format!(
            r#"{{"model_type": "llama", "vocab_size": 32, "hidden_size": 8, "intermediate_size": 16,
            "num_hidden_layers": {layers}, "num_attention_heads": 2, "num_key_value_heads": 2,
            "max_position_embeddings": 16, "tie_word_embeddings": {tied}}}"#
        );
        ParamLayout::new(&ModelConfig::from_json_str(&text, "config.json").unwrap())
    }

    #[test]
    fn balanced_splits_give_the_remainder_to_the_first_chunks() {
        let s = StageSplit::new(10, 4, 1, None).unwrap();
        assert_eq!(s.blocks, vec![0..3, 3..6, 6..8, 8..10]);
        assert!(s.is_uneven());
        let s = StageSplit::new(8, 2, 2, None).unwrap();
        assert_eq!(s.blocks, vec![0..2, 2..4, 4..6, 6..8]);
        assert!(!s.is_uneven());
        assert_eq!(s.chunks_of(1), vec![1, 3]);
        assert_eq!(s.describe(0), "embedding, blocks 0-1, blocks 4-5");
        assert_eq!(s.describe(1), "blocks 2-3, blocks 6-7, final norm and head");
        let s = StageSplit::new(3, 3, 1, None).unwrap();
        assert_eq!(s.describe(2), "block 2, final norm and head");
    }

    #[test]
    fn given_splits_are_checked_against_the_chunks_and_the_model() {
        let s = StageSplit::new(8, 2, 1, Some(&[5, 3])).unwrap();
        assert_eq!(s.blocks, vec![0..5, 5..8]);
        for (given, says) in [
            (&[4, 4, 0][..], "lists 3 chunks, but parallel.pp = 2"),
            (&[8, 0], "gives chunk 1 no blocks"),
            (&[4, 3], "adds up to 7 blocks, but the model has 8"),
        ] {
            let e = StageSplit::new(8, 2, 1, Some(given)).unwrap_err();
            assert!(e.contains(says), "{e}");
        }
        let e = StageSplit::new(3, 2, 2, None).unwrap_err();
        assert!(e.contains("needs 4 model chunks"), "{e}");
    }

    #[test]
    fn units_go_to_their_chunks_and_a_tied_table_is_copied_to_the_last_stage() {
        for tied in [false, true] {
            let l = layout(4, tied);
            let s = StageSplit::new(4, 2, 1, None).unwrap();
            let held = |rank: usize| -> Vec<Holding> {
                (0..l.units.len()).map(|u| s.holding(&l, rank, u)).collect()
            };
            use Holding::*;
            let (first, last) = (held(0), held(1));
            // embedding, blocks 0-3, final norm (, head)
            assert_eq!(first[..6], [Own, Own, Own, Absent, Absent, Absent]);
            let copy = if tied { TiedCopy } else { Absent };
            assert_eq!(last[..6], [copy, Absent, Absent, Own, Own, Own]);
            if !tied {
                assert_eq!((first[6], last[6]), (Absent, Own));
            }
            // One stage holds everything, once.
            let one = StageSplit::new(4, 1, 1, None).unwrap();
            assert!((0..l.units.len()).all(|u| one.holding(&l, 0, u) == Own));
        }
    }
}
