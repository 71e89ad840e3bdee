//! The redis plugin's configuration: the `key=value` map of `RAY_object_store_plugin_config`
//! (keys in [`REDIS_KEYS`]), parsed and checked once.

use std::collections::BTreeMap;
use std::time::Duration;

use gismo_plugin::params::{ParamError, Params};

use crate::RedisStoreError;

/// Keys the redis plugin accepts (meanings and defaults: `docs/redis.md`).
pub const REDIS_KEYS: &[&str] = &[
    "url",
    "prefix",
    "connect_timeout_ms",
    "io_timeout_ms",
    "pool_size",
    "wait_recheck_ms",
    "lease_ms",
];

/// Where the store is and how long to wait for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisSettings {
    /// `url=`: a `redis://[user:password@]host:port/db` URL (or `unix://path?db=N`).
    pub url: String,
    /// `prefix=`: prepended to every key and channel the plugin uses (default `gismo:`).
    pub prefix: String,
    /// `connect_timeout_ms=`: how long to try to get a connection (default 2000).
    pub connect_timeout: Duration,
    /// `io_timeout_ms=`: read/write timeout of every command (default 5000).
    pub io_timeout: Duration,
    /// `pool_size=`: most connections a process keeps to this store (default 8).
    pub pool_size: u32,
    /// `wait_recheck_ms=`: a waiting `get` re-reads Redis this often even without a seal
    /// message, for writers that do not publish (default 1000).
    pub wait_recheck: Duration,
    /// `lease_ms=`: a client's liveness lease. Its process refreshes it every third of the lease;
    /// a client whose lease ran out is dead, and any node gives its references back and aborts
    /// its creations (default 10000).
    pub lease: Duration,
}

pub const DEFAULT_URL: &str = "redis://127.0.0.1:6379/0";
pub const DEFAULT_PREFIX: &str = "gismo:";

impl Default for RedisSettings {
    fn default() -> Self {
        RedisSettings {
            url: DEFAULT_URL.into(),
            prefix: DEFAULT_PREFIX.into(),
            connect_timeout: Duration::from_millis(2000),
            io_timeout: Duration::from_millis(5000),
            pool_size: 8,
            wait_recheck: Duration::from_millis(1000),
            lease: Duration::from_millis(10_000),
        }
    }
}

impl From<ParamError> for RedisStoreError {
    fn from(e: ParamError) -> RedisStoreError {
        RedisStoreError::Config {
            key: e.key,
            value: e.value,
            reason: e.expected,
        }
    }
}

impl RedisSettings {
    /// Reads the keys it knows from `params` (unknown keys are the manager's business:
    /// `check_keys`).
    ///
    /// # Errors
    /// [`RedisStoreError::Config`] for a value that does not parse or a URL the client refuses.
    pub fn from_params(params: &BTreeMap<String, String>) -> Result<Self, RedisStoreError> {
        let p = Params::new("redis", params);
        let d = RedisSettings::default();
        let url = p.string("url").map_or(d.url, str::to_string);
        if let Err(e) = redis::Client::open(url.as_str()) {
            return Err(RedisStoreError::Config {
                key: "url",
                value: url,
                reason: e.to_string(),
            });
        }
        Ok(RedisSettings {
            url,
            prefix: p.string("prefix").map_or(d.prefix, str::to_string),
            connect_timeout: p
                .millis("connect_timeout_ms", 1)?
                .unwrap_or(d.connect_timeout),
            io_timeout: p.millis("io_timeout_ms", 1)?.unwrap_or(d.io_timeout),
            pool_size: p.int("pool_size", 1..=1024)?.unwrap_or(d.pool_size),
            wait_recheck: p.millis("wait_recheck_ms", 1)?.unwrap_or(d.wait_recheck),
            lease: p.millis("lease_ms", 1)?.unwrap_or(d.lease),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_and_overrides() {
        assert_eq!(
            RedisSettings::from_params(&BTreeMap::new()).unwrap(),
            RedisSettings::default()
        );
        let s = RedisSettings::from_params(&map(&[
            ("url", "redis://127.0.0.1:7000/2"),
            ("prefix", "ray:"),
            ("connect_timeout_ms", "300"),
            ("io_timeout_ms", "400"),
            ("pool_size", "3"),
            ("wait_recheck_ms", "50"),
        ]))
        .unwrap();
        assert_eq!(s.url, "redis://127.0.0.1:7000/2");
        assert_eq!(s.prefix, "ray:");
        assert_eq!(s.connect_timeout, Duration::from_millis(300));
        assert_eq!(s.io_timeout, Duration::from_millis(400));
        assert_eq!(s.pool_size, 3);
        assert_eq!(s.wait_recheck, Duration::from_millis(50));
    }

    #[test]
    fn bad_values_name_their_key() {
        for (k, v) in [
            ("url", "http://nope"),
            ("connect_timeout_ms", "0"),
            ("io_timeout_ms", "soon"),
            ("pool_size", "0"),
            ("wait_recheck_ms", "-1"),
        ] {
            match RedisSettings::from_params(&map(&[(k, v)])) {
                Err(RedisStoreError::Config { key, .. }) => assert_eq!(key, k),
                other => panic!("{k}={v}: {other:?}"),
            }
        }
    }
}
