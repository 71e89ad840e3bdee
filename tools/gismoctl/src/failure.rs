//! How a command fails: one line for the operator and an exit code for scripts.
//!
//! Every library error is classified here, once, into the exit codes listed in `--help`
//! (see `cli.rs`); commands only add what they were doing.

use std::fmt;

use gismo_core::format::FormatError;
use gismo_core::store::StoreError;
use gismo_platform::region::RegionError;
use gismo_plugin::interface::{Status, StatusCode};
use gismo_plugin::PluginError;

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
    PluginUnusable = 7,
    NotSupported = 8,
    /// This client was declared dead (fenced) while it worked: what it read is not trusted.
    Fenced = 9,
    Interrupted = 130,
}

impl ExitCode {
    /// The code a gismoctl process exited with (e.g. a `bench` worker), if it is one of ours.
    pub fn from_code(code: i32) -> Option<ExitCode> {
        [
            ExitCode::Error,
            ExitCode::Usage,
            ExitCode::NotFound,
            ExitCode::AlreadyExists,
            ExitCode::StoreFull,
            ExitCode::RegionUnusable,
            ExitCode::PluginUnusable,
            ExitCode::NotSupported,
            ExitCode::Fenced,
            ExitCode::Interrupted,
        ]
        .into_iter()
        .find(|c| *c as i32 == code)
    }
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
            StoreError::Fenced { .. } => ExitCode::Fenced,
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

    /// A plugin that could not be made: bad input (a relative path, an unknown built-in, a bad
    /// config string or key, a value the plugin calls invalid) is a usage error; anything else
    /// (missing or broken library, ABI mismatch, a factory that failed) makes it unusable.
    pub fn plugin(context: impl fmt::Display, e: &PluginError) -> Failure {
        let code = if e.is_bad_input() {
            ExitCode::Usage
        } else {
            ExitCode::PluginUnusable
        };
        Failure::new(code, format!("{context}: {e}"))
    }

    /// A Ray status returned by a plugin's client while doing `context`.
    pub fn status(context: impl fmt::Display, s: &Status) -> Failure {
        let code = match s.code {
            StatusCode::ObjectExists => ExitCode::AlreadyExists,
            StatusCode::ObjectNotFound | StatusCode::TimedOut => ExitCode::NotFound,
            StatusCode::ObjectStoreFull
            | StatusCode::TransientObjectStoreFull
            | StatusCode::OutOfMemory => ExitCode::StoreFull,
            StatusCode::NotImplemented => ExitCode::NotSupported,
            _ => ExitCode::Error,
        };
        Failure::new(code, format!("{context}: {} ({:?})", s.message, s.code))
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
