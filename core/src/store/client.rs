//! [`Client`]: a registered user of the store, with Plasma's object lifecycle.
//!
//! Every operation is a handful of atomics on the region: no server, no system call on the hot
//! path (a get that must wait for a seal sleeps on a futex on this host and polls across hosts).

use crate::sync::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::clock::{coarse_unix_ms, unix_ms};
use crate::store::allocator::capacity_for;
use crate::store::clients::{
    process_start_time, reap_flags, status, ClientEntry, EntryWord, HostIdentity,
};
use crate::store::directory::{
    after_release, flags, object_flags, seal_word, state, InsertError, SealRefused, Word, NO_OWNER,
};
use crate::store::error::{Result, StoreError};
use crate::store::events::EventKind;
use crate::store::fencing::{check_fenced, publish_allocation, OpGuard, Registered, Unpublished};
use crate::store::handle::Store;
use crate::store::nodes::OwnerNode;
use crate::store::object_id::ObjectId;
use crate::store::registration::{register, Identity, Prepared};
use crate::store::wait::{wait_word, wake_word, POLL_PERIOD};

/// Where an object came from (Plasma's `ObjectSource`; statistics only).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(u8)]
pub enum ObjectSource {
    #[default]
    CreatedByWorker = 0,
    RestoredFromStorage = 1,
    ReceivedFromRemoteRaylet = 2,
    ErrorStoredByRaylet = 3,
}

impl ObjectSource {
    pub fn from_u8(v: u8) -> ObjectSource {
        match v {
            1 => ObjectSource::RestoredFromStorage,
            2 => ObjectSource::ReceivedFromRemoteRaylet,
            3 => ObjectSource::ErrorStoredByRaylet,
            _ => ObjectSource::CreatedByWorker,
        }
    }
}

/// Ray's owner address of an object.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OwnerAddress {
    pub raylet_id: [u8; 28],
    pub ip: String,
    pub port: u16,
    pub worker_id: [u8; 28],
}

/// What a create records besides the sizes.
#[derive(Clone, Debug, Default)]
pub struct CreateInfo {
    pub owner: OwnerAddress,
    pub source: ObjectSource,
    pub is_mutable: bool,
    /// Delete the object when its creator dies (is reaped), as Ray does with an object whose
    /// owner died: for creators that own what they create (`gismo.ray.put` with Ray's lifetime),
    /// so that nothing is left in the region when a whole Ray cluster is killed. Not for the
    /// raylet's creates (Ray deletes those through the store).
    pub dies_with_creator: bool,
}

/// What `delete` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeleteOutcome {
    Deleted,
    /// In use or not yet sealed: deleted when the last reference goes.
    Deferred,
}

/// A raw view of an object: slot handle plus payload location in this process. What the
/// low-level [`Client::create_raw`] and [`Client::get_raw`] return.
#[derive(Clone, Copy, Debug)]
pub struct Located {
    pub index: usize,
    pub word: Word,
    pub ptr: *mut u8,
    pub data_size: u64,
    pub metadata_size: u64,
}

/// What a seal writes back in Flush mode.
#[derive(Clone, Copy)]
enum Writeback<'a> {
    /// The whole payload (it may have been written through plain stores).
    All,
    /// Nothing: every byte was written with `memory_copy`.
    None,
    /// These `(offset, len)` ranges of the payload; the rest was written with `memory_copy`.
    Ranges(&'a [(u64, u64)]),
}

/// Whether a client has been fenced, checkable from any thread (see [`Client::fence_token`]).
#[derive(Clone)]
pub struct FenceToken {
    store: Arc<Store>,
    index: usize,
    word: u64,
}

impl FenceToken {
    /// As [`Client::check_fenced`]: call it after copying bytes out of the client's objects.
    ///
    /// # Errors
    /// [`StoreError::Fenced`].
    pub fn check(&self) -> Result<()> {
        // As `Client::check_fenced`: the SeqCst fence and the reload of the word.
        check_fenced(self.store.client_entry(self.index), self.word)
    }
}

impl std::fmt::Debug for FenceToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FenceToken")
            .field("index", &self.index)
            .field("epoch", &EntryWord::unpack(self.word).epoch)
            .finish()
    }
}

/// A registered client of a store.
pub struct Client {
    store: Arc<Store>,
    index: usize,
    word: u64,
    host_index: u32,
    /// Whether an unsealed object of ours may have lost its last reference of ours (released
    /// before its seal): then only a directory scan finds it at disconnect. Otherwise every
    /// unsealed object of ours is in our reference table (a create takes its reference before
    /// it returns, or aborts), and disconnecting costs what we hold, not the directory's size
    /// (core review M11). Process-local: a reaper scans anyway.
    unreferenced_unsealed: std::cell::Cell<bool>,
    /// A client's reference table has a single writer: the client. `!Sync` makes the compiler
    /// enforce that (share a client between threads behind a mutex, or connect one per thread).
    _not_sync: std::marker::PhantomData<std::cell::Cell<()>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("index", &self.index)
            .field("epoch", &EntryWord::unpack(self.word).epoch)
            .finish()
    }
}

