//! Console output that never panics. `println!` / `eprintln!` panic when the reader of a pipe
//! has gone (`ferrotron train … | head`), which would kill a run because its log viewer closed.
//! `outln!` / `errln!` format a whole line, write it with one `write_all` (so that ranks sharing
//! a terminal under mpirun never interleave halves of lines) and drop it when the stream is
//! closed or full: the run goes on, and metrics.jsonl and the checkpoints remain its record.

use std::fmt;
use std::io::Write;

/// Writes one line to stdout; a closed or failing stdout loses the line, never the run.
pub fn stdout_line(args: fmt::Arguments<'_>) {
    let line = format!("{args}\n");
    let _ = std::io::stdout().lock().write_all(line.as_bytes());
}

/// Writes one line to stderr; a closed or failing stderr loses the line, never the run.
pub fn stderr_line(args: fmt::Arguments<'_>) {
    let line = format!("{args}\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// `println!` that never panics: see the module comment.
#[macro_export]
macro_rules! outln {
    ($($t:tt)*) => { $crate::output::stdout_line(format_args!($($t)*)) };
}

/// `eprintln!` that never panics: see the module comment.
#[macro_export]
macro_rules! errln {
    ($($t:tt)*) => { $crate::output::stderr_line(format_args!($($t)*)) };
}
