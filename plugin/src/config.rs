//! The plugin configuration a raylet reads: `RAY_object_store_plugin_name`,
//! `RAY_object_store_plugin_path` and `RAY_object_store_plugin_config`.
//!
//! # The config string
//!
//! A series of `key=value` pairs separated by commas: `region=file:/dev/shm/g,size=1GiB`.
//!
//! - The first unescaped `=` of a pair separates key and value; the value may be empty (`k=`).
//! - `\,` `\=` and `\\` stand for a literal comma, equals sign and backslash, in keys and values.
//!   A backslash before any other character, or at the end, is an error.
//! - An empty string is an empty configuration. Empty pairs (`a=1,,b=2`, a trailing comma) are
//!   errors, as are a pair without `=`, an empty key and a key given twice.
//!
//! [`PluginConfig::config_string`] prints the canonical form (keys in order, everything that needs
//! it escaped); parsing it gives back the same map.

use std::collections::BTreeMap;
use std::fmt;

/// Environment variable naming the plugin (`gismo`, `plasma`, `redis`, or a shared library's).
pub const ENV_NAME: &str = "RAY_object_store_plugin_name";
/// Environment variable with the absolute path of a plugin's shared library.
pub const ENV_PATH: &str = "RAY_object_store_plugin_path";
/// Environment variable with the plugin's `key=value,...` configuration.
pub const ENV_CONFIG: &str = "RAY_object_store_plugin_config";
/// Environment variable read by `gismoctl` and `gismo-server` (not by Ray): `strict` (default)
/// or `fallback`, the [`Mode`](crate::Mode) to use when the plugin cannot be made.
pub const ENV_MODE: &str = "RAY_object_store_plugin_mode";

/// Why a config string was refused. Positions are byte offsets into the string.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("plugin config: pair {pair:?} at byte {at} has no '='")]
    MissingEquals { pair: String, at: usize },
    #[error("plugin config: empty key at byte {at}")]
    EmptyKey { at: usize },
    #[error("plugin config: empty pair at byte {at} (stray ',')")]
    EmptyPair { at: usize },
    #[error("plugin config: dangling '\\' at the end")]
    DanglingEscape,
    #[error("plugin config: unknown escape '\\{escaped}' at byte {at} (use \\, \\= or \\\\)")]
    BadEscape { escaped: char, at: usize },
    #[error("plugin config: key {key:?} given twice")]
    DuplicateKey { key: String },
    #[error("plugin config for {plugin}: unknown key {key:?} (known: {known})")]
    UnknownKey {
        plugin: String,
        key: String,
        known: String,
    },
    #[error("plugin config: environment variable {var} is not valid UTF-8")]
    NotUnicode { var: &'static str },
}

/// A plugin's name, library path and parameters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PluginConfig {
    /// Empty means the default (`plasma`).
    pub name: String,
    /// Empty for built-in plugins.
    pub path: String,
    pub params: BTreeMap<String, String>,
}

impl PluginConfig {
    /// From the three strings a raylet is given.
    ///
    /// # Errors
    /// A malformed config string (see the module docs).
    pub fn from_strings(name: &str, path: &str, config: &str) -> Result<PluginConfig, ConfigError> {
        Ok(PluginConfig {
            name: name.to_string(),
            path: path.to_string(),
            params: parse_params(config)?,
        })
    }

    /// From `RAY_object_store_plugin_{name,path,config}`; unset variables are empty.
    ///
    /// # Errors
    /// A malformed config string, or a variable that is not UTF-8.
    pub fn from_env() -> Result<PluginConfig, ConfigError> {
        let var = |v: &'static str| match std::env::var(v) {
            Ok(s) => Ok(s),
            Err(std::env::VarError::NotPresent) => Ok(String::new()),
            Err(std::env::VarError::NotUnicode(_)) => Err(ConfigError::NotUnicode { var: v }),
        };
        PluginConfig::from_strings(&var(ENV_NAME)?, &var(ENV_PATH)?, &var(ENV_CONFIG)?)
    }

    /// The canonical config string for `params`.
    pub fn config_string(&self) -> String {
        print_params(&self.params)
    }

    /// Refuses keys outside `known` (named in the error).
    ///
    /// # Errors
    /// [`ConfigError::UnknownKey`] for the first unknown key.
    pub fn check_keys(&self, known: &[&str]) -> Result<(), ConfigError> {
        check_keys(&self.name, &self.params, known)
    }
}

/// Refuses keys of `params` that `plugin` does not know.
///
/// # Errors
/// [`ConfigError::UnknownKey`] for the first unknown key.
pub fn check_keys(
    plugin: &str,
    params: &BTreeMap<String, String>,
    known: &[&str],
) -> Result<(), ConfigError> {
    match params.keys().find(|k| !known.contains(&k.as_str())) {
        None => Ok(()),
        Some(k) => Err(ConfigError::UnknownKey {
            plugin: plugin.to_string(),
            key: k.clone(),
            known: known.join(","),
        }),
    }
}

/// Parses a config string (module docs).
///
/// # Errors
/// As listed on [`ConfigError`].
pub fn parse_params(s: &str) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut out = BTreeMap::new();
    if s.is_empty() {
        return Ok(out);
    }
    let mut key = String::new();
    let mut value = String::new();
    let mut in_value = false;
    let mut pair_start = 0;
    let mut chars = s.char_indices().peekable();
    let mut finish = |key: &mut String,
                      value: &mut String,
                      in_value: &mut bool,
                      start: usize,
                      end: usize|
     -> Result<(), ConfigError> {
        if !*in_value {
            if key.is_empty() && start == end {
                return Err(ConfigError::EmptyPair { at: start });
            }
            return Err(ConfigError::MissingEquals {
                pair: s[start..end].to_string(),
                at: start,
            });
        }
        if key.is_empty() {
            return Err(ConfigError::EmptyKey { at: start });
        }
        let k = std::mem::take(key);
        if out.contains_key(&k) {
            return Err(ConfigError::DuplicateKey { key: k });
        }
        out.insert(k, std::mem::take(value));
        *in_value = false;
        Ok(())
    };
    while let Some((i, c)) = chars.next() {
        let target = if in_value { &mut value } else { &mut key };
        match c {
            '\\' => match chars.next() {
                Some((_, e @ (',' | '=' | '\\'))) => target.push(e),
                Some((at, e)) => return Err(ConfigError::BadEscape { escaped: e, at }),
                None => return Err(ConfigError::DanglingEscape),
            },
            ',' => {
                finish(&mut key, &mut value, &mut in_value, pair_start, i)?;
                pair_start = i + 1;
            }
            '=' if !in_value => in_value = true,
            c => target.push(c),
        }
    }
    finish(&mut key, &mut value, &mut in_value, pair_start, s.len())?;
    Ok(out)
}

fn escape_into(out: &mut String, s: &str) {
    for c in s.chars() {
        if matches!(c, ',' | '=' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
}

/// The canonical config string: pairs in key order, `,` `=` `\` escaped.
pub fn print_params(params: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    for (i, (k, v)) in params.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        escape_into(&mut out, k);
        out.push('=');
        escape_into(&mut out, v);
    }
    out
}

impl fmt::Display for PluginConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "plugin {:?} (path {:?}, config {:?})",
            self.name,
            self.path,
            self.config_string()
        )
    }
}
