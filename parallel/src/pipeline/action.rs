//! One step of a pipeline rank's program, and the messages between ranks.
//!
//! The model is cut into C = p·v chunks in a chain (chunk 0 reads the micro-batch, chunk C−1
//! computes the loss); chunk c lives on rank c mod p (Megatron's interleaved layout; v = 1 is
//! plain pipelining, chunk = stage = rank). Every action names the chunk in this global
//! numbering, and a rank's actions only name chunks it owns.
//!
//! Messages cross a *boundary* b, the edge between chunk b and chunk b + 1:
//! - the activation of micro-batch i at boundary b = output of chunk b = input of chunk b + 1,
//!   sent by `SendActivation { mb: i, chunk: b }`, received by `RecvActivation { chunk: b + 1 }`;
//! - the gradient at boundary b = d loss / d (that activation), sent by
//!   `SendGrad { chunk: b + 1 }` (the gradient w.r.t. its input), received by
//!   `RecvGrad { chunk: b }` (the gradient w.r.t. its output).
//!
//! Tag of a message: 2·b for activations, 2·b + 1 for gradients, so one (sender, receiver, tag)
//! channel carries one boundary's messages of one kind, in micro-batch order (every schedule here
//! forwards and backwards each chunk in increasing micro-batch order; the simulator checks that
//! the FIFO order of each channel gives every receive the message it names).

/// What a rank does next. `mb` is the micro-batch (0..m), `chunk` the global model chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Forward of micro-batch `mb` through `chunk`; its input is the activation received for
    /// (`mb`, `chunk`), or the micro-batch itself for chunk 0.
    Forward { mb: usize, chunk: usize },
    /// Full backward of `mb` through `chunk`: gradients w.r.t. its input and its weights. Needs
    /// the gradient w.r.t. the chunk's output (received, or the loss for the last chunk).
    Backward { mb: usize, chunk: usize },
    /// Zero-bubble split, first half: only the gradient w.r.t. the chunk's input (what the
    /// previous chunk waits for).
    BackwardInput { mb: usize, chunk: usize },
    /// Zero-bubble split, second half: the chunk's weight gradients for `mb`, after its
    /// `BackwardInput`. Frees the micro-batch's stored activations.
    BackwardWeight { mb: usize, chunk: usize },
    /// Send `chunk`'s output activation for `mb` to `peer`, the owner of chunk + 1.
    SendActivation {
        mb: usize,
        chunk: usize,
        peer: usize,
    },
    /// Receive `chunk`'s input activation for `mb` from `peer`, the owner of chunk − 1.
    RecvActivation {
        mb: usize,
        chunk: usize,
        peer: usize,
    },
    /// Send the gradient w.r.t. `chunk`'s input for `mb` to `peer`, the owner of chunk − 1.
    SendGrad {
        mb: usize,
        chunk: usize,
        peer: usize,
    },
    /// Receive the gradient w.r.t. `chunk`'s output for `mb` from `peer`, the owner of chunk + 1.
    RecvGrad {
        mb: usize,
        chunk: usize,
        peer: usize,
    },
}

/// Activation (forward) or gradient (backward) traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MessageKind {
    Activation,
    Grad,
}

/// One message of a step: the `kind` of micro-batch `mb` at `boundary` (between chunk
/// `boundary` and `boundary + 1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Message {
    pub kind: MessageKind,
    pub mb: usize,
    pub boundary: usize,
}

impl Message {
    /// The point-to-point tag of this message (see the module comment).
    pub fn tag(&self) -> u32 {
        let kind = match self.kind {
            MessageKind::Activation => 0,
            MessageKind::Grad => 1,
        };
        (2 * self.boundary + kind) as u32
    }
}

impl std::fmt::Display for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.kind {
            MessageKind::Activation => "activation",
            MessageKind::Grad => "gradient",
        };
        write!(
            f,
            "{what} of micro-batch {} between chunks {} and {}",
            self.mb,
            self.boundary,
            self.boundary + 1
        )
    }
}

/// Whether a communication action sends or receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Send,
    Recv,
}

impl Action {
    /// The micro-batch and chunk this action is about.
    pub fn mb_chunk(&self) -> (usize, usize) {
        match *self {
            Action::Forward { mb, chunk }
            | Action::Backward { mb, chunk }
            | Action::BackwardInput { mb, chunk }
            | Action::BackwardWeight { mb, chunk }
            | Action::SendActivation { mb, chunk, .. }
            | Action::RecvActivation { mb, chunk, .. }
            | Action::SendGrad { mb, chunk, .. }
            | Action::RecvGrad { mb, chunk, .. } => (mb, chunk),
        }
    }

    /// For a communication action: the message, the direction and the peer rank.
    pub fn message(&self) -> Option<(Message, Direction, usize)> {
        let msg = |kind, mb, boundary| Message { kind, mb, boundary };
        use MessageKind::{Activation, Grad};
        match *self {
            Action::SendActivation { mb, chunk, peer } => {
                Some((msg(Activation, mb, chunk), Direction::Send, peer))
            }
            Action::RecvActivation { mb, chunk, peer } => {
                Some((msg(Activation, mb, chunk - 1), Direction::Recv, peer))
            }
            Action::SendGrad { mb, chunk, peer } => {
                Some((msg(Grad, mb, chunk - 1), Direction::Send, peer))
            }
            Action::RecvGrad { mb, chunk, peer } => {
                Some((msg(Grad, mb, chunk), Direction::Recv, peer))
            }
            _ => None,
        }
    }

    /// True for forward and backward (any half) compute actions.
    pub fn is_compute(&self) -> bool {
        self.message().is_none()
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (mb, chunk) = self.mb_chunk();
        match *self {
            Action::Forward { .. } => write!(f, "forward mb {mb} chunk {chunk}"),
            Action::Backward { .. } => write!(f, "backward mb {mb} chunk {chunk}"),
            Action::BackwardInput { .. } => write!(f, "backward-input mb {mb} chunk {chunk}"),
            Action::BackwardWeight { .. } => write!(f, "backward-weight mb {mb} chunk {chunk}"),
            Action::SendActivation { peer, .. } => {
                write!(f, "send activation mb {mb} chunk {chunk} to rank {peer}")
            }
            Action::RecvActivation { peer, .. } => {
                write!(f, "recv activation mb {mb} chunk {chunk} from rank {peer}")
            }
            Action::SendGrad { peer, .. } => {
                write!(f, "send grad mb {mb} chunk {chunk} to rank {peer}")
            }
            Action::RecvGrad { peer, .. } => {
                write!(f, "recv grad mb {mb} chunk {chunk} from rank {peer}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_and_recv_of_one_boundary_name_the_same_message_and_tag() {
        let send = Action::SendActivation {
            mb: 3,
            chunk: 4,
            peer: 1,
        };
        let recv = Action::RecvActivation {
            mb: 3,
            chunk: 5,
            peer: 0,
        };
        let (m1, d1, _) = send.message().unwrap();
        let (m2, d2, _) = recv.message().unwrap();
        assert_eq!(m1, m2);
        assert_eq!((d1, d2), (Direction::Send, Direction::Recv));
        assert_eq!(m1.tag(), 8);
        let g_send = Action::SendGrad {
            mb: 3,
            chunk: 5,
            peer: 0,
        };
        let g_recv = Action::RecvGrad {
            mb: 3,
            chunk: 4,
            peer: 1,
        };
        assert_eq!(g_send.message().unwrap().0, g_recv.message().unwrap().0);
        assert_eq!(g_send.message().unwrap().0.tag(), 9);
        assert!(Action::Forward { mb: 0, chunk: 0 }.is_compute());
    }
}
