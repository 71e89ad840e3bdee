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

use crate::cli::{Cli, Command};
use crate::failure::CmdResult;
use crate::region_access;

/// Runs the parsed command line.
///
/// # Errors
/// The command's failure, ready to print.
pub fn run(cli: &Cli) -> CmdResult {
    let spec = region_access::spec(cli.region.as_deref())?;
    match &cli.command {
        Command::Format(args) => format::run(&spec, args),
        Command::Stat(flag) => stat::run(&spec, flag.json),
        Command::Ls(flag) => ls::run(&spec, flag.json),
        Command::Put(args) => put::run(&spec, args),
        Command::Get(args) => get::run(&spec, args),
        Command::Rm(args) => rm::run(&spec, args),
        Command::Clients(flag) => clients::run(&spec, flag.json),
        Command::Fsck(args) => fsck::run(&spec, args),
        Command::Bench(args) => bench::run(&spec, args),
        Command::BenchWorker(args) => bench::worker::run(&spec, args),
    }
}
