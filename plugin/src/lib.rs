//! GISMO's plugin layer: the Ray-shaped [`interface`] every object-store plugin implements (client,
//! runner, status codes), the configuration a raylet reads, the stable C ABI a plugin library
//! exports (`CreateRunner` / `CreateClient`, `include/gismo_plugin.h`), and the [`PluginManager`]
//! that makes runners and clients from built-in plugins or shared libraries.
//!
//! It names no plugin: the built-ins register through a table of [`Builtin`] entries (name,
//! config keys, constructors) that the program hands to [`PluginManager::new`]
//! (`gismo-builtins` holds the table of GISMO, plasma and redis).
//!
//! See `docs/plugin-abi.md` for the ABI as a specification.
#![deny(unsafe_op_in_unsafe_fn)]

pub mod abi;
pub mod builtin;
pub mod config;
pub mod interface;
pub mod loaded;
pub mod manager;
pub mod params;

pub use builtin::Builtin;
pub use config::{ConfigError, PluginConfig};
pub use manager::{Mode, PluginError, PluginManager};
