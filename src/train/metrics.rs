//! Run output on rank 0: `<out_dir>/metrics.jsonl` (one JSON object per optimizer step, eval and
//! memory records), and progress on the terminal (an indicatif bar on a TTY, plain lines otherwise).
//!
//! Resuming from step S keeps the records of steps <= S and drops the rest (steps the killed run
//! trained past its last checkpoint, which the resumed run trains again, and a line cut short by
//! the kill), so the file keeps one record of each kind per step.

use crate::error::Result;
use crate::user;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;
use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Write};
use std::path::Path;

pub struct Metrics {
    file: File,
    bar: Option<ProgressBar>,
}

impl Metrics {
    /// Opens the metrics file: truncated for a fresh run, appended to when resuming.
    pub fn open(out_dir: &Path, resume: bool, start_step: u64, total: u64) -> Result<Self> {
        std::fs::create_dir_all(out_dir)
            .map_err(|e| user!("{}: cannot create output directory: {e}", out_dir.display()))?;
        let path = out_dir.join("metrics.jsonl");
        if resume {
            keep_through(&path, start_step)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .append(resume)
            .truncate(!resume)
            .open(&path)
            .map_err(|e| user!("{}: cannot open: {e}", path.display()))?;
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} [{elapsed} < {eta}]")
                    .expect("valid template"),
            );
            bar.set_position(start_step);
            bar
        });
        Ok(Metrics { file, bar })
    }

    pub fn record(&mut self, v: &Value) -> Result<()> {
        writeln!(self.file, "{v}").map_err(|e| user!("metrics.jsonl: cannot write: {e}"))
    }

    /// Shows a step on the bar, or prints it as a line when not on a terminal.
    pub fn progress(&self, step: u64, line: &str) {
        match &self.bar {
            Some(bar) => {
                bar.set_position(step);
                bar.set_message(line.to_string());
            }
            None => crate::outln!("{line}"),
        }
    }

    /// Prints a message without breaking the bar.
    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => crate::outln!("{line}"),
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Rewrites `path` (if it exists) without the records after step `last` and without lines that
/// are not JSON objects with a step (a write cut short by a kill). Atomic: temp file + rename.
fn keep_through(path: &Path, last: u64) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let lines: Vec<&str> = text.lines().collect();
    let keep: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| {
            serde_json::from_str::<Value>(l)
                .ok()
                .and_then(|v| v.get("step").and_then(Value::as_u64))
                .is_some_and(|s| s <= last)
        })
        .collect();
    if keep.len() == lines.len() {
        return Ok(());
    }
    let tmp = path.with_extension("jsonl.tmp");
    let body: String = keep.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&tmp, body)
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| user!("{}: cannot rewrite: {e}", path.display()))?;
    crate::errln!(
        "note: {}: dropped {} record(s) after step {last}, the last checkpoint (they are trained again)",
        path.display(),
        lines.len() - keep.len()
    );
    Ok(())
}

/// A communicator's traffic over an interval as a record field: per operation that was called,
/// `{"calls": n, "bytes_sent": b}` (bytes as the Comm layer's counters define them).
pub fn traffic_json(t: &ferrotron_parallel::TrafficSnapshot) -> Value {
    let ops: serde_json::Map<String, Value> = ferrotron_parallel::OpKind::ALL
        .iter()
        .map(|&k| (k, t.op(k)))
        .filter(|(_, o)| o.calls > 0)
        .map(|(k, o)| {
            let v = serde_json::json!({"calls": o.calls, "bytes_sent": o.bytes_sent});
            (k.name().to_string(), v)
        })
        .collect();
    Value::Object(ops)
}

#[cfg(test)]
mod tests {
    #[test]
    fn resuming_keeps_one_record_per_step() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        let rec = |s: u64| format!("{{\"step\": {s}, \"loss\": 1.0}}\n");
        let mut text: String = (1..=7).map(rec).collect();
        text += "{\"step\": 4, \"eval_loss\": 2.0}\n{\"step\": 8, \"lo";
        std::fs::write(&path, text).unwrap();
        let m = super::Metrics::open(dir.path(), true, 4, 10).unwrap();
        drop(m);
        let kept = std::fs::read_to_string(&path).unwrap();
        let want: String =
            (1..=4).map(rec).collect::<String>() + "{\"step\": 4, \"eval_loss\": 2.0}\n";
        assert_eq!(kept, want);
    }
}
