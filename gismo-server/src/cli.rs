//! The command line of `gismo-server`.

use clap::{Parser, ValueEnum};
use gismo_platform::coherence::CoherenceMode;
use gismo_platform::units::ByteSize;

use crate::logger::LogLevel;

/// Printed after `--help`.
const AFTER_HELP: &str = "\
Without --region the server uses /dev/shm/gismo-default, sized for this machine (the smallest of
25% of MemAvailable, 80% of the free space in /dev/shm and 4 GiB, at least 64 MiB), and formats it
unless it already holds a GISMO store.

With --region the region must already hold a store (see `gismoctl format`) unless --format is
given: --format creates the region (with --size) if needed and formats it unless it already holds
a store; --format --force always formats it, deleting every object in it.

Several servers (one per host) may serve one region. Each registers a client of its own and
heartbeats it; exactly one holds the region's leader lease and reaps dead clients and evicts (above
--high-watermark, down to --low-watermark); the others take over within
lease + slack + min(lease/3, 100 ms) of its death, or within 100 ms of a clean stop, which releases
the lease. `gismoctl stat` shows the leader.

Plugins: --plugin NAME, --plugin-path PATH, --plugin-config K=V,... (default: the raylet's
variables RAY_object_store_plugin_name, _path and _config) and --plugin-mode strict|fallback
(RAY_object_store_plugin_mode, default strict). For the gismo plugin (built in, or loaded under the
name gismo) the server serves the region as above, taking it from --region or else from the
config's region key; the runner stays with the raylet, which consumes the host's events. For any
other plugin the server hosts that plugin's runner (Start with the config and callbacks that log)
until SIGTERM, e.g. a plasma store for tools and tests. If the plugin cannot be loaded or started,
strict mode exits 7 with the cause; fallback mode logs one warning naming the cause and hosts
plasma instead (for gismo also when its region cannot be opened).

Exit codes:
  0  stopped by SIGTERM or SIGINT
  1  runtime error
  2  usage error (bad option or value; a bad plugin config, relative path or unknown built-in)
  6  region unusable: cannot be opened, created, formatted, or attached (not formatted, corrupt)
  7  plugin unusable: cannot be loaded (missing file, not a shared library, missing symbol, ABI
     mismatch), made or started";

/// GISMO region daemon: serves a shared-memory object store for Ray.
#[derive(Debug, Parser)]
#[command(name = "gismo-server", version, after_help = AFTER_HELP)]
pub struct Args {
    /// The region to serve: file:PATH, hugetlbfs:PATH, dax:/dev/daxX.Y, memfd:NAME, fd:N, or a
    /// bare path. Default: /dev/shm/gismo-default.
    #[arg(long, short = 'r', value_name = "SPEC")]
    pub region: Option<String>,

    /// Region size when creating it (4096, 512MiB, 4GiB).
    #[arg(long, value_name = "SIZE")]
    pub size: Option<ByteSize>,

    /// Create (with --size) and format the region unless it already holds a store.
    #[arg(long)]
    pub format: bool,

    /// With --format: format even a region that holds a store (its objects are lost).
    #[arg(long, requires = "format")]
    pub force: bool,

    /// Coherence mode for a region this server formats.
    #[arg(long, value_enum, value_name = "MODE")]
    pub coherence: Option<CoherenceArg>,

    /// Client-table size of a region this server formats (1..=65535; default 128): every
    /// process attached at once is one client (a Ray node: every worker that touches the
    /// region; use 1024 or more).
    #[arg(long, value_name = "N")]
    pub max_clients: Option<u32>,

    /// References one client can hold at once in a region this server formats (a power of two
    /// >= 16; default 2048).
    #[arg(long, value_name = "N")]
    pub refs_per_client: Option<u32>,

    /// Object directory slots of a region this server formats (a power of two; default one per
    /// 32 KiB of heap, at least 1024).
    #[arg(long, value_name = "N")]
    pub dir_capacity: Option<u64>,