impl Store {
    /// Registers a client in the region's client table.
    ///
    /// # Errors
    /// [`StoreError::ClientTableFull`] when every entry is taken.
    pub fn connect(self: &Arc<Self>, name: &str) -> Result<Client> {
        let me = HostIdentity::current();
        let pid = std::process::id();
        let mut host_index = 0u32;
        // The claim, the checks before each group of writes and the publication are
        // `registration::register`'s (see there); what is ours is the set-up in between. Every
        // write below goes to an entry we hold only while it is still `CONNECTING` at our epoch:
        // a connector paused for longer than the stale-connect timeout (see
        // `reclaim_stale_connecting`) finds the entry reclaimed, maybe taken by the next client,
        // and must not touch it. So each group of writes follows a fresh check.
        let registered = register(
            self.max_clients(),
            |i| self.client_entry(i),
            |i, claim| {
                if !claim.still_ours() {
                    return Prepared::Lost;
                }
                // A previous occupant leaves its table clear (disconnect and the reaper clear it
                // before the entry goes FREE); a region written by an older build may not have.
                if !self.ref_table(i).is_clear() {
                    self.ref_table(i).clear();
                }
                crate::crash_point!("connect.table_cleared");
                // A previous occupant killed inside an operation may have left it odd.
                if !claim.own_op_seq() {
                    return Prepared::Lost;
                }
                // SeqCst: pairs with the SeqCst load in `refcount` (see there).
                self.control()
                    .clients_hwm
                    .fetch_max(i as u64 + 1, Ordering::SeqCst);
                // Never a silent fallback to another host's ring (core review M7). Chosen before
                // the identity is written, so that its writes follow one fresh check.
                let Some(host) = crate::store::events::host_index_reclaiming(
                    self.hosts(),
                    me.hash(),
                    &me.name,
                    |id| self.host_in_use(id),
                ) else {
                    return Prepared::Failed(StoreError::HostTableFull {
                        capacity: self.hosts().len(),
                    });
                };
                host_index = host as u32;
                Prepared::Ready(Identity {
                    pid: u64::from(pid),
                    start_time: process_start_time(pid).unwrap_or(0),
                    host_hash: me.liveness_hash(),
                    host_index: u64::from(host_index),
                    attached_ms: unix_ms(),
                    heartbeat_ms: unix_ms(),
                    name,
                })
            },
        )?;
        let Some((i, claimed)) = registered else {
            return Err(StoreError::ClientTableFull {
                capacity: self.max_clients(),
            });
        };
        crate::store::heartbeat::register(self, i, claimed.pack());
        Ok(Client {
            store: Arc::clone(self),
            index: i,
            word: claimed.pack(),
            host_index,
            unreferenced_unsealed: std::cell::Cell::new(false),
            _not_sync: std::marker::PhantomData,
        })
    }
}

impl Client {
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// This client's index in the client table.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Index of this client's host in the host table (its event ring).
    pub fn host_index(&self) -> u32 {
        self.host_index
    }

    pub fn epoch(&self) -> u32 {
        EntryWord::unpack(self.word).epoch
    }

    /// This client as a holder of the leader lease or the maintenance lock.
    pub fn maintainer_id(&self) -> crate::store::leader::LeaderId {
        crate::store::leader::LeaderId {
            client: self.index,
            epoch: self.epoch(),
        }
    }

    /// Reaps dead clients with this client as the maintainer (see [`Store::reap_dead`]).
    ///
    /// # Errors
    /// As [`Store::reap_dead`]; `Fenced`.
    pub fn reap_dead(&self, lease_ms: u64) -> Result<Vec<crate::store::ReapReport>> {
        self.check_alive()?;
        self.store.reap_dead(self.maintainer_id(), lease_ms)
    }

    fn entry(&self) -> &ClientEntry {
        self.store.client_entry(self.index)
    }

