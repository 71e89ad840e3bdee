//! The plasma store server: a node-local store with Plasma's semantics that speaks Ray's plasma
//! protocol on a Unix socket, built on a GISMO store's heap allocator in a private region (the
//! object table in [`state`] is the only record of object state; each object in the segment owns
//! a raw heap block, freed with it). [`PlasmaRunner`] is the plugin's runner; it owns a
//! [`Server`] once started.
//!
//! # Threads
//!
//! One thread accepts connections; each connection has its own thread (blocking reads: a request
//! is answered by the thread that read it, without a hop through an event loop). All
//! bookkeeping is in one [`State`](state::State) behind one mutex, as in Plasma; a get that must
//! wait sleeps on a condition variable signalled by every seal. Callbacks to the raylet run
//! after the lock is released, so a callback may call back into the runner.

mod conn;
pub(crate) mod segments;
pub mod settings;
pub(crate) mod state;

use std::collections::BTreeMap;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;

use crate::interface::{ObjectStoreRunner, RunnerCallbacks, Status, StatusCode};
use gismo_core::store::ObjectId;

pub use settings::{PlasmaSettings, PLASMA_KEYS};
pub use state::{Counters, MemoryAudit};
use state::{Effects, State};

/// The running store: its state, the raylet's callbacks, and its threads.
pub struct Server {
    settings: PlasmaSettings,
    state: Mutex<State>,
    sealed: Condvar,
    callbacks: RwLock<RunnerCallbacks>,
    stop: AtomicBool,
    next_client: AtomicU64,
    connections: Mutex<Vec<UnixStream>>,
    acceptor: Mutex<Option<JoinHandle<()>>>,
    /// `object_spilling_threshold` as `f64` bits (a runner's `start` may change it).
    spilling_threshold: AtomicU64,
}

impl Server {
    /// Makes the segment, binds the socket and starts accepting.
    ///
    /// # Errors
    /// `IOError` naming the segment or the socket (a live store already listening there is
    /// refused; a stale socket file left by a dead store is replaced).
    pub fn start(
        settings: PlasmaSettings,
        callbacks: RunnerCallbacks,
    ) -> Result<Arc<Server>, Status> {
        let store = segments::main_segment(&settings)?;
        let state = State::new(store)?;
        let listener = bind(&settings.socket)?;
        let server = Arc::new(Server {
            spilling_threshold: AtomicU64::new(settings.spilling_threshold.to_bits()),
            settings,
            state: Mutex::new(state),
            sealed: Condvar::new(),
            callbacks: RwLock::new(callbacks),
            stop: AtomicBool::new(false),
            next_client: AtomicU64::new(1),
            connections: Mutex::new(Vec::new()),
            acceptor: Mutex::new(None),
        });
        let s = server.clone();
        let handle = std::thread::Builder::new()
            .name("plasma_store.io".into())
            .spawn(move || s.accept_loop(listener))
            .map_err(|e| Status::new(StatusCode::IOError, format!("plasma: thread: {e}")))?;
        *server.acceptor.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
        Ok(server)
    }

