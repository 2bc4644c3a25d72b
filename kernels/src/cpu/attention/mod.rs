//! Causal / full attention with grouped-query heads over packed segments, tiled the
//! FlashAttention-2 way: online softmax over key tiles, logsumexp saved, backward recomputes P.
//! No S×S buffer exists beyond one (BLOCK_Q, BLOCK_K) tile per task.
//!
//! Shapes (backend::AttnDims): q, o, dq, dout [N, H, Dh]; k, v, dk, dv [N, Hkv, Dh]; lse [H, N];
//! cu_seqlens [segments + 1]. Query head h reads kv head h / (H / Hkv). Within segment s (tokens
//! cu[s]..cu[s+1], local positions 0..L):
//!   S = scale · Q Kᵀ (+ −∞ where key > query, when causal);  lse = logsumexp_row(S);
//!   P = exp(S − lse);  O = P V.
//! Backward, with D_i = Σ_d dO_id O_id:
//!   dV = Pᵀ dO;  dP = dO Vᵀ;  dS = P ∘ (dP − D);  dQ = scale · dS K;  dK = scale · dSᵀ Q.
//!
//! Files: `tiles` (tile shapes, segment tiling, the score tile), `forward`, `backward` (entry,
//! shared tile math, the two-pass scheme), `by_kv_head` (the one-pass scheme).

mod backward;
mod by_kv_head;
mod forward;
mod tiles;

pub use backward::{backward, backward_with, scheme_for, BackwardScheme, MIN_KV_TASKS};
pub use forward::forward;
pub use tiles::{BLOCK_K, BLOCK_Q};
