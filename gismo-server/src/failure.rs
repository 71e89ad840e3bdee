//! Why the server stops with an error, and with which exit code (documented in `--help`).

use gismo_core::store::StoreError;
use gismo_platform::region::RegionError;
use gismo_plugin::PluginError;

/// The exit codes of `gismo-server`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitCode {
    Runtime = 1,
    Usage = 2,
    RegionUnusable = 6,
    PluginUnusable = 7,
}

/// A fatal error: what to log and how to exit.
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

    /// A region error while doing `context`: a bad spec is a usage error.
    pub fn region(context: &str, e: &RegionError) -> Failure {
        let code = match e {
            RegionError::InvalidSpec { .. } => ExitCode::Usage,
            _ => ExitCode::RegionUnusable,
        };
        Failure::new(code, format!("{context}: {e}"))
    }

    /// A plugin that could not be made: bad input is a usage error, anything else makes the
    /// plugin unusable (as in `gismoctl`).
    pub fn plugin(context: &str, e: &PluginError) -> Failure {
        let code = if e.is_bad_input() {
            ExitCode::Usage
        } else {
            ExitCode::PluginUnusable
        };
        Failure::new(code, format!("{context}: {e}"))
    }

    /// A store error while setting up the region: the region is unusable.
    pub fn store(context: &str, e: &StoreError) -> Failure {
        Failure::new(ExitCode::RegionUnusable, format!("{context}: {e}"))
    }
}
