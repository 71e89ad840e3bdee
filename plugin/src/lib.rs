//! Object-store plugins: the configuration a raylet reads, the stable C ABI a plugin exports
//! (`CreateRunner` / `CreateClient`, `include/gismo_plugin.h`), and the [`PluginManager`] that
//! makes runners and clients from built-in plugins or shared libraries.
//!
//! See `docs/plugin-abi.md` for the ABI as a specification.

pub mod abi;
pub mod config;
mod ffi;
pub mod loaded;
pub mod manager;
pub mod redis;

pub use config::{ConfigError, PluginConfig};
pub use manager::{Mode, PluginError, PluginManager};
