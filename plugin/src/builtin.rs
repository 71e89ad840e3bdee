//! [`Builtin`]: how a plugin compiled into the program registers with the [`PluginManager`] — its
//! name, the config keys it reads, and its two constructors — so that the manager names no plugin.
//!
//! Each plugin crate exports its entry (`gismo::BUILTIN`, `gismo_plasma::BUILTIN`,
//! `gismo_redis::BUILTIN`) next to the keys it reads; a program hands the table of the ones it
//! links to [`PluginManager::new`] (`gismo_builtins::BUILTINS` is the table of all three).
//!
//! [`PluginManager`]: crate::PluginManager
//! [`PluginManager::new`]: crate::PluginManager::new

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use crate::interface::{ObjectStoreClient, ObjectStoreRunner};
use crate::PluginError;

/// Makes a plugin's runner (not started) from its configuration.
pub type MakeRunner =
    fn(&BTreeMap<String, String>) -> Result<Box<dyn ObjectStoreRunner>, PluginError>;

/// Makes a client of the plugin's store from its configuration.
pub type MakeClient =
    fn(&BTreeMap<String, String>) -> Result<Arc<dyn ObjectStoreClient>, PluginError>;

/// One built-in plugin.
#[derive(Clone, Copy)]
pub struct Builtin {
    /// The name a configuration selects it by (`RAY_object_store_plugin_name`).
    pub name: &'static str,
    /// The config keys it accepts; the manager refuses others before calling a constructor.
    pub keys: &'static [&'static str],
    pub make_runner: MakeRunner,
    pub make_client: MakeClient,
}

impl fmt::Debug for Builtin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builtin")
            .field("name", &self.name)
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}
