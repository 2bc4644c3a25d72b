//! GPT-2 byte-level BPE from OpenAI's files: `encoder.json` + `vocab.bpe` (the same formats HF calls
//! `vocab.json` + `merges.txt`). Built as a `tokenizers` BPE model with the ByteLevel
//! pre-tokenizer, post-processor and decoder that HF's gpt2 tokenizer.json declares, so a GPT-2
//! loaded from these files and one loaded from tokenizer.json run the same machinery.
//! `<|endoftext|>` (when in the vocabulary) is registered as a special token: it is matched whole in
//! text and keeps its id (50256 for GPT-2).

use std::path::Path;

use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::AddedToken;

use crate::error::Result;
use crate::user;

/// The end-of-text token of GPT-2-style vocabularies.
pub const ENDOFTEXT: &str = "<|endoftext|>";

/// The vocabulary must map every token to an integer id (the BPE reader would otherwise build
/// a tokenizer without them and fail far from the cause).
fn check_vocab(vocab: &Path) -> Result<()> {
    let text = std::fs::read_to_string(vocab)
        .map_err(|e| user!("{}: cannot read: {e}", vocab.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| user!("{}: not valid JSON: {e}", vocab.display()))?;
    let map = v
        .as_object()
        .ok_or_else(|| user!("{}: expected a JSON object of token -> id", vocab.display()))?;
    if let Some((token, id)) = map
        .iter()
        .find(|(_, id)| id.as_u64().is_none_or(|i| i > u32::MAX as u64))
    {
        return Err(user!(
            "{}: token {token:?} has id {id}, expected a non-negative integer",
            vocab.display()
        ));
    }
    Ok(())
}

/// Builds the tokenizer from a vocabulary JSON (token -> id) and a merges file.
pub fn from_files(vocab: &Path, merges: &Path) -> Result<tokenizers::Tokenizer> {
    for p in [vocab, merges] {
        if !p.is_file() {
            return Err(user!("tokenizer file {} does not exist", p.display()));
        }
    }
    check_vocab(vocab)?;
    let model = BPE::from_file(&vocab.to_string_lossy(), &merges.to_string_lossy())
        .build()
        .map_err(|e| {
            user!(
                "cannot read the BPE files {} and {}: {e}",
                vocab.display(),
                merges.display()
            )
        })?;
    let mut tok = tokenizers::Tokenizer::new(model);
    tok.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
    tok.with_post_processor(Some(ByteLevel::new(true, false, true)));
    tok.with_decoder(Some(ByteLevel::default()));
    if tok.token_to_id(ENDOFTEXT).is_some() {
        tok.add_special_tokens(&[AddedToken::from(ENDOFTEXT, true)]);
    }
    Ok(tok)
}
