//! Errors of the communication layer. Every message is one sentence naming the group and the
//! operation, so that a failing rank says what it was doing and with whom.

/// An error raised by a communicator or by setting one up.
#[derive(Debug, thiserror::Error)]
pub enum CommError {
    /// The caller passed buffers or ranks that do not fit the operation.
    #[error("{op} on group {group}: {reason}")]
    InvalidArgument {
        op: &'static str,
        group: String,
        reason: String,
    },
    /// A peer did not answer within the collective timeout.
    #[error("collective {op} on group {group} timed out after {secs} s (rank {rank}){detail}")]
    Timeout {
        op: &'static str,
        group: String,
        secs: String,
        rank: usize,
        detail: String,
    },
    /// A peer closed its connection or the transport failed.
    #[error("{op} on group {group} failed at rank {rank}: {reason}")]
    Transport {
        op: &'static str,
        group: String,
        rank: usize,
        reason: String,
    },
    /// The backend cannot move this kind of buffer.
    #[error("{op} on group {group}: {reason}")]
    Unsupported {
        op: &'static str,
        group: String,
        reason: String,
    },
    /// Setting up the process group failed (environment, rendezvous, MPI initialisation).
    #[error("{0}")]
    Setup(String),
}

impl CommError {
    pub(crate) fn invalid(op: &'static str, group: &str, reason: impl Into<String>) -> Self {
        CommError::InvalidArgument {
            op,
            group: group.to_string(),
            reason: reason.into(),
        }
    }
}
