//! Getting a store to serve: open the region, or create it, and format it when asked to.
//!
//! | `FormatPolicy` | region holds a store | region has no store / is missing        |
//! |----------------|----------------------|-----------------------------------------|
//! | `Never`        | attach               | fail (region unusable; hint `--format`) |
//! | `IfNeeded`     | attach               | create (needs a size), format           |
//! | `Always`       | format again         | create (needs a size), format           |
//!
//! A region that already holds a store keeps its size and coherence mode; a different `--size`
//! or `--coherence` is reported and ignored rather than silently destroying objects.

use std::sync::Arc;

use gismo_core::format::{self, FormatOptions};
use gismo_core::store::Store;
use gismo_platform::coherence::CoherenceMode;
use gismo_platform::region::{Region, RegionError, RegionOptions, RegionSpec};
use gismo_platform::units::ByteSize;

use crate::failure::{ExitCode, Failure};
use log::{info, warn};

/// When to format the region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FormatPolicy {
    Never,
    IfNeeded,
    Always,
}

/// What the server asked for.
#[derive(Clone, Debug)]
pub struct Request {
    pub spec: RegionSpec,
    pub size: Option<u64>,
    pub policy: FormatPolicy,
    pub coherence: Option<CoherenceMode>,
    /// Table sizes of a region this formats (`None`: the format's defaults).
    pub limits: Limits,
    pub prefault: bool,
}

/// The table sizes asked for a region that is formatted (`--max-clients`, `--refs-per-client`,
/// `--dir-capacity`); an existing store keeps its own.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    pub max_clients: Option<u32>,
    pub refs_per_client: Option<u32>,
    pub dir_capacity: Option<u64>,
}

impl Limits {
    /// `FormatOptions` for `coherence` with these limits (`force` as given).
    fn format_options(&self, coherence: CoherenceMode, force: bool) -> FormatOptions {
        let defaults = FormatOptions::default();
        FormatOptions {
            coherence,
            force,
            dir_capacity: self.dir_capacity,
            max_clients: self.max_clients.unwrap_or(defaults.max_clients),
            refs_per_client: self.refs_per_client.unwrap_or(defaults.refs_per_client),
            ..defaults
        }
    }
}

/// What was done to the region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Attached,
    Formatted,
}

/// Opens, creates and formats the region as `req` says, and attaches to it.
///
/// # Errors
/// A usage failure for a missing size; a region-unusable failure for everything else.
pub fn provision(req: &Request) -> Result<(Arc<Store>, Outcome), Failure> {
    let opts = RegionOptions {
        prefault: req.prefault,
        ..RegionOptions::default()
    };
    let region = match Region::open(&req.spec, &opts) {
        Ok(region) => region,
        Err(e) if req.policy == FormatPolicy::Never => {
            return Err(Failure::region("cannot open region", &e).with_hint(&req.spec))
        }
        Err(e) => {
            let Some(size) = req.size else {
                return Err(match e {
                    RegionError::NotFound { .. } | RegionError::WrongSize { .. } => {
                        Failure::usage(format!(
                            "{} does not exist or is empty: pass --size SIZE to create it",
                            req.spec
                        ))
                    }
                    e => Failure::region("cannot open region", &e),
                });
            };
            if req.policy == FormatPolicy::IfNeeded {
                // Exclusively: a region another server creates at the same moment is not
                // resized under it; that one formats it and this one waits.
                return match Region::create_new(&req.spec, size, &opts) {
                    Ok(region) => match format_region_if_unclaimed(req, region) {
                        Err(None) => wait_until_ready(req, &opts),
                        Err(Some(f)) => Err(f),
                        Ok(done) => Ok(done),
                    },
                    Err(RegionError::AlreadyExists { .. }) => wait_until_ready(req, &opts),
                    Err(e) => Err(Failure::region("cannot create region", &e)),
                };
            }
            return create_and_format(req, size, &opts);
        }
    };
    let holds_store = format::attach(&region);
    match (holds_store, req.policy) {
        (Ok((sb, _)), FormatPolicy::Never | FormatPolicy::IfNeeded) => {
            if let Some(size) = req.size.filter(|&s| s != region.len() as u64) {
                warn!(
                    "{} already holds a store of {}; --size {} ignored (use --format --force to \
                     recreate it)",
                    req.spec,
                    ByteSize(region.len() as u64),
                    ByteSize(size)
                );
            }
            if let Some(c) = req.coherence.filter(|&c| Ok(c) != sb.coherence_mode()) {
                warn!(
                    "{} was formatted for {} coherence; --coherence {c} ignored",
                    req.spec,
                    sb.coherence_mode()
                        .map_or_else(|_| "unknown".to_string(), |m| m.to_string())
                );
            }
            let store = Store::attach(region).map_err(|e| Failure::store("cannot attach", &e))?;
            Ok((store, Outcome::Attached))
        }
        (Err(e), FormatPolicy::Never) => Err(Failure::new(
            ExitCode::RegionUnusable,
            format!("{}: {e}", req.spec),
        )
        .with_hint(&req.spec)),
        (_, FormatPolicy::Always) => match req.size.filter(|&s| s != region.len() as u64) {
            Some(size) => {
                drop(region);
                create_and_format(req, size, &opts)
            }
            None => format_region(req, region),
        },
        // IfNeeded formats only a region with no GISMO superblock at all, in place and at its
        // size (another process may map it), and waits for one being formatted by another
        // process; a region of another version, with unknown features or a bad checksum is
        // never reformatted without --force (core review M9).
        (Err(format::FormatError::NotFormatted), FormatPolicy::IfNeeded) => {
            if let Some(size) = req.size.filter(|&s| s != region.len() as u64) {
                warn!(
                    "{} exists with {} and holds no store; formatting it at that size, not {} \
                     (other processes may map it; use --format --force to recreate it)",
                    req.spec,
                    ByteSize(region.len() as u64),
                    ByteSize(size)
                );
            }
            match format_region_if_unclaimed(req, region) {
                Err(None) => wait_until_ready(req, &opts),
                Err(Some(f)) => Err(f),
                Ok(done) => Ok(done),
            }
        }
        (Err(format::FormatError::NotReady { .. }), FormatPolicy::IfNeeded) => {
            drop(region);
            wait_until_ready(req, &opts)
        }
        (Err(e), FormatPolicy::IfNeeded) => Err(Failure::new(
            ExitCode::RegionUnusable,
            format!(
                "{}: {e}; not reformatting it (pass --format --force to overwrite it)",
                req.spec
            ),
        )),
    }
}

