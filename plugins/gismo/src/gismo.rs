//! The GISMO plugin: [`GismoClient`] and [`GismoRunner`] over a shared region.
//!
//! `is_global()` is true: every host that maps the region sees every object, and `get` returns the
//! object's address in the caller's own mapping — no pull, no copy.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::coherence::CoherenceMode;
use crate::format::{self, FormatOptions};
use crate::interface::client::ReleaseObject;
use crate::interface::{
    ObjectBuffer, ObjectInfo, ObjectStoreClient, ObjectStoreRunner, RunnerCallbacks, Status,
};
use crate::interface::{StatusCode, WritableBuffer};
use crate::region::{Region, RegionOptions, RegionSpec};
use crate::store::clients::HostIdentity;
use crate::store::directory::state;
use crate::store::events::{host_index_reclaiming, EventKind};
use crate::store::eviction::{CreateMode, EvictionPolicy};
use crate::store::maintenance::{keep_alive, Maintainer, MaintainerConfig, MaintainerThread};
use crate::store::{Client, CreateInfo, ObjectId, ObjectSource, OwnerAddress, Store, StoreError};
use crate::written::Written;
use gismo_plugin::params::Params;

/// How long [`open_store`] waits for another process to finish formatting the region.
pub const FORMAT_WAIT: Duration = Duration::from_secs(60);

/// Client-table entries a region formatted through a plugin configuration gets by default: a Ray
/// node's worth (every worker, driver and raylet client that touches the region is one), when
/// the region is large enough — see [`default_max_clients`].
pub const RAY_NODE_CLIENTS: u32 = 1024;

/// The fewest client-table entries [`default_max_clients`] gives (the core format's default).
pub const MIN_DEFAULT_CLIENTS: u32 = 128;

/// The default client-table size for a region of `region_bytes` formatted through a plugin
/// configuration: [`RAY_NODE_CLIENTS`], fewer in a region too small for that, so that the client
/// table and the clients' reference tables take at most an eighth of it (1024 clients with 2048
/// references each take 16.1 MiB: a region of 129 MiB or more gets all 1024), and never fewer
/// than [`MIN_DEFAULT_CLIENTS`].
pub fn default_max_clients(region_bytes: u64, refs_per_client: u32) -> u32 {
    use crate::format::layout::{CLIENT_ENTRY_SIZE, REF_ENTRY_SIZE};
    let per_client = CLIENT_ENTRY_SIZE + u64::from(refs_per_client) * REF_ENTRY_SIZE;
    let fit = (region_bytes / 8) / per_client.max(1);
    fit.clamp(u64::from(MIN_DEFAULT_CLIENTS), u64::from(RAY_NODE_CLIENTS)) as u32
}

