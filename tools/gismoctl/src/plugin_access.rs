//! Turning `--plugin`, `--plugin-path`, `--plugin-config` and `--plugin-mode` (or the
//! `RAY_object_store_plugin_*` variables) into a plugin's client and runner, through
//! [`PluginManager`] exactly as a raylet makes them.
//!
//! No name and no path means no plugin: the commands keep working directly on `--region`. An
//! empty value counts as unset (Ray treats an empty name as its default, which here is the
//! region).

use std::sync::Arc;

use gismo_builtins::plugin_manager;
use gismo_plugin::interface::{ObjectStoreClient, ObjectStoreRunner};
use gismo_plugin::{Mode, PluginConfig};

use crate::cli::PluginArgs;
use crate::failure::{CmdResult, Failure};

/// The region the gismo plugin uses without a `region` key (`gismo::open_store`).
const GISMO_DEFAULT_REGION: &str = "file:/dev/shm/gismo-default";

/// The plugin a command goes through.
#[derive(Clone, Debug)]
pub struct Plugin {
    pub config: PluginConfig,
    pub mode: Mode,
    /// `--plugin-mode` as given, to pass on to `bench` workers.
    pub mode_arg: &'static str,
}

fn given(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.is_empty())
}

/// The plugin named on the command line (or in the environment), if any. For the `gismo`
/// plugin without a `region` key, `region` (from `--region` / `GISMO_REGION`) supplies it.
///
/// # Errors
/// A usage failure for a malformed config string, or a config without a plugin to give it to.
pub fn selected(args: &PluginArgs, region: Option<&str>) -> CmdResult<Option<Plugin>> {
    let (name, path) = (given(&args.name), given(&args.path));
    if name.is_none() && path.is_none() {
        if given(&args.config).is_some() {
            return Err(Failure::usage(
                "--plugin-config (or RAY_object_store_plugin_config) needs --plugin or \
                 --plugin-path",
            ));
        }
        return Ok(None);
    }
    let mut config = PluginConfig::from_strings(
        name.unwrap_or(""),
        path.unwrap_or(""),
        given(&args.config).unwrap_or(""),
    )
    .map_err(|e| Failure::usage(e.to_string()))?;
    if config.name == "gismo" && !config.params.contains_key("region") {
        if let Some(r) = region.filter(|r| !r.is_empty()) {
            config.params.insert("region".into(), r.to_string());
        }
    }
    let mode_arg = match args.mode {
        crate::cli::PluginModeArg::Strict => "strict",
        crate::cli::PluginModeArg::Fallback => "fallback",
    };
    Ok(Some(Plugin {
        config,
        mode: args.mode.into(),
        mode_arg,
    }))
}

impl Plugin {
    /// How messages name the plugin: its name, or its library's path.
    pub fn label(&self) -> String {
        match (self.config.name.as_str(), self.config.path.as_str()) {
            ("", "") => "plasma".to_string(),
            (name, "") => name.to_string(),
            ("", path) => path.to_string(),
            (name, path) => format!("{name} ({path})"),
        }
    }

    /// A client of the plugin's store.
    ///
    /// # Errors
    /// [`Failure::plugin`]: the plugin cannot be made (after the fallback, in fallback mode).
    pub fn client(&self) -> CmdResult<Arc<dyn ObjectStoreClient>> {
        plugin_manager()
            .create_client_with_mode(&self.config, self.mode)
            .map_err(|e| Failure::plugin(format!("plugin {}", self.label()), &e))
    }

    /// The plugin's runner, not started.
    ///
    /// # Errors
    /// As [`Plugin::client`].
    pub fn runner(&self) -> CmdResult<Box<dyn ObjectStoreRunner>> {
        plugin_manager()
            .create_runner_with_mode(&self.config, self.mode)
            .map_err(|e| Failure::plugin(format!("plugin {}", self.label()), &e))
    }

    /// The region a GISMO plugin's store lives in (its `region` key, or the plugin's default):
    /// `None` for other plugins, whose objects only their client can reach.
    pub fn gismo_region(&self) -> Option<String> {
        (self.config.name == "gismo").then(|| {
            self.config
                .params
                .get("region")
                .cloned()
                .unwrap_or_else(|| GISMO_DEFAULT_REGION.to_string())
        })
    }

    /// The command-line flags that name this plugin (for `bench` workers).
    pub fn flags(&self) -> Vec<String> {
        vec![
            format!("--plugin={}", self.config.name),
            format!("--plugin-path={}", self.config.path),
            format!("--plugin-config={}", self.config.config_string()),
            format!("--plugin-mode={}", self.mode_arg),
        ]
    }
}
