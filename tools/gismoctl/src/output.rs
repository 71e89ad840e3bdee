//! Writing results to standard output without panicking.
//!
//! `println!` panics when standard output is a closed pipe (`gismoctl ls | head -1`); these
//! helpers report other write errors as failures and treat a closed pipe as the reader's choice
//! to stop listening, which is not an error.

use std::io::{self, Write};

use crate::failure::{CmdResult, Failure};

/// Writes `bytes` to standard output.
///
/// # Errors
/// A generic failure for any write error except a closed pipe.
pub fn stdout_bytes(bytes: &[u8]) -> CmdResult {
    let mut out = io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
            Err(Failure::io("writing to standard output", &e))
        }
        _ => Ok(()),
    }
}

/// Writes `text` to standard output.
///
/// # Errors
/// As [`stdout_bytes`].
pub fn stdout(text: &str) -> CmdResult {
    stdout_bytes(text.as_bytes())
}

/// Writes `value` as pretty-printed JSON and a newline to standard output.
///
/// # Errors
/// As [`stdout_bytes`].
pub fn json(value: &impl serde::Serialize) -> CmdResult {
    let mut text = serde_json::to_string_pretty(value)
        .map_err(|e| Failure::new(crate::failure::ExitCode::Error, format!("json: {e}")))?;
    text.push('\n');
    stdout(&text)
}
