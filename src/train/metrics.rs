//! Run output on rank 0: `<out_dir>/metrics.jsonl` (one JSON object per optimizer step, eval and
//! memory records), and progress on the terminal (an indicatif bar on a TTY, plain lines otherwise).

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
            None => println!("{line}"),
        }
    }

    /// Prints a message without breaking the bar.
    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => println!("{line}"),
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
