//! The stores under test, each behind [`ObjectStoreClient`] (the one small trait every plugin
//! implements): GISMO in Hardware and Flush modes, the plasma fallback, the redis plugin (when a
//! `redis-server` binary is installed) and any plugin loaded by path.

use std::any::Any;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gismo::GismoClient;
use gismo_builtins::plugin_manager;
use gismo_core::format::FormatOptions;
use gismo_core::store::Store;
use gismo_plasma::{PlasmaClient, PlasmaSettings, Server};
use gismo_platform::coherence::CoherenceMode;
use gismo_platform::region::{Region, RegionOptions, RegionSpec};
use gismo_plugin::interface::{ObjectStoreClient, RunnerCallbacks};

/// A store ready for clients, and what keeps it alive.
pub struct StoreUnderTest {
    pub name: String,
    /// Makes a new client (a new connection or registration).
    pub connect: Box<dyn Fn() -> Arc<dyn ObjectStoreClient>>,
    /// Bytes objects may use.
    pub capacity: u64,
    /// The plugin configuration other processes would use to reach it (empty for GISMO's
    /// in-memory regions).
    pub config: BTreeMap<String, String>,
    _keep: Vec<Box<dyn Any>>,
}

impl StoreUnderTest {
    pub fn client(&self) -> Arc<dyn ObjectStoreClient> {
        (self.connect)()
    }
}

/// A prefaulted memfd of `size` bytes formatted as a GISMO store.
pub fn gismo_store(mode: CoherenceMode, size: u64) -> Arc<Store> {
    let spec = RegionSpec::Memfd {
        name: "gismo-bench".into(),
        huge_pages: false,
    };
    let region = Region::create(
        &spec,
        size,
        &RegionOptions {
            prefault: true,
            ..RegionOptions::default()
        },
    )
    .expect("memfd region");
    Store::format(
        region,
        &FormatOptions {
            coherence: mode,
            ..FormatOptions::default()
        },
    )
    .expect("format")
}

pub fn gismo(mode: CoherenceMode, size: u64) -> StoreUnderTest {
    let store = gismo_store(mode, size);
    let capacity = store.stats().heap_bytes;
    let s = store.clone();
    StoreUnderTest {
        name: format!("gismo-{}", mode_name(mode)),
        connect: Box::new(move || Arc::new(GismoClient::connect(&s, "bench").expect("register"))),
        capacity,
        config: BTreeMap::new(),
        _keep: vec![Box::new(store)],
    }
}

fn mode_name(mode: CoherenceMode) -> &'static str {
    match mode {
        CoherenceMode::Hardware => "hardware",
        CoherenceMode::Flush => "flush",
    }
}

/// A unique path for a socket in the temporary directory.
fn socket_path(what: &str) -> PathBuf {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::env::temp_dir().join(format!(
        "gismo-bench-{what}-{}-{n}.sock",
        std::process::id()
    ))
}

/// Stops a plasma server when the store under test goes.
struct StopServer(Arc<Server>);

impl Drop for StopServer {
    fn drop(&mut self) {
        self.0.shutdown();
    }
}

/// The plasma fallback with `size` bytes of memory, its server on this process's threads and
/// its clients over the Unix socket (as a worker's are).
pub fn plasma(size: u64) -> StoreUnderTest {
    let socket = socket_path("plasma");
    let params: BTreeMap<String, String> = [
        (
            "store_socket_name",
            socket.to_str().expect("utf-8 path").to_string(),
        ),
        ("object_store_memory", size.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let settings = PlasmaSettings::from_params(&params).expect("settings");
    let server = Server::start(settings, RunnerCallbacks::none()).expect("plasma server");
    let capacity = gismo_plasma::PlasmaRunner::attach(server.clone());
    let capacity = gismo_plugin::interface::ObjectStoreRunner::total_memory_size(&capacity) as u64;
    let config = params.clone();
    StoreUnderTest {
        name: "plasma".into(),
        connect: Box::new(move || Arc::new(PlasmaClient::from_config(&params).expect("connect"))),
        capacity,
        config,
        _keep: vec![Box::new(StopServer(server))],
    }
}

/// A `redis-server` on a free loopback port, persistence off; killed on drop.
pub struct RedisServer {
    child: Child,
    pub port: u16,
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl RedisServer {
    /// Starts one, or `None` when `redis-server` is not installed.
    pub fn start() -> Option<RedisServer> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--proto-max-bulk-len",
                "1gb",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let server = RedisServer { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(server)
    }
}

/// The redis plugin over a private `redis-server`, or `None` without one.
pub fn redis() -> Option<StoreUnderTest> {
    let server = RedisServer::start()?;
    let params: BTreeMap<String, String> = [(
        "url".to_string(),
        format!("redis://127.0.0.1:{}/0", server.port),
    )]
    .into();
    // Probe once: a build without the plugin reports why and is skipped.
    if let Err(e) = plugin_manager().create_client("redis", "", &params) {
        eprintln!("redis: skipped ({e})");
        return None;
    }
    let config = params.clone();
    Some(StoreUnderTest {
        name: "redis".into(),
        config,
        connect: Box::new(move || {
            plugin_manager()
                .create_client("redis", "", &params)
                .expect("redis client")
        }),
        capacity: u64::MAX,
        _keep: vec![Box::new(server)],
    })
}

/// A plugin loaded by path with its configuration (`key=value,...`).
pub fn loaded(path: &Path, config: &str) -> StoreUnderTest {
    let params = gismo_plugin::config::parse_params(config).expect("plugin config");
    let kept = params.clone();
    let path = path.to_str().expect("utf-8 path").to_string();
    let name = Path::new(&path)
        .file_name()
        .map_or("plugin".into(), |n| n.to_string_lossy().into_owned());
    StoreUnderTest {
        name,
        connect: Box::new(move || {
            plugin_manager()
                .create_client("", &path, &params)
                .expect("loaded plugin client")
        }),
        capacity: u64::MAX,
        config: kept,
        _keep: Vec::new(),
    }
}

/// Every store this machine can run, sized for objects up to `largest` bytes. Add a plugin by
/// path with `GISMO_BENCH_PLUGIN=/abs/lib.so` (and `GISMO_BENCH_PLUGIN_CONFIG=k=v,...`).
pub fn all(largest: u64) -> Vec<StoreUnderTest> {
    // Room for a few of the largest objects plus the small ones.
    let size = (largest * 3).max(256 << 20);
    let mut v = vec![
        gismo(CoherenceMode::Hardware, size),
        gismo(CoherenceMode::Flush, size),
        plasma(size),
    ];
    v.extend(redis());
    if let Ok(path) = std::env::var("GISMO_BENCH_PLUGIN") {
        let config = std::env::var("GISMO_BENCH_PLUGIN_CONFIG").unwrap_or_default();
        v.push(loaded(Path::new(&path), &config));
    }
    v
}
