//! Instruction data to token examples with a loss mask (`label[i]` = token i is trained on).
//!
//! - alpaca {instruction, input?, output}: the Stanford Alpaca prompt (with or without input),
//!   encoded with the tokenizer's post-processor (BOS where it adds one), then output + EOS.
//!   Loss on output and EOS only.
//! - chat {"messages": [{role, content}]}: rendered with the chat template; loss on each
//!   assistant turn as the template writes it (content and end-of-turn text, e.g.
//!   `hello<|im_end|>\n` in ChatML). An assistant turn is located by rendering the conversation up
//!   to it with `add_generation_prompt` (its start) and through it (its end); a token is trained
//!   when its byte range overlaps a turn. A template for which these renders are not prefixes of
//!   the whole conversation is rejected.
//!
//! A row without the needed fields, or with a chat role outside `CHAT_ROLES`, is an error naming
//! file:line, or is skipped and counted.
//! An example longer than seq_len is truncated and counted; one left with no trained token is
//! dropped and counted.

use std::path::Path;

use rayon::prelude::*;
use serde_json::Value;

use super::config::{Format, OnBadRow};
use super::records::{read_records, Record};
use crate::error::{Error, Result};
use crate::tokenizer::{ChatTemplate, Message, Tokenizer, CHAT_ROLES};
use crate::user;

/// One tokenized example: ids and per-token loss flags (same length).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    pub ids: Vec<u32>,
    pub label: Vec<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SftCounts {
    pub rows: usize,
    pub skipped: usize,
    pub truncated: usize,
    /// Examples with no trained token left (after truncation), not used.
    pub dropped: usize,
}

pub const ALPACA_PROMPT_INPUT: &str = "Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n";
pub const ALPACA_PROMPT: &str = "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n";

/// A row's content, or why it lacks the needed fields.
enum Row {
    Alpaca {
        instruction: String,
        input: String,
        output: String,
    },
    Chat(Vec<Message>),
}

fn parse_row(format: Format, v: &Value) -> std::result::Result<Row, String> {
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    match format {
        Format::Alpaca => {
            let instruction = s("instruction").ok_or("the row has no \"instruction\" string")?;
            let output = s("output").ok_or("the row has no \"output\" string")?;
            let input = match v.get("input") {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(x)) => x.clone(),
                Some(_) => return Err("the row's \"input\" is not a string".into()),
            };
            Ok(Row::Alpaca {
                instruction,
                input,
                output,
            })
        }
        Format::Chat => {
            let msgs = v
                .get("messages")
                .and_then(Value::as_array)
                .ok_or("the row has no \"messages\" list")?;
            let mut out = Vec::with_capacity(msgs.len());
            for (i, m) in msgs.iter().enumerate() {
                let role = m.get("role").and_then(Value::as_str);
                let content = m.get("content").and_then(Value::as_str);
                match (role, content) {
                    (Some(r), Some(_)) if !CHAT_ROLES.contains(&r) => {
                        return Err(format!(
                            "message {i} has role {r:?}, which is not one of {}",
                            CHAT_ROLES.join(", ")
                        ))
                    }
                    (Some(r), Some(c)) => out.push(Message {
                        role: r.into(),
                        content: c.into(),
                    }),
                    _ => {
                        return Err(format!(
                            "message {i} lacks a \"role\" or \"content\" string"
                        ))
                    }
                }
            }
            if !out.iter().any(|m| m.role == "assistant") {
                return Err("the conversation has no assistant message".into());
            }
            Ok(Row::Chat(out))
        }
        Format::Text => Err("text rows are not records".into()),
    }
}

