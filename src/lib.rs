//! ferrotron: train transformer language models (CLI, models, trainer, data, checkpoints).

pub mod cli;
pub mod data;
pub mod error;
pub mod tokenizer;
