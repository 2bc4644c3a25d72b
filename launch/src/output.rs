//! Copies a rank's stdout or stderr to the launcher's, one whole line at a time, each line
//! prefixed with `[rank R] `. Bytes are passed through unchanged (no UTF-8 requirement); a last
//! line without a newline gets one. When the launcher's own stream fails (its reader has gone:
//! `ferrotron launch … | head`), the rank's lines are still read and dropped, so that a rank
//! never blocks on a full pipe and the job runs to its end.

use std::io::{BufRead, BufReader, Read, Write};
use std::thread::{self, JoinHandle};

/// Which stream of the launcher receives the lines.
#[derive(Clone, Copy)]
pub(crate) enum Sink {
    Stdout,
    Stderr,
}

pub(crate) fn pump(rank: usize, source: impl Read + Send + 'static, sink: Sink) -> JoinHandle<()> {
    thread::spawn(move || {
        let mut reader = BufReader::new(source);
        let prefix = format!("[rank {rank}] ");
        let mut line = Vec::new();
        let mut sink_open = true;
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if !sink_open {
                continue;
            }
            if !line.ends_with(b"\n") {
                line.push(b'\n');
            }
            let written = match sink {
                Sink::Stdout => write_line(&mut std::io::stdout().lock(), &prefix, &line),
                Sink::Stderr => write_line(&mut std::io::stderr().lock(), &prefix, &line),
            };
            sink_open = written.is_ok();
        }
    })
}

fn write_line(out: &mut impl Write, prefix: &str, line: &[u8]) -> std::io::Result<()> {
    out.write_all(prefix.as_bytes())?;
    out.write_all(line)?;
    out.flush()
}
