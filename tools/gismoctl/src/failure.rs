//! How a command fails: one line for the operator and an exit code for scripts.
//!
//! Every library error is classified here, once, into the exit codes listed in `--help`
//! (see `cli.rs`); commands only add what they were doing.

use std::fmt;

use gismo::format::FormatError;
use gismo::region::RegionError;
use gismo::store::StoreError;

/// The exit codes of `gismoctl` (documented in `--help`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitCode {
    Error = 1,
    Usage = 2,
    NotFound = 3,
    AlreadyExists = 4,
    StoreFull = 5,
    RegionUnusable = 6,
    Interrupted = 130,
}

/// A failed command: what to print (without the `gismoctl: ` prefix) and how to exit.
#[derive(Debug)]
pub struct Failure {
    pub code: ExitCode,
    pub message: String,
}

impl Failure {
    pub fn new(code: ExitCode, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }

    pub fn usage(message: impl Into<String>) -> Failure {
        Failure::new(ExitCode::Usage, message)
    }

    /// An I/O error on a file the user named (input or output), not on the region.
    pub fn io(context: impl fmt::Display, e: &std::io::Error) -> Failure {
        Failure::new(ExitCode::Error, format!("{context}: {e}"))
    }

    /// A store error while doing `context`.
    pub fn store(context: impl fmt::Display, e: StoreError) -> Failure {
        let code = match &e {
            StoreError::ObjectExists(_) => ExitCode::AlreadyExists,
            StoreError::ObjectNotFound(_) | StoreError::TimedOut => ExitCode::NotFound,
            StoreError::StoreFull { .. } | StoreError::DirectoryFull { .. } => ExitCode::StoreFull,
            StoreError::Corrupt(_) => ExitCode::RegionUnusable,
            StoreError::Format(f) => return Failure::attach(context, f),
            StoreError::Region(r) => return Failure::region(context, r),
            _ => ExitCode::Error,
        };
        Failure::new(code, format!("{context}: {e}"))
    }

    /// A format error met while attaching to (not formatting) a region: the region is unusable.
    pub fn attach(context: impl fmt::Display, e: &FormatError) -> Failure {
        Failure::new(ExitCode::RegionUnusable, format!("{context}: {e}"))
    }

    /// A region error: a bad spec is a usage error, anything else makes the region unusable.
    pub fn region(context: impl fmt::Display, e: &RegionError) -> Failure {
        let code = match e {
            RegionError::InvalidSpec { .. } => ExitCode::Usage,
            _ => ExitCode::RegionUnusable,
        };
        Failure::new(code, format!("{context}: {e}"))
    }

    /// The message as one line: embedded newlines (from an OS or library message) are folded,
    /// so scripts and logs always get exactly one line per failure.
    pub fn one_line(&self) -> String {
        self.message
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("; ")
    }
}

pub type CmdResult<T = ()> = Result<T, Failure>;
