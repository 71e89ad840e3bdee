//! [`PluginManager`]: makes a node's runner and clients from a plugin name, library path and
//! configuration (the proposal's `PluginManager::GetInstance()` with `CreateRunner`/`CreateClient`).
//!
//! # Which plugin
//!
//! - A non-empty `path` loads a shared library (absolute path required) whatever the name: the
//!   manager `dlopen`s it, looks up `CreateRunner` / `CreateClient`, checks the table's ABI version
//!   and size, and wraps the handle in [`LoadedRunner`] / [`LoadedClient`].
//! - An empty `path` selects a built-in plugin by name from the manager's table of [`Builtin`]s
//!   (the programs' table, `gismo_builtins::BUILTINS`: `gismo`, `plasma` and `redis`, objects in a
//!   Redis server, `docs/redis.md`); an empty name means `plasma`.
//!
//! # Mixing plugins
//!
//! Several libraries may be loaded at once (each is loaded once per path and stays loaded while
//! anything made from it lives). A raylet must take its runner and every client of its node from
//! the same plugin and configuration: objects, references and callbacks belong to one store, and
//! a client of one plugin cannot see another's objects. Different nodes may not mix plugins either
//! unless the plugins share the store (all GISMO nodes must name the same region).
//!
//! # Strict and fallback mode
//!
//! [`Mode::Strict`] fails with the cause. [`Mode::Fallback`] logs one warning naming the cause
//! (once per process and configuration: a runner and the clients of one configuration share it)
//! and makes `plasma` instead, with the plasma keys the configuration holds (`store_socket_name`,
//! `object_store_memory`, …; defaults for the others); if that fails too, its error is returned. Every configuration except plasma itself (an empty or `plasma` name without a
//! library path) falls back — a library path with an empty name included.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use libloading::Library;

use crate::abi::{
    CreateClientFn, CreateRunnerFn, GismoClientApi, GismoClientHandle, GismoError, GismoRunnerApi,
    GismoRunnerHandle, ABI_VERSION, CREATE_CLIENT_SYMBOL, CREATE_RUNNER_SYMBOL,
};
use crate::builtin::Builtin;
use crate::config::{check_keys, ConfigError, PluginConfig};
use crate::interface::{ObjectStoreClient, ObjectStoreRunner, Status};
use crate::loaded::{CParams, LoadedClient, LoadedRunner};

/// The built-in an empty name selects, and the one fallback mode makes.
pub const DEFAULT_PLUGIN: &str = "plasma";

/// Why a runner or client could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("unknown built-in plugin {0:?} (give a library path to load a plugin)")]
    UnknownPlugin(String),
    #[error("plugin path {0:?} is not absolute")]
    RelativePath(PathBuf),
    #[error("plugin library {path:?} does not exist")]
    MissingLibrary { path: PathBuf },
    #[error("cannot load plugin library {path:?}: {message}")]
    Load { path: PathBuf, message: String },
    #[error("plugin library {path:?} has no symbol {symbol}")]
    MissingSymbol { path: PathBuf, symbol: &'static str },
    #[error(
        "plugin library {path:?}: {table} ABI version {found}, this host speaks version {expected}"
    )]
    AbiVersion {
        path: PathBuf,
        table: &'static str,
        found: u32,
        expected: u32,
    },
    #[error("plugin library {path:?}: {table} is {found} bytes, version {version} needs at least {expected}")]
    TableTooSmall {
        path: PathBuf,
        table: &'static str,
        version: u32,
        found: u32,
        expected: u32,
    },
    #[error("plugin library {path:?}: {table}.{function} is null")]
    NullFunction {
        path: PathBuf,
        table: &'static str,
        function: &'static str,
    },
    #[error("plugin library {path:?}: {symbol} failed: {message}")]
    FactoryFailed {
        path: PathBuf,
        symbol: &'static str,
        message: String,
    },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Status(#[from] Status),
}

impl PluginError {
    /// Whether the caller's input is at fault — a relative path, an unknown built-in name, a
    /// malformed config or an unknown key, a value the plugin calls `Invalid` — rather than the
    /// plugin (missing or broken library, ABI mismatch, a failing factory, not available). Tools
    /// report the first as usage errors.
    pub fn is_bad_input(&self) -> bool {
        match self {
            PluginError::RelativePath(_)
            | PluginError::UnknownPlugin(_)
            | PluginError::Config(_) => true,
            PluginError::Status(s) => s.code == crate::interface::StatusCode::Invalid,
            _ => false,
        }
    }
}