    /// This client's entry and reference table, written only while it is registered (see
    /// [`Registered`]).
    fn registered(&self) -> Registered<'_> {
        Registered::new(self.entry(), self.word, self.store.ref_table(self.index))
    }

    /// Whether the reaper declared this client dead (fenced it): its entry word is no longer the
    /// one it registered with. From then on nothing it holds is guaranteed: its references are
    /// (or will be) erased and the objects they pinned may be freed and reused.
    fn fenced(&self) -> bool {
        self.registered().fenced()
    }

    fn fenced_error(&self) -> StoreError {
        StoreError::Fenced {
            epoch: self.epoch(),
        }
    }

    /// Fails with `Fenced` if this client was declared dead. Call it **after** copying bytes out
    /// of an [`ObjectRef`] (see [`ObjectRef::still_valid`]): if it passes, every byte copied
    /// before it was the object's.
    ///
    /// # Errors
    /// [`StoreError::Fenced`].
    pub fn check_fenced(&self) -> Result<()> {
        // The SeqCst fence and the reload of our word (see `fencing::check_fenced`).
        check_fenced(self.entry(), self.word)
    }

    /// A handle that tells, from any thread and without this client's lock, whether this client
    /// has been fenced ([`FenceToken::check`]).
    pub fn fence_token(&self) -> FenceToken {
        FenceToken {
            store: Arc::clone(&self.store),
            index: self.index,
            word: self.word,
        }
    }

    /// Fails with `Fenced` if the reaper declared this client dead; refreshes the heartbeat.
    fn check_alive(&self) -> Result<()> {
        let e = self.entry();
        if e.word.load(Ordering::Relaxed) != self.word {
            return Err(self.fenced_error());
        }
        let now = coarse_unix_ms();
        if e.heartbeat_ms.load(Ordering::Relaxed) != now {
            e.heartbeat_ms.store(now, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Refreshes this client's heartbeat (for clients idle longer than the lease).
    ///
    /// # Errors
    /// [`StoreError::Fenced`] if the client was declared dead.
    pub fn heartbeat(&self) -> Result<()> {
        self.check_alive()
    }

    fn owner_tag(&self) -> u16 {
        self.index as u16
    }

    /// Creates an object of `data_size` bytes with `metadata` stored right after the data, and
    /// returns a writable buffer. The client holds one reference until [`CreateBuffer::seal`] (or
    /// [`Client::release`] after [`Client::seal`]).
    ///
    /// # Errors
    /// `ObjectExists`, `StoreFull` (nothing is evicted here), `DirectoryFull`, `Fenced`.
    pub fn create(
        &self,
        id: &ObjectId,
        data_size: u64,
        metadata: &[u8],
        info: &CreateInfo,
    ) -> Result<CreateBuffer<'_>> {
        let loc = self.create_raw(id, data_size, metadata, info)?;
        Ok(CreateBuffer {
            client: self,
            id: *id,
            loc,
            dirty: false,
            done: false,
        })
    }

    /// [`Client::create`] without the buffer guard, for plugins that hand the payload to C or
    /// keep it across calls: the object is created and this client holds its creation reference,
    /// but nothing seals or aborts it on drop — the caller must call [`Client::seal`] or
    /// [`Client::abort`] with `id`, and must not use `ptr` after that.
    ///
    /// # Errors
    /// As [`Client::create`].
    pub fn create_raw(
        &self,
        id: &ObjectId,
        data_size: u64,
        metadata: &[u8],
        info: &CreateInfo,
    ) -> Result<Located> {
        self.check_alive()?;
        let _op = OpGuard::begin(self.entry(), self.word);
        let metadata_size = metadata.len() as u64;
        if metadata_size > u64::from(u32::MAX) {
            return Err(StoreError::Invalid("metadata larger than 4 GiB".into()));
        }
        let total = data_size
            .checked_add(metadata_size)
            .filter(|t| {
                *t <= self
                    .store
                    .layout()
                    .section(crate::format::SectionKind::Heap)
                    .len
            })
            .ok_or_else(|| self.full(data_size.saturating_add(metadata_size)))?;
        let alloc = self
            .store
            .allocator()
            .alloc(total.max(1))
            .map_err(|_| self.full(total))?;
        crate::crash_point!("create.allocated");
        // Fenced while allocating (a pause past the lease): the entry's intent fields are not
        // ours to write, and the block is not ours to free either — once we were reaped, the
        // orphan collector may have freed it and someone else may hold it now. It is left to
        // the collector (review follow-up R2: a fenced party never frees); `record_intent`
        // checks.
        // Record the allocation as our intent before anything else can fail, so the reaper can
        // free it if we die before the directory slot names it; then the slot.
        let now = unix_ms();
        // Interned by `before_insert`, read by `init` (a cell: both closures borrow it).
        let owner_node = std::cell::Cell::new(None);
        let published = publish_allocation(
            &self.registered(),
            &self.store.directory(),
            id,
            self.owner_tag(),
            (alloc.offset, total.max(1)),
            || {
                owner_node.set(self.store.nodes().intern(&OwnerNode {
                    raylet_id: info.owner.raylet_id,
                    ip: info.owner.ip.clone(),
                }));
                if owner_node.get().is_none() {
                    // Not silent (core review L6): the object is created without an owner
                    // node, and the count says how often that happened.
                    self.store
                        .control()
                        .owner_nodes_dropped
                        .fetch_add(1, Ordering::Relaxed);
                }
            },
            |s| {
                s.data_offset.store(alloc.offset, Ordering::Relaxed);
                s.data_size.store(data_size, Ordering::Relaxed);
                s.metadata_size
                    .store(metadata_size as u32, Ordering::Relaxed);
                s.last_access_ms.store(now, Ordering::Relaxed);
                let obj_flags = if info.is_mutable {
                    object_flags::MUTABLE
                } else {
                    0
                } | if info.dies_with_creator {
                    object_flags::DIES_WITH_CREATOR
                } else {
                    0
                };
                s.created.store(
                    now << 16 | (info.source as u64) << 8 | obj_flags,
                    Ordering::Relaxed,
                );
                s.owner_node
                    .store(owner_node.get().unwrap_or(u32::MAX), Ordering::Relaxed);
                s.owner_port
                    .store(u32::from(info.owner.port), Ordering::Relaxed);
                let worker = crate::store::object_id::ObjectId(info.owner.worker_id).words();
                for (d, w) in s.owner_worker.iter().zip(worker) {
                    d.store(w, Ordering::Relaxed);
                }
                s.creator_host.store(self.host_index, Ordering::Relaxed);
            },
            |offset, size| {
                let _ = self.store.allocator().free(offset, size);
            },
            |slot| wake_word(&slot.word),
        );
        let inserted = match published {
            Ok(i) => i,
            Err(Unpublished::Fenced | Unpublished::Insert(InsertError::Lost)) => {
                return Err(self.fenced_error())
            }
            Err(Unpublished::Insert(InsertError::Exists { .. })) => {
                return Err(StoreError::ObjectExists(*id))
            }
            Err(Unpublished::Insert(InsertError::Full)) => {
                return Err(StoreError::DirectoryFull {
                    capacity: self.store.directory().capacity(),
                })
            }
        };
        if let Err(err) = self.add_ref(inserted.index, inserted.word.gen) {
            let _ = self.abort_slot(inserted.index, inserted.word);
            return Err(err);
        }
        crate::crash_point!("create.referenced");
        let ptr = self.store.payload_ptr(alloc.offset, total)?;
        if !metadata.is_empty() {
            // SAFETY: `ptr..ptr+total` is inside this process's payload view (checked by
            // payload_ptr) and exclusively ours while the object is CREATING; `metadata` is a
            // distinct, live slice.
            unsafe {
                self.store.coherence().memory_copy(
                    ptr.add(data_size as usize),
                    metadata.as_ptr(),
                    metadata.len(),
                );
            }
        }
        let c = self.store.control();
        c.objects_created.fetch_add(1, Ordering::Relaxed);
        c.bytes_created.fetch_add(total, Ordering::Relaxed);
        Ok(Located {
            index: inserted.index,
            word: inserted.word,
            ptr,
            data_size,
            metadata_size,
        })
    }

    fn full(&self, requested: u64) -> StoreError {
        let a = self.store.allocator();
        StoreError::StoreFull {
            requested,
            free: a.heap_bytes().saturating_sub(a.used_bytes()),
            capacity: a.heap_bytes(),
        }
    }

    /// Finds `id` as a committed entry.
    fn find(&self, id: &ObjectId) -> Result<(usize, Word)> {
        self.store
            .directory()
            .lookup(id)
            .ok_or(StoreError::ObjectNotFound(*id))
    }

    /// Seals `id`: from now on it is immutable and visible to every host. In Flush mode the whole
    /// payload is written back first. Only the creator may seal.
    ///
    /// # Errors
    /// `ObjectNotFound`, `ObjectAlreadySealed`, `NotCreator`, `Fenced`.
    pub fn seal(&self, id: &ObjectId) -> Result<()> {
        self.seal_inner(id, Writeback::All, None)
    }

    /// Seals `id`, writing back (Flush mode) only `ranges` of its payload (`(offset, len)` from
    /// the start of the data; metadata follows the data): for a caller that knows the rest was
    /// written coherently already (by [`Coherence::memory_copy`](crate::coherence::Coherence)).
    ///
    /// # Errors
    /// As [`Client::seal`]; `Invalid` for a range outside the payload.
    pub fn seal_writing_back(&self, id: &ObjectId, ranges: &[(u64, u64)]) -> Result<()> {
        self.seal_inner(id, Writeback::Ranges(ranges), None)
    }

    /// Seals `id`; `known` is the slot handle when the caller has it (a `CreateBuffer`), which
    /// saves the lookup.
    fn seal_inner(
        &self,
        id: &ObjectId,
        writeback: Writeback<'_>,
        known: Option<(usize, u32)>,
    ) -> Result<()> {
        self.check_alive()?;
        let (index, w) = match known {
            Some((index, gen)) => {
                let w = self.store.directory().slot(index).load_word();
                if w.gen != gen {
                    return Err(StoreError::ObjectNotFound(*id));
                }
                (index, w)
            }
            None => self.find(id)?,
        };
        let dir = self.store.directory();
        let slot = dir.slot(index);
        if self.store.coherence_mode() == crate::coherence::CoherenceMode::Flush {
            let len = slot.payload_len().ok_or_else(|| {
                StoreError::corrupt(
                    format_args!("slot {index}"),
                    "data_size + metadata_size overflows",
                )
            })?;
            let ptr = self
                .store
                .payload_ptr(slot.data_offset.load(Ordering::Relaxed), len)?;
            let whole = [(0, len)];
            let ranges: &[(u64, u64)] = match writeback {
                Writeback::All => &whole,
                Writeback::None => &[],
                Writeback::Ranges(r) => r,
            };
            for &(off, n) in ranges {
                if off.checked_add(n).is_none_or(|end| end > len) {
                    return Err(StoreError::Invalid(format!(
                        "write-back range {off}+{n} outside the {len}-byte payload"
                    )));
                }
            }
            for &(off, n) in ranges {
                // SAFETY: the range is inside this process's payload view (checked above).
                unsafe {
                    self.store
                        .coherence()
                        .flush(ptr.add(off as usize), n as usize)
                };
            }
        }
        crate::crash_point!("seal.written_back");
        // From the seal to its event: a client killed in between leaves a sealed object the
        // host's runner never hears of, and the odd `op_seq` makes its reaper mark the event
        // rings as having lost events (core review L4).
        let _op = OpGuard::begin(self.entry(), self.word);
        let w = match seal_word(slot, w, self.owner_tag()) {
            Ok(w) => w,
            Err(SealRefused::AlreadySealed) => return Err(StoreError::ObjectAlreadySealed(*id)),
            Err(SealRefused::NotFound) => return Err(StoreError::ObjectNotFound(*id)),
            Err(SealRefused::NotCreator) => return Err(StoreError::NotCreator(*id)),
        };
        let sealed_flags = w.flags & !flags::WAITERS;
        crate::crash_point!("seal.sealed");
        if w.flags & flags::WAITERS != 0 {
            wake_word(&slot.word);
        }
        self.store
            .control()
            .objects_sealed
            .fetch_add(1, Ordering::Relaxed);
        self.store
            .notify(self.host_index, EventKind::Sealed, index, w.gen, *id);
        // A delete asked for while it was unsealed waits for the last release; if we released
        // our creation reference before sealing, that release is past, so the delete is ours to
        // run now (it would otherwise wait for a sweep).
        if sealed_flags & flags::DELETE_PENDING != 0
            && self.store.ref_table(self.index).count(index as u32, w.gen) == 0
        {
            let _op = OpGuard::begin(self.entry(), self.word);
            if let Some(deleting) = after_release(
                self.store.coherence(),
                slot,
                w.gen,
                self.owner_tag(),
                || self.store.refcount(index, w.gen),
            ) {
                let _ = self.store.complete_delete(index, deleting);
            }
        }
        Ok(())
    }

    /// Aborts an unsealed object this client created: afterwards it is as if it never existed.
    ///
    /// # Errors
    /// `ObjectNotFound`, `ObjectAlreadySealed`, `NotCreator`, `Fenced`.
    pub fn abort(&self, id: &ObjectId) -> Result<()> {
        self.check_alive()?;
        let (index, w) = self.find(id)?;
        match w.state {
            state::SEALED | state::DELETING => return Err(StoreError::ObjectAlreadySealed(*id)),
            _ if w.owner != self.owner_tag() => return Err(StoreError::NotCreator(*id)),
            _ => {}
        }
        self.abort_slot(index, w)
    }

    fn abort_slot(&self, index: usize, mut w: Word) -> Result<()> {
        let _op = OpGuard::begin(self.entry(), self.word);
        let slot = self.store.directory().slot(index);
        loop {
            let deleting = Word {
                state: state::DELETING,
                flags: 0,
                ..w
            };
            match slot.cas_word(w, deleting) {
                Ok(()) => {
                    crate::crash_point!("abort.deleting");
                    if !self.fenced() {
                        self.store
                            .ref_table(self.index)
                            .remove_all(index as u32, w.gen);
                    }
                    self.store.write_back_and_drop(slot);
                    crate::crash_point!("abort.unreferenced");
                    self.store
                        .control()
                        .objects_aborted
                        .fetch_add(1, Ordering::Relaxed);
                    return self.store.finish_delete(
                        index,
                        deleting,
                        w.flags & flags::WAITERS != 0,
                    );
                }
                Err(actual) if actual.gen == w.gen && actual.state == state::CREATING => w = actual,
                Err(_) => {
                    return Err(StoreError::Corrupt(
                        "object changed while being aborted".into(),
                    ))
                }
            }
        }
    }

    /// Gets `id`, waiting up to `timeout` for it to be created and sealed (`None` waits forever,
    /// zero returns at once). `Ok(None)` means it is not there (yet): Plasma's empty entry.
    ///
    /// # Errors
    /// `Fenced`; `References` if this client holds too many objects.
    pub fn get(&self, id: &ObjectId, timeout: Option<Duration>) -> Result<Option<ObjectRef<'_>>> {
        Ok(self.get_raw(id, timeout)?.map(|loc| ObjectRef {
            client: self,
            id: *id,
            loc,
        }))
    }

    /// [`Client::get`] without the reference guard: on `Some`, this client holds one reference
    /// to the object, which the caller must give back with [`Client::release`]; `ptr` is valid
    /// until then.
    ///
    /// # Errors
    /// As [`Client::get`].
    pub fn get_raw(&self, id: &ObjectId, timeout: Option<Duration>) -> Result<Option<Located>> {
        self.check_alive()?;
        let dir = self.store.directory();
        // The hit path reads no clock: a sealed object is taken at once.
        if let Some((index, w)) = dir.lookup(id) {
            if w.state == state::SEALED {
                if let Some(loc) = self.try_acquire(index, w)? {
                    return Ok(Some(loc));
                }
            }
        }
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut backoff = 0u32;
        let mut probe_waits = 0u32;
        loop {
            let found = dir.lookup(id);
            if let Some((index, w)) = found {
                let slot = dir.slot(index);
                match w.state {
                    state::SEALED => {
                        if let Some(loc) = self.try_acquire(index, w)? {
                            return Ok(Some(loc));
                        }
                        if remaining(deadline).is_none() {
                            return Ok(None);
                        }
                        crate::sync::spin_hint();
                        continue;
                    }
                    state::DELETING => {
                        // An eviction probe (a reference count, microseconds): the object exists,
                        // so even a zero-timeout get waits for the verdict, a bounded number of
                        // times (the evicter may be dead until the reaper restores it).
                        if is_present(w) && probe_waits < MAX_PROBE_WAITS {
                            probe_waits += 1;
                            std::thread::yield_now();
                            continue;
                        }
                        // Someone is deleting it (normally for microseconds). Honour the
                        // deadline: the deleter may be stalled or dead until the reaper acts.
                        if remaining(deadline).is_none() {
                            return Ok(None);
                        }
                        std::thread::sleep(Duration::from_micros(50));
                        continue;
                    }
                    _ => {
                        // CREATING (or a PENDING winner): wait for the seal.
                        let Some(left) = remaining(deadline) else {
                            return Ok(None);
                        };
                        let cur = slot.load_word();
                        if cur.gen != w.gen || cur.state == state::SEALED {
                            continue;
                        }
                        let waiting = Word {
                            flags: cur.flags | flags::WAITERS,
                            ..cur
                        };
                        if cur.flags & flags::WAITERS == 0 && slot.cas_word(cur, waiting).is_err() {
                            continue;
                        }
                        wait_word(
                            &slot.word,
                            waiting.pack() as u32,
                            left.min(POLL_PERIOD * 10),
                        );
                        self.check_alive()?;
                        continue;
                    }
                }
            }
            // Not created yet: poll with a growing pause (a futex needs a word to sleep on).
            let Some(left) = remaining(deadline) else {
                return Ok(None);
            };
            backoff = (backoff + 1).min(20);
            if backoff < 8 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(left.min(Duration::from_micros(50 << (backoff - 8).min(5))));
            }
            self.check_alive()?;
        }
    }

    /// Takes a reference on a sealed slot: the getter half of the Dekker pair with deletion
    /// ([`acquire_sealed`]), then the payload checks.
    fn try_acquire(&self, index: usize, w: Word) -> Result<Option<Located>> {
        let slot = self.store.directory().slot(index);
        // One fence for both Dekker pairs (`Registered::acquire`): `acquire_sealed`'s, between
        // our table store and its reload of the slot word (the deleter's pair), also orders the
        // store before the reload of our entry word (the reaper's pair, as in `add_ref`), so the
        // get path pays one full barrier (core review L12).
        let acquired = self.registered().acquire(slot, index as u32, w, || {
            self.drop_ref(index, w.gen);
        })?;
        let Some(now) = acquired else {
            return Ok(None);
        };
        let data_size = slot.data_size.load(Ordering::Relaxed);
        let metadata_size = u64::from(slot.metadata_size.load(Ordering::Relaxed));
        let offset = slot.data_offset.load(Ordering::Relaxed);
        // Checked: the sizes come from the region; a wrapped sum would pass the range check.
        let len = data_size.checked_add(metadata_size).ok_or_else(|| {
            StoreError::corrupt(
                format_args!("slot {index}"),
                format_args!("data_size {data_size} + metadata_size {metadata_size} overflows"),
            )
        });
        let ptr = match len.and_then(|len| self.store.payload_ptr(offset, len)) {
            Ok(p) => p,
            Err(e) => {
                self.drop_ref(index, w.gen);
                return Err(e);
            }
        };
        crate::crash_point!("get.checked");
        let stamp = coarse_unix_ms();
        if slot.last_access_ms.load(Ordering::Relaxed) != stamp {
            slot.last_access_ms.store(stamp, Ordering::Relaxed);
        }
        if self.store.coherence_mode() == crate::coherence::CoherenceMode::Flush {
            // SAFETY: the range is inside this process's payload view (checked); sealed objects
            // are immutable, so discarding cached lines loses nothing.
            unsafe {
                self.store
                    .coherence()
                    .invalidate(ptr, (data_size + metadata_size) as usize) // checked above
            };
        }
        Ok(Some(Located {
            index,
            word: now,
            ptr,
            data_size,
            metadata_size,
        }))
    }

    /// Records one reference in our table, checking the fence right before and right after
    /// ([`Registered::add_ref`]): the table is ours only while our entry word is.
    ///
    /// # Errors
    /// `Fenced`; `References`.
    fn add_ref(&self, index: usize, gen: u32) -> Result<u16> {
        self.registered().add_ref(index as u32, gen)
    }

    /// Drops one reference of ours; the last one completes a pending delete. A fenced client
    /// writes nothing (its table is the reaper's, or another client's, now).
    fn drop_ref(&self, index: usize, gen: u32) -> Option<u16> {
        self.registered()
            .drop_ref(index as u32, gen, || self.run_pending_delete(index, gen))
    }

    /// Drops every reference of ours on a slot at once (as `count` calls of `drop_ref` would, in
    /// one step: the count is read from the region and may be corrupt). A fenced client writes
    /// nothing.
    fn drop_all_refs(&self, index: usize, gen: u32) {
        self.registered()
            .drop_all_refs(index as u32, gen, || self.run_pending_delete(index, gen));
    }

    /// After our last reference to `(index, gen)` went (inside an operation guard, not fenced):
    /// runs the delete that was pending on it, if any.
    fn run_pending_delete(&self, index: usize, gen: u32) {
        let slot = self.store.directory().slot(index);
        if let Some(deleting) =
            after_release(self.store.coherence(), slot, gen, self.owner_tag(), || {
                self.store.refcount(index, gen)
            })
        {
            crate::crash_point!("release.deferred_delete");
            let _ = self.store.complete_delete(index, deleting);
        }
    }

    /// Evicts unreferenced sealed objects until `bytes` are freed, as
    /// [`EvictionPolicy`](crate::store::eviction::EvictionPolicy) chooses them, as this client's
    /// operation. Returns the bytes freed.
    ///
    /// # Errors
    /// `Fenced` if this client was declared dead; an error finishing a delete.
    pub fn evict(&self, bytes: u64) -> Result<u64> {
        self.check_alive()?;
        let _op = OpGuard::begin(self.entry(), self.word);
        self.store.evict(bytes, self.owner_tag())
    }

    /// Releases one reference to `id` taken by `get` or `create`.
    ///
    /// # Errors
    /// `ObjectNotFound` if this client holds no reference to it.
    pub fn release(&self, id: &ObjectId) -> Result<()> {
        self.check_alive()?;
        let held = self
            .store
            .directory()
            .lookup(id)
            .filter(|&(i, w)| self.store.ref_table(self.index).count(i as u32, w.gen) > 0);
        // The lookup gives up on a slot whose word keeps changing (deletes marking it, eviction
        // probes) and would leak our reference (core review L8): what we hold is in our own
        // table, and a referenced object keeps its slot and key.
        let (index, gen, word) = match held {
            Some((i, w)) => (i, w.gen, w),
            None => {
                let (i, gen) = self.held_slot(id).ok_or(StoreError::ObjectNotFound(*id))?;
                (i, gen, self.store.directory().slot(i).load_word())
            }
        };
        // Our own unsealed object may lose its last reference of ours here (only this path can
        // drop one: seals and `ObjectRef`s release sealed objects), and would then be in no table
        // of ours. Only we seal it, so the word read above still says whether it is unsealed.
        // Marked before the reference goes, so that no instant exists where it is in no table and
        // unmarked (a kill right after the drop; review of the targeted reap, F1); the creation
        // reference is the only one an unsealed object has, so marking early costs nothing.
        if word.gen == gen && word.owner == self.owner_tag() && is_unsealed(word) {
            self.unreferenced_unsealed.set(true);
            // And for a reaper, which cannot see our memory: reaping us needs a directory scan
            // now. Relaxed: a reaper reads it after our death, with the rest of our entry and
            // table (for a client judged dead by lease: a lease and the grace period later).
            if !self.fenced() {
                self.entry()
                    .reap_flags
                    .fetch_or(reap_flags::UNREFERENCED_UNSEALED, Ordering::Relaxed);
            }
        }
        self.drop_ref(index, gen)
            .ok_or(StoreError::ObjectNotFound(*id))?;
        crate::crash_point!("release.dropped");
        Ok(())
    }

    /// The slot and generation of `id` if this client holds a reference to it, from its own
    /// reference table (bounded by the table's size, whatever the directory does meanwhile).
    fn held_slot(&self, id: &ObjectId) -> Option<(usize, u32)> {
        let dir = self.store.directory();
        self.store
            .ref_table(self.index)
            .held()
            .into_iter()
            .filter(|&(slot, _, _)| (slot as usize) < dir.capacity())
            .find_map(|(slot, g16, _)| {
                let w = self.store.entry_names_slot(slot as usize, g16)?;
                (dir.slot(slot as usize).read_id_raw() == *id).then_some((slot as usize, w.gen))
            })
    }

    /// Whether `id` exists and is sealed.
    pub fn contains(&self, id: &ObjectId) -> Result<bool> {
        self.check_alive()?;
        Ok(self
            .store
            .directory()
            .lookup(id)
            .is_some_and(|(_, w)| is_present(w)))
    }

    /// Deletes `id` now if it is sealed and unused, else marks it to be deleted when the last
    /// reference goes (Plasma's deferred deletion).
    ///
    /// # Errors
    /// `ObjectNotFound`.
    pub fn delete(&self, id: &ObjectId) -> Result<DeleteOutcome> {
        self.check_alive()?;
        let _op = OpGuard::begin(self.entry(), self.word);
        let dir = self.store.directory();
        loop {
            let (index, w) = self.find(id)?;
            match w.state {
                // A sealed object, or one in an eviction probe (`begin_delete` marks it, and the
                // evicter honours the mark when it restores the object).
                state::SEALED | state::DELETING if is_present(w) => {
                    return Ok(if self.store.try_delete(index, w, self.owner_tag())? {
                        DeleteOutcome::Deleted
                    } else {
                        DeleteOutcome::Deferred
                    })
                }
                state::DELETING => return Ok(DeleteOutcome::Deleted),
                _ => {
                    let marked = Word {
                        flags: w.flags | flags::DELETE_PENDING,
                        ..w
                    };
                    if dir.slot(index).cas_word(w, marked).is_ok() {
                        return Ok(DeleteOutcome::Deferred);
                    }
                }
            }
        }
    }

    /// References this client holds on `id`.
    pub fn held(&self, id: &ObjectId) -> u32 {
        match self.store.directory().lookup(id) {
            Some((i, w)) => u32::from(self.store.ref_table(self.index).count(i as u32, w.gen)),
            None => 0,
        }
    }

    /// Releases everything this client holds, aborts its unsealed objects, and frees its entry.
    pub fn disconnect(self) {
        drop(self)
    }

    /// Aborts this client's unsealed objects and releases every reference it holds, keeping the
    /// registration (Plasma's `Disconnect` for a client object that outlives it).
    pub fn release_all(&self) {
        if self.entry().word.load(Ordering::Relaxed) != self.word {
            return; // fenced: the reaper owns our state now
        }
        let ours = |w: Word| w.owner == self.owner_tag() && is_unsealed(w);
        let dir = self.store.directory();
        if self.unreferenced_unsealed.replace(false) {
            for (index, s) in dir.slots().iter().enumerate() {
                let w = s.load_word();
                if ours(w) {
                    let _ = self.abort_slot(index, w);
                }
            }
        }
        // Every other unsealed object of ours holds a reference of ours (see the field's docs):
        // aborting it gives that reference back; the rest are released.
        for (slot, g16, _count) in self.store.ref_table(self.index).held() {
            let Some(w) = self.store.entry_names_slot(slot as usize, g16) else {
                continue;
            };
            // A corrupt entry past the directory names no slot of ours to abort.
            let aborted = (slot as usize) < dir.capacity()
                && ours(w)
                && self.abort_slot(slot as usize, w).is_ok();
            if !aborted {
                self.drop_all_refs(slot as usize, w.gen);
            }
        }
    }

    fn disconnect_inner(&mut self) {
        if self.entry().word.load(Ordering::Relaxed) != self.word {
            return; // fenced: the reaper owns our state now
        }
        self.release_all();
        // Checked again: `release_all` may scan the whole directory, and a pause in it long
        // enough to be reaped means the table may be the next occupant's now (review
        // follow-up R4). The intent needs no store: no create of ours is in flight, and the
        // next occupant resets it in `connect`.
        if self.fenced() {
            return;
        }
        self.store.ref_table(self.index).clear();
        let e = self.entry();
        let free = EntryWord {
            epoch: EntryWord::unpack(self.word).epoch,
            status: status::FREE,
        };
        // Release: pairs with the AcqRel CAS of the entry's next claimer in `Claim::take`: our
        // table clearing happens before the entry can be claimed again.
        let _ =
            e.word
                .compare_exchange(self.word, free.pack(), Ordering::Release, Ordering::Relaxed);
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        crate::store::heartbeat::unregister(&self.store, self.index, self.word);
        self.disconnect_inner();
    }
}

