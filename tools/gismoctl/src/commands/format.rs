//! `gismoctl format`: create the region if needed and write an empty store into it.
//!
//! An existing region that already holds a valid store is refused without `--force` *before*
//! anything is changed: in particular the file is not resized first (`Region::create` would).

use gismo_core::format::{self, FormatError, FormatOptions};
use gismo_core::store::{Store, StoreError};
use gismo_platform::region::{Region, RegionError, RegionOptions, RegionSpec};
use gismo_platform::units::ByteSize;

use crate::cli::FormatArgs;
use crate::failure::{CmdResult, ExitCode, Failure};
use crate::output;

pub fn run(spec: &RegionSpec, args: &FormatArgs) -> CmdResult {
    let opts = FormatOptions {
        coherence: args.coherence.into(),
        dir_capacity: args.dir_capacity,
        max_clients: args.max_clients,
        refs_per_client: args.refs_per_client,
        force: args.force,
        ..FormatOptions::default()
    };
    let region = prepare(spec, args)?;
    let store = Store::format(region, &opts).map_err(|e| format_failure(spec, e))?;
    let s = store.stats();
    output::stdout(&format!(
        "formatted {spec}: {} region, {} heap, {} directory slots, {} clients, {} coherence, \
         uuid {}\n",
        ByteSize(s.region_bytes),
        ByteSize(s.heap_bytes),
        s.dir_capacity,
        s.max_clients,
        s.coherence,
        s.uuid
    ))
}

/// Opens or creates the region at the requested size, refusing a formatted one without --force.
fn prepare(spec: &RegionSpec, args: &FormatArgs) -> CmdResult<Region> {
    let create = |size: ByteSize| {
        Region::create(
            spec,
            size.0,
            &RegionOptions {
                mode: args.mode,
                ..RegionOptions::default()
            },
        )
        .map_err(|e| Failure::region("cannot create region", &e))
    };
    match Region::open(spec, &RegionOptions::default()) {
        Ok(region) => {
            if !args.force {
                // Only a region with no GISMO superblock is formatted without --force: not one
                // being formatted, of another version, with unknown features or a bad checksum.
                match format::check_formattable(&region) {
                    Ok(()) => {}
                    Err(format::FormatError::AlreadyFormatted { uuid }) => {
                        return Err(already_formatted(spec, &uuid))
                    }
                    Err(e) => {
                        return Err(Failure::new(
                            ExitCode::RegionUnusable,
                            format!("{spec}: {e}"),
                        ))
                    }
                }
            }
            match args.size {
                Some(size) if size.0 != region.len() as u64 => {
                    drop(region);
                    create(size)
                }
                _ => Ok(region),
            }
        }
        Err(e) => match (args.size, &e) {
            (Some(size), _) => create(size),
            (None, RegionError::NotFound { .. }) => Err(Failure::usage(format!(
                "{spec} does not exist: pass --size SIZE to create it"
            ))),
            (None, _) => Err(Failure::region("cannot open region", &e)),
        },
    }
}

fn already_formatted(spec: &RegionSpec, uuid: &str) -> Failure {
    Failure::new(
        ExitCode::AlreadyExists,
        format!("{spec} already holds a GISMO store (uuid {uuid}); pass --force to overwrite it"),
    )
}

fn format_failure(spec: &RegionSpec, e: StoreError) -> Failure {
    match e {
        StoreError::Format(FormatError::AlreadyFormatted { uuid }) => {
            already_formatted(spec, &uuid)
        }
        StoreError::Format(
            e @ (FormatError::TooSmall { .. }
            | FormatError::TooLarge { .. }
            | FormatError::BadGeometry(_)),
        ) => Failure::usage(format!("format {spec}: {e}")),
        StoreError::Format(e) => Failure::new(ExitCode::Error, format!("format {spec}: {e}")),
        e => Failure::store(format!("format {spec}"), e),
    }
}