/// What to do when the configured plugin cannot be made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// Fail with the cause.
    #[default]
    Strict,
    /// Log one warning naming the cause and use `plasma` (with the configuration's plasma keys).
    Fallback,
}

/// The plugin manager: the built-ins it was given, and the libraries it has loaded. A program
/// keeps one for the whole process (`gismo_builtins::plugin_manager()`).
pub struct PluginManager {
    builtins: &'static [Builtin],
    libraries: Mutex<HashMap<PathBuf, Weak<Library>>>,
    /// Configurations (as displayed) whose fallback has been announced: one warning each.
    warned: Mutex<BTreeSet<String>>,
}

impl PluginManager {
    /// A manager that knows the built-in plugins of `builtins` (and loads any library by path).
    pub fn new(builtins: &'static [Builtin]) -> PluginManager {
        PluginManager {
            builtins,
            libraries: Mutex::new(HashMap::new()),
            warned: Mutex::new(BTreeSet::new()),
        }
    }

    /// The built-in `name` selects (an empty name: [`DEFAULT_PLUGIN`]).
    ///
    /// # Errors
    /// [`PluginError::UnknownPlugin`] when the table has no such built-in.
    pub fn builtin(&self, name: &str) -> Result<&'static Builtin, PluginError> {
        let wanted = if name.is_empty() {
            DEFAULT_PLUGIN
        } else {
            name
        };
        self.builtins
            .iter()
            .find(|b| b.name == wanted)
            .ok_or_else(|| PluginError::UnknownPlugin(name.to_string()))
    }

    /// The built-in `name` selects, with `config`'s keys checked against the ones it reads.
    fn checked_builtin(
        &self,
        name: &str,
        config: &BTreeMap<String, String>,
    ) -> Result<&'static Builtin, PluginError> {
        let builtin = self.builtin(name)?;
        check_keys(builtin.name, config, builtin.keys)?;
        Ok(builtin)
    }

    /// Makes the node's runner (not started).
    ///
    /// # Errors
    /// [`PluginError`]: a built-in that does not exist, a library that cannot be loaded or speaks
    /// another ABI, a refused configuration, or the plugin's own failure.
    pub fn create_runner(
        &self,
        name: &str,
        path: &str,
        config: &BTreeMap<String, String>,
    ) -> Result<Box<dyn ObjectStoreRunner>, PluginError> {
        if !path.is_empty() {
            return self.load_runner(Path::new(path), config);
        }
        (self.checked_builtin(name, config)?.make_runner)(config)
    }

    /// Makes a client of the node's store.
    ///
    /// # Errors
    /// As [`PluginManager::create_runner`].
    pub fn create_client(
        &self,
        name: &str,
        path: &str,
        config: &BTreeMap<String, String>,
    ) -> Result<Arc<dyn ObjectStoreClient>, PluginError> {
        if !path.is_empty() {
            return self.load_client(Path::new(path), config);
        }
        (self.checked_builtin(name, config)?.make_client)(config)
    }

    /// [`create_runner`](Self::create_runner) for a [`PluginConfig`], in `mode`.
    ///
    /// # Errors
    /// Strict: the cause. Fallback: plasma's own error, if plasma cannot be made either (after
    /// one warning naming the first cause).
    pub fn create_runner_with_mode(
        &self,
        config: &PluginConfig,
        mode: Mode,
    ) -> Result<Box<dyn ObjectStoreRunner>, PluginError> {
        self.with_fallback(config, mode, |name, path, params| {
            self.create_runner(name, path, params)
        })
    }

    /// [`create_client`](Self::create_client) for a [`PluginConfig`], in `mode` (as
    /// [`create_runner_with_mode`](Self::create_runner_with_mode)).
    ///
    /// # Errors
    /// As [`create_runner_with_mode`](Self::create_runner_with_mode).
    pub fn create_client_with_mode(
        &self,
        config: &PluginConfig,
        mode: Mode,
    ) -> Result<Arc<dyn ObjectStoreClient>, PluginError> {
        self.with_fallback(config, mode, |name, path, params| {
            self.create_client(name, path, params)
        })
    }

    /// The library at `path`, loaded once and shared while anything uses it.
    fn library(&self, path: &Path) -> Result<Arc<Library>, PluginError> {
        if !path.is_absolute() {
            return Err(PluginError::RelativePath(path.to_path_buf()));
        }
        if !path.exists() {
            return Err(PluginError::MissingLibrary {
                path: path.to_path_buf(),
            });
        }
        let mut libs = self.libraries.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(lib) = libs.get(path).and_then(Weak::upgrade) {
            return Ok(lib);
        }
        // SAFETY: loading a library runs its initialisers; a plugin is trusted code named by the
        // operator (as a raylet trusts its own binaries).
        let lib = unsafe { Library::new(path) }.map_err(|e| PluginError::Load {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let lib = Arc::new(lib);
        libs.retain(|_, w| w.strong_count() > 0);
        libs.insert(path.to_path_buf(), Arc::downgrade(&lib));
        Ok(lib)
    }

    fn load_client(
        &self,
        path: &Path,
        config: &BTreeMap<String, String>,
    ) -> Result<Arc<dyn ObjectStoreClient>, PluginError> {
        let (lib, table, handle) = self.load::<ClientFactory>(path, config)?;
        // SAFETY: handle and table come from this library's CreateClient, checked by `load`.
        Ok(Arc::new(unsafe { LoadedClient::new(lib, table, handle) }))
    }

    fn load_runner(
        &self,
        path: &Path,
        config: &BTreeMap<String, String>,
    ) -> Result<Box<dyn ObjectStoreRunner>, PluginError> {
        let (lib, table, handle) = self.load::<RunnerFactory>(path, config)?;
        // SAFETY: handle and table come from this library's CreateRunner, checked by `load`.
        Ok(Box::new(unsafe { LoadedRunner::new(lib, table, handle) }))
    }

    /// Loads `path`, calls its `F` factory with `config` and checks the table it returns: ABI
    /// version, size, and that no function is null. On success the handle and the (copied) table
    /// belong together and to the returned library.
    fn load<F: Factory>(
        &self,
        path: &Path,
        config: &BTreeMap<String, String>,
    ) -> Result<Made<F>, PluginError> {
        let lib = self.library(path)?;
        // SAFETY: the symbol is specified to have `FactoryFn<F>`'s type (plugin ABI: the
        // `CreateClientFn` / `CreateRunnerFn` of `abi.rs`).
        let create: FactoryFn<F> =
            *unsafe { lib.get::<FactoryFn<F>>(F::SYMBOL) }.map_err(|_| {
                PluginError::MissingSymbol {
                    path: path.to_path_buf(),
                    symbol: F::SYMBOL_NAME,
                }
            })?;
        let params = CParams::new(config)?;
        let mut api: *const F::Table = std::ptr::null();
        let mut err = GismoError::default();
        // SAFETY: arrays of `params.len()` C strings, valid out pointers.
        let handle = unsafe {
            create(
                params.keys.as_ptr(),
                params.values.as_ptr(),
                params.len(),
                &mut api,
                &mut err,
            )
        };
        let failed = |message: String| PluginError::FactoryFailed {
            path: path.to_path_buf(),
            symbol: F::SYMBOL_NAME,
            message,
        };
        if handle.is_null() {
            let m = err.text();
            return Err(failed(if m.is_empty() {
                "returned null".into()
            } else {
                m
            }));
        }
        if api.is_null() {
            // Without a table there is no destroy: the handle is leaked.
            return Err(failed("returned a handle but no function table".into()));
        }
        // SAFETY: both tables are `repr(C)` and start with `abi_version: u32, struct_size: u32`,
        // the header common to every ABI version.
        let [version, size] = unsafe { api.cast::<[u32; 2]>().read() };
        check_table(
            path,
            F::TABLE_NAME,
            version,
            size,
            std::mem::size_of::<F::Table>(),
        )?;
        // SAFETY: version and size checked: the table has this layout (copied once).
        let table = unsafe { *api };
        F::check_functions(path, &table)?;
        Ok((lib, table, handle))
    }

    /// `create` for `config`; in fallback mode, `plasma` if that fails, after one warning per
    /// configuration and process.
    fn with_fallback<T>(
        &self,
        config: &PluginConfig,
        mode: Mode,
        create: impl Fn(&str, &str, &BTreeMap<String, String>) -> Result<T, PluginError>,
    ) -> Result<T, PluginError> {
        match create(&config.name, &config.path, &config.params) {
            Ok(made) => Ok(made),
            // A library path is never plasma, whatever the name (an empty name with a path too).
            Err(e)
                if mode == Mode::Fallback
                    && !(config.path.is_empty()
                        && matches!(config.name.as_str(), "" | DEFAULT_PLUGIN)) =>
            {
                let first = self
                    .warned
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(config.to_string());
                if first {
                    eprintln!(
                        "warning: object store {config}: {e}; falling back to {DEFAULT_PLUGIN}"
                    );
                }
                // The plasma settings the configuration names (e.g. `store_socket_name`), if any.
                let keys = self.builtin(DEFAULT_PLUGIN)?.keys;
                let plasma: BTreeMap<String, String> = config
                    .params
                    .iter()
                    .filter(|(k, _)| keys.contains(&k.as_str()))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                create(DEFAULT_PLUGIN, "", &plasma)
            }
            Err(e) => Err(e),
        }
    }
}

/// The two factories of the ABI (`CreateClient`, `CreateRunner`): the same protocol over
/// different types and names.
trait Factory {
    type Table: Copy;
    type Handle;
    const SYMBOL: &'static [u8];
    const SYMBOL_NAME: &'static str;
    const TABLE_NAME: &'static str;
    fn check_functions(path: &Path, table: &Self::Table) -> Result<(), PluginError>;
}

/// What a factory made: the library, the (copied, checked) table and the handle.
type Made<F> = (
    Arc<Library>,
    <F as Factory>::Table,
    *mut <F as Factory>::Handle,
);

/// A factory's C signature (`CreateClientFn` / `CreateRunnerFn`).
type FactoryFn<F> = unsafe extern "C" fn(
    keys: *const *const std::ffi::c_char,
    values: *const *const std::ffi::c_char,
    n: u64,
    api: *mut *const <F as Factory>::Table,
    err: *mut GismoError,
) -> *mut <F as Factory>::Handle;

struct ClientFactory;
struct RunnerFactory;

/// Compiles only while `FactoryFn` matches the ABI's declared factory types.
const _: fn(CreateClientFn) -> FactoryFn<ClientFactory> = |f| f;
const _: fn(CreateRunnerFn) -> FactoryFn<RunnerFactory> = |f| f;

impl Factory for ClientFactory {
    type Table = GismoClientApi;
    type Handle = GismoClientHandle;
    const SYMBOL: &'static [u8] = CREATE_CLIENT_SYMBOL;
    const SYMBOL_NAME: &'static str = "CreateClient";
    const TABLE_NAME: &'static str = "GismoClientApi";
    fn check_functions(path: &Path, table: &GismoClientApi) -> Result<(), PluginError> {
        check_client_functions(path, table)
    }
}

impl Factory for RunnerFactory {
    type Table = GismoRunnerApi;
    type Handle = GismoRunnerHandle;
    const SYMBOL: &'static [u8] = CREATE_RUNNER_SYMBOL;
    const SYMBOL_NAME: &'static str = "CreateRunner";
    const TABLE_NAME: &'static str = "GismoRunnerApi";
    fn check_functions(path: &Path, table: &GismoRunnerApi) -> Result<(), PluginError> {
        check_runner_functions(path, table)
    }
}

fn check_table(
    path: &Path,
    table: &'static str,
    version: u32,
    size: u32,
    expected: usize,
) -> Result<(), PluginError> {
    if version != ABI_VERSION {
        return Err(PluginError::AbiVersion {
            path: path.to_path_buf(),
            table,
            found: version,
            expected: ABI_VERSION,
        });
    }
    if (size as usize) < expected {
        return Err(PluginError::TableTooSmall {
            path: path.to_path_buf(),
            table,
            version,
            found: size,
            expected: expected as u32,
        });
    }
    Ok(())
}

macro_rules! non_null {
    ($path:expr, $table:literal, $t:expr, [$($f:ident),*]) => {
        $(
            if $t.$f.is_none() {
                return Err(PluginError::NullFunction {
                    path: $path.to_path_buf(),
                    table: $table,
                    function: stringify!($f),
                });
            }
        )*
    };
}

fn check_client_functions(path: &Path, t: &GismoClientApi) -> Result<(), PluginError> {
    non_null!(
        path,
        "GismoClientApi",
        t,
        [
            create,
            try_create_immediately,
            seal,
            abort,
            get,
            release,
            contains,
            delete_objects,
            disconnect,
            get_memory_usage,
            free_string,
            memory_copy,
            is_global,
            destroy
        ]
    );
    Ok(())
}

fn check_runner_functions(path: &Path, t: &GismoRunnerApi) -> Result<(), PluginError> {
    non_null!(
        path,
        "GismoRunnerApi",
        t,
        [
            start,
            stop,
            is_object_spillable,
            consumed_bytes,
            fallback_allocated,
            available_memory,
            total_memory_size,
            max_memory_size,
            destroy
        ]
    );
    Ok(())
}
