//! The store's bookkeeping, behind the server's one mutex: the object table, which client holds
//! what, the LRU of evictable objects, and the create queue. No I/O happens here; methods return
//! what the connection must send and the [`Effects`] (callbacks) to run once the lock is gone.
//!
//! Reference counting follows Plasma: the store counts *clients* holding an object (a client's
//! repeated gets are counted by the client itself and released with one message), so
//! `refcount == 1` for a sealed object means one holder — the raylet's pin — and the object is a
//! spillable primary copy.
//!
//! # One record of each object
//!
//! The object table here is the only record of an object's state (id, sizes, seal state,
//! holders, eviction order). The main segment is a GISMO heap used through its allocator alone:
//! an object in it owns a [`HeapBlock`], which the table entry holds and which frees itself when
//! the entry goes, so the allocator's used bytes are always the sum of the table's blocks and no
//! second table (GISMO's directory) can disagree with this one.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::interface::{ObjectInfo, Status, StatusCode};
use crate::protocol::{CreateRequest, ObjectSpec, PlasmaError};
use gismo_core::store::eviction::{Candidate, EvictionPolicy};
use gismo_core::store::{HeapBlock, ObjectId, OwnerAddress, Store, StoreError};

use super::segments::{FallbackSegment, MAIN_SEGMENT_ID};

pub type ClientId = u64;

/// Where an object's bytes are.
pub enum Place {
    /// In the main segment: this block of its heap (freed when the object is dropped).
    Main(HeapBlock),
    Fallback(Arc<FallbackSegment>),
}

pub struct Object {
    pub info: ObjectInfo,
    pub place: Place,
    pub sealed: bool,
    /// Clients holding it.
    pub refcount: u32,
    pub creator: ClientId,
    pub delete_pending: bool,
    /// Its key in the LRU while sealed and unreferenced.
    pub lru: Option<u64>,
}

impl Object {
    pub fn size(&self) -> u64 {
        (self.info.data_size + self.info.metadata_size) as u64
    }
}

/// A segment a reply refers to, whose descriptor the client may need.
#[derive(Clone, Debug)]
pub struct SegmentRef {
    pub unique_id: i64,
    pub fd: i32,
    pub size: u64,
}

/// Callbacks to run after the lock is released.
#[derive(Default)]
pub struct Effects {
    pub added: Vec<ObjectInfo>,
    pub deleted: Vec<ObjectId>,
    pub full: bool,
    pub spill: bool,
    /// Referenced sealed bytes grew (check the spilling threshold).
    pub pinned_grew: bool,
}

/// A create the store could not serve yet (Ray's create request queue entry).
pub struct Pending {
    pub client: ClientId,
    pub request: CreateRequest,
    /// When memory first ran out for it.
    pub oom_since: Instant,
}

/// What a create came to.
pub enum CreateOutcome {
    Done(ObjectSpec, SegmentRef),
    /// Queued: the client retries with this request id.
    Retry(u64),
    Failed(PlasmaError),
}

#[derive(Default)]
struct ClientRefs {
    held: HashSet<ObjectId>,
}

/// Counters for the runner and the debug string.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counters {
    pub created_objects: u64,
    pub created_bytes: u64,
    pub main_bytes: u64,
    pub unsealed_bytes: u64,
    pub pinned_bytes: u64,
    pub fallback_bytes: u64,
    pub evicted_objects: u64,
    pub evicted_bytes: u64,
    /// Objects sealed.
    pub sealed_objects: u64,
    /// Objects removed because a client deleted them (at once, or at their last release).
    pub deleted_objects: u64,
    /// Objects handed out by get requests (found and sealed).
    pub got_objects: u64,
    /// Creates refused because they asked for an experimental mutable object.
    pub refused_mutable: u64,
}

/// What the object table and the allocator say about memory ([`State::audit`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryAudit {
    pub objects: usize,
    /// Objects in the main segment (each owns one heap block).
    pub main_objects: usize,
    /// Bytes the table's heap blocks reserve.
    pub table_bytes: u64,
    /// The allocator's used bytes and allocation count.
    pub allocator_bytes: u64,
    pub allocator_allocations: u64,
    /// Sealed, unreferenced objects (the eviction order's length).
    pub evictable: usize,
    pub clients: usize,
    pub queued_creates: usize,
}

pub struct State {
    store: Arc<Store>,
    main_fd: i32,
    capacity: u64,
    objects: HashMap<ObjectId, Object>,
    lru: BTreeMap<u64, ObjectId>,
    tick: u64,
    clients: HashMap<ClientId, ClientRefs>,
    queue: VecDeque<u64>,
    pending: HashMap<u64, Pending>,
    next_request: u64,
    next_segment: i64,
    pub counters: Counters,
}

