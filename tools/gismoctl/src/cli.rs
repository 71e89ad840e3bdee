//! The command line: every subcommand, option and exit code, as clap parses them.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use gismo_core::store::ObjectId;
use gismo_platform::coherence::CoherenceMode;
use gismo_platform::units::ByteSize;

/// Printed after `--help`: the exit codes, which scripts rely on.
const AFTER_HELP: &str = "\
Region specs: file:/dev/shm/gismo, hugetlbfs:/mnt/huge/gismo, dax:/dev/dax0.0, fd:N, or a bare
path (a /dev/dax* or character device is device DAX, a path on hugetlbfs is hugetlbfs, anything
else a file). Object ids are 56 hex digits (Ray's 28-byte ObjectID).

Plugins: --plugin NAME, --plugin-path PATH and --plugin-config K=V,... (default: the variables
RAY_object_store_plugin_name, _path and _config, as a raylet reads them) send put, get, rm, stat,
ls and bench through that plugin's client; --plugin-mode (RAY_object_store_plugin_mode) strict
fails if it cannot be made, fallback warns once and uses plasma. For the gismo plugin without a
region= key, --region supplies it. A bad plugin config, a relative path or an unknown built-in name
is a usage error (2).

Exit codes:
  0  success
  1  any other error (I/O on input or output files, client table full, ...)
  2  usage error (bad option, bad id, bad size, bad region spec, no region given)
  3  object not found, or `get` timed out
  4  already exists (object id taken by `put`; region already formatted, without --force)
  5  store full (no room in the heap or the object directory)
  6  region unusable: cannot be opened, not formatted, corrupt, or from another version
  7  plugin unusable: the plugin cannot be loaded or started (missing library, not a shared
     library, missing symbol, ABI mismatch, its factory or start failed, not available)
  8  not supported by the plugin (`ls` needs the gismo plugin)
  9  fenced: this client was declared dead while it worked (paused past its lease); nothing it
     read after that is trusted, and `get` stops before writing such bytes
  130  interrupted (SIGINT or SIGTERM) while `get` waited or `put` copied; nothing is left behind";

/// Command-line tool for GISMO regions: shared-memory object stores for Ray.
#[derive(Debug, Parser)]
#[command(name = "gismoctl", version, after_help = AFTER_HELP)]
pub struct Cli {
    /// The region to use (see "Region specs" below).
    #[arg(
        long,
        short = 'r',
        global = true,
        env = "GISMO_REGION",
        value_name = "SPEC"
    )]
    pub region: Option<String>,

    /// Map an existing region starting this far into its file (e.g. `2MiB`: the host's view of
    /// a QEMU devdax namespace, whose data starts 2 MiB into the backing file).
    #[arg(long, global = true, env = "GISMO_REGION_OFFSET", value_name = "SIZE")]
    pub region_offset: Option<ByteSize>,

    #[command(flatten)]
    pub plugin: PluginArgs,

    #[command(subcommand)]
    pub command: Command,
}

/// The object store plugin to go through (issue 5): the raylet's three settings, plus the mode.
///
/// Without `--plugin` and `--plugin-path` (and their variables) the commands work directly on
/// `--region`. With either, `put`, `get`, `rm`, `stat`, `ls` and `bench` go through the plugin's
/// client (and runner); `format`, `clients` and `fsck` always work on `--region`.
#[derive(Debug, Args, Clone, Default)]
pub struct PluginArgs {
    /// Object store plugin: `gismo`, `plasma`, `redis` (built in), or any name with
    /// --plugin-path.
    #[arg(
        id = "plugin",
        long = "plugin",
        global = true,
        env = gismo_plugin::config::ENV_NAME,
        value_name = "NAME"
    )]
    pub name: Option<String>,

    /// Absolute path of a plugin shared library (loaded whatever --plugin says).
    #[arg(
        id = "plugin_path",
        long = "plugin-path",
        global = true,
        env = gismo_plugin::config::ENV_PATH,
        value_name = "PATH"
    )]
    pub path: Option<String>,

    /// The plugin's configuration: `key=value` pairs separated by `,` (`\,` `\=` `\\` escape).
    #[arg(
        id = "plugin_config",
        long = "plugin-config",
        global = true,
        env = gismo_plugin::config::ENV_CONFIG,
        value_name = "K=V,..."
    )]
    pub config: Option<String>,

    /// What to do when the plugin cannot be loaded or started: fail with the cause (strict), or
    /// warn once and use `plasma` (fallback).
    #[arg(
        id = "plugin_mode",
        long = "plugin-mode",
        global = true,
        env = gismo_plugin::config::ENV_MODE,
        value_enum,
        value_name = "MODE",
        default_value_t = PluginModeArg::Strict
    )]
    pub mode: PluginModeArg,
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

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the region if needed and write an empty store into it.
    Format(FormatArgs),
    /// Show the store's size, usage, objects by state, clients and counters.
    Stat(StatArgs),
    /// List the objects in the store.
    Ls(JsonFlag),
    /// Store a file (or standard input, `-`) as a sealed object.
    Put(PutArgs),
    /// Write an object's payload to standard output or a file.
    Get(GetArgs),
    /// Delete an object (deferred while someone holds a reference to it).
    Rm(RmArgs),
    /// List the clients attached to the store.
    Clients(JsonFlag),
    /// Check the store's metadata; exits 1 if a problem remains.
    Fsck(FsckArgs),
    /// Measure get, put, wait, transfer and throughput with worker processes (on the region or
    /// through the plugin): a table, or --json.
    Bench(BenchArgs),
    /// One `bench` process (run by `bench`, not by hand).
    #[command(hide = true)]
    BenchWorker(BenchWorkerArgs),
    /// List every named crash point, one per line (a build with the `crashpoints` feature dies
    /// at the one GISMO_CRASHPOINT names; see docs/store.md).
    Crashpoints,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// What to measure (comma separated): get (get + release of a sealed object), put (create +
    /// write + seal), wait (a get woken by another process's seal), transfer (an object created
    /// by one process and read in full by another), throughput (put + get + delete loops in
    /// every --processes count).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        value_name = "OPS",
        default_value = "get,put,wait,transfer,throughput"
    )]
    pub ops: Vec<BenchOp>,
    /// Object sizes of get, put and transfer (comma separated; e.g. 1KiB,64KiB,1MiB,16MiB,256MiB).
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "SIZES",
        default_value = "1KiB,64KiB,1MiB,16MiB"
    )]
    pub sizes: Vec<ByteSize>,
    /// Worker process counts of the throughput runs (comma separated).
    #[arg(
        long,
        short = 'p',
        value_delimiter = ',',
        value_name = "N,...",
        default_value = "1,2,4"
    )]
    pub processes: Vec<u32>,
    /// Object size of the throughput runs.
    #[arg(long, value_name = "SIZE", default_value = "64KiB")]
    pub size: ByteSize,
    /// How long each run lasts.
    #[arg(long, value_name = "S", default_value_t = 1.0)]
    pub seconds: f64,
    /// Print JSON instead of a table (and no progress bar).
    #[arg(long)]
    pub json: bool,
}

