//! ferrotron: train transformer language models (CLI, models, trainer, data, checkpoints).

pub mod check_hf;
pub mod cli;
pub mod data;
pub mod error;
pub mod model;
pub mod tokenizer;
