//! Typed reading of a plugin's parameters: the `key=value` map of
//! `RAY_object_store_plugin_config` (see [`config`](crate::config)), or the map a raylet hands to
//! a runner's `start`.
//!
//! Every plugin reads its keys through [`Params`], so that the value forms are the same
//! everywhere and every refusal is a [`ParamError`] naming the plugin, the key, the value given
//! and what was expected:
//!
//! | getter | accepts |
//! |---|---|
//! | [`Params::string`] | anything |
//! | [`Params::parse`] | what the type's `FromStr` accepts (region specs, coherence modes, …) |
//! | [`Params::bool`] | `true`, `false`, `1`, `0` |
//! | [`Params::int`] | a decimal integer within the given bounds |
//! | [`Params::bytes`] | a byte size: `4096`, `512MiB`, `4GiB`, `1.5G`, `64k` ([`ByteSize`]) |
//! | [`Params::millis`] | a whole number of milliseconds, at least the given minimum |
//! | [`Params::fraction`] | a number in `0..=1` |
//!
//! Each getter returns `Ok(None)` for an absent key, so the plugin keeps its defaults next to its
//! keys. [`Params::check_known`] refuses keys outside a plugin's list (the check the plugin
//! manager makes before calling a built-in's constructor).
//!
//! ```
//! use std::collections::BTreeMap;
//! use std::time::Duration;
//! use gismo_plugin::params::Params;
//!
//! let map: BTreeMap<String, String> =
//!     [("memory".to_string(), "64MiB".to_string()), ("wait_ms".to_string(), "soon".to_string())]
//!         .into();
//! let p = Params::new("example", &map);
//! assert_eq!(p.bytes("memory").unwrap(), Some(64 << 20));
//! assert_eq!(p.millis("timeout_ms", 1).unwrap().unwrap_or(Duration::from_secs(2)), Duration::from_secs(2));
//! let e = p.millis("wait_ms", 1).unwrap_err();
//! assert_eq!((e.key, e.value.as_str()), ("wait_ms", "soon"));
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::ops::RangeInclusive;
use std::str::FromStr;
use std::time::Duration;

use gismo_platform::units::ByteSize;

use crate::config::{check_keys, ConfigError};
use crate::interface::Status;

/// A value a plugin refused: which plugin, which key, what was given, and what was expected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{plugin}: {key}={value:?}: {expected}")]
pub struct ParamError {
    pub plugin: &'static str,
    pub key: &'static str,
    pub value: String,
    pub expected: String,
}

impl From<ParamError> for Status {
    /// `Invalid`, with the plugin, key and value in the message.
    fn from(e: ParamError) -> Status {
        Status::invalid(e.to_string())
    }
}

/// The parameters of one plugin, read by key.
#[derive(Clone, Copy, Debug)]
pub struct Params<'a> {
    plugin: &'static str,
    map: &'a BTreeMap<String, String>,
}

