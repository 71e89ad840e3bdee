//! `--plugin`, `--plugin-path`, `--plugin-config`, `--plugin-mode`: what the server does for an
//! object store plugin.
//!
//! - No plugin (no name, no path): the server serves `--region`, as always.
//! - The GISMO plugin (named `gismo`, built in or loaded from a path): the server serves its
//!   region — `--region`, or else the config's `region` key. It does **not** start a runner: the
//!   raylet's runner consumes the host's event ring, and a ring has one consumer.
//! - Any other plugin: the server hosts that plugin's runner — `Start` with the config and
//!   callbacks that log — until SIGTERM (for a plasma-like plugin, its store server).
//!
//! If the plugin cannot be made or started, strict mode fails with exit 7 and the cause;
//! fallback mode logs one warning naming the cause and hosts `plasma` (with an empty config)
//! instead. The fallback is done here rather than by `PluginManager::*_with_mode` so that the
//! warning is one line of the server's log.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gismo_builtins::plugin_manager;
use gismo_plugin::interface::{ObjectStoreRunner, RunnerCallbacks};
use gismo_plugin::{Mode, PluginConfig};
use log::{debug, info, warn};

use crate::cli::Args;
use crate::failure::{ExitCode, Failure};
use crate::shutdown::Shutdown;

/// The plugin named on the command line (or by the raylet's variables).
#[derive(Clone, Debug)]
pub struct Plugin {
    pub config: PluginConfig,
    pub mode: Mode,
}

fn given(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.is_empty())
}

impl Plugin {
    /// The plugin `args` name, if any.
    ///
    /// # Errors
    /// A usage failure for a malformed config, or a config without a plugin.
    pub fn selected(args: &Args) -> Result<Option<Plugin>, Failure> {
        let (name, path) = (given(&args.plugin), given(&args.plugin_path));
        if name.is_none() && path.is_none() {
            if given(&args.plugin_config).is_some() {
                return Err(Failure::usage(
                    "--plugin-config (or RAY_object_store_plugin_config) needs --plugin or \
                     --plugin-path",
                ));
            }
            return Ok(None);
        }
        let config = PluginConfig::from_strings(
            name.unwrap_or(""),
            path.unwrap_or(""),
            given(&args.plugin_config).unwrap_or(""),
        )
        .map_err(|e| Failure::usage(e.to_string()))?;
        Ok(Some(Plugin {
            config,
            mode: args.plugin_mode.into(),
        }))
    }

    /// Whether this is the GISMO plugin, whose region the server serves itself.
    pub fn is_gismo(&self) -> bool {
        self.config.name == "gismo"
    }

    /// How the log names the plugin.
    pub fn label(&self) -> String {
        match (self.config.name.as_str(), self.config.path.as_str()) {
            ("", "") => "plasma".to_string(),
            (name, "") => name.to_string(),
            ("", path) => path.to_string(),
            (name, path) => format!("{name} ({path})"),
        }
    }

    /// The region a GISMO plugin names: `--region`, else the config's `region` key.
    ///
    /// # Errors
    /// A usage failure when both are given and differ.
    pub fn gismo_region(&self, region: Option<&str>) -> Result<Option<String>, Failure> {
        let from_config = self.config.params.get("region").map(String::as_str);
        match (region, from_config) {
            (Some(a), Some(b)) if a != b => Err(Failure::usage(format!(
                "--region {a} and the plugin config's region={b} disagree"
            ))),
            (Some(a), _) => Ok(Some(a.to_string())),
            (None, b) => Ok(b.map(str::to_string)),
        }
    }
}

/// Callbacks that log what a raylet would be told.
fn logging_callbacks() -> RunnerCallbacks {
    RunnerCallbacks {
        spill_objects: Arc::new(|| {
            info!("the store asks for spilling (no raylet here to spill)");
            false
        }),
        object_store_full: Arc::new(|| warn!("the object store is full")),
        add_object: Arc::new(|o| {
            debug!(
                "add_object {} ({} + {} bytes)",
                o.object_id, o.data_size, o.metadata_size
            );
        }),
        delete_object: Arc::new(|id| debug!("delete_object {id}")),
    }
}

/// Makes and starts `plugin`'s runner (in fallback mode, plasma's if that fails), then runs it
/// until `shutdown`.
///
/// # Errors
/// [`Failure::plugin`] (exit 7, or 2 for bad input) if no runner could be made or started.
pub fn host(plugin: &Plugin, shutdown: &Shutdown, stats_every: Duration) -> Result<(), Failure> {
    let label = plugin.label();
    let made = make_and_start(&plugin.config);
    let (runner, label) = match made {
        Ok(r) => (r, label),
        Err(f) if plugin.mode == Mode::Fallback && !is_plasma(&plugin.config) => {
            warn!("{}; falling back to plasma", f.message);
            return host_plasma(shutdown, stats_every);
        }
        Err(f) => return Err(f),
    };
    run(&*runner, &label, shutdown, stats_every);
    Ok(())
}

/// Hosts `plasma` with an empty config (the fallback).
///
/// # Errors
/// As [`host`].
pub fn host_plasma(shutdown: &Shutdown, stats_every: Duration) -> Result<(), Failure> {
    let plasma = PluginConfig {
        name: "plasma".into(),
        ..PluginConfig::default()
    };
    let runner = make_and_start(&plasma)?;
    run(&*runner, "plasma", shutdown, stats_every);
    Ok(())
}

fn is_plasma(c: &PluginConfig) -> bool {
    c.path.is_empty() && matches!(c.name.as_str(), "" | "plasma")
}

fn make_and_start(config: &PluginConfig) -> Result<Box<dyn ObjectStoreRunner>, Failure> {
    let what = format!(
        "plugin {:?}",
        if config.path.is_empty() {
            &config.name
        } else {
            &config.path
        }
    );
    let runner = plugin_manager()
        .create_runner(&config.name, &config.path, &config.params)
        .map_err(|e| Failure::plugin(&what, &e))?;
    runner
        .start(&config.params, logging_callbacks())
        .map_err(|s| Failure::new(ExitCode::PluginUnusable, format!("{what}: start: {s}")))?;
    Ok(runner)
}

fn run(runner: &dyn ObjectStoreRunner, label: &str, shutdown: &Shutdown, stats_every: Duration) {
    info!(
        "ready: hosting the runner of plugin {label} ({} of {} bytes available, pid {})",
        runner.available_memory(),
        runner.total_memory_size(),
        std::process::id()
    );
    let mut last = Instant::now();
    while !shutdown.requested() {
        std::thread::sleep(Duration::from_millis(100));
        if last.elapsed() >= stats_every {
            last = Instant::now();
            debug!(
                "runner: {} of {} bytes available, {} consumed, {} in fallback allocations",
                runner.available_memory(),
                runner.total_memory_size(),
                runner.consumed_bytes(),
                runner.fallback_allocated()
            );
        }
    }
    info!("stopping on signal");
    runner.stop();
}
