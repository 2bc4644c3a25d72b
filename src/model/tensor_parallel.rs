//! Which tensor splits how under tensor parallelism (Megatron-LM), as data: the model side of
//! the tp group. The communication regions (f, g, and the sequence-parallel gather/scatter) are
//! in ferrotron-parallel's tensor_parallel module; this file only says how each logical tensor is
//! cut over `size` ranks and what that implies for its gradient.
//!
//! Column-parallel (output features split, no communication to compute the local output):
//!   Q, K, V (heads split; kv heads must divide too), gate, up, their biases, GPT-2's fused
//!   c_attn [D, 3D] (three column blocks q | k | v, each split: a strided slice) and c_fc,
//!   Phi-3's fused qkv_proj [(H + 2·KV)·Dh, D] and gate_up_proj [2F, D] (row blocks q | k | v
//!   and gate | up, each split: `slice_fused`).
//! Row-parallel (input features split; the partial outputs are summed over the group):
//!   O and down (Llama [out, in]: dim 1; GPT-2 Conv1D [in, out]: dim 0). Their biases are
//!   replicated and added once, by tp rank 0, before the sum.
//! Vocab-parallel: the token embedding and an untied LM head, rows split, the vocabulary padded
//!   to a multiple of `size` (padding rows are zero, never trained, never saved).
//! Replicated: norms (and Qwen3's per-head q/k norms), the row-parallel biases, GPT-2's position
//!   table. A replicated tensor's gradient is complete on every rank, except where each rank
//!   holds only a part of it (`grad_summed_over_tp`): the row-parallel biases and the position
//!   table (added by rank 0 only), the q/k norms (each rank normalises its own heads), and with
//!   sequence parallelism the norms (each rank normalises its own tokens). Replicas enter the
//!   gradient norm and checkpoints once, from tp rank 0.

use super::config::Arch;
use super::layout::Role;
use super::slicing::TensorSlice;

/// This rank's place in the tensor-parallel group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TpShape {
    pub size: usize,
    pub rank: usize,
    /// Sequence parallelism: norms and residual adds run on N/size tokens.
    pub sequence_parallel: bool,
}

impl TpShape {
    /// No tensor parallelism.
    pub const NONE: TpShape = TpShape {
        size: 1,
        rank: 0,
        sequence_parallel: false,
    };

    pub fn is_parallel(&self) -> bool {
        self.size > 1
    }

    /// The slice of a tensor of `role` with global shape `shape` this rank holds.
    pub fn slice(&self, arch: Arch, role: Role, shape: &[usize]) -> TensorSlice {
        let (p, r) = (self.size, self.rank);
        match split_of(arch, role) {
            _ if p == 1 => TensorSlice::whole(shape),
            Split::Whole => TensorSlice::whole(shape),
            Split::Dim(dim) => TensorSlice::strided(shape, dim, 1, p, r),
            Split::Blocks3(dim) => TensorSlice::strided(shape, dim, 3, p, r),
            Split::Vocab => TensorSlice::padded_split(shape, 0, p, r),
            Split::FusedRows => unreachable!("fused tensors are sliced by slice_fused"),
        }
    }

    /// The slice of a fused column-parallel tensor (Phi-3's qkv_proj, gate_up_proj) whose dim 0
    /// is made of row blocks of `sizes`: this rank's part of each block.
    pub fn slice_fused(&self, shape: &[usize], sizes: &[usize]) -> TensorSlice {
        if self.size == 1 {
            TensorSlice::whole(shape)
        } else {
            TensorSlice::blocks(shape, 0, sizes, self.size, self.rank)
        }
    }

    /// Whether every tp rank holds the whole tensor of `role`.
    pub fn replicates(&self, arch: Arch, role: Role) -> bool {
        self.size == 1 || split_of(arch, role) == Split::Whole
    }

    /// Whether each tp rank holds a partial sum of the gradient of a replicated tensor of
    /// `role`, to be summed over the group (see the module comment).
    pub fn grad_summed_over_tp(&self, arch: Arch, role: Role) -> bool {
        use Role::*;
        if self.size == 1 || !self.replicates(arch, role) {
            return false;
        }
        match role {
            OBias | DownBias | PositionEmbedding | QNorm | KNorm => true,
            AttnNorm | AttnNormBias | MlpNorm | MlpNormBias | AttnOutNorm | MlpOutNorm
            | FinalNorm | FinalNormBias => self.sequence_parallel,
            _ => false,
        }
    }

