//! Tokenizers: HF tokenizer.json (tokenizers crate) and GPT-2 encoder.json + vocab.bpe.