/// How many times a get waits for an eviction probe's verdict before treating the object as being
/// deleted.
const MAX_PROBE_WAITS: u32 = 10_000;

/// Whether a word shows an object still being created (claimed and committed, not yet sealed).
fn is_unsealed(w: Word) -> bool {
    matches!(w.state, state::CREATING | state::PENDING)
}

/// Whether a committed entry's word shows an existing sealed object: `SEALED`, or in an eviction
/// probe (`DELETING | EVICTING`, not yet past its reference check): the object exists until the
/// evicter frees it.
pub(crate) fn is_present(w: Word) -> bool {
    w.state == state::SEALED
        || (w.state == state::DELETING
            && w.flags & flags::EVICTING != 0
            && w.flags & flags::FINISHING == 0)
}

fn remaining(deadline: Option<Instant>) -> Option<Duration> {
    match deadline {
        None => Some(Duration::from_secs(3600)),
        Some(d) => d
            .checked_duration_since(Instant::now())
            .filter(|r| !r.is_zero()),
    }
}

/// A writable, unsealed object. Dropping it unsealed aborts the object.
pub struct CreateBuffer<'c> {
    client: &'c Client,
    id: ObjectId,
    loc: Located,
    /// Written through `data_mut` (needs a flush at seal in Flush mode).
    dirty: bool,
    done: bool,
}