    /// Whether this rank adds the replicated bias or position rows of `role` before the sum
    /// over the group (tp rank 0 only, so they count once).
    pub fn adds_replicated_bias(&self) -> bool {
        self.rank == 0
    }

    /// `n` split in `size` equal parts (heads, features): the local count.
    pub fn local(&self, n: usize) -> usize {
        n / self.size
    }

    /// The rows of a vocab-parallel table this rank holds: (first global row, local rows with
    /// padding, real rows).
    pub fn vocab_rows(&self, vocab: usize) -> (usize, usize, usize) {
        let local = vocab.div_ceil(self.size);
        let start = (self.rank * local).min(vocab);
        (start, local, ((self.rank + 1) * local).min(vocab) - start)
    }
}

/// How a tensor of each role is cut (see the module comment).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Split {
    Whole,
    /// Equal parts along a dim.
    Dim(usize),
    /// Three equal blocks along a dim (GPT-2's fused q | k | v), each cut in equal parts.
    Blocks3(usize),
    /// Rows, padded to a multiple of the group size.
    Vocab,
    /// Row blocks of unequal sizes, each cut in equal parts (`slice_fused`).
    FusedRows,
}

fn split_of(arch: Arch, role: Role) -> Split {
    use Role::*;
    match (arch, role) {
        (_, TokenEmbedding | LmHead) => Split::Vocab,
        (Arch::Llama, Q | K | V | Gate | Up | QBias | KBias | VBias | GateBias | UpBias) => {
            Split::Dim(0)
        }
        (Arch::Llama, O | Down) => Split::Dim(1),
        (Arch::Llama, QkvRows | GateUp) => Split::FusedRows,
        (Arch::Gpt2, Qkv) => Split::Blocks3(1),
        (Arch::Gpt2, QkvBias) => Split::Blocks3(0),
        (Arch::Gpt2, Up) => Split::Dim(1),
        (Arch::Gpt2, UpBias) => Split::Dim(0),
        (Arch::Gpt2, O | Down) => Split::Dim(0),
        _ => Split::Whole,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn megatron_splits() {
        let tp = TpShape {
            size: 2,
            rank: 1,
            sequence_parallel: false,
        };
        let s = tp.slice(Arch::Llama, Role::Q, &[8, 4]);
        assert_eq!(
            (s.local_shape.clone(), s.dims[0].clone()),
            (vec![4, 4], vec![[4, 8]])
        );
        let s = tp.slice(Arch::Llama, Role::O, &[4, 8]);
        assert_eq!(s.dims[1], vec![[4, 8]]);
        let s = tp.slice(Arch::Gpt2, Role::Qkv, &[4, 12]);
        assert_eq!(s.dims[1], vec![[2, 4], [6, 8], [10, 12]]);
        let s = tp.slice(Arch::Gpt2, Role::O, &[4, 4]);
        assert_eq!(s.dims[0], vec![[2, 4]]);
        let s = tp.slice(Arch::Llama, Role::TokenEmbedding, &[11, 4]);
        assert_eq!((s.local_shape[0], s.dims[0].clone()), (6, vec![[6, 11]]));
        assert_eq!(tp.vocab_rows(11), (6, 6, 5));
        assert!(tp.replicates(Arch::Llama, Role::AttnNorm));
        assert!(tp.replicates(Arch::Gpt2, Role::OBias));
        assert!(!tp.replicates(Arch::Gpt2, Role::QkvBias));
        assert!(tp.grad_summed_over_tp(Arch::Llama, Role::DownBias));
        assert!(tp.grad_summed_over_tp(Arch::Llama, Role::QNorm));
        assert!(!tp.grad_summed_over_tp(Arch::Llama, Role::MlpNorm));
        let sp = TpShape {
            sequence_parallel: true,
            ..tp
        };
        assert!(sp.grad_summed_over_tp(Arch::Gpt2, Role::MlpNormBias));
        assert!(!sp.grad_summed_over_tp(Arch::Gpt2, Role::Up));
        assert!(!TpShape::NONE.grad_summed_over_tp(Arch::Llama, Role::OBias));
    }
}