impl<'a> Params<'a> {
    /// `map` as read by `plugin` (the name errors give).
    pub fn new(plugin: &'static str, map: &'a BTreeMap<String, String>) -> Params<'a> {
        Params { plugin, map }
    }

    /// The plugin's name, as errors give it.
    pub fn plugin(&self) -> &'static str {
        self.plugin
    }

    /// Refuses keys outside `known`.
    ///
    /// # Errors
    /// [`ConfigError::UnknownKey`] naming the first unknown key and the known ones.
    pub fn check_known(&self, known: &[&str]) -> Result<(), ConfigError> {
        check_keys(self.plugin, self.map, known)
    }

    /// The value of `key` as given.
    pub fn string(&self, key: &str) -> Option<&'a str> {
        self.map.get(key).map(String::as_str)
    }

    /// A refusal of `key`'s value (empty if absent) for a reason of the plugin's own, e.g. a
    /// value that conflicts with another key's.
    pub fn bad(&self, key: &'static str, expected: impl fmt::Display) -> ParamError {
        ParamError {
            plugin: self.plugin,
            key,
            value: self.string(key).unwrap_or_default().to_string(),
            expected: expected.to_string(),
        }
    }

    /// Reads `key` with `read`, which says what it expected when it refuses the value.
    fn read<T>(
        &self,
        key: &'static str,
        read: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ParamError> {
        match self.string(key) {
            None => Ok(None),
            Some(v) => read(v)
                .map(Some)
                .map_err(|expected| self.bad(key, expected)),
        }
    }

    /// `key` through `T`'s `FromStr`; a refusal carries the parse error's message.
    ///
    /// # Errors
    /// [`ParamError`] with the parse error as what was expected.
    pub fn parse<T>(&self, key: &'static str) -> Result<Option<T>, ParamError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        self.read(key, |v| v.parse::<T>().map_err(|e| e.to_string()))
    }

    /// `true`/`1` or `false`/`0`.
    ///
    /// # Errors
    /// [`ParamError`] for anything else.
    pub fn bool(&self, key: &'static str) -> Result<Option<bool>, ParamError> {
        self.read(key, |v| match v {
            "true" | "1" => Ok(true),
            "false" | "0" => Ok(false),
            _ => Err("expected true or false".into()),
        })
    }

    /// A decimal integer in `bounds`.
    ///
    /// # Errors
    /// [`ParamError`] for a value that is not an integer of type `T` or lies outside `bounds`.
    pub fn int<T>(
        &self,
        key: &'static str,
        bounds: RangeInclusive<T>,
    ) -> Result<Option<T>, ParamError>
    where
        T: FromStr + PartialOrd + fmt::Display,
    {
        self.read(key, |v| {
            v.parse::<T>()
                .ok()
                .filter(|n| bounds.contains(n))
                .ok_or_else(|| {
                    format!(
                        "expected an integer in {}..={}",
                        bounds.start(),
                        bounds.end()
                    )
                })
        })
    }

    /// A byte size ([`ByteSize`]: `4096`, `512MiB`, `4GiB`, `1.5G`), in bytes.
    ///
    /// # Errors
    /// [`ParamError`] with the size parser's reason.
    pub fn bytes(&self, key: &'static str) -> Result<Option<u64>, ParamError> {
        Ok(self.parse::<ByteSize>(key)?.map(|s| s.0))
    }

    /// A whole number of milliseconds, at least `min_ms`.
    ///
    /// # Errors
    /// [`ParamError`] for a value that is not a whole number, or is below `min_ms`.
    pub fn millis(&self, key: &'static str, min_ms: u64) -> Result<Option<Duration>, ParamError> {
        self.read(key, |v| {
            v.parse::<u64>()
                .ok()
                .filter(|n| *n >= min_ms)
                .map(Duration::from_millis)
                .ok_or_else(|| match min_ms {
                    0 => "expected milliseconds".to_string(),
                    _ => format!("expected milliseconds >= {min_ms}"),
                })
        })
    }

    /// A fraction in `0..=1`.
    ///
    /// # Errors
    /// [`ParamError`] for a value that is not a number in `0..=1`.
    pub fn fraction(&self, key: &'static str) -> Result<Option<f64>, ParamError> {
        self.read(key, |v| {
            v.parse::<f64>()
                .ok()
                .filter(|t| (0.0..=1.0).contains(t))
                .ok_or_else(|| "expected a fraction in 0..=1".to_string())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interface::StatusCode;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn absent_keys_are_none() {
        let m = map(&[]);
        let p = Params::new("t", &m);
        assert_eq!(p.string("a"), None);
        assert_eq!(p.bool("a").unwrap(), None);
        assert_eq!(p.int::<u32>("a", 1..=2).unwrap(), None);
        assert_eq!(p.bytes("a").unwrap(), None);
        assert_eq!(p.millis("a", 0).unwrap(), None);
        assert_eq!(p.fraction("a").unwrap(), None);
        assert_eq!(p.parse::<u8>("a").unwrap(), None);
    }

    #[test]
    fn values_of_every_form() {
        let m = map(&[
            ("s", "text"),
            ("t", "true"),
            ("one", "1"),
            ("f", "false"),
            ("zero", "0"),
            ("n", "1024"),
            ("size", "1.5KiB"),
            ("ms", "250"),
            ("half", "0.5"),
        ]);
        let p = Params::new("t", &m);
        assert_eq!(p.string("s"), Some("text"));
        assert_eq!(p.bool("t").unwrap(), Some(true));
        assert_eq!(p.bool("one").unwrap(), Some(true));
        assert_eq!(p.bool("f").unwrap(), Some(false));
        assert_eq!(p.bool("zero").unwrap(), Some(false));
        assert_eq!(p.int::<u32>("n", 1..=1024).unwrap(), Some(1024));
        assert_eq!(p.int::<u64>("zero", 0..=0).unwrap(), Some(0));
        assert_eq!(p.bytes("size").unwrap(), Some(1536));
        assert_eq!(p.bytes("n").unwrap(), Some(1024));
        assert_eq!(
            p.millis("ms", 250).unwrap(),
            Some(Duration::from_millis(250))
        );
        assert_eq!(p.millis("zero", 0).unwrap(), Some(Duration::ZERO));
        assert_eq!(p.fraction("half").unwrap(), Some(0.5));
        assert_eq!(p.fraction("one").unwrap(), Some(1.0));
        assert_eq!(p.parse::<u16>("n").unwrap(), Some(1024));
    }

    #[test]
    fn bad_values_name_plugin_key_and_value() {
        let m = map(&[
            ("b", "yes"),
            ("n", "1025"),
            ("neg", "-1"),
            ("size", "lots"),
            ("ms", "0"),
            ("frac", "1.5"),
        ]);
        let p = Params::new("demo", &m);
        let errors = [
            p.bool("b").unwrap_err(),
            p.int::<u32>("n", 1..=1024).unwrap_err(),
            p.int::<u64>("neg", 0..=10).unwrap_err(),
            p.bytes("size").unwrap_err(),
            p.millis("ms", 1).unwrap_err(),
            p.millis("neg", 0).unwrap_err(),
            p.fraction("frac").unwrap_err(),
            p.parse::<u8>("n").unwrap_err(),
        ];
        let expected_keys = ["b", "n", "neg", "size", "ms", "neg", "frac", "n"];
        for (e, key) in errors.iter().zip(expected_keys) {
            assert_eq!(e.plugin, "demo");
            assert_eq!(e.key, key);
            assert_eq!(e.value, m[key]);
            let msg = e.to_string();
            assert!(
                msg.starts_with(&format!("demo: {key}={:?}: ", m[key])),
                "{msg}"
            );
            let s = Status::from(e.clone());
            assert_eq!(s.code, StatusCode::Invalid);
            assert_eq!(s.message, msg);
        }
        assert!(errors[1].expected.contains("1..=1024"), "{}", errors[1]);
        assert!(errors[3].expected.contains("invalid size"), "{}", errors[3]);
        assert!(errors[4].expected.contains(">= 1"), "{}", errors[4]);
    }

    #[test]
    fn unknown_keys_are_refused_with_the_known_ones() {
        let m = map(&[("size", "1"), ("sise", "2")]);
        let p = Params::new("demo", &m);
        assert!(p.check_known(&["size", "sise"]).is_ok());
        match p.check_known(&["size", "region"]) {
            Err(ConfigError::UnknownKey { plugin, key, known }) => {
                assert_eq!((plugin.as_str(), key.as_str()), ("demo", "sise"));
                assert_eq!(known, "size,region");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_names_the_current_value() {
        let m = map(&[("low", "0.9")]);
        let p = Params::new("demo", &m);
        let e = p.bad("low", "must not exceed high (0.5)");
        assert_eq!(
            e.to_string(),
            "demo: low=\"0.9\": must not exceed high (0.5)"
        );
        assert_eq!(p.bad("absent", "required").value, "");
    }
}