impl<'c> CreateBuffer<'c> {
    pub fn id(&self) -> &ObjectId {
        &self.id
    }

    pub fn len(&self) -> usize {
        self.loc.data_size as usize
    }

    pub fn is_empty(&self) -> bool {
        self.loc.data_size == 0
    }

    /// The payload, writable in place. In Flush mode the whole object is flushed at seal.
    pub fn data_mut(&mut self) -> &mut [u8] {
        self.dirty = true;
        // SAFETY: the payload range was bounds-checked at create and is exclusively ours while the
        // object is CREATING (nobody else reads it before the seal); `&mut self` prevents aliasing.
        unsafe { std::slice::from_raw_parts_mut(self.loc.ptr, self.loc.data_size as usize) }
    }

    /// Copies `src` into the payload at `offset` with `memory_copy` (already visible to other
    /// hosts in Flush mode: no flush needed at seal for these bytes).
    ///
    /// # Errors
    /// `Invalid` if the range is outside the object's data.
    pub fn write_at(&mut self, offset: usize, src: &[u8]) -> Result<()> {
        let end = offset
            .checked_add(src.len())
            .filter(|e| *e as u64 <= self.loc.data_size);
        if end.is_none() {
            return Err(StoreError::Invalid(format!(
                "write of {} bytes at {offset} exceeds object size {}",
                src.len(),
                self.loc.data_size
            )));
        }
        // SAFETY: bounds checked above; exclusively ours while CREATING; `src` is a distinct slice.
        unsafe {
            self.client.store.coherence().memory_copy(
                self.loc.ptr.add(offset),
                src.as_ptr(),
                src.len(),
            )
        };
        Ok(())
    }

