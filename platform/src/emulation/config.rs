//! Which emulated host a process is, and the emulator's knobs, from the environment.

use std::io;
use std::path::PathBuf;

/// Pages per second that each process's spontaneous-event sweeper samples by default.
pub const DEFAULT_RATE: u64 = 1000;

/// An emulated host to join and how it behaves.
///
/// | variable | meaning | default |
/// |---|---|---|
/// | `GISMO_EMULATED_HOST` | the host's name (`[A-Za-z0-9._-]`, 1–64 bytes) | not emulated |
/// | `GISMO_EMULATION_DIR` | where the hosts' views live (created if missing) | required with the host |
/// | `GISMO_EMULATION_SEED` | seed of the spontaneous events (decimal `u64`) | 0 |
/// | `GISMO_EMULATION_RATE` | 4 KiB pages per second each process samples for spontaneous events; 0: none | 1000 |
/// | `GISMO_EMULATION_SKIP_WRITEBACK=1` | explicit write-backs do nothing (negative control) | off |
/// | `GISMO_EMULATION_SKIP_INVALIDATE=1` | explicit evictions do nothing (negative control) | off |
///
/// A sampled page's dirty lines are each written back with probability 1/2 and its stale clean
/// lines each refetched with probability 1/2. The events' schedule also depends on timing and
/// on the process (its pid is mixed into the seed), so a seed makes a run's randomness
/// repeatable in kind, not in every interleaving.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmulationConfig {
    pub host: String,
    pub dir: PathBuf,
    pub seed: u64,
    pub rate: u64,
    pub skip_write_back: bool,
    pub skip_invalidate: bool,
}

/// What can go wrong setting up an emulated host.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmulationError {
    /// One of the two variables that name a host is set without the other.
    #[error("GISMO_EMULATED_HOST and GISMO_EMULATION_DIR go together: {0} is not set")]
    Incomplete(&'static str),
    /// A variable has a value the emulator cannot use.
    #[error("{var}={value:?}: {reason}")]
    BadValue {
        var: &'static str,
        value: String,
        reason: &'static str,
    },
    /// The region's length or base does not fit the emulator (whole 64-byte lines).
    #[error("cannot emulate a region of {len} bytes: {reason}")]
    BadRegion { len: usize, reason: &'static str },
    /// A host file could not be created, sized or mapped.
    #[error("emulated host {host:?}: {what} {path}: {source}")]
    Io {
        host: String,
        what: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
}

impl EmulationConfig {
    /// A config for `host` in `dir` with the default knobs.
    pub fn new(host: &str, dir: impl Into<PathBuf>) -> EmulationConfig {
        EmulationConfig {
            host: host.to_string(),
            dir: dir.into(),
            seed: 0,
            rate: DEFAULT_RATE,
            skip_write_back: false,
            skip_invalidate: false,
        }
    }

    /// The emulated host this process joins, from its environment (see the type's table):
    /// `None` when `GISMO_EMULATED_HOST` and `GISMO_EMULATION_DIR` are both unset.
    ///
    /// # Errors
    /// [`EmulationError::Incomplete`] when only one of the two is set,
    /// [`EmulationError::BadValue`] for a bad host name, seed or rate.
    pub fn from_env() -> Result<Option<EmulationConfig>, EmulationError> {
        EmulationConfig::from_vars(|k| std::env::var(k).ok())
    }

    /// As [`from_env`](Self::from_env), with the variables looked up by `var`.
    ///
    /// # Errors
    /// As [`from_env`](Self::from_env).
    pub fn from_vars(
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<EmulationConfig>, EmulationError> {
        let host = var("GISMO_EMULATED_HOST").filter(|v| !v.is_empty());
        let dir = var("GISMO_EMULATION_DIR").filter(|v| !v.is_empty());
        let (host, dir) = match (host, dir) {
            (None, None) => return Ok(None),
            (Some(_), None) => return Err(EmulationError::Incomplete("GISMO_EMULATION_DIR")),
            (None, Some(_)) => return Err(EmulationError::Incomplete("GISMO_EMULATED_HOST")),
            (Some(h), Some(d)) => (h, d),
        };
        let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if host.len() > 64 || !host.chars().all(valid) || host.starts_with('.') {
            return Err(EmulationError::BadValue {
                var: "GISMO_EMULATED_HOST",
                value: host,
                reason: "expected 1-64 characters of [A-Za-z0-9._-], not starting with '.'",
            });
        }
        let num = |name: &'static str, default: u64| -> Result<u64, EmulationError> {
            match var(name) {
                None => Ok(default),
                Some(v) => v.trim().parse().map_err(|_| EmulationError::BadValue {
                    var: name,
                    value: v,
                    reason: "expected a decimal unsigned integer",
                }),
            }
        };
        let flag = |name: &str| var(name).is_some_and(|v| v.trim() == "1");
        Ok(Some(EmulationConfig {
            host,
            dir: PathBuf::from(dir),
            seed: num("GISMO_EMULATION_SEED", 0)?,
            rate: num("GISMO_EMULATION_RATE", DEFAULT_RATE)?,
            skip_write_back: flag("GISMO_EMULATION_SKIP_WRITEBACK"),
            skip_invalidate: flag("GISMO_EMULATION_SKIP_INVALIDATE"),
        }))
    }
}
