//! Reads dataset records with their 1-based line numbers: a JSON array of objects (the line is
//! where the object starts) or JSONL (one object a line, blank lines ignored). The file is a JSON
//! array when its first non-blank character is `[`. Malformed JSON is always an error naming the
//! file and line; whether a well-formed row has the right fields is the caller's business.

use std::path::Path;

use serde_json::Value;

use crate::error::Result;
use crate::user;

/// One record and the line it starts on.
pub struct Record {
    pub line: usize,
    pub value: Value,
}

pub fn read_records(path: &Path) -> Result<Vec<Record>> {
    let text =
        std::fs::read_to_string(path).map_err(|e| user!("cannot read {}: {e}", path.display()))?;
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') {
        read_array(path, &text, text.len() - trimmed.len() + 1)
    } else {
        read_lines(path, &text)
    }
}

fn line_of(text: &str, byte: usize) -> usize {
    1 + text.as_bytes()[..byte]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
}

fn read_lines(path: &Path, text: &str) -> Result<Vec<Record>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value = serde_json::from_str(line)
            .map_err(|e| user!("{}:{}: not valid JSON: {e}", path.display(), i + 1))?;
        out.push(Record { line: i + 1, value });
    }
    Ok(out)
}

fn read_array(path: &Path, text: &str, mut pos: usize) -> Result<Vec<Record>> {
    let bytes = text.as_bytes();
    let skip_ws = |mut p: usize| {
        while p < bytes.len() && bytes[p].is_ascii_whitespace() {
            p += 1;
        }
        p
    };
    let mut out = Vec::new();
    pos = skip_ws(pos);
    if bytes.get(pos) == Some(&b']') {
        return Ok(out);
    }
    loop {
        pos = skip_ws(pos);
        let line = line_of(text, pos);
        let mut it = serde_json::Deserializer::from_str(&text[pos..]).into_iter::<Value>();
        let value = match it.next() {
            Some(Ok(v)) => v,
            Some(Err(e)) => {
                return Err(user!(
                    "{}:{}: not valid JSON: {e}",
                    path.display(),
                    line + e.line() - 1
                ))
            }
            None => {
                return Err(user!(
                    "{}:{}: the JSON array is not closed",
                    path.display(),
                    line
                ))
            }
        };
        pos = skip_ws(pos + it.byte_offset());
        out.push(Record { line, value });
        match bytes.get(pos) {
            Some(b',') => pos += 1,
            Some(b']') => break,
            _ => {
                return Err(user!(
                    "{}:{}: expected ',' or ']' after an array element",
                    path.display(),
                    line_of(text, pos.min(bytes.len()))
                ))
            }
        }
    }
    if skip_ws(pos + 1) != bytes.len() {
        return Err(user!(
            "{}:{}: text after the JSON array",
            path.display(),
            line_of(text, pos)
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_and_jsonl_lines() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.json");
        std::fs::write(&a, "[\n  {\"x\": 1},\n  {\n    \"x\": 2\n  }\n]\n").unwrap();
        let r = read_records(&a).unwrap();
        assert_eq!(r.iter().map(|r| r.line).collect::<Vec<_>>(), vec![2, 3]);
        assert_eq!(r[1].value["x"], 2);
        let l = dir.path().join("b.jsonl");
        std::fs::write(&l, "{\"x\": 1}\n\n{\"x\": 2}\n{oops\n").unwrap();
        let e = read_records(&l).err().unwrap().to_string();
        assert!(e.contains("b.jsonl:4: not valid JSON"), "{e}");
        std::fs::write(&a, "[\n {\"x\": 1},\n {\"x\": }\n]").unwrap();
        let e = read_records(&a).err().unwrap().to_string();
        assert!(e.contains("a.json:3: not valid JSON"), "{e}");
    }
}