    /// Seals the object and drops the creator's reference.
    ///
    /// # Errors
    /// As [`Client::seal`].
    pub fn seal(mut self) -> Result<()> {
        self.done = true;
        self.client.seal_inner(
            &self.id,
            if self.dirty {
                Writeback::All
            } else {
                Writeback::None
            },
            Some((self.loc.index, self.loc.word.gen)),
        )?;
        self.client.drop_ref(self.loc.index, self.loc.word.gen);
        Ok(())
    }

    /// Aborts the object.
    ///
    /// # Errors
    /// As [`Client::abort`].
    pub fn abort(mut self) -> Result<()> {
        self.done = true;
        self.client.abort(&self.id)
    }

    /// Region offset of the payload.
    pub fn offset(&self) -> u64 {
        self.client
            .store
            .directory()
            .slot(self.loc.index)
            .data_offset
            .load(Ordering::Relaxed)
    }
}

impl Drop for CreateBuffer<'_> {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.client.abort(&self.id);
        }
    }
}

/// A sealed object held by this client: its bytes in this process's mapping, zero copy.
/// Dropping it releases the reference.
pub struct ObjectRef<'c> {
    client: &'c Client,
    id: ObjectId,
    loc: Located,
}

impl ObjectRef<'_> {
    pub fn id(&self) -> &ObjectId {
        &self.id
    }

    pub fn data(&self) -> &[u8] {
        // SAFETY: bounds-checked at get; the object is sealed (immutable) and cannot be freed
        // while our reference (dropped only in `Drop`) is recorded.
        unsafe { std::slice::from_raw_parts(self.loc.ptr, self.loc.data_size as usize) }
    }

    pub fn metadata(&self) -> &[u8] {
        // SAFETY: as in `data`; metadata follows the data in the same allocation.
        unsafe {
            std::slice::from_raw_parts(
                self.loc.ptr.add(self.loc.data_size as usize),
                self.loc.metadata_size as usize,
            )
        }
    }

    /// Address of the data in this process (what `is_global()` promises: the caller's own
    /// mapping of the shared region).
    pub fn as_ptr(&self) -> *const u8 {
        self.loc.ptr
    }

    /// Bytes the allocation reserves.
    pub fn capacity(&self) -> u64 {
        capacity_for(self.loc.data_size.saturating_add(self.loc.metadata_size))
    }

    /// Whether this reference is still guaranteed: false once the client was declared dead
    /// (fenced), after which the object may have been freed and its bytes reused. A copying
    /// reader calls it **after** the copy (it fences first, see [`Client::check_fenced`]) and
    /// discards the copy if it fails.
    pub fn still_valid(&self) -> bool {
        self.client.check_fenced().is_ok()
    }

    /// [`ObjectRef::still_valid`] as a `Result`.
    ///
    /// # Errors
    /// [`StoreError::Fenced`].
    pub fn check(&self) -> Result<()> {
        self.client.check_fenced()
    }

    /// Copies the data out, failing with `Fenced` rather than returning bytes that may no longer
    /// be this object's.
    ///
    /// # Errors
    /// [`StoreError::Fenced`].
    pub fn to_vec(&self) -> Result<Vec<u8>> {
        let v = self.data().to_vec();
        self.check()?;
        Ok(v)
    }
}

impl Drop for ObjectRef<'_> {
    fn drop(&mut self) {
        self.client.drop_ref(self.loc.index, self.loc.word.gen);
    }
}

#[allow(dead_code)]
const _: u16 = NO_OWNER;