    /// Populate every page of the region at start (commits its memory now; later copies are
    /// faster, and a shortage shows up as an error at start instead of a fault later).
    #[arg(long)]
    pub prefault: bool,

    /// Lease: a client on another host whose heartbeat is older than this is considered dead;
    /// also the leader lease (a follower takes over within lease + slack + min(lease/3, 100 ms)
    /// of the leader's death, and within 100 ms of a clean stop).
    #[arg(long, value_name = "MS", default_value_t = 5000)]
    pub lease_ms: u64,

    /// Extra wait past the leader's lease before taking over: covers wall-clock skew between
    /// hosts.
    #[arg(long, value_name = "MS", default_value_t = 100)]
    pub leader_slack_ms: u64,

    /// How often the leader reaps dead clients and checks the eviction watermarks.
    #[arg(long, value_name = "MS", default_value_t = 100)]
    pub reap_interval_ms: u64,

    /// Heap usage fraction at which the leader starts evicting.
    #[arg(long, value_name = "F", default_value_t = 0.9)]
    pub high_watermark: f64,

    /// Heap usage fraction eviction brings usage back down to.
    #[arg(long, value_name = "F", default_value_t = 0.8)]
    pub low_watermark: f64,

    /// How often to log statistics.
    #[arg(long, value_name = "MS", default_value_t = 60000)]
    pub stats_interval_ms: u64,

    /// Object store plugin: `gismo` (serve the region named by --region or the config's
    /// `region` key), any other built-in or loaded plugin (host its runner). See "Plugins".
    #[arg(id = "plugin_name", long = "plugin", env = gismo_plugin::config::ENV_NAME, value_name = "NAME")]
    pub plugin: Option<String>,

    /// Absolute path of a plugin shared library.
    #[arg(id = "plugin_path", long = "plugin-path", env = gismo_plugin::config::ENV_PATH, value_name = "PATH")]
    pub plugin_path: Option<String>,

    /// The plugin's configuration, `key=value` pairs separated by `,`.
    #[arg(id = "plugin_config", long = "plugin-config", env = gismo_plugin::config::ENV_CONFIG, value_name = "K=V,...")]
    pub plugin_config: Option<String>,

    /// When the plugin cannot be loaded or started: strict fails with the cause (exit 7);
    /// fallback logs one warning naming the cause and hosts `plasma` instead.
    #[arg(
        id = "plugin_mode",
        long = "plugin-mode",
        env = gismo_plugin::config::ENV_MODE,
        value_enum,
        value_name = "MODE",
        default_value_t = PluginModeArg::Strict
    )]
    pub plugin_mode: PluginModeArg,

    /// Log level: error, warn, info, debug or trace.
    #[arg(long, value_enum, value_name = "L", env = "GISMO_LOG", default_value_t = LogLevel::Info)]
    pub log_level: LogLevel,
}

/// `--plugin-mode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum PluginModeArg {
    /// Fail with the cause.
    #[default]
    Strict,
    /// Log one warning naming the cause and use `plasma` instead.
    Fallback,
}

impl From<PluginModeArg> for gismo_plugin::Mode {
    fn from(m: PluginModeArg) -> gismo_plugin::Mode {
        match m {
            PluginModeArg::Strict => gismo_plugin::Mode::Strict,
            PluginModeArg::Fallback => gismo_plugin::Mode::Fallback,
        }
    }
}

/// The coherence mode to format a region for.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CoherenceArg {
    /// Coherent memory (one host, or CXL with hardware coherence).
    Hardware,
    /// Non-coherent sharing: payloads are flushed at seal and invalidated at get.
    Flush,
}

impl From<CoherenceArg> for CoherenceMode {
    fn from(c: CoherenceArg) -> CoherenceMode {
        match c {
            CoherenceArg::Hardware => CoherenceMode::Hardware,
            CoherenceArg::Flush => CoherenceMode::Flush,
        }
    }
}
