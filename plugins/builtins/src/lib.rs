//! The table of GISMO's built-in plugins — `gismo`, `plasma` and `redis` — for the programs
//! (`gismo-server`, `gismoctl`, the benchmarks, the Python package), and the process's
//! [`PluginManager`] over it.
//!
//! The raylet's `libgismo.so` does not link this crate: it is the GISMO plugin alone.

use std::sync::OnceLock;

use gismo_plugin::{Builtin, PluginManager};

/// Every built-in plugin, one entry each (name, config keys, constructors).
pub static BUILTINS: &[Builtin] = &[gismo::BUILTIN, gismo_plasma::BUILTIN, gismo_redis::BUILTIN];

/// The process-wide plugin manager, knowing every built-in of [`BUILTINS`].
pub fn plugin_manager() -> &'static PluginManager {
    static MANAGER: OnceLock<PluginManager> = OnceLock::new();
    MANAGER.get_or_init(|| PluginManager::new(BUILTINS))
}
