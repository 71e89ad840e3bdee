//! The plasma store's settings, from Ray's names for them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use gismo_plugin::params::Params;

use crate::interface::Status;

/// The keys the `plasma` plugin accepts (runner and client).
pub const PLASMA_KEYS: &[&str] = &[
    "store_socket_name",
    "object_store_memory",
    "plasma_directory",
    "huge_pages",
    "fallback_directory",
    "oom_grace_period_ms",
    "object_store_full_delay_ms",
    "object_spilling_threshold",
    "connect_timeout_ms",
];

/// Where and how the store keeps objects (Ray's `PlasmaStoreRunner` arguments and config).
#[derive(Clone, Debug, PartialEq)]
pub struct PlasmaSettings {
    /// `store_socket_name`: the Unix socket clients connect to.
    pub socket: PathBuf,
    /// `object_store_memory`: bytes of the shared-memory segment.
    pub memory: u64,
    /// `plasma_directory`: where the segment's file is made (and unlinked at once, as Ray
    /// does); `memfd` for an anonymous memfd. Default `/dev/shm`.
    pub plasma_directory: String,
    /// `huge_pages`: back the segment with huge pages (`plasma_directory` must be a hugetlbfs
    /// mount, or `memfd`).
    pub huge_pages: bool,
    /// `fallback_directory`: where file-backed fallback allocations go. Default `/tmp`.
    pub fallback_directory: PathBuf,
    /// `oom_grace_period_ms`: how long a create waits for spilling before falling back to a file
    /// (Ray's `oom_grace_period_s`, 2 s).
    pub oom_grace_period: Duration,
    /// `object_store_full_delay_ms`: the client's pause between create retries (10 ms).
    pub full_delay: Duration,
    /// `object_spilling_threshold`: fraction of capacity held by referenced sealed objects above
    /// which the store asks the raylet to spill (0.8).
    pub spilling_threshold: f64,
    /// `connect_timeout_ms`: how long a client retries connecting (Ray retries 50 × 100 ms).
    pub connect_timeout: Duration,
}

impl Default for PlasmaSettings {
    fn default() -> Self {
        PlasmaSettings {
            socket: PathBuf::from("/tmp/gismo-plasma.sock"),
            memory: 256 << 20,
            plasma_directory: "/dev/shm".into(),
            huge_pages: false,
            fallback_directory: PathBuf::from("/tmp"),
            oom_grace_period: Duration::from_secs(2),
            full_delay: Duration::from_millis(10),
            spilling_threshold: 0.8,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

impl PlasmaSettings {
    /// Reads the settings from plugin parameters; absent keys keep their defaults.
    ///
    /// # Errors
    /// `Invalid` naming the key for a value that does not parse, or an unknown key.
    pub fn from_params(params: &BTreeMap<String, String>) -> Result<PlasmaSettings, Status> {
        let p = Params::new("plasma", params);
        p.check_known(PLASMA_KEYS)
            .map_err(|e| Status::invalid(e.to_string()))?;
        let d = PlasmaSettings::default();
        let s = PlasmaSettings {
            socket: p
                .string("store_socket_name")
                .map_or(d.socket, PathBuf::from),
            memory: p.bytes("object_store_memory")?.unwrap_or(d.memory),
            plasma_directory: p
                .string("plasma_directory")
                .map_or(d.plasma_directory, str::to_string),
            huge_pages: p.bool("huge_pages")?.unwrap_or(d.huge_pages),
            fallback_directory: p
                .string("fallback_directory")
                .map_or(d.fallback_directory, PathBuf::from),
            oom_grace_period: p
                .millis("oom_grace_period_ms", 0)?
                .unwrap_or(d.oom_grace_period),
            full_delay: p
                .millis("object_store_full_delay_ms", 0)?
                .unwrap_or(d.full_delay),
            spilling_threshold: p
                .fraction("object_spilling_threshold")?
                .unwrap_or(d.spilling_threshold),
            connect_timeout: p
                .millis("connect_timeout_ms", 0)?
                .unwrap_or(d.connect_timeout),
        };
        if s.socket.as_os_str().is_empty() {
            return Err(p.bad("store_socket_name", "expected a socket path").into());
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses() {
        let p: BTreeMap<String, String> = [
            ("store_socket_name", "/tmp/x.sock"),
            ("object_store_memory", "64MiB"),
            ("huge_pages", "false"),
            ("oom_grace_period_ms", "100"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let s = PlasmaSettings::from_params(&p).unwrap();
        assert_eq!(s.memory, 64 << 20);
        assert_eq!(s.oom_grace_period, Duration::from_millis(100));
        for (k, v) in [
            ("object_store_memory", "lots"),
            ("huge_pages", "maybe"),
            ("oom_grace_period_ms", "-1"),
            ("object_spilling_threshold", "1.5"),
            ("color", "blue"),
        ] {
            let p: BTreeMap<String, String> = [(k.to_string(), v.to_string())].into();
            let e = PlasmaSettings::from_params(&p).unwrap_err();
            assert!(e.message.contains(k), "{e}");
        }
    }
}
