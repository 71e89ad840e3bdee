//! `gismo-server`: serves a GISMO region on this host.
//!
//! Startup: parse and check the options, install the SIGTERM/SIGINT handlers, provision the
//! region (open, or create and format it), print how to use it, log `ready`, then run the
//! periodic tasks until a signal arrives. Everything a client does happens in the region itself;
//! the server only keeps it healthy. Several servers (one per host) may serve one region: each
//! registers its own client, and the one holding the region's leader lease reaps dead clients and
//! evicts; the others heartbeat and wait to take over (see `gismo_core::store::leader`). A clean stop
//! releases the lease, so another server takes over at its next poll.

mod banner;
mod cli;
mod config;
mod default_region;
mod failure;
mod logger;
mod plugin_host;
mod provision;
mod service;
mod shutdown;
mod tasks;

use std::cell::RefCell;
use std::io::Write;
use std::rc::Rc;

use clap::Parser;
use gismo_core::store::maintenance::Maintainer;
use gismo_platform::region::RegionSpec;
use gismo_platform::units::ByteSize;
use log::{error, info, warn};

use crate::cli::Args;
use crate::config::ServerConfig;
use crate::failure::{ExitCode, Failure};
use crate::provision::{FormatPolicy, Limits, Outcome, Request};

/// The name the server's own client carries in the client table.
pub(crate) const SERVER_CLIENT_NAME: &str = "gismo-server";

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    logger::init(args.log_level);
    match serve(&args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(f) => {
            error!("{}", f.message);
            std::process::ExitCode::from(f.code as u8)
        }
    }
}

fn serve(args: &Args) -> Result<(), Failure> {
    let config = ServerConfig::from_args(args)?;
    let plugin = plugin_host::Plugin::selected(args)?;
    let shutdown = shutdown::Shutdown::install().map_err(|e| {
        Failure::new(
            ExitCode::Runtime,
            format!("cannot install signal handlers: {e}"),
        )
    })?;
    let region = match &plugin {
        None => args.region.clone(),
        Some(p) if p.is_gismo() => {
            info!(
                "plugin {}: serving its region (the runner stays with the raylet)",
                p.label()
            );
            p.gismo_region(args.region.as_deref())?
        }
        Some(p) => return plugin_host::host(p, &shutdown, config.stats_interval),
    };
    let request = request(args, region.as_deref())?;
    let (store, outcome) = match provision::provision(&request) {
        Ok(provisioned) => provisioned,
        Err(f) => match &plugin {
            Some(p) if p.mode == gismo_plugin::Mode::Fallback => {
                warn!(
                    "plugin {}: {}; falling back to plasma",
                    p.label(),
                    f.message
                );
                return plugin_host::host_plasma(&shutdown, config.stats_interval);
            }
            _ => return Err(f),
        },
    };
    if outcome == Outcome::Attached {
        info!("attached to the existing store in {}", request.spec);
    }
    let public = banner::public_spec(&request.spec, store.region());
    // Best effort: a closed standard output must not stop the server.
    let _ = std::io::stdout().write_all(banner::text(&public, &store).as_bytes());
    let _ = std::io::stdout().flush();
    let maintainer = Maintainer::new(&store, config.maintainer(SERVER_CLIENT_NAME))
        .map_err(|e| Failure::store("cannot register the server's client", &e))?;
    let me = maintainer.me();
    info!(
        "lease {} ms (slack {} ms, poll {} ms), eviction watermarks {:.2}/{:.2}; registered as \
         {me}",
        config.lease.as_millis(),
        config.leader_slack.as_millis(),
        config.lease_poll().as_millis(),
        config.eviction.high_watermark(),
        config.eviction.low_watermark()
    );
    let leadership: tasks::Leadership = Rc::new(RefCell::new(maintainer));
    info!(
        "ready: serving {public} ({}, {} coherence, pid {})",
        ByteSize(store.region().len() as u64),
        store.coherence_mode(),
        std::process::id()
    );
    let mut service = service::Service::new(store, tasks::tasks(&config, &leadership));
    service.run(&shutdown);
    info!("stopping on signal");
    if leadership.borrow_mut().release(tasks::now_ms()) {
        info!("released the leader lease");
    }
    // Dropping the service and the maintainer drops the server's client, which detaches it.
    drop(service);
    drop(leadership);
    Ok(())
}

/// The region to serve (`region`: from `--region` or the gismo plugin's config), or the
/// embedded default.
fn request(args: &Args, region: Option<&str>) -> Result<Request, Failure> {
    let policy = match (args.format, args.force) {
        (_, true) => FormatPolicy::Always,
        (true, false) => FormatPolicy::IfNeeded,
        (false, false) => FormatPolicy::Never,
    };
    let coherence = args.coherence.map(Into::into);
    let limits = Limits {
        max_clients: args.max_clients,
        refs_per_client: args.refs_per_client,
        dir_capacity: args.dir_capacity,
    };
    let Some(text) = region else {
        let sizing = default_region::sizing();
        let size = args.size.map_or(sizing.size, |s| s.0);
        info!(
            "no --region: using {} (MemAvailable {}, free in /dev/shm {}; size {})",
            default_region::DEFAULT_PATH,
            shown(sizing.mem_available),
            shown(sizing.shm_free),
            ByteSize(size)
        );
        return Ok(Request {
            spec: default_region::spec(),
            size: Some(size),
            policy: policy.max_if_needed(),
            coherence,
            limits,
            prefault: args.prefault,
        });
    };
    let spec: RegionSpec = text
        .parse()
        .map_err(|e| Failure::region("bad --region", &e))?;
    Ok(Request {
        spec,
        size: args.size.map(|s| s.0),
        policy,
        coherence,
        limits,
        prefault: args.prefault,
    })
}

fn shown(bytes: Option<u64>) -> String {
    bytes.map_or_else(|| "unknown".to_string(), |b| ByteSize(b).to_string())
}

impl FormatPolicy {
    /// The default region is always formatted when it holds no store.
    fn max_if_needed(self) -> FormatPolicy {
        match self {
            FormatPolicy::Never => FormatPolicy::IfNeeded,
            p => p,
        }
    }
}
