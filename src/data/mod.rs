//! Data pipeline: text, alpaca and chat datasets, packing, deterministic sampling.