    fn accept_loop(self: Arc<Self>, listener: UnixListener) {
        for stream in listener.incoming() {
            if self.stopping() {
                break;
            }
            let Ok(stream) = stream else { continue };
            let id = self.next_client.fetch_add(1, Ordering::Relaxed);
            if let Ok(clone) = stream.try_clone() {
                self.connections
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(clone);
            }
            self.lock().add_client(id);
            let server = self.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("plasma_client.{id}"))
                .spawn(move || conn::Connection::new(server, stream, id).run());
            if spawned.is_err() {
                let mut fx = Effects::default();
                self.lock().disconnect(id, &mut fx);
            }
        }
        let _ = std::fs::remove_file(&self.settings.socket);
    }

    pub fn settings(&self) -> &PlasmaSettings {
        &self.settings
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is consistent between calls: a panic in one connection must not stop the
        // others.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn log(&self, msg: &str) {
        eprintln!("plasma store: {msg}");
    }

    fn callbacks(&self) -> RunnerCallbacks {
        self.callbacks
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the raylet's callbacks (a runner started on an existing server).
    pub fn set_callbacks(&self, callbacks: RunnerCallbacks) {
        *self.callbacks.write().unwrap_or_else(|p| p.into_inner()) = callbacks;
    }

    /// Sets `object_spilling_threshold` (a fraction of the capacity).
    pub fn set_spilling_threshold(&self, t: f64) {
        self.spilling_threshold
            .store(t.to_bits(), Ordering::Relaxed);
    }

    /// Asks the raylet to spill; returns whether spilling is in progress.
    fn spill(&self) -> bool {
        (self.callbacks().spill_objects)()
    }

    /// Runs the callbacks an operation produced (the lock is not held), and asks for spilling
    /// when referenced sealed objects pass the spilling threshold (checked at most every 10 ms).
    fn after(&self, fx: Effects) {
        let cb = self.callbacks();
        for info in &fx.added {
            (cb.add_object)(info);
        }
        for id in &fx.deleted {
            (cb.delete_object)(id);
        }
        if fx.full {
            (cb.object_store_full)();
        }
        let mut spill = fx.spill;
        if fx.pinned_grew {
            // Ray's raylet checks on every seal (`SpillIfOverPrimaryObjectsThreshold`).
            let st = self.lock();
            let pinned = st.counters.pinned_bytes as f64;
            let threshold = f64::from_bits(self.spilling_threshold.load(Ordering::Relaxed));
            spill |= pinned > threshold * st.capacity() as f64;
        }
        if spill {
            (cb.spill_objects)();
        }
    }

    /// Stops accepting, closes every connection and waits for the acceptor. Idempotent.
    pub fn shutdown(&self) {
        if self.stop.swap(true, Ordering::Relaxed) {
            return;
        }
        // Wake the acceptor with a connection of our own.
        let _ = UnixStream::connect(&self.settings.socket);
        for c in self
            .connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
        self.sealed.notify_all();
        if let Some(h) = self
            .acceptor
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            let _ = h.join();
        }
    }

    pub fn is_spillable(&self, id: &ObjectId) -> bool {
        self.lock().is_spillable(id)
    }

    pub fn debug_string(&self) -> String {
        self.lock().debug_string()
    }

    /// The store's counters (objects created, sealed, deleted, evicted; bytes in use).
    pub fn counters(&self) -> Counters {
        self.lock().counters
    }

    /// Checks the object table against itself and against the segment's allocator (see
    /// [`MemoryAudit`]).
    ///
    /// # Errors
    /// The first disagreement, described.
    pub fn audit(&self) -> Result<MemoryAudit, String> {
        self.lock().audit()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Binds `path`, replacing a stale socket file but never a live store's.
fn bind(path: &Path) -> Result<UnixListener, Status> {
    let io = |e: String| {
        Status::new(
            StatusCode::IOError,
            format!("plasma socket {}: {e}", path.display()),
        )
    };
    match UnixListener::bind(path) {
        Ok(l) => Ok(l),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            if UnixStream::connect(path).is_ok() {
                return Err(io("another store is listening there".into()));
            }
            std::fs::remove_file(path).map_err(|e| io(e.to_string()))?;
            UnixListener::bind(path).map_err(|e| io(e.to_string()))
        }
        Err(e) => Err(io(e.to_string())),
    }
}

/// The `plasma` plugin's runner (Ray's `PlasmaStoreRunner`): `start` makes the store server
/// with the configuration merged with `start`'s parameters; `stop` shuts it down. A runner made
/// with [`PlasmaRunner::attach`] reports for a server someone else started and leaves it running.
pub struct PlasmaRunner {
    config: BTreeMap<String, String>,
    server: Mutex<Option<Arc<Server>>>,
    owned: bool,
    /// Whether `start` installed this runner's callbacks (what `stop` undoes).
    started: AtomicBool,
}

