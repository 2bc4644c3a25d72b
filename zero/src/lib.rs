//! ferrotron-zero: ZeRO stages 1-3: flat units, shard ownership, gather/release, sharded AdamW.