fn alpaca_example(
    tok: &Tokenizer,
    eos: u32,
    instruction: &str,
    input: &str,
    output: &str,
) -> Result<Example> {
    let prompt = if input.is_empty() {
        ALPACA_PROMPT.replace("{instruction}", instruction)
    } else {
        ALPACA_PROMPT_INPUT
            .replace("{instruction}", instruction)
            .replace("{input}", input)
    };
    let mut ids = tok.encode_with_special(&prompt, true)?;
    let n_prompt = ids.len();
    ids.extend(tok.encode(output)?);
    ids.push(eos);
    let label = (0..ids.len()).map(|i| i >= n_prompt).collect();
    Ok(Example { ids, label })
}

/// Renders a chat and marks the tokens of its assistant turns. The error is a sentence without
/// the file name.
pub fn chat_example(
    tok: &Tokenizer,
    tmpl: &ChatTemplate,
    msgs: &[Message],
) -> std::result::Result<Example, String> {
    let full = tmpl.render(msgs, false)?;
    let mut spans = Vec::new();
    for (i, m) in msgs
        .iter()
        .enumerate()
        .filter(|(_, m)| m.role == "assistant")
    {
        let start = tmpl.render(&msgs[..i], true)?;
        let end = tmpl.render(&msgs[..=i], false)?;
        if !end.starts_with(&start) || !full.starts_with(&end) {
            return Err(format!(
                "the chat template does not render conversation prefixes as prefixes of the whole, so assistant turn {i} ({:?}...) cannot be located for loss masking; use data.chat_template = \"chatml\" or another template",
                m.content.chars().take(20).collect::<String>()
            ));
        }
        spans.push((start.len(), end.len()));
    }
    let (ids, offsets) = tok.encode_with_offsets(&full).map_err(|e| e.to_string())?;
    let label = offsets
        .iter()
        .map(|&(a, b)| spans.iter().any(|&(s, e)| a < e && b > s))
        .collect();
    Ok(Example { ids, label })
}

/// Reads and tokenizes `path`; examples longer than `seq_len` are truncated.
pub fn load_examples(
    path: &Path,
    format: Format,
    tok: &Tokenizer,
    tmpl: Option<&ChatTemplate>,
    seq_len: usize,
    on_bad_row: OnBadRow,
    counts: &mut SftCounts,
) -> Result<Vec<Example>> {
    let eos = tok.eos_id();
    if format == Format::Alpaca && eos.is_none() {
        return Err(user!(
            "{}: alpaca data needs an eos token, and the tokenizer has none",
            tok.source().display()
        ));
    }
    let records: Vec<Record> = read_records(path)?;
    let results: Vec<std::result::Result<Option<Example>, Error>> = records
        .par_iter()
        .map(|r| {
            let row = match parse_row(format, &r.value) {
                Ok(row) => row,
                Err(_) if on_bad_row == OnBadRow::Skip => return Ok(None),
                Err(why) => {
                    return Err(user!(
                        "{}:{}: {why} (set data.on_bad_row = \"skip\" to skip such rows)",
                        path.display(),
                        r.line
                    ))
                }
            };
            let ex = match row {
                Row::Alpaca {
                    instruction,
                    input,
                    output,
                } => alpaca_example(tok, eos.unwrap_or(0), &instruction, &input, &output)?,
                Row::Chat(msgs) => {
                    let t =
                        tmpl.ok_or_else(|| Error::Internal("chat data without a template".into()))?;
                    chat_example(tok, t, &msgs)
                        .map_err(|e| user!("{}:{}: {e}", path.display(), r.line))?
                }
            };
            Ok(Some(ex))
        })
        .collect();
    let mut out = Vec::with_capacity(results.len());
    for r in results {
        counts.rows += 1;
        match r? {
            None => counts.skipped += 1,
            Some(mut ex) => {
                if ex.ids.len() > seq_len {
                    counts.truncated += 1;
                    ex.ids.truncate(seq_len);
                    ex.label.truncate(seq_len);
                }
                // A trained token needs a predecessor: position t predicts token t+1.
                if ex.label.iter().skip(1).any(|&l| l) {
                    out.push(ex);
                } else {
                    counts.dropped += 1;
                }
            }
        }
    }
    Ok(out)
}