/// How long a server waits for another process to finish formatting the region.
const FORMAT_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Formats `region` unless another process claimed it first: `Err(None)` then.
fn format_region_if_unclaimed(
    req: &Request,
    region: Region,
) -> Result<(Arc<Store>, Outcome), Option<Failure>> {
    let coherence = req.coherence.unwrap_or(CoherenceMode::Hardware);
    info!(
        "formatting {} ({}, {coherence} coherence)",
        req.spec,
        ByteSize(region.len() as u64)
    );
    let opts = req.limits.format_options(coherence, false);
    match Store::format(region, &opts) {
        Ok(store) => Ok((store, Outcome::Formatted)),
        Err(gismo_core::store::StoreError::Format(
            format::FormatError::NotReady { .. } | format::FormatError::AlreadyFormatted { .. },
        )) => Err(None),
        Err(e) => Err(Some(Failure::store("cannot format", &e))),
    }
}

/// Waits until another process has formatted the region, then attaches.
fn wait_until_ready(req: &Request, opts: &RegionOptions) -> Result<(Arc<Store>, Outcome), Failure> {
    info!(
        "{} is being formatted by another process; waiting",
        req.spec
    );
    let deadline = std::time::Instant::now() + FORMAT_WAIT;
    loop {
        let region = match Region::open(&req.spec, opts) {
            Ok(region) => region,
            // Created but not sized yet by the other process.
            Err(RegionError::WrongSize { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
                continue;
            }
            Err(e) => return Err(Failure::region("cannot open region", &e)),
        };
        match format::attach(&region) {
            // Created and sized, but its creator has not claimed the format yet.
            Err(format::FormatError::NotFormatted) if std::time::Instant::now() < deadline => {}
            Ok(_) => {
                let store =
                    Store::attach(region).map_err(|e| Failure::store("cannot attach", &e))?;
                return Ok((store, Outcome::Attached));
            }
            Err(e @ format::FormatError::NotReady { .. })
                if std::time::Instant::now() >= deadline =>
            {
                return Err(Failure::new(
                    ExitCode::RegionUnusable,
                    format!("{}: {e} (waited {FORMAT_WAIT:?})", req.spec),
                ))
            }
            Err(format::FormatError::NotReady { .. }) => {}
            Err(e) => {
                return Err(Failure::new(
                    ExitCode::RegionUnusable,
                    format!("{}: {e}", req.spec),
                ))
            }
        }
        drop(region);
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

fn create_and_format(
    req: &Request,
    size: u64,
    opts: &RegionOptions,
) -> Result<(Arc<Store>, Outcome), Failure> {
    info!("creating {} with {}", req.spec, ByteSize(size));
    let region = Region::create(&req.spec, size, opts)
        .map_err(|e| Failure::region("cannot create region", &e))?;
    format_region(req, region)
}

fn format_region(req: &Request, region: Region) -> Result<(Arc<Store>, Outcome), Failure> {
    let coherence = req.coherence.unwrap_or(CoherenceMode::Hardware);
    info!(
        "formatting {} ({}, {coherence} coherence)",
        req.spec,
        ByteSize(region.len() as u64)
    );
    // The policy already decided that this region is to be (re)formatted.
    let opts = req.limits.format_options(coherence, true);
    let store = Store::format(region, &opts).map_err(|e| Failure::store("cannot format", &e))?;
    Ok((store, Outcome::Formatted))
}

impl Failure {
    /// Adds how to get a usable region, for failures of `FormatPolicy::Never`.
    fn with_hint(mut self, spec: &RegionSpec) -> Failure {
        self.message.push_str(&format!(
            " (to create and format it: gismo-server --region {spec} --size SIZE --format, or \
             gismoctl --region {spec} format --size SIZE)"
        ));
        self
    }
}
