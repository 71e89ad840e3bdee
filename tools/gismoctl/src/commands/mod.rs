//! One file per subcommand; [`run`] dispatches to them.

mod bench;
mod clients;
mod format;
mod fsck;
mod get;
mod ls;
mod put;
mod rm;
mod stat;
mod via_plugin;

use crate::cli::{Cli, Command};
use crate::failure::CmdResult;
use crate::plugin_access::{self, Plugin};
use crate::region_access;

/// What a command works on: a region directly, or a plugin's store.
pub enum Target {
    Region(gismo_platform::region::RegionSpec),
    Plugin(Plugin),
}

/// Runs the parsed command line.
///
/// # Errors
/// The command's failure, ready to print.
pub fn run(cli: &Cli) -> CmdResult {
    // format, clients and fsck work on the region itself: the plugin settings do not concern
    // them (not even a malformed one).
    if let Command::Crashpoints = cli.command {
        return crashpoints();
    }
    let region_only = matches!(
        cli.command,
        Command::Format(_) | Command::Clients(_) | Command::Fsck(_)
    );
    let plugin = if region_only {
        None
    } else {
        plugin_access::selected(&cli.plugin, cli.region.as_deref())?
    };
    if let Some(plugin) = plugin {
        match &cli.command {
            Command::Stat(args) => return via_plugin::stat(&plugin, args.json, args.start_runner),
            Command::Ls(flag) => return via_plugin::ls(&plugin, flag.json),
            Command::Put(args) => return via_plugin::put(&plugin, args),
            Command::Get(args) => return via_plugin::get(&plugin, args),
            Command::Rm(args) => return via_plugin::rm(&plugin, args),
            Command::Bench(args) => return bench::run(&Target::Plugin(plugin), args),
            Command::BenchWorker(args) => return bench::worker::run(&Target::Plugin(plugin), args),
            Command::Format(_) | Command::Clients(_) | Command::Fsck(_) | Command::Crashpoints => {}
        }
    }
    let spec = region_access::spec(cli.region.as_deref())?;
    match &cli.command {
        Command::Format(args) => format::run(&spec, args),
        Command::Stat(args) => stat::run(&spec, args.json),
        Command::Ls(flag) => ls::run(&spec, flag.json),
        Command::Put(args) => put::run(&spec, args),
        Command::Get(args) => get::run(&spec, args),
        Command::Rm(args) => rm::run(&spec, args),
        Command::Clients(flag) => clients::run(&spec, flag.json),
        Command::Fsck(args) => fsck::run(&spec, args),
        Command::Bench(args) => bench::run(&Target::Region(spec), args),
        Command::BenchWorker(args) => bench::worker::run(&Target::Region(spec), args),
        Command::Crashpoints => crashpoints(),
    }
}

/// `gismoctl crashpoints`: every name, one per line; a note on standard error when this build
/// cannot die at them.
fn crashpoints() -> CmdResult {
    use gismo_core::store::crashpoint;
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for name in crashpoint::ALL {
        // A reader that stops early (`| head`) is not an error.
        if writeln!(out, "{name}").is_err() {
            return Ok(());
        }
    }
    if !crashpoint::ENABLED {
        eprintln!("note: this gismoctl is built without the crashpoints feature: GISMO_CRASHPOINT has no effect");
    }
    Ok(())
}
