//! ferrotron: train transformer language models (CLI, models, trainer, data, checkpoints).

pub mod check_hf;
pub mod checkpoint;
pub mod cli;
pub mod data;
pub mod error;
pub mod export;
pub mod hf_files;
pub mod model;
pub mod output;
pub mod recipe;
pub mod sample;
pub mod tensorfile;
pub mod tokenizer;
pub mod train;
