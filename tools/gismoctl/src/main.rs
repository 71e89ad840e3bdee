//! `gismoctl`: format, inspect and use a GISMO region from the shell.
//!
//! Every failure is one line on standard error, prefixed `gismoctl: `, and an exit code from
//! the table in `--help` (see `cli.rs`); nothing input can cause panics.

mod cli;
mod commands;
mod failure;
mod interrupt;
mod output;
mod plugin_access;
mod region_access;

use clap::error::ErrorKind;
use clap::Parser;

use crate::cli::Cli;
use crate::failure::{ExitCode, Failure};

fn main() -> std::process::ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    if let Some(offset) = cli.region_offset {
        region_access::set_region_offset(offset.0);
    }
    match commands::run(&cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(failure) => report(&failure),
    }
}

fn report(failure: &Failure) -> std::process::ExitCode {
    eprintln!("gismoctl: {}", failure.one_line());
    std::process::ExitCode::from(failure.code as u8)
}

/// clap's own output for help and version; one line for a real usage error.
fn usage_error(e: clap::Error) -> std::process::ExitCode {
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => e.exit(),
        _ => {
            // clap's message is its first paragraph (a headline, maybe indented details);
            // the usage block after the blank line is left to --help.
            let text = e.to_string();
            let paragraph: Vec<&str> = text
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect();
            let joined = paragraph.join(" ");
            let first = joined.strip_prefix("error: ").unwrap_or(&joined);
            let message = match e.kind() {
                ErrorKind::InvalidValue | ErrorKind::ValueValidation => first.to_string(),
                _ => format!("{first} (see gismoctl --help)"),
            };
            report(&Failure::new(ExitCode::Usage, message))
        }
    }
}