/// One `bench` measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchOp {
    Get,
    Put,
    Wait,
    Transfer,
    Throughput,
}

/// What one `bench-worker` process does (see `commands/bench/worker.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchRole {
    /// Get and release one sealed object of its own.
    Get,
    /// Create, write, seal (and, untimed, delete) objects.
    Put,
    /// Seal objects the `wait-get` peer is waiting for.
    WaitSeal,
    /// Wait for each object the `wait-seal` peer seals.
    WaitGet,
    /// Create objects for the `transfer-get` peer.
    TransferPut,
    /// Read in full each object the `transfer-put` peer creates.
    TransferGet,
    /// Put, get and delete objects of its own in a loop.
    Throughput,
}

#[derive(Debug, Args)]
pub struct BenchWorkerArgs {
    #[arg(long, value_enum)]
    pub role: BenchRole,
    /// Tells this run's objects apart from any other's.
    #[arg(long)]
    pub run: u32,
    #[arg(long)]
    pub worker: u32,
    #[arg(long)]
    pub size: ByteSize,
    #[arg(long)]
    pub duration_ms: u64,
}

#[derive(Debug, Args)]
pub struct FsckArgs {
    /// Fix what is safe to fix (leaked blocks and pages, chunk counts, dead client entries).
    #[arg(long)]
    pub repair: bool,
    /// With --repair: repair even while clients are active (a client between an allocation and
    /// its record can look like a leak).
    #[arg(long, requires = "repair")]
    pub force: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StatArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// With a plugin: start its runner (with the plugin config and no-op callbacks) before
    /// reading the runner's memory figures, and stop it after. A gismo runner started this way
    /// briefly consumes this host's event ring, so it fails while a raylet's runner holds it.
    #[arg(long)]
    pub start_runner: bool,
}

#[derive(Debug, Args)]
pub struct JsonFlag {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The coherence mode to format a region for.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CoherenceArg {
    /// Coherent memory (one host, or CXL with hardware coherence): plain copies.
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

#[derive(Debug, Args)]
pub struct FormatArgs {
    /// Region size (4096, 512MiB, 4GiB). Needed when the file does not exist yet; an existing
    /// file is resized to it (only with --force if it holds a store). Default: the current size.
    #[arg(long, value_name = "SIZE")]
    pub size: Option<ByteSize>,
    /// Overwrite a region that already holds a store (its objects are lost).
    #[arg(long)]
    pub force: bool,
    /// Coherence mode of the store.
    #[arg(long, value_enum, default_value_t = CoherenceArg::Hardware)]
    pub coherence: CoherenceArg,
    /// Size of the client table (1..=65535): every process attached at once is one client (a
    /// Ray node: every worker that touches the region; use 1024 or more).
    #[arg(long, value_name = "N", default_value_t = 128)]
    pub max_clients: u32,
    /// References one client can hold at once (objects it has open or pinned), a power of two
    /// >= 16.
    #[arg(long, value_name = "N", default_value_t = 2048)]
    pub refs_per_client: u32,
    /// Object directory slots, a power of two (default: one per 32 KiB of heap, at least 1024).
    #[arg(long, value_name = "N")]
    pub dir_capacity: Option<u64>,
    /// File mode (octal) of a region file this creates: 600 keeps it to its owner; 660 shares it
    /// with the group. Whoever can map the region can read and change every object.
    #[arg(long, value_name = "OCTAL", default_value = "600", value_parser = parse_mode)]
    pub mode: u32,
}

/// An octal file mode such as `600` or `0660`.
fn parse_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("invalid mode {s:?}: expected octal permissions such as 600 or 660"))
}

#[derive(Debug, Args)]
pub struct PutArgs {
    /// The object id (56 hex digits).
    pub id: ObjectId,
    /// The file to store, or `-` for standard input.
    pub file: PathBuf,
    /// Metadata stored with the object (Ray's metadata buffer).
    #[arg(long, value_name = "STRING")]
    pub metadata: Option<String>,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// The object id (56 hex digits).
    pub id: ObjectId,
    /// Write the payload to this file instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// How long to wait for the object to be created and sealed: 0 returns at once, -1 waits
    /// forever.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    pub timeout_ms: i64,
    /// Write the object's metadata instead of its data.
    #[arg(long)]
    pub metadata: bool,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// The object id (56 hex digits).
    pub id: ObjectId,
}
