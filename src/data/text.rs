//! Plain text to one token stream per file, EOS after every document.
//!
//! Documents: with `TextSplit::Eos` the file is split on the eos token's text (e.g.
//! `<|endoftext|>`, the GPT-2/OpenWebText convention) and a file's end ends a document; with
//! `TextSplit::BlankLine` a document is a run of non-blank lines. Whitespace-only documents are
//! dropped. Each document is encoded (no special tokens added), preceded by the bos id when the
//! tokenizer's post-processor adds one (`Tokenizer::leading_bos`, Llama style), and followed by
//! the eos id, so in the stream a document ends exactly at an eos token (the row builder relies
//! on this).
//! Long documents are cut for parallel encoding only where a byte-level (GPT-2-style)
//! pre-tokenizer splits anyway (after a single newline that follows a non-space character and
//! precedes a printable ASCII character, e.g. `word\n|Word`), so the
//! ids equal those of encoding the document whole; other tokenizers encode documents whole.

use super::config::TextSplit;
use crate::error::Result;
use crate::tokenizer::Tokenizer;

const CHUNK: usize = 1 << 16;

/// The documents of `text`.
pub fn split_documents<'t>(text: &'t str, split: TextSplit, eos_text: &str) -> Vec<&'t str> {
    let docs: Vec<&str> = match split {
        TextSplit::Eos => text.split(eos_text).collect(),
        TextSplit::BlankLine => {
            let mut out = Vec::new();
            let mut start: Option<usize> = None;
            let mut pos = 0;
            for line in text.split_inclusive('\n') {
                match (line.trim().is_empty(), start) {
                    (true, Some(s)) => {
                        out.push(&text[s..pos]);
                        start = None;
                    }
                    (false, None) => start = Some(pos),
                    _ => {}
                }
                pos += line.len();
            }
            if let Some(s) = start {
                out.push(&text[s..]);
            }
            out
        }
    };
    docs.into_iter().filter(|d| !d.trim().is_empty()).collect()
}

/// Cuts `doc` into pieces of about CHUNK bytes at pre-tokenizer boundaries.
pub fn chunks(doc: &str) -> Vec<&str> {
    let b = doc.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    while doc.len() - start > CHUNK {
        let mut cut = start + CHUNK;
        while cut < b.len()
            && !(b[cut - 1] == b'\n'
                && b[cut].is_ascii_graphic()
                && !b[cut - 2].is_ascii_whitespace())
        {
            cut += 1;
        }
        out.push(&doc[start..cut]);
        start = cut;
    }
    out.push(&doc[start..]);
    out
}

/// Token stream of `text`: every document's ids followed by `eos`.
pub fn tokenize_text(
    tok: &Tokenizer,
    text: &str,
    split: TextSplit,
    eos_text: &str,
    eos: u32,
) -> Result<Vec<u32>> {
    let docs = split_documents(text, split, eos_text);
    let mut pieces = Vec::new();
    let mut doc_ends = Vec::new();
    let cut = tok.is_byte_level();
    for d in &docs {
        if cut {
            pieces.extend(chunks(d));
        } else {
            pieces.push(d);
        }
        doc_ends.push(pieces.len());
    }
    let ids = tok.encode_batch(pieces)?;
    let bos = tok.leading_bos();
    let mut out = Vec::with_capacity(ids.iter().map(Vec::len).sum::<usize>() + 2 * docs.len());
    let mut next_end = doc_ends.iter().peekable();
    let mut doc_start = true;
    for (i, piece) in ids.into_iter().enumerate() {
        if doc_start {
            out.extend(bos);
        }
        out.extend(piece);
        doc_start = next_end.peek() == Some(&&(i + 1));
        if doc_start {
            out.push(eos);
            next_end.next();
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_modes() {
        let t = "a\nb\n\n\nc<|endoftext|>  \n<|endoftext|>d";
        assert_eq!(
            split_documents(t, TextSplit::Eos, "<|endoftext|>"),
            vec!["a\nb\n\n\nc", "d"]
        );
        assert_eq!(
            split_documents("a\nb\n \nc\n\n\nd", TextSplit::BlankLine, "<|endoftext|>"),
            vec!["a\nb\n", "c\n", "d"]
        );
    }

    #[test]
    fn chunks_cut_after_newline_before_text() {
        let line = "word word word\n";
        let doc: String = line.repeat(CHUNK / line.len() * 3);
        let c = chunks(&doc);
        assert!(c.len() >= 3);
        assert_eq!(c.concat(), doc);
        for p in &c[..c.len() - 1] {
            assert!(p.ends_with('\n'));
        }
    }
}