fn owner_of(req: &CreateRequest) -> OwnerAddress {
    let id28 = |b: &[u8]| {
        let mut out = [0u8; 28];
        let n = b.len().min(28);
        out[..n].copy_from_slice(&b[..n]);
        out
    };
    OwnerAddress {
        raylet_id: id28(&req.owner_node_id),
        ip: req.owner_ip_address.clone(),
        port: u16::try_from(req.owner_port).unwrap_or(0),
        worker_id: id28(&req.owner_worker_id),
    }
}

impl State {
    /// # Errors
    /// `IOError` if the segment has no descriptor to pass to clients.
    pub fn new(store: Arc<Store>) -> Result<State, Status> {
        let main_fd = store
            .region()
            .raw_fd()
            .ok_or_else(|| Status::new(StatusCode::IOError, "plasma segment has no descriptor"))?;
        let capacity = store.stats().heap_bytes;
        Ok(State {
            store,
            main_fd,
            capacity,
            objects: HashMap::new(),
            lru: BTreeMap::new(),
            tick: 0,
            clients: HashMap::new(),
            queue: VecDeque::new(),
            pending: HashMap::new(),
            next_request: 1,
            next_segment: MAIN_SEGMENT_ID + 1,
            counters: Counters::default(),
        })
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    pub fn main_segment(&self) -> SegmentRef {
        SegmentRef {
            unique_id: MAIN_SEGMENT_ID,
            fd: self.main_fd,
            size: self.store.region().len() as u64,
        }
    }

    pub fn add_client(&mut self, id: ClientId) {
        self.clients.insert(id, ClientRefs::default());
    }

    /// The spec and segment of an object.
    pub fn spec_of(&self, o: &Object) -> (ObjectSpec, SegmentRef) {
        let (offset, seg, fallback) = match &o.place {
            Place::Main(block) => (block.offset(), self.main_segment(), false),
            Place::Fallback(f) => (
                0,
                SegmentRef {
                    unique_id: f.unique_id,
                    fd: f.raw_fd(),
                    size: f.size,
                },
                true,
            ),
        };
        let data_size = o.info.data_size as u64;
        let spec = ObjectSpec {
            segment_index: seg.fd,
            unique_fd_id: seg.unique_id,
            header_offset: offset,
            data_offset: offset,
            data_size,
            metadata_offset: offset + data_size,
            metadata_size: o.info.metadata_size as u64,
            allocated_size: o.size(),
            fallback_allocated: fallback,
            device_num: 0,
            is_experimental_mutable_object: o.info.is_mutable,
        };
        (spec, seg)
    }

    // ---- references ----------------------------------------------------------------------

    fn add_ref(&mut self, client: ClientId, id: &ObjectId) -> bool {
        let Some(refs) = self.clients.get_mut(&client) else {
            return false;
        };
        if !refs.held.insert(*id) {
            return false;
        }
        if let Some(o) = self.objects.get_mut(id) {
            o.refcount += 1;
            if o.refcount == 1 && o.sealed {
                if let Some(t) = o.lru.take() {
                    self.lru.remove(&t);
                }
                self.counters.pinned_bytes += o.size();
                return true;
            }
        }
        false
    }

    /// Drops `client`'s reference; `Err` if it held none.
    fn drop_ref(&mut self, client: ClientId, id: &ObjectId, fx: &mut Effects) -> Result<(), ()> {
        let held = self
            .clients
            .get_mut(&client)
            .is_some_and(|r| r.held.remove(id));
        if !held {
            return Err(());
        }
        let Some(o) = self.objects.get_mut(id) else {
            return Ok(());
        };
        o.refcount = o.refcount.saturating_sub(1);
        if o.refcount > 0 {
            return Ok(());
        }
        if o.sealed {
            self.counters.pinned_bytes -= o.size();
            if o.delete_pending {
                self.counters.deleted_objects += 1;
                self.remove(id, fx);
            } else {
                self.tick += 1;
                o.lru = Some(self.tick);
                self.lru.insert(self.tick, *id);
            }
        }
        Ok(())
    }

    /// Forgets an object, which frees its memory (its heap block or fallback segment goes with
    /// it); reports the deletion of a sealed one.
    fn remove(&mut self, id: &ObjectId, fx: &mut Effects) {
        let Some(o) = self.objects.remove(id) else {
            return;
        };
        if let Some(t) = o.lru {
            self.lru.remove(&t);
        }
        let size = o.size();
        if o.sealed && o.refcount > 0 {
            self.counters.pinned_bytes -= size;
        }
        if !o.sealed {
            self.counters.unsealed_bytes -= size;
        }
        match o.place {
            Place::Main(_) => self.counters.main_bytes -= size,
            Place::Fallback(_) => self.counters.fallback_bytes -= size,
        }
        if o.sealed {
            fx.deleted.push(*id);
        }
        // `o` (and with it the block or the segment) is dropped here.
    }

    /// Evicts unreferenced sealed objects by the store core's one eviction policy
    /// ([`EvictionPolicy`]: least recently used first, until a create's need and at least a fifth
    /// of the capacity are freed). The order is this table's LRU (an object enters it when it is
    /// sealed and its last holder releases it, as in Ray's plasma), whose keys are unique.
    /// Returns the bytes freed.
    fn evict(&mut self, need: u64, fx: &mut Effects) -> u64 {
        let target = EvictionPolicy::for_create(need, self.capacity);
        let candidates: Vec<(Candidate, ObjectId)> = self
            .lru
            .iter()
            .filter_map(|(&tick, id)| {
                let o = self.objects.get(id)?;
                let c = Candidate {
                    index: tick as usize,
                    last_access_ms: tick,
                    bytes: o.size(),
                };
                Some((c, *id))
            })
            .collect();
        // Everything in the LRU is sealed and unreferenced (the table's invariant, checked by
        // `check`), so each candidate is evicted; none fails.
        EvictionPolicy::evict_lru(candidates, target, |c, id| {
            if !self.objects.contains_key(id) {
                return Ok(false);
            }
            self.counters.evicted_objects += 1;
            self.counters.evicted_bytes += c.bytes;
            self.remove(id, fx);
            Ok(true)
        })
        .unwrap_or(0)
    }

    // ---- create --------------------------------------------------------------------------

    /// Allocates in the main segment, evicting between tries (Plasma tries up to 11 times).
    fn allocate_main(
        &mut self,
        req: &CreateRequest,
        fx: &mut Effects,
    ) -> Result<HeapBlock, PlasmaError> {
        // No overflow: `create` refuses sizes whose sum does not fit.
        let size = req.data_size + req.metadata_size;
        for _ in 0..11 {
            match self.store.alloc_block(size) {
                Ok(block) => return Ok(block),
                Err(StoreError::StoreFull { .. }) => {
                    if self.evict(size, fx) == 0 {
                        return Err(PlasmaError::OutOfMemory);
                    }
                }
                Err(_) => return Err(PlasmaError::UnexpectedError),
            }
        }
        Err(PlasmaError::OutOfMemory)
    }

    fn insert(&mut self, client: ClientId, req: &CreateRequest, place: Place) -> CreateOutcome {
        let size = req.data_size + req.metadata_size;
        let owner = owner_of(req);
        let info = ObjectInfo {
            object_id: req.object_id,
            is_mutable: req.is_mutable,
            data_size: req.data_size as i64,
            metadata_size: req.metadata_size as i64,
            owner_raylet_id: owner.raylet_id,
            owner_ip_address: owner.ip,
            owner_port: req.owner_port,
            owner_worker_id: owner.worker_id,
        };
        match &place {
            Place::Main(_) => self.counters.main_bytes += size,
            Place::Fallback(_) => self.counters.fallback_bytes += size,
        }
        self.counters.unsealed_bytes += size;
        self.counters.created_objects += 1;
        self.counters.created_bytes += size;
        self.objects.insert(
            req.object_id,
            Object {
                info,
                place,
                sealed: false,
                refcount: 0,
                creator: client,
                delete_pending: false,
                lru: None,
            },
        );
        let _ = self.add_ref(client, &req.object_id);
        let o = &self.objects[&req.object_id];
        let (spec, seg) = self.spec_of(o);
        CreateOutcome::Done(spec, seg)
    }

    fn fallback(
        &mut self,
        client: ClientId,
        req: &CreateRequest,
        dir: &std::path::Path,
    ) -> CreateOutcome {
        let id = self.next_segment;
        self.next_segment += 1;
        match FallbackSegment::create(dir, req.data_size + req.metadata_size, id) {
            Ok(seg) => self.insert(client, req, Place::Fallback(Arc::new(seg))),
            Err(e) if e.code == StatusCode::OutOfDisk => {
                CreateOutcome::Failed(PlasmaError::OutOfDisk)
            }
            Err(_) => CreateOutcome::Failed(PlasmaError::OutOfMemory),
        }
    }

    /// A new create request. `try_immediately` requests are served now (evicting, then falling
    /// back to a file) or fail; others that do not fit join the queue.
    pub fn create(
        &mut self,
        client: ClientId,
        req: CreateRequest,
        fallback_dir: &std::path::Path,
        fx: &mut Effects,
    ) -> CreateOutcome {
        if req.data_size.checked_add(req.metadata_size).is_none() {
            return CreateOutcome::Failed(PlasmaError::OutOfMemory);
        }
        if req.is_mutable {
            // Ray's experimental mutable objects (compiled-graph channels) need a
            // `PlasmaObjectHeader` at `header_offset`, before the data, which this store does not
            // lay out. Refuse rather than hand out an object whose first payload bytes a Ray
            // client would take for that header. `UnexpectedError` is the one refusal Ray's
            // `PlasmaErrorStatus` turns into an error status (`UnknownError`) without retrying
            // (`OutOfMemory` is retried as a full store) or aborting (codes it does not list
            // are `RAY_LOG(FATAL)`).
            self.counters.refused_mutable += 1;
            return CreateOutcome::Failed(PlasmaError::UnexpectedError);
        }
        if self.objects.contains_key(&req.object_id)
            || self
                .pending
                .values()
                .any(|p| p.request.object_id == req.object_id)
        {
            return CreateOutcome::Failed(PlasmaError::ObjectExists);
        }
        if req.try_immediately {
            return match self.allocate_main(&req, fx) {
                Ok(block) => self.insert(client, &req, Place::Main(block)),
                Err(PlasmaError::OutOfMemory) => self.fallback(client, &req, fallback_dir),
                Err(e) => CreateOutcome::Failed(e),
            };
        }
        if self.queue.is_empty() {
            match self.allocate_main(&req, fx) {
                Ok(block) => return self.insert(client, &req, Place::Main(block)),
                Err(PlasmaError::OutOfMemory) => {}
                Err(e) => return CreateOutcome::Failed(e),
            }
            fx.full = true;
            fx.spill = true;
        }
        let rid = self.next_request;
        self.next_request += 1;
        self.queue.push_back(rid);
        self.pending.insert(
            rid,
            Pending {
                client,
                request: req,
                oom_since: Instant::now(),
            },
        );
        CreateOutcome::Retry(rid)
    }

    /// A retry of queued request `rid`. Only the queue's head is served (FIFO); after
    /// `grace` without memory and with no spilling in progress it falls back to a file.
    /// `spilling` is the raylet's answer to the spill callback, asked by the caller.
    pub fn retry(
        &mut self,
        client: ClientId,
        rid: u64,
        spilling: bool,
        grace: Duration,
        fallback_dir: &std::path::Path,
        fx: &mut Effects,
    ) -> CreateOutcome {
        match self.pending.get(&rid) {
            Some(p) if p.client == client => {}
            _ => return CreateOutcome::Failed(PlasmaError::UnexpectedError),
        }
        if self.queue.front() != Some(&rid) {
            return CreateOutcome::Retry(rid);
        }
        let req = self.pending[&rid].request.clone();
        let outcome = match self.allocate_main(&req, fx) {
            Ok(block) => self.insert(client, &req, Place::Main(block)),
            Err(PlasmaError::OutOfMemory) => {
                fx.full = true;
                let p = self.pending.get_mut(&rid).expect("checked above");
                if spilling {
                    // Spilling makes progress: restart the grace period (Ray resets its timer).
                    p.oom_since = Instant::now();
                    return CreateOutcome::Retry(rid);
                }
                if p.oom_since.elapsed() < grace {
                    return CreateOutcome::Retry(rid);
                }
                self.fallback(client, &req, fallback_dir)
            }
            Err(e) => CreateOutcome::Failed(e),
        };
        self.queue.pop_front();
        self.pending.remove(&rid);
        outcome
    }

    /// Whether creates are queued for memory (then a retry asks the raylet to spill first).
    pub fn has_queue(&self) -> bool {
        !self.queue.is_empty()
    }

    // ---- lifecycle -----------------------------------------------------------------------

    /// Seal (any client may seal, as in Plasma; a client's own checks come first).
    pub fn seal(&mut self, id: &ObjectId, fx: &mut Effects) -> PlasmaError {
        let Some(o) = self.objects.get_mut(id) else {
            return PlasmaError::ObjectNonexistent;
        };
        if o.sealed {
            return PlasmaError::ObjectSealed;
        }
        o.sealed = true;
        let size = o.size();
        self.counters.unsealed_bytes -= size;
        self.counters.sealed_objects += 1;
        fx.added.push(o.info.clone());
        if o.refcount > 0 {
            self.counters.pinned_bytes += size;
            fx.pinned_grew = true;
        } else if o.delete_pending {
            self.counters.deleted_objects += 1;
            self.remove(id, fx);
        } else {
            self.tick += 1;
            o.lru = Some(self.tick);
            self.lru.insert(self.tick, *id);
        }
        PlasmaError::Ok
    }

    /// Abort: only the creator, only before seal.
    pub fn abort(&mut self, client: ClientId, id: &ObjectId, fx: &mut Effects) -> PlasmaError {
        match self.objects.get(id) {
            None => PlasmaError::ObjectNonexistent,
            Some(o) if o.sealed => PlasmaError::ObjectSealed,
            Some(o) if o.creator != client => PlasmaError::ObjectInUse,
            Some(_) => {
                for refs in self.clients.values_mut() {
                    refs.held.remove(id);
                }
                self.remove(id, fx);
                PlasmaError::Ok
            }
        }
    }

    /// Takes references for `client` on the sealed objects among `ids`; `None` for the others.
    pub fn get(
        &mut self,
        client: ClientId,
        ids: &[ObjectId],
        fx: &mut Effects,
    ) -> Vec<Option<(ObjectSpec, SegmentRef)>> {
        ids.iter()
            .map(|id| {
                let sealed = self.objects.get(id).is_some_and(|o| o.sealed);
                if !sealed {
                    return None;
                }
                fx.pinned_grew |= self.add_ref(client, id);
                self.counters.got_objects += 1;
                Some(self.spec_of(&self.objects[id]))
            })
            .collect()
    }

    /// Whether every id is sealed.
    pub fn all_sealed(&self, ids: &[ObjectId]) -> bool {
        ids.iter()
            .all(|id| self.objects.get(id).is_some_and(|o| o.sealed))
    }

    /// Release; returns whether the client may unmap the object's segment (a fallback segment
    /// it no longer uses), or `None` if it held no reference.
    pub fn release(&mut self, client: ClientId, id: &ObjectId, fx: &mut Effects) -> Option<bool> {
        let fallback = self
            .objects
            .get(id)
            .is_some_and(|o| matches!(o.place, Place::Fallback(_)));
        self.drop_ref(client, id, fx).ok()?;
        Some(fallback)
    }

    pub fn contains(&self, id: &ObjectId) -> bool {
        self.objects.get(id).is_some_and(|o| o.sealed)
    }

    /// Plasma's delete: now if sealed and unused, else remembered until the last release.
    pub fn delete(&mut self, id: &ObjectId, fx: &mut Effects) -> PlasmaError {
        let Some(o) = self.objects.get_mut(id) else {
            return PlasmaError::ObjectNonexistent;
        };
        if !o.sealed {
            o.delete_pending = true;
            return PlasmaError::ObjectNotSealed;
        }
        if o.refcount > 0 {
            o.delete_pending = true;
            return PlasmaError::ObjectInUse;
        }
        self.counters.deleted_objects += 1;
        self.remove(id, fx);
        PlasmaError::Ok
    }

    /// A client went away: its references go, its unsealed objects are aborted and its queued
    /// creates dropped.
    pub fn disconnect(&mut self, client: ClientId, fx: &mut Effects) {
        let held: Vec<ObjectId> = self
            .clients
            .get(&client)
            .map(|r| r.held.iter().copied().collect())
            .unwrap_or_default();
        for id in held {
            let _ = self.drop_ref(client, &id, fx);
        }
        let unsealed: Vec<ObjectId> = self
            .objects
            .iter()
            .filter(|(_, o)| !o.sealed && o.creator == client)
            .map(|(id, _)| *id)
            .collect();
        for id in unsealed {
            for refs in self.clients.values_mut() {
                refs.held.remove(&id);
            }
            self.remove(&id, fx);
        }
        self.queue
            .retain(|rid| self.pending.get(rid).is_some_and(|p| p.client != client));
        self.pending.retain(|_, p| p.client != client);
        self.clients.remove(&client);
    }

    /// Sealed and held by exactly one client (the raylet's pin).
    pub fn is_spillable(&self, id: &ObjectId) -> bool {
        self.objects
            .get(id)
            .is_some_and(|o| o.sealed && o.refcount == 1)
    }

    /// `footprint − (in use − unsealed)`, as Plasma's `GetAvailableMemory`.
    pub fn available(&self) -> u64 {
        self.capacity.saturating_sub(
            self.counters
                .main_bytes
                .saturating_sub(self.counters.unsealed_bytes),
        )
    }

    /// Checks the table against itself (counters, holders, eviction order, queue) and against
    /// the allocator (which must hold exactly the table's blocks), and says what it found.
    ///
    /// # Errors
    /// The first disagreement, described.
    pub fn audit(&self) -> Result<MemoryAudit, String> {
        let mut sums = Counters::default();
        let mut table_bytes = 0;
        let mut main_objects = 0;
        for (id, o) in &self.objects {
            let size = o.size();
            match &o.place {
                Place::Main(b) => {
                    main_objects += 1;
                    table_bytes += b.capacity();
                    sums.main_bytes += size;
                    if b.size() != size.max(1) {
                        return Err(format!("{id}: block of {} for {size} bytes", b.size()));
                    }
                }
                Place::Fallback(_) => sums.fallback_bytes += size,
            }
            if !o.sealed {
                sums.unsealed_bytes += size;
            } else if o.refcount > 0 {
                sums.pinned_bytes += size;
            }
            let holders = self
                .clients
                .values()
                .filter(|r| r.held.contains(id))
                .count();
            if holders != o.refcount as usize {
                return Err(format!(
                    "{id}: refcount {} but {holders} holders",
                    o.refcount
                ));
            }
            let evictable = o.sealed && o.refcount == 0;
            let listed = o.lru.is_some_and(|t| self.lru.get(&t) == Some(id));
            if evictable != listed || (o.lru.is_some() && !listed) {
                return Err(format!(
                    "{id}: sealed {} refcount {} but lru {:?}",
                    o.sealed, o.refcount, o.lru
                ));
            }
        }
        let c = &self.counters;
        for (name, counted, summed) in [
            ("main", c.main_bytes, sums.main_bytes),
            ("fallback", c.fallback_bytes, sums.fallback_bytes),
            ("unsealed", c.unsealed_bytes, sums.unsealed_bytes),
            ("pinned", c.pinned_bytes, sums.pinned_bytes),
        ] {
            if counted != summed {
                return Err(format!(
                    "{name} bytes counted {counted}, objects sum to {summed}"
                ));
            }
        }
        if self.lru.len() != self.objects.values().filter(|o| o.lru.is_some()).count() {
            return Err(format!("{} lru entries name no object", self.lru.len()));
        }
        for (client, refs) in &self.clients {
            if let Some(id) = refs.held.iter().find(|id| !self.objects.contains_key(id)) {
                return Err(format!("client {client} holds {id}, which is gone"));
            }
        }
        if self.queue.len() != self.pending.len()
            || !self.queue.iter().all(|r| self.pending.contains_key(r))
        {
            return Err("the create queue and the pending creates differ".into());
        }
        let stats = self.store.stats();
        if stats.used_bytes != table_bytes || self.store.raw_bytes() != table_bytes {
            return Err(format!(
                "the allocator holds {} bytes ({} in raw blocks), the table's blocks {table_bytes}",
                stats.used_bytes,
                self.store.raw_bytes()
            ));
        }
        if stats.allocations != main_objects as u64 {
            return Err(format!(
                "the allocator holds {} blocks, the table {main_objects}",
                stats.allocations
            ));
        }
        Ok(MemoryAudit {
            objects: self.objects.len(),
            main_objects,
            table_bytes,
            allocator_bytes: stats.used_bytes,
            allocator_allocations: stats.allocations,
            evictable: self.lru.len(),
            clients: self.clients.len(),
            queued_creates: self.queue.len(),
        })
    }

    pub fn debug_string(&self) -> String {
        let c = &self.counters;
        let sealed = self.objects.values().filter(|o| o.sealed).count();
        format!(
            "plasma (gismo fallback) store: capacity {} bytes; {} in use in the shared segment \
             ({} unsealed, {} pinned); {} objects ({} sealed, {} evictable); {} clients; \
             {} queued creates; fallback allocated {} bytes; created {} objects / {} bytes; \
             sealed {} objects; got {} objects; deleted {} objects; evicted {} objects / {} bytes; \
             refused {} mutable creates",
            self.capacity,
            c.main_bytes,
            c.unsealed_bytes,
            c.pinned_bytes,
            self.objects.len(),
            sealed,
            self.lru.len(),
            self.clients.len(),
            self.queue.len(),
            c.fallback_bytes,
            c.created_objects,
            c.created_bytes,
            c.sealed_objects,
            c.got_objects,
            c.deleted_objects,
            c.evicted_objects,
            c.evicted_bytes,
            c.refused_mutable
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::segments::main_segment;
    use crate::store::settings::PlasmaSettings;
    use std::path::{Path, PathBuf};

    fn state(memory: u64) -> State {
        let settings = PlasmaSettings {
            memory,
            plasma_directory: "memfd".into(),
            ..PlasmaSettings::default()
        };
        State::new(main_segment(&settings).unwrap()).unwrap()
    }

    /// A fallback directory that does not exist: a create that does not fit the segment fails
    /// with `OutOfMemory` instead of going to a file.
    fn no_fallback() -> PathBuf {
        PathBuf::from("/nonexistent/gismo-plasma-test")
    }

    fn request(n: u64, data_size: u64) -> CreateRequest {
        CreateRequest {
            object_id: ObjectId::from_u64(n),
            data_size,
            metadata_size: 3,
            try_immediately: true,
            ..CreateRequest::default()
        }
    }

    fn create(st: &mut State, client: ClientId, n: u64, size: u64, dir: &Path) -> CreateOutcome {
        st.create(client, request(n, size), dir, &mut Effects::default())
    }

    fn created(st: &mut State, client: ClientId, n: u64, size: u64) -> ObjectSpec {
        match create(st, client, n, size, &no_fallback()) {
            CreateOutcome::Done(spec, _) => spec,
            CreateOutcome::Retry(_) => panic!("create {n} queued"),
            CreateOutcome::Failed(e) => panic!("create {n}: {e:?}"),
        }
    }

    #[test]
    fn mutable_creates_are_refused_with_unexpected_error() {
        let mut st = state(4 << 20);
        for try_immediately in [true, false] {
            let req = CreateRequest {
                is_mutable: true,
                try_immediately,
                ..request(1, 1000)
            };
            match st.create(1, req, &no_fallback(), &mut Effects::default()) {
                CreateOutcome::Failed(PlasmaError::UnexpectedError) => {}
                CreateOutcome::Failed(e) => panic!("refused with {e:?}"),
                CreateOutcome::Done(..) => panic!("a mutable object was created"),
                CreateOutcome::Retry(_) => panic!("a mutable create was queued"),
            }
        }
        assert!(!st.contains(&ObjectId::from_u64(1)));
        assert_eq!(st.counters.refused_mutable, 2);
        assert_eq!(st.counters.created_objects, 0);
        assert!(st.debug_string().contains("refused 2 mutable creates"));
        assert_empty(&st);
        // The same id, immutable, is created as usual.
        let spec = created(&mut st, 1, 1, 1000);
        assert!(!spec.is_experimental_mutable_object);
    }

    #[test]
    fn sealed_and_deleted_are_counted() {
        let mut st = state(4 << 20);
        st.add_client(1);
        let mut fx = Effects::default();
        created(&mut st, 1, 1, 1000);
        created(&mut st, 1, 2, 1000);
        assert_eq!(st.seal(&ObjectId::from_u64(1), &mut fx), PlasmaError::Ok);
        assert_eq!(st.seal(&ObjectId::from_u64(2), &mut fx), PlasmaError::Ok);
        assert_eq!(st.counters.sealed_objects, 2);
        // Held by its creator: the delete waits for the release.
        assert_eq!(
            st.delete(&ObjectId::from_u64(1), &mut fx),
            PlasmaError::ObjectInUse
        );
        assert_eq!(st.counters.deleted_objects, 0);
        assert_eq!(st.release(1, &ObjectId::from_u64(1), &mut fx), Some(false));
        assert_eq!(st.counters.deleted_objects, 1);
        assert_eq!(st.release(1, &ObjectId::from_u64(2), &mut fx), Some(false));
        assert_eq!(st.delete(&ObjectId::from_u64(2), &mut fx), PlasmaError::Ok);
        assert_eq!(st.counters.deleted_objects, 2);
        assert!(st
            .debug_string()
            .contains("sealed 2 objects; got 0 objects; deleted 2 objects"));
        assert_empty(&st);
    }

    fn audit(st: &State) -> MemoryAudit {
        st.audit()
            .unwrap_or_else(|e| panic!("table and allocator disagree: {e}"))
    }

    fn assert_empty(st: &State) {
        let a = audit(st);
        assert_eq!(a.objects, 0, "{a:?}");
        assert_eq!(a.table_bytes, 0, "{a:?}");
        assert_eq!(a.allocator_bytes, 0, "{a:?}");
        assert_eq!(a.allocator_allocations, 0, "{a:?}");
        assert_eq!(st.store.raw_bytes(), 0);
        let c = st.counters;
        assert_eq!(
            (
                c.main_bytes,
                c.unsealed_bytes,
                c.pinned_bytes,
                c.fallback_bytes
            ),
            (0, 0, 0, 0)
        );
        assert_eq!(st.available(), st.capacity());
    }

    #[test]
    fn a_fresh_store_is_empty() {
        let st = state(4 << 20);
        assert!(st.capacity() >= 4 << 20);
        assert_empty(&st);
    }

    /// Creates, seals, gets, releases, aborts, deletes (now and pending) and evicts many
    /// objects, checking table and allocator after every step; two clients then disconnect, one
    /// holding references and one with unsealed objects; deleting what is left brings every
    /// byte back.
    #[test]
    fn every_byte_comes_back() {
        let mut st = state(4 << 20);
        let (c1, c2) = (1, 2);
        st.add_client(c1);
        st.add_client(c2);
        let sizes = [0u64, 100, 5000, 20_000, 300_000];
        let mut fx = Effects::default();
        for i in 0..500u64 {
            let id = ObjectId::from_u64(i);
            let size = sizes[(i / 5) as usize % sizes.len()];
            let spec = created(&mut st, c1, i, size);
            assert_eq!(spec.data_size, size);
            assert!(!spec.fallback_allocated);
            audit(&st);
            // Held objects only early on, so that later creates must evict to fit.
            let early = i < 100;
            match i % 5 {
                0 => {
                    assert_eq!(st.seal(&id, &mut fx), PlasmaError::Ok);
                    assert_eq!(st.release(c1, &id, &mut fx), Some(false));
                }
                1 => {
                    assert_eq!(st.seal(&id, &mut fx), PlasmaError::Ok);
                    assert_eq!(st.seal(&id, &mut fx), PlasmaError::ObjectSealed);
                    assert_eq!(st.release(c1, &id, &mut fx), Some(false));
                    if early {
                        assert!(st.get(c2, &[id], &mut fx)[0].is_some());
                    }
                }
                2 => {
                    assert_eq!(st.abort(c2, &id, &mut fx), PlasmaError::ObjectInUse);
                    assert_eq!(st.abort(c1, &id, &mut fx), PlasmaError::Ok);
                    assert!(!st.contains(&id));
                }
                3 => {
                    assert_eq!(st.seal(&id, &mut fx), PlasmaError::Ok);
                    assert_eq!(st.delete(&id, &mut fx), PlasmaError::ObjectInUse);
                    assert!(st.contains(&id));
                    assert_eq!(st.release(c1, &id, &mut fx), Some(false));
                    assert!(!st.contains(&id), "a pending delete happens at the release");
                }
                _ => {
                    if !early {
                        assert_eq!(st.seal(&id, &mut fx), PlasmaError::Ok);
                        assert_eq!(st.release(c1, &id, &mut fx), Some(false));
                        assert_eq!(st.delete(&id, &mut fx), PlasmaError::Ok);
                    }
                }
            }
            audit(&st);
        }
        assert!(st.counters.evicted_objects > 0, "nothing was evicted");
        let a = audit(&st);
        assert!(a.table_bytes <= st.capacity());
        assert!(st.counters.pinned_bytes > 0 && st.counters.unsealed_bytes > 0);
        // c2 goes away holding references, c1 with unsealed objects of its own.
        st.disconnect(c2, &mut fx);
        assert_eq!(st.counters.pinned_bytes, 0);
        audit(&st);
        st.disconnect(c1, &mut fx);
        assert_eq!(st.counters.unsealed_bytes, 0);
        let a = audit(&st);
        assert_eq!(a.clients, 0);
        assert_eq!(
            a.evictable, a.objects,
            "all that is left is sealed and unused"
        );
        let left: Vec<ObjectId> = st.objects.keys().copied().collect();
        for id in &left {
            assert_eq!(st.delete(id, &mut fx), PlasmaError::Ok);
        }
        assert_empty(&st);
        // And the space is free again: a create of most of the capacity fits (emptied
        // small-object chunks may keep a few pages until the allocator retires them).
        st.add_client(3);
        let nearly_all = st.capacity() - (1 << 20);
        created(&mut st, 3, 1000, nearly_all);
        st.disconnect(3, &mut fx);
        assert_empty(&st);
    }

    /// Creates past the capacity evict unreferenced sealed objects, oldest first; once
    /// everything is referenced, a create fails with `OutOfMemory` and evicts nothing.
    #[test]
    fn creates_evict_the_unreferenced_and_fail_when_all_is_pinned() {
        let mut st = state(4 << 20);
        let (c1, c2) = (1, 2);
        st.add_client(c1);
        st.add_client(c2);
        let size = 256 << 10;
        let n = 3 * st.capacity() / size;
        let mut deleted = Vec::new();
        for i in 0..n {
            let id = ObjectId::from_u64(i);
            let mut fx = Effects::default();
            let spec = match st.create(c1, request(i, size), &no_fallback(), &mut fx) {
                CreateOutcome::Done(spec, _) => spec,
                _ => panic!("create {i} did not fit after evicting"),
            };
            assert!(!spec.fallback_allocated);
            deleted.append(&mut fx.deleted);
            assert_eq!(st.seal(&id, &mut fx), PlasmaError::Ok);
            assert_eq!(st.release(c1, &id, &mut fx), Some(false));
            audit(&st);
        }
        let evicted = st.counters.evicted_objects;
        assert!(evicted > 0);
        assert_eq!(deleted.len() as u64, evicted, "each eviction is reported");
        // Oldest first: the evicted ones are a prefix of the creates.
        let mut sorted = deleted.clone();
        sorted.sort_by_key(|id| (0..n).position(|i| ObjectId::from_u64(i) == *id));
        assert_eq!(sorted, deleted);
        assert_eq!(deleted[0], ObjectId::from_u64(0));
        // Pin everything that is left, then fill the rest with objects held by their creator.
        let present: Vec<ObjectId> = st.objects.keys().copied().collect();
        let mut fx = Effects::default();
        assert!(st.get(c2, &present, &mut fx).iter().all(Option::is_some));
        let mut next = n;
        let err = loop {
            match create(&mut st, c1, next, size, &no_fallback()) {
                CreateOutcome::Done(..) => {
                    assert_eq!(st.seal(&ObjectId::from_u64(next), &mut fx), PlasmaError::Ok);
                    next += 1;
                }
                CreateOutcome::Failed(e) => break e,
                CreateOutcome::Retry(_) => panic!("try_immediately queued"),
            }
        };
        assert_eq!(err, PlasmaError::OutOfMemory);
        assert_eq!(
            st.counters.evicted_objects, evicted,
            "nothing pinned was evicted"
        );
        let a = audit(&st);
        assert_eq!(a.evictable, 0);
        let block = gismo_core::store::allocator::capacity_for(size + 3);
        assert!(
            st.capacity() - a.allocator_bytes < 2 * block,
            "the heap was not full: {a:?}"
        );
        // A queued create (not try_immediately) waits instead, and asks for spilling.
        let mut fx = Effects::default();
        let mut queued = request(next + 1, size);
        queued.try_immediately = false;
        assert!(matches!(
            st.create(c1, queued, &no_fallback(), &mut fx),
            CreateOutcome::Retry(_)
        ));
        assert!(fx.full && fx.spill);
        audit(&st);
        // Everyone goes: every byte comes back.
        st.disconnect(c1, &mut fx);
        st.disconnect(c2, &mut fx);
        let left: Vec<ObjectId> = st.objects.keys().copied().collect();
        for id in &left {
            assert_eq!(st.delete(id, &mut fx), PlasmaError::Ok);
        }
        assert_empty(&st);
    }
}