impl PlasmaRunner {
    /// A runner that will start its own store from `config` (see [`PlasmaSettings`]).
    ///
    /// # Errors
    /// `Invalid` for a configuration that does not parse.
    pub fn new(config: &BTreeMap<String, String>) -> Result<PlasmaRunner, Status> {
        PlasmaSettings::from_params(config)?;
        Ok(PlasmaRunner {
            config: config.clone(),
            server: Mutex::new(None),
            owned: true,
            started: AtomicBool::new(false),
        })
    }

    /// A runner for an already running server (tests; a second raylet component).
    pub fn attach(server: Arc<Server>) -> PlasmaRunner {
        PlasmaRunner {
            config: BTreeMap::new(),
            server: Mutex::new(Some(server)),
            owned: false,
            started: AtomicBool::new(false),
        }
    }

    /// The running server, if started.
    pub fn server(&self) -> Option<Arc<Server>> {
        self.server
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn with<T>(&self, f: impl FnOnce(&State) -> T, default: T) -> T {
        match self.server() {
            Some(s) => f(&s.lock()),
            None => default,
        }
    }
}

impl ObjectStoreRunner for PlasmaRunner {
    fn start(
        &self,
        params: &BTreeMap<String, String>,
        callbacks: RunnerCallbacks,
    ) -> Result<(), Status> {
        let mut slot = self.server.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = slot.as_ref() {
            // Attached to a running store: take the raylet's callbacks and its spilling
            // threshold; the other settings belong to whoever started the store.
            if let Some(v) = params.get("object_spilling_threshold") {
                let p: BTreeMap<String, String> =
                    [("object_spilling_threshold".to_string(), v.clone())].into();
                s.set_spilling_threshold(PlasmaSettings::from_params(&p)?.spilling_threshold);
            }
            s.set_callbacks(callbacks);
            self.started.store(true, Ordering::Relaxed);
            return Ok(());
        }
        let mut merged = self.config.clone();
        merged.extend(params.iter().map(|(k, v)| (k.clone(), v.clone())));
        // The GISMO runner's keys a raylet may pass to any plugin are not plasma's business.
        merged.retain(|k, _| PLASMA_KEYS.contains(&k.as_str()));
        let settings = PlasmaSettings::from_params(&merged)?;
        *slot = Some(Server::start(settings, callbacks)?);
        self.started.store(true, Ordering::Relaxed);
        Ok(())
    }

    fn stop(&self) {
        if !self.started.swap(false, Ordering::Relaxed) {
            return;
        }
        let mut slot = self.server.lock().unwrap_or_else(|p| p.into_inner());
        if self.owned {
            if let Some(s) = slot.take() {
                s.shutdown();
            }
        } else if let Some(s) = slot.as_ref() {
            s.set_callbacks(RunnerCallbacks::none());
        }
    }

    fn is_object_spillable(&self, id: &ObjectId) -> bool {
        self.with(|st| st.is_spillable(id), false)
    }

    fn consumed_bytes(&self) -> i64 {
        self.with(|st| st.counters.created_bytes as i64, 0)
    }

    fn fallback_allocated(&self) -> i64 {
        self.with(|st| st.counters.fallback_bytes as i64, 0)
    }

    fn available_memory(&self) -> i64 {
        self.with(|st| st.available() as i64, 0)
    }

    fn total_memory_size(&self) -> i64 {
        self.with(|st| st.capacity() as i64, 0)
    }

    fn max_memory_size(&self) -> i64 {
        // Fallback allocations let the store grow past its segment, bounded by the disk.
        self.with(|st| st.capacity() as i64, 0)
    }
}

impl Drop for PlasmaRunner {
    fn drop(&mut self) {
        self.stop();
    }
}