/// Opens (and, if asked, creates and formats) the store named by a plugin configuration:
/// `region=SPEC` (default `file:/dev/shm/gismo-default`), `size=BYTES` (to create it),
/// `format=true|false` (format when it is not yet a GISMO region; default true), `coherence=`,
/// and the table sizes of a region it formats: `max_clients=N` (default
/// [`default_max_clients`]), `refs_per_client=N` (references one client holds at once, a power of
/// two; default 2048) and `dir_capacity=N` (object directory slots, a power of two; default one
/// per 32 KiB of heap). They are ignored for a region that is already formatted.
///
/// Safe to run in many processes at once (issue 15, core review M9): only a region with no GISMO
/// superblock is formatted, by exactly one of them (the others wait for it to be ready); a region
/// being formatted, of another version, with unknown features or a bad checksum is never
/// reformatted; an existing file is never resized (other processes may map it).
///
/// # Errors
/// `IOError` for a region that cannot be opened or formatted (or is still not ready after
/// [`FORMAT_WAIT`]); `Invalid` for bad values.
pub fn open_store(params: &BTreeMap<String, String>) -> Result<Arc<Store>, Status> {
    use crate::format::FormatError;
    use crate::region::RegionError;
    let p = Params::new("gismo", params);
    let spec: RegionSpec = p
        .parse("region")?
        .unwrap_or_else(|| RegionSpec::File("/dev/shm/gismo-default".into()));
    let io = |e: String| Status::new(StatusCode::IOError, e);
    // Anything but `false` formats (as it always has: `format=` and `format=1` do too).
    let may_format = p.string("format") != Some("false");
    let size: Option<u64> = p.bytes("size")?;
    let coherence: CoherenceMode = p.parse("coherence")?.unwrap_or(CoherenceMode::Hardware);
    let max_clients: Option<u32> = p.int("max_clients", 1..=65_535)?;
    let defaults = FormatOptions::default();
    let refs_per_client: u32 = p
        .int("refs_per_client", 16..=1 << 24)?
        .unwrap_or(defaults.refs_per_client);
    let dir_capacity: Option<u64> = p.int("dir_capacity", 1..=format::layout::MAX_DIR_CAPACITY)?;
    let format_options = |region_bytes: u64| FormatOptions {
        coherence,
        max_clients: max_clients
            .unwrap_or_else(|| default_max_clients(region_bytes, refs_per_client)),
        refs_per_client,
        dir_capacity,
        ..FormatOptions::default()
    };
    let deadline = Instant::now() + FORMAT_WAIT;
    loop {
        let region = match Region::open(&spec, &RegionOptions::default()) {
            Ok(region) => region,
            // Missing: create it, exclusively (a file another process creates meanwhile is
            // opened on the next round, never resized).
            Err(e) => {
                let Some(size) = size else {
                    return Err(io(format!("{spec}: {e}")));
                };
                match Region::create_new(&spec, size, &RegionOptions::default()) {
                    Ok(region) => region,
                    // Created by another process meanwhile (perhaps not sized yet): open it
                    // on the next round.
                    Err(RegionError::AlreadyExists { .. }) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                    Err(e) => return Err(io(format!("{spec}: {e}"))),
                }
            }
        };
        if let Some(want) = size.filter(|s| *s != region.len() as u64) {
            if matches!(format::attach(&region), Err(FormatError::NotFormatted)) {
                return Err(io(format!(
                    "{spec}: exists with {} bytes, not the {} asked for; not resizing a region \
                     other processes may map (remove it, or format it with gismoctl format \
                     --force --size)",
                    region.len(),
                    want
                )));
            }
        }
        let waiting = match format::attach(&region) {
            Ok(_) => return Store::attach(region).map_err(|e| io(format!("{spec}: {e}"))),
            Err(FormatError::NotFormatted) if may_format => {
                // Format it in place, unless another process claims it first.
                let opts = format_options(region.len() as u64);
                match Store::format(region, &opts) {
                    Ok(store) => return Ok(store),
                    Err(StoreError::Format(
                        e @ (FormatError::NotReady { .. } | FormatError::AlreadyFormatted { .. }),
                    )) => e,
                    Err(e) => return Err(io(format!("{spec}: {e}"))),
                }
            }
            Err(e @ FormatError::NotReady { .. }) => e,
            Err(e) => return Err(io(format!("{spec}: {e}"))),
        };
        if Instant::now() >= deadline {
            return Err(io(format!(
                "{spec}: {waiting} (waited {FORMAT_WAIT:?} for another process to format it)"
            )));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

struct ClientInner {
    client: Mutex<Client>,
    /// Tells whether `client` was fenced without its lock (a copying reader's check).
    fence: crate::store::FenceToken,
    store: Arc<Store>,
    /// Flush mode: the objects this client is creating and which of their bytes
    /// `memory_copy` wrote (so the seal writes back only the rest). Bounded: an object missing
    /// here is written back whole, which is always correct.
    creating: Mutex<HashMap<ObjectId, Written>>,
}

/// How many objects under creation a client tracks (beyond that, seals write back whole).
const MAX_TRACKED: usize = 1024;

impl ClientInner {
    fn lock(&self) -> MutexGuard<'_, Client> {
        // A panic while holding the lock leaves the client usable: its state is in the region.
        self.client.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn creating(&self) -> MutexGuard<'_, HashMap<ObjectId, Written>> {
        self.creating.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn flush_mode(&self) -> bool {
        self.store.coherence_mode() == CoherenceMode::Flush
    }
}

impl ReleaseObject for ClientInner {
    fn release_object(&self, id: &ObjectId) {
        let _ = self.lock().release(id);
    }

    fn still_valid(&self) -> bool {
        self.fence.check().is_ok()
    }
}

/// A GISMO client: a registered client of the shared region.
#[derive(Clone)]
pub struct GismoClient {
    inner: Arc<ClientInner>,
}

impl GismoClient {
    /// Registers a client of `store`.
    ///
    /// # Errors
    /// `OutOfMemory` when the client table is full.
    pub fn connect(store: &Arc<Store>, name: &str) -> Result<GismoClient, Status> {
        let client = store.connect(name)?;
        Ok(GismoClient {
            inner: Arc::new(ClientInner {
                fence: client.fence_token(),
                client: Mutex::new(client),
                store: Arc::clone(store),
                creating: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// Opens the region named by a plugin configuration (see [`open_store`]) and registers.
    ///
    /// # Errors
    /// As [`open_store`] and [`GismoClient::connect`].
    pub fn from_config(params: &BTreeMap<String, String>) -> Result<GismoClient, Status> {
        let store = open_store(params)?;
        GismoClient::connect(
            &store,
            Params::new("gismo", params)
                .string("client_name")
                .unwrap_or("gismo-client"),
        )
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.inner.store
    }

    /// Reaps dead clients with this client as the maintainer (see
    /// [`Store::reap_dead`](crate::store::Store::reap_dead)); the client lock is held only to
    /// read its identity.
    ///
    /// # Errors
    /// As `Store::reap_dead` (`MaintenanceBusy` while another client reaps).
    pub fn reap_dead(
        &self,
        lease_ms: u64,
    ) -> Result<Vec<crate::store::ReapReport>, crate::store::StoreError> {
        let me = self.inner.lock().maintainer_id();
        self.inner.store.reap_dead(me, lease_ms)
    }

    /// Creates an object (evicting if the region is full) that is deleted when this client dies
    /// and is reaped (`CreateInfo::dies_with_creator`): for a process that owns what it
    /// creates, as `gismo.ray.put` with Ray's lifetime does. Otherwise as `create`.
    ///
    /// # Errors
    /// As `create`.
    pub fn create_dying_with_client(
        &self,
        id: &ObjectId,
        data_size: u64,
        metadata: &[u8],
    ) -> Result<WritableBuffer, Status> {
        let owner = OwnerAddress::default();
        let source = ObjectSource::CreatedByWorker;
        self.create_inner(id, &owner, false, data_size, metadata, source, true, true)
    }

    #[allow(clippy::too_many_arguments)]
    fn create_inner(
        &self,
        id: &ObjectId,
        owner: &OwnerAddress,
        is_mutable: bool,
        data_size: u64,
        metadata: &[u8],
        source: ObjectSource,
        evict: bool,
        dies_with_creator: bool,
    ) -> Result<WritableBuffer, Status> {
        let info = CreateInfo {
            owner: owner.clone(),
            source,
            is_mutable,
            dies_with_creator,
        };
        let mode = if evict {
            CreateMode::EvictIfFull
        } else {
            CreateMode::Immediate
        };
        // Evicts and retries when full (and counts a create that still found no room, for the
        // runners' full and spill callbacks), all in the store core.
        let client = self.inner.lock();
        let loc = client.create_evicting(id, data_size, metadata, &info, mode)?;
        if self.inner.flush_mode() {
            let total = (loc.data_size + loc.metadata_size) as usize;
            let mut w = Written::new(loc.ptr as usize, total);
            // The store wrote the metadata with `memory_copy`.
            w.add(loc.data_size as usize, loc.metadata_size as usize);
            let mut creating = self.inner.creating();
            if creating.len() < MAX_TRACKED {
                creating.insert(*id, w);
            }
        }
        let owner: Arc<dyn ReleaseObject> = self.inner.clone();
        // SAFETY: the payload stays valid and ours until sealed or aborted; the creation
        // reference is dropped through `owner`.
        Ok(unsafe { WritableBuffer::from_raw(*id, loc.ptr, loc.data_size as usize, owner) })
    }
}

impl ObjectStoreClient for GismoClient {
    fn create(
        &self,
        id: &ObjectId,
        owner: &OwnerAddress,
        is_mutable: bool,
        data_size: u64,
        metadata: &[u8],
        source: ObjectSource,
    ) -> Result<WritableBuffer, Status> {
        self.create_inner(
            id, owner, is_mutable, data_size, metadata, source, true, false,
        )
    }

    fn try_create_immediately(
        &self,
        id: &ObjectId,
        owner: &OwnerAddress,
        data_size: u64,
        metadata: &[u8],
        source: ObjectSource,
    ) -> Result<WritableBuffer, Status> {
        self.create_inner(id, owner, false, data_size, metadata, source, false, false)
    }

    fn seal(&self, id: &ObjectId) -> Result<(), Status> {
        let written = if self.inner.flush_mode() {
            self.inner.creating().remove(id)
        } else {
            None
        };
        let client = self.inner.lock();
        match written {
            Some(w) => client.seal_writing_back(id, &w.unwritten())?,
            None => client.seal(id)?,
        }
        Ok(())
    }

    fn abort(&self, id: &ObjectId) -> Result<(), Status> {
        self.inner.creating().remove(id);
        Ok(self.inner.lock().abort(id)?)
    }

    fn get(&self, ids: &[ObjectId], timeout_ms: i64) -> Result<Vec<Option<ObjectBuffer>>, Status> {
        // No clock for the common `timeout_ms == 0` (and none for -1): only a positive timeout
        // needs a deadline.
        let deadline =
            (timeout_ms > 0).then(|| Instant::now() + Duration::from_millis(timeout_ms as u64));
        let client = self.inner.lock();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let left = match (timeout_ms, deadline) {
                (0, _) => Some(Duration::ZERO),
                (_, Some(d)) => Some(d.saturating_duration_since(Instant::now())),
                (_, None) => None,
            };
            match client.get_raw(id, left)? {
                Some(loc) => {
                    let owner: Arc<dyn ReleaseObject> = self.inner.clone();
                    // SAFETY: the object is sealed and our reference keeps it alive until the
                    // buffer's drop releases it through `owner`.
                    out.push(Some(unsafe {
                        ObjectBuffer::from_raw(
                            *id,
                            loc.ptr,
                            loc.data_size as usize,
                            loc.metadata_size as usize,
                            owner,
                        )
                    }));
                }
                None => out.push(None),
            }
        }
        Ok(out)
    }

    fn release(&self, id: &ObjectId) -> Result<(), Status> {
        Ok(self.inner.lock().release(id)?)
    }

    fn contains(&self, id: &ObjectId) -> Result<bool, Status> {
        Ok(self.inner.lock().contains(id)?)
    }

    fn delete(&self, ids: &[ObjectId]) -> Result<(), Status> {
        let client = self.inner.lock();
        for id in ids {
            match client.delete(id) {
                Ok(_) | Err(StoreError::ObjectNotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    fn disconnect(&self) -> Result<(), Status> {
        self.inner.creating().clear();
        self.inner.lock().release_all();
        Ok(())
    }

    fn get_memory_usage(&self) -> Result<String, Status> {
        let s = self.inner.store.stats();
        Ok(format!(
            "GISMO region {} ({} coherence): {} of {} heap bytes used in {} allocations; objects: {} creating, {} sealed; {} clients",
            s.uuid,
            s.coherence,
            s.used_bytes,
            s.heap_bytes,
            s.allocations,
            s.objects_by_state[state::CREATING as usize] + s.objects_by_state[state::PENDING as usize],
            s.objects_by_state[state::SEALED as usize],
            s.clients_active
        ))
    }

    unsafe fn memory_copy(&self, dst: *mut u8, src: *const u8, len: usize) {
        // SAFETY: forwarded from the caller's contract.
        unsafe { self.inner.store.coherence().memory_copy(dst, src, len) };
        if self.inner.flush_mode() {
            // Written back as it went: the seal need not write these bytes back again.
            let mut creating = self.inner.creating();
            for w in creating.values_mut() {
                if w.add_addr(dst as usize, len) {
                    break;
                }
            }
        }
    }

    fn is_global(&self) -> bool {
        true
    }
}

/// The GISMO runner: reports the objects this host's clients seal (and their deletions) to the
/// raylet through its callbacks, from the host's event ring.
pub struct GismoRunner {
    store: Mutex<Option<Arc<Store>>>,
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Default for GismoRunner {
    fn default() -> Self {
        GismoRunner::new()
    }
}

impl GismoRunner {
    /// A runner that opens its region from `start`'s parameters.
    pub fn new() -> GismoRunner {
        GismoRunner {
            store: Mutex::new(None),
            stop: Arc::new(AtomicBool::new(false)),
            thread: Mutex::new(None),
        }
    }

    /// A runner over an already attached store.
    pub fn with_store(store: Arc<Store>) -> GismoRunner {
        let r = GismoRunner::new();
        *r.store.lock().unwrap_or_else(|p| p.into_inner()) = Some(store);
        r
    }

    pub fn store(&self) -> Option<Arc<Store>> {
        self.store.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

fn object_info(store: &Store, index: usize, gen: u32, id: &ObjectId) -> Option<ObjectInfo> {
    let summary = store.object_at(index)?;
    (summary.gen == gen && summary.present && summary.id == *id).then(|| {
        let node = summary.owner_node.unwrap_or_default();
        ObjectInfo {
            object_id: *id,
            is_mutable: summary.is_mutable,
            data_size: summary.data_size as i64,
            metadata_size: summary.metadata_size as i64,
            owner_raylet_id: node.raylet_id,
            owner_ip_address: node.ip,
            owner_port: i32::from(summary.owner_port),
            owner_worker_id: summary.owner_worker,
        }
    })
}

/// How often the runner checks memory pressure.
const PRESSURE_PERIOD_MS: u64 = 100;

/// What `start` reads from the plugin parameters.
#[derive(Clone, Copy, Debug)]
struct RunnerSettings {
    /// `object_spilling_threshold` (Ray's name), default 0.8.
    spill_threshold: f64,
    /// `embedded_server=true|false` (default true): run the server roles in-process — leader
    /// lease, reaper, and (if `high_watermark` < 1) the watermark evictor — so a raylet needs
    /// no separate `gismo-server`.
    embedded: bool,
    /// `lease_ms` (default 5000): client and leader lease.
    lease_ms: u64,
    /// `high_watermark` / `low_watermark` (default 1.0 / 0.9: off, since Plasma evicts only while
    /// serving a create).
    high_watermark: f64,
    low_watermark: f64,
}

impl RunnerSettings {
    fn from_params(params: &BTreeMap<String, String>) -> Result<RunnerSettings, Status> {
        let p = Params::new("gismo", params);
        let settings = RunnerSettings {
            spill_threshold: p.fraction("object_spilling_threshold")?.unwrap_or(0.8),
            embedded: p.bool("embedded_server")?.unwrap_or(true),
            lease_ms: p
                .millis("lease_ms", 1)?
                .map_or(5000, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            high_watermark: p.fraction("high_watermark")?.unwrap_or(1.0),
            low_watermark: p.fraction("low_watermark")?.unwrap_or(0.9),
        };
        if settings.low_watermark > settings.high_watermark {
            return Err(p
                .bad(
                    "low_watermark",
                    format_args!(
                        "must not exceed high_watermark ({})",
                        settings.high_watermark
                    ),
                )
                .into());
        }
        Ok(settings)
    }
}

/// The name of the client under which a runner's embedded server maintains the region.
const EMBEDDED_CLIENT_NAME: &str = "gismo-runner";

/// Starts the server roles a runner plays in-process when `embedded_server` is on: the store
/// core's [`Maintainer`] on a thread of its own (heartbeat, leader lease, reaping, orphan
/// collection and, below a high watermark of 1, watermark eviction), stopped — and the lease
/// released — when the returned handle is dropped. `None` when it cannot start (no client
/// entry or thread left): the runner then reports events without maintaining.
fn embedded_server(store: &Arc<Store>, settings: &RunnerSettings) -> Option<MaintainerThread> {
    let mut config = MaintainerConfig::new(EMBEDDED_CLIENT_NAME, settings.lease_ms);
    config.eviction =
        EvictionPolicy::with_watermarks(settings.high_watermark, settings.low_watermark).ok()?;
    Maintainer::new(store, config)
        .ok()?
        .spawn("gismo-maintainer", |_| {})
        .ok()
}

/// The client under which a runner holds its host's event-ring claim
/// (`Store::claim_event_ring`), heartbeated by the runner loop.
const CONSUMER_CLIENT_NAME: &str = "gismo-runner-events";

/// Keeps the ring claim alive: heartbeats `consumer` (registering again if it was fenced: the
/// runner was paused past its lease) and re-asserts the claim — a no-op while it holds it, a
/// takeover once a runner that took it meanwhile is gone. Returns whether the claim is held.
fn keep_claim(store: &Arc<Store>, host: usize, consumer: &mut Client, lease_ms: u64) -> bool {
    if keep_alive(consumer, CONSUMER_CLIENT_NAME).is_err() {
        return false;
    }
    store.claim_event_ring(host, consumer, lease_ms).is_ok()
}

fn runner_loop(
    store: Arc<Store>,
    host: usize,
    mut consumer: Client,
    cb: RunnerCallbacks,
    stop: Arc<AtomicBool>,
    settings: RunnerSettings,
) {
    runner_events(&store, host, &mut consumer, cb, stop, settings);
    store.release_event_ring(host, &consumer);
}

fn runner_events(
    store: &Arc<Store>,
    host: usize,
    consumer: &mut Client,
    cb: RunnerCallbacks,
    stop: Arc<AtomicBool>,
    settings: RunnerSettings,
) {
    let store = Arc::clone(store);
    let mut claimed = true;
    let spill_threshold = settings.spill_threshold;
    // Stopped (its lease released) when this function returns.
    let _embedded = settings
        .embedded
        .then(|| embedded_server(&store, &settings))
        .flatten();
    let mut reported: HashMap<ObjectId, ()> = HashMap::new();
    let rescan = |reported: &mut HashMap<ObjectId, ()>| {
        let mut present = HashMap::new();
        for o in store.list() {
            // Present, not only SEALED: an object in an eviction probe (which may restore it)
            // is not reported deleted (review follow-up R8).
            if o.present && o.creator_host as usize == host {
                present.insert(o.id, ());
                if let std::collections::hash_map::Entry::Vacant(slot) = reported.entry(o.id) {
                    if let Some(info) = object_info(&store, o.index, o.gen, &o.id) {
                        (cb.add_object)(&info);
                        slot.insert(());
                    }
                }
            }
        }
        reported.retain(|id, _| {
            let keep = present.contains_key(id);
            if !keep {
                (cb.delete_object)(id);
            }
            keep
        });
    };
    let Some(ring) = store.event_ring(host) else {
        return;
    };
    let mut seen_overflows = ring.overflows();
    rescan(&mut reported);
    let mut hole = None;
    let mut seen_full = store.create_full_events();
    let mut last_pressure_check = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let now = crate::clock::unix_ms();
        store.hosts_heartbeat(host, now);
        if now.saturating_sub(last_pressure_check) >= PRESSURE_PERIOD_MS {
            last_pressure_check = now;
            let had = claimed;
            claimed = keep_claim(&store, host, consumer, settings.lease_ms);
            if claimed && !had {
                rescan(&mut reported);
            }
            // Plasma's rules 5 and 6: spilling is asked for when a create could not be served
            // even after eviction (after the full callback, which triggers a global GC), or
            // when usage passes the spilling threshold.
            let full = store.create_full_events();
            if full != seen_full {
                seen_full = full;
                (cb.object_store_full)();
                (cb.spill_objects)();
            } else {
                if store.used_bytes() as f64 > spill_threshold * store.heap_bytes() as f64 {
                    (cb.spill_objects)();
                }
            }
        }
        if !claimed {
            // Another runner took the ring over while we were fenced: leave it alone.
            std::thread::sleep(Duration::from_millis(PRESSURE_PERIOD_MS));
            continue;
        }
        match ring.pop(now, &mut hole) {
            Ok(Some(ev)) => match ev.kind {
                EventKind::Sealed => {
                    if let Some(info) = object_info(&store, ev.slot as usize, ev.gen, &ev.id) {
                        (cb.add_object)(&info);
                        reported.insert(ev.id, ());
                    }
                }
                EventKind::Deleted => {
                    if reported.remove(&ev.id).is_some() {
                        (cb.delete_object)(&ev.id);
                    }
                }
            },
            Ok(None) => {
                if ring.overflows() != seen_overflows {
                    seen_overflows = ring.overflows();
                    rescan(&mut reported);
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(_hole) => rescan(&mut reported),
        }
    }
}

impl ObjectStoreRunner for GismoRunner {
    fn start(
        &self,
        params: &BTreeMap<String, String>,
        callbacks: RunnerCallbacks,
    ) -> Result<(), Status> {
        let mut thread = self.thread.lock().unwrap_or_else(|p| p.into_inner());
        if thread.is_some() {
            return Err(Status::invalid("runner already started"));
        }
        let store = match self.store() {
            Some(s) => s,
            None => {
                let s = open_store(params)?;
                *self.store.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::clone(&s));
                s
            }
        };
        let settings = RunnerSettings::from_params(params)?;
        let me = HostIdentity::current();
        let host = host_index_reclaiming(store.hosts(), me.hash(), &me.name, |id| {
            store.host_in_use(id)
        })
        .ok_or_else(|| Status::new(StatusCode::OutOfMemory, "host table full"))?;
        // One consumer per host ring: a second runner with this host identity fails here.
        let consumer = store.connect(CONSUMER_CLIENT_NAME)?;
        store
            .claim_event_ring(host, &consumer, settings.lease_ms)
            .map_err(|e| Status::invalid(e.to_string()))?;
        self.stop.store(false, Ordering::Relaxed);
        let stop = Arc::clone(&self.stop);
        *thread = Some(
            std::thread::Builder::new()
                .name("gismo-runner".into())
                .spawn(move || runner_loop(store, host, consumer, callbacks, stop, settings))
                .map_err(|e| {
                    Status::new(StatusCode::IOError, format!("spawn runner thread: {e}"))
                })?,
        );
        Ok(())
    }

    fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
    }

    fn is_object_spillable(&self, id: &ObjectId) -> bool {
        let Some(store) = self.store() else {
            return false;
        };
        store
            .lookup_summary(id)
            .is_some_and(|o| o.state == state::SEALED && o.refcount == 1)
    }

    fn consumed_bytes(&self) -> i64 {
        self.store().map_or(0, |s| s.bytes_created() as i64)
    }

    fn fallback_allocated(&self) -> i64 {
        0
    }

    fn available_memory(&self) -> i64 {
        self.store()
            .map_or(0, |s| s.heap_bytes().saturating_sub(s.used_bytes()) as i64)
    }

    fn total_memory_size(&self) -> i64 {
        self.store().map_or(0, |s| s.heap_bytes() as i64)
    }

    fn max_memory_size(&self) -> i64 {
        self.total_memory_size()
    }
}

impl Drop for GismoRunner {
    fn drop(&mut self) {
        self.stop();
    }
}
