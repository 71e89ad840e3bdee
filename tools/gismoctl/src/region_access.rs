//! Turning `--region SPEC` into an open region, an attached store, or a registered client.

use std::sync::Arc;

use gismo_core::store::{Client, Store};
use gismo_platform::region::{Region, RegionOptions, RegionSpec};

use crate::failure::{CmdResult, Failure};

/// The name gismoctl's clients carry in the client table.
const CLIENT_NAME: &str = "gismoctl";

/// Parses the `--region` value (or `GISMO_REGION`).
///
/// # Errors
/// A usage failure when no region was given or the spec does not parse.
pub fn spec(region: Option<&str>) -> CmdResult<RegionSpec> {
    let text = region
        .ok_or_else(|| Failure::usage("no region given: pass --region SPEC or set GISMO_REGION"))?;
    text.parse::<RegionSpec>()
        .map_err(|e| Failure::region("bad region", &e))
}

/// Where existing regions are mapped from (`--region-offset`); set once by `main`.
static REGION_OFFSET: std::sync::OnceLock<u64> = std::sync::OnceLock::new();

/// Records `--region-offset` for every later open.
pub fn set_region_offset(offset: u64) {
    let _ = REGION_OFFSET.set(offset);
}

/// `--region-offset`, if one was given (for processes this one starts).
pub fn region_offset() -> Option<u64> {
    REGION_OFFSET.get().copied().filter(|o| *o != 0)
}

/// Opens the existing region `spec` without changing it.
///
/// # Errors
/// A region-unusable failure if it cannot be opened and mapped.
pub fn open_region(spec: &RegionSpec) -> CmdResult<Region> {
    let opts = RegionOptions {
        offset: REGION_OFFSET.get().copied().unwrap_or(0),
        ..RegionOptions::default()
    };
    Region::open(spec, &opts).map_err(|e| Failure::region("cannot open region", &e))
}

/// Opens `spec` and attaches to the store in it.
///
/// # Errors
/// A region-unusable failure if it cannot be opened, is not formatted, or is corrupt.
pub fn attach(spec: &RegionSpec) -> CmdResult<Arc<Store>> {
    let region = open_region(spec)?;
    Store::attach(region).map_err(|e| Failure::store(spec, e))
}

/// Attaches to `spec` and registers a client.
///
/// # Errors
/// As [`attach`]; a generic failure when the client table is full.
pub fn connect(spec: &RegionSpec) -> CmdResult<Client> {
    let store = attach(spec)?;
    store
        .connect(CLIENT_NAME)
        .map_err(|e| Failure::store(spec, e))
}
