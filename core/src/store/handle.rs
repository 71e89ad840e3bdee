//! [`Store`]: one process's validated attachment to a formatted region.

use crate::sync::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::coherence::{Coherence, CoherenceMode};
use crate::format::{self, FormatOptions, Layout, SectionKind, Superblock};
use crate::region::Region;
use crate::shm::view_slice;
use crate::store::allocator::{AllocHeads, Allocator, ChunkDesc};
use crate::store::clients::{count_references, status, ClientEntry, EntryWord};
use crate::store::control::ControlBlock;
use crate::store::directory::{
    begin_delete, finish_slot, flags, state, Directory, Finished, Slot, Word,
};
use crate::store::error::{Result, StoreError};
use crate::store::events::{Event, EventCell, EventKind, EventRing, HostEntry};
use crate::store::nodes::{NodeEntry, NodeTable};
use crate::store::object_id::ObjectId;
use crate::store::refs::{gen_matches, RefTable};

/// One process's attachment to a region: validated views of every section.
pub struct Store {
    region: Region,
    superblock: Superblock,
    layout: Layout,
    coherence: Coherence,
    /// Where this process reads and writes payloads (the region, or a private emulated view).
    payload_base: *mut u8,
    slots: *const Slot,
    clients: *const ClientEntry,
    refs: *const AtomicU64,
    nodes: *const NodeEntry,
    hosts: *const HostEntry,
    events: *const EventCell,
    pages: *const AtomicU64,
    chunks: *const ChunkDesc,
    control: *const ControlBlock,
    /// Entries this process saw `CONNECTING`, for the reaper.
    connecting_seen: crate::store::reaper::ConnectingSeen,
    lease_watch: crate::store::reaper::LeaseWatch,
    /// The maintenance lock as this process last saw it held, for takers.
    lock_seen: crate::store::reaper::LockSeen,
}

// SAFETY: the raw pointers point into `region`'s shared mapping, which `Store` owns and which lives
// as long as the `Store`; everything they point to is `RegionSafe` (atomics only), so sharing
// across threads is as safe as sharing `&[AtomicU64]`.
unsafe impl Send for Store {}
// SAFETY: as above.
unsafe impl Sync for Store {}

/// What `stat` reports.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub uuid: String,
    pub coherence: String,
    pub region_bytes: u64,
    pub heap_bytes: u64,
    pub used_bytes: u64,
    pub allocations: u64,
    pub dir_capacity: u64,
    pub objects_by_state: [u64; 6],
    pub clients_active: u64,
    pub max_clients: u64,
    /// References one client can hold at once.
    pub refs_per_client: u64,
    pub objects_created: u64,
    pub objects_sealed: u64,
    pub objects_deleted: u64,
    pub objects_evicted: u64,
    pub objects_aborted: u64,
    pub clients_reaped: u64,
    /// Creates whose owner node could not be recorded because the owner-node table was full.
    pub owner_nodes_dropped: u64,
    pub metadata_ratio: f64,
    /// Per size class: (block size, chunks, blocks used).
    pub classes: Vec<(u32, u64, u64)>,
}

/// One object, as `ls` shows it.
#[derive(Clone, Debug)]
pub struct ObjectSummary {
    pub id: ObjectId,
    pub index: usize,
    pub gen: u32,
    pub state: u8,
    pub data_size: u64,
    pub metadata_size: u64,
    pub offset: u64,
    pub refcount: u32,
    pub creator: u16,
    pub creator_host: u32,
    pub delete_pending: bool,
    /// Whether the object exists for readers: sealed, or sealed and in an eviction probe
    /// (`DELETING | EVICTING` before its reference check: the probe may still restore it). A
    /// `get` finds it; a listing that reports objects to a raylet must not report it gone.
    pub present: bool,
    pub last_access_ms: u64,
    pub created_ms: u64,
    pub source: u8,
    pub is_mutable: bool,
    pub owner_node: Option<crate::store::nodes::OwnerNode>,
    pub owner_port: u16,
    pub owner_worker: [u8; 28],
}

/// One client, as `clients` shows it.
#[derive(Clone, Debug)]
pub struct ClientSummary {
    pub index: usize,
    pub epoch: u32,
    pub status: u8,
    pub pid: u32,
    pub name: String,
    pub host_hash: u64,
    pub heartbeat_ms: u64,
    pub references: usize,
}

/// `u64` words of the page-bitmap section in use: the bitmap, then its summary.
fn page_bitmap_len(heap_pages: u64) -> usize {
    (format::layout::page_bitmap_words(heap_pages) + format::layout::page_summary_words(heap_pages))
        as usize
}

impl Store {
    /// Formats `region` and attaches to it.
    ///
    /// # Errors
    /// As [`format::format`], then [`Store::attach`].
    pub fn format(region: Region, opts: &FormatOptions) -> Result<Arc<Store>> {
        format::format(&region, opts)?;
        Store::attach(region)
    }

    /// Attaches to a formatted region, using the coherence mode it was formatted with.
    ///
    /// # Errors
    /// Any [`format::FormatError`] from validation.
    pub fn attach(region: Region) -> Result<Arc<Store>> {
        let (sb, _) = format::attach(&region)?;
        let coherence = Coherence::for_region(sb.coherence_mode()?, &region);
        Store::attach_with(region, coherence)
    }

    /// Attaches with an explicit coherence implementation (e.g. an emulated host).
    ///
    /// # Errors
    /// Any [`format::FormatError`] from validation; a coherence mode other than the region's.
    pub fn attach_with(region: Region, coherence: Coherence) -> Result<Arc<Store>> {
        let (superblock, layout) = format::attach(&region)?;
        if let Some(host) = region.emulated_host() {
            // An emulated host is memory without cross-host coherence: only a Flush region
            // writes its payloads back, and the coherence must act on this host's view.
            if superblock.coherence_mode()? != CoherenceMode::Flush {
                return Err(StoreError::Invalid(format!(
                    "this process is emulated non-coherent host {:?} (GISMO_EMULATED_HOST), but \
                     the region was formatted for {} coherence: format it with coherence flush",
                    host.host(),
                    superblock.coherence_mode()?
                )));
            }
            if !coherence.host_view().is_some_and(|h| Arc::ptr_eq(h, host)) {
                return Err(StoreError::Invalid(format!(
                    "the region is mapped as emulated host {:?}, but the coherence given does \
                     not act on that host's view (use Coherence::for_region)",
                    host.host()
                )));
            }
        }
        if coherence.mode() != superblock.coherence_mode()? {
            return Err(StoreError::Invalid(format!(
                "region was formatted for {} coherence, not {}",
                superblock.coherence_mode()?,
                coherence.mode()
            )));
        }
        let g = layout.geometry;
        let sec = |k: SectionKind| layout.section(k).offset as usize;
        // Validate every view once, here; accessors rely on it.
        let slots = view_slice::<Slot>(
            &region,
            sec(SectionKind::Directory),
            g.dir_capacity as usize,
        )?
        .as_ptr();
        let clients =
            view_slice::<ClientEntry>(&region, sec(SectionKind::Clients), g.max_clients as usize)?
                .as_ptr();
        let nrefs = g.max_clients as usize * g.refs_per_client as usize;
        let refs = view_slice::<AtomicU64>(&region, sec(SectionKind::ClientRefs), nrefs)?.as_ptr();
        let nodes =
            view_slice::<NodeEntry>(&region, sec(SectionKind::Nodes), g.node_capacity as usize)?
                .as_ptr();
        let hosts =
            view_slice::<HostEntry>(&region, sec(SectionKind::Hosts), g.max_hosts as usize)?
                .as_ptr();
        let nevents = g.max_hosts as usize * g.ring_capacity as usize;
        let events = view_slice::<EventCell>(&region, sec(SectionKind::Events), nevents)?.as_ptr();
        // The page bitmap and, after it in the same section, its summary.
        let pages = view_slice::<AtomicU64>(
            &region,
            sec(SectionKind::PageBitmap),
            page_bitmap_len(g.heap_pages),
        )?
        .as_ptr();
        let nchunks =
            (g.heap_pages * format::layout::PAGE_SIZE / format::layout::CHUNK_SIZE) as usize;
        let chunks = view_slice::<ChunkDesc>(&region, sec(SectionKind::Chunks), nchunks)?.as_ptr();
        let control = crate::shm::view::<ControlBlock>(&region, sec(SectionKind::Control))?
            as *const ControlBlock;
        let payload_base = coherence.payload_base(region.as_ptr());
        Ok(Arc::new(Store {
            region,
            superblock,
            layout,
            coherence,
            payload_base,
            slots,
            clients,
            refs,
            nodes,
            hosts,
            events,
            pages,
            chunks,
            control,
            connecting_seen: Default::default(),
            lease_watch: Default::default(),
            lock_seen: Default::default(),
        }))
    }

    pub fn region(&self) -> &Region {
        &self.region
    }

    pub fn superblock(&self) -> &Superblock {
        &self.superblock
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn coherence(&self) -> &Coherence {
        &self.coherence
    }

    /// Where this process reads and writes payloads: the region's base, or the private view of
    /// an emulated non-coherent host. A payload at region offset `o` is at `payload_base() + o`.
    pub fn payload_base(&self) -> *const u8 {
        self.payload_base
    }

    pub fn coherence_mode(&self) -> CoherenceMode {
        self.coherence.mode()
    }

    pub(crate) fn directory(&self) -> Directory<'_> {
        // SAFETY: validated in `attach_with` (in bounds, aligned, `RegionSafe`); the mapping lives
        // as long as `self`.
        Directory::new(unsafe {
            std::slice::from_raw_parts(self.slots, self.layout.geometry.dir_capacity as usize)
        })
    }

    pub(crate) fn allocator(&self) -> Allocator<'_> {
        let g = &self.layout.geometry;
        let nchunks =
            (g.heap_pages * format::layout::PAGE_SIZE / format::layout::CHUNK_SIZE) as usize;
        // SAFETY: validated in `attach_with`; the mapping lives as long as `self`.
        let (bitmap, chunks) = unsafe {
            (
                std::slice::from_raw_parts(self.pages, page_bitmap_len(g.heap_pages)),
                std::slice::from_raw_parts(self.chunks, nchunks),
            )
        };
        let (pages, summary) =
            bitmap.split_at(format::layout::page_bitmap_words(g.heap_pages) as usize);
        Allocator::new(
            pages,
            summary,
            chunks,
            self.alloc_heads(),
            self.layout.section(SectionKind::Heap).offset,
            g.heap_pages,
        )
    }

    fn alloc_heads(&self) -> &AllocHeads {
        &self.control().alloc
    }

    pub(crate) fn lease_watch(&self) -> &crate::store::reaper::LeaseWatch {
        &self.lease_watch
    }

    pub(crate) fn connecting_seen(&self) -> &crate::store::reaper::ConnectingSeen {
        &self.connecting_seen
    }

    pub(crate) fn lock_seen(&self) -> &crate::store::reaper::LockSeen {
        &self.lock_seen
    }

    pub(crate) fn control(&self) -> &ControlBlock {
        // SAFETY: validated in `attach_with`; the mapping lives as long as `self`.
        unsafe { &*self.control }
    }

    pub fn max_clients(&self) -> usize {
        self.layout.geometry.max_clients as usize
    }

    pub(crate) fn client_entry(&self, index: usize) -> &ClientEntry {
        assert!(index < self.max_clients());
        // SAFETY: index checked above; table validated in `attach_with`.
        unsafe { &*self.clients.add(index) }
    }

    pub(crate) fn ref_table(&self, index: usize) -> RefTable<'_> {
        assert!(index < self.max_clients());
        let per = self.layout.geometry.refs_per_client as usize;
        // SAFETY: index checked above; the table of `max_clients * per` words was validated.
        RefTable::new(unsafe { std::slice::from_raw_parts(self.refs.add(index * per), per) })
    }

    pub fn nodes(&self) -> NodeTable<'_> {
        // SAFETY: validated in `attach_with`; the mapping lives as long as `self`.
        NodeTable::new(unsafe {
            std::slice::from_raw_parts(self.nodes, self.layout.geometry.node_capacity as usize)
        })
    }

    /// The host table (one entry per host that ever attached; see
    /// [`host_index`](crate::store::events::host_index)).
    pub fn hosts(&self) -> &[HostEntry] {
        // SAFETY: validated in `attach_with`; the mapping lives as long as `self`.
        unsafe { std::slice::from_raw_parts(self.hosts, self.layout.geometry.max_hosts as usize) }
    }

    /// The event ring of host `index`, if it exists.
    pub fn event_ring(&self, index: usize) -> Option<EventRing<'_>> {
        let g = &self.layout.geometry;
        let host = self.hosts().get(index)?;
        let cap = g.ring_capacity as usize;
        // SAFETY: index < max_hosts (checked by `get`), so the ring lies in the validated events
        // section of `max_hosts * ring_capacity` cells.
        let cells = unsafe { std::slice::from_raw_parts(self.events.add(index * cap), cap) };
        Some(EventRing::new(host, cells))
    }

    /// Publishes an event to host `host`'s runner (dropped and counted if its ring is full).
    pub(crate) fn notify(&self, host: u32, kind: EventKind, slot: usize, gen: u32, id: ObjectId) {
        if let Some(ring) = self.event_ring(host as usize) {
            ring.push(&Event {
                kind,
                slot: slot as u32,
                gen,
                id,
            });
        }
    }

    /// Pointer to `len` payload bytes at region offset `offset`, in this process's payload view.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] if the range is not inside the heap (a bad offset read from the
    /// region never becomes an address outside it).
    pub(crate) fn payload_ptr(&self, offset: u64, len: u64) -> Result<*mut u8> {
        let heap = self.layout.section(SectionKind::Heap);
        let end = offset
            .checked_add(len)
            .ok_or_else(|| StoreError::Corrupt("payload range overflows".into()))?;
        if offset < heap.offset || end > heap.end() {
            return Err(StoreError::Corrupt(format!(
                "payload {offset:#x}+{len:#x} is outside the heap"
            )));
        }
        // SAFETY: offset..end lies inside the heap section, which lies inside the mapping (or the
        // emulated view of the same length).
        Ok(unsafe { self.payload_base.add(offset as usize) })
    }

    /// Flush mode: writes back and drops this host's cached lines of an aborted object's payload
    /// before the block is freed (H4): bytes written in place and never sealed must not reach
    /// memory later, when the block belongs to another object. Only this host's caches: a
    /// writer on another host is covered by the quarantine instead (`docs/coherence.md`).
    pub(crate) fn write_back_and_drop(&self, slot: &crate::store::directory::Slot) {
        if self.coherence_mode() != crate::coherence::CoherenceMode::Flush {
            return;
        }
        let len = slot
            .data_size
            .load(Ordering::Relaxed)
            .checked_add(u64::from(slot.metadata_size.load(Ordering::Relaxed)));
        let offset = slot.data_offset.load(Ordering::Relaxed);
        let Some(len) = len.filter(|_| offset != 0) else {
            return;
        };
        if let Ok(ptr) = self.payload_ptr(offset, len) {
            // SAFETY: the range is inside this process's payload view (checked by payload_ptr);
            // the block is still the slot's (DELETING under the caller's tag until finish frees it).
            // Writing back first makes the following invalidate lose nothing.
            unsafe {
                self.coherence().flush(ptr, len as usize);
                self.coherence().invalidate(ptr, len as usize);
            }
        }
    }

    /// References held on `(index, gen)` by all live clients.
    pub fn refcount(&self, index: usize, gen: u32) -> u32 {
        // SeqCst: pairs with the SeqCst `fetch_max` in `connect`. A client registered after this
        // load took its first reference after it too, so the getter/deleter Dekker pair still
        // holds for it: that getter will see our DELETING word (see `refs` module docs).
        let hwm =
            (self.control().clients_hwm.load(Ordering::SeqCst) as usize).min(self.max_clients());
        count_references(
            (0..hwm).map(|c| (self.client_entry(c), self.ref_table(c))),
            index as u32,
            gen,
        )
    }

    /// Deletes the sealed object in slot `index` (state word `w`) unless someone references it,
    /// in which case it is marked delete-pending and deleted by the last release.
    pub(crate) fn try_delete(&self, index: usize, w: Word, deleter: u16) -> Result<bool> {
        let slot = self.directory().slot(index);
        match begin_delete(self.coherence(), slot, w, deleter, || {
            self.refcount(index, w.gen)
        }) {
            Some(deleting) => self.complete_delete(index, deleting).map(|()| true),
            None => Ok(false),
        }
    }

    /// Finishes a delete that `begin_delete`/`after_release` handed to us.
    pub(crate) fn complete_delete(&self, index: usize, deleting: Word) -> Result<()> {
        let slot = self.directory().slot(index);
        let id = slot.read_id_raw();
        let host = slot.creator_host.load(Ordering::Relaxed);
        self.finish_delete(index, deleting, false)?;
        crate::crash_point!("delete.finished");
        self.control()
            .objects_deleted
            .fetch_add(1, Ordering::Relaxed);
        self.notify(host, EventKind::Deleted, index, deleting.gen, id);
        Ok(())
    }

    /// Frees the allocation of a slot we hold in `DELETING` (word `w`), then the slot.
    ///
    /// The finish is claimed first, by a CAS `w → w | FINISHING` (a recoverer's word already
    /// carries it): of a finisher and a recoverer that took the slot over from it, exactly one
    /// holds the word, and the other frees nothing. The payload offset is then taken with a swap
    /// to 0, so even two finishers of one word could not both free it.
    pub(crate) fn finish_delete(&self, index: usize, w: Word, wake: bool) -> Result<()> {
        let dir = self.directory();
        let finished = finish_slot(&dir, index, w, |offset, size| match size {
            Some(size) => self
                .allocator()
                .free(offset, size.max(1))
                .map_err(StoreError::from),
            // A size sum that overflows names no allocation: the slot is freed and the block is
            // left to fsck, which reports the corrupt slot before this and the leak after.
            None => Err(StoreError::corrupt(
                format_args!("slot {index}"),
                "data_size + metadata_size overflows; its block was not freed",
            )),
        });
        match finished {
            Finished::TakenOver => Ok(()),
            Finished::Freed(freed) => {
                if wake {
                    crate::store::wait::wake_word(&dir.slot(index).word);
                }
                freed.unwrap_or(Ok(()))
            }
        }
    }

    /// Statistics, from one pass over the directory and client table.
    pub fn stats(&self) -> Stats {
        let dir = self.directory();
        let mut by_state = [0u64; 6];
        for s in dir.slots() {
            let w = s.load_word();
            if (w.state as usize) < by_state.len() {
                by_state[w.state as usize] += 1;
            }
        }
        let alloc = self.allocator();
        let c = self.control();
        Stats {
            uuid: self.superblock.uuid_string(),
            coherence: self.coherence_mode().to_string(),
            region_bytes: self.layout.total_size,
            heap_bytes: alloc.heap_bytes(),
            used_bytes: alloc.used_bytes(),
            allocations: alloc.allocations(),
            dir_capacity: dir.capacity() as u64,
            objects_by_state: by_state,
            clients_active: (0..self.max_clients())
                .filter(|&i| self.client_entry(i).load_word().status == status::ACTIVE)
                .count() as u64,
            max_clients: self.max_clients() as u64,
            refs_per_client: u64::from(self.layout.geometry.refs_per_client),
            objects_created: c.objects_created.load(Ordering::Relaxed),
            objects_sealed: c.objects_sealed.load(Ordering::Relaxed),
            objects_deleted: c.objects_deleted.load(Ordering::Relaxed),
            objects_evicted: c.objects_evicted.load(Ordering::Relaxed),
            objects_aborted: c.objects_aborted.load(Ordering::Relaxed),
            clients_reaped: c.clients_reaped.load(Ordering::Relaxed),
            owner_nodes_dropped: c.owner_nodes_dropped.load(Ordering::Relaxed),
            metadata_ratio: self.layout.metadata_ratio(),
            classes: alloc.class_usage(),
        }
    }

    /// The committed object in slot `index`, if any.
    pub fn object_at(&self, index: usize) -> Option<ObjectSummary> {
        let dir = self.directory();
        if index >= dir.capacity() {
            return None;
        }
        let s = dir.slot(index);
        // Retry a slot whose word changes under us (a seal, a flag) like `lookup` does.
        let mut w = dir.live_word(index)?;
        let mut id = None;
        for _ in 0..8 {
            if let Some(found) = s.read_id_validated(w) {
                id = Some(found);
                break;
            }
            w = dir.live_word(index)?;
        }
        let id = id?;
        let created = s.created.load(Ordering::Relaxed);
        let owner_node = s.owner_node.load(Ordering::Relaxed);
        let worker: [u32; 7] = std::array::from_fn(|i| s.owner_worker[i].load(Ordering::Relaxed));
        Some(ObjectSummary {
            id,
            index,
            gen: w.gen,
            state: if w.state == state::PENDING {
                state::CREATING
            } else {
                w.state
            },
            data_size: s.data_size.load(Ordering::Relaxed),
            metadata_size: u64::from(s.metadata_size.load(Ordering::Relaxed)),
            offset: s.data_offset.load(Ordering::Relaxed),
            refcount: self.refcount(index, w.gen),
            creator: w.owner,
            creator_host: s.creator_host.load(Ordering::Relaxed),
            delete_pending: w.flags & flags::DELETE_PENDING != 0,
            present: crate::store::client::is_present(w),
            last_access_ms: s.last_access_ms.load(Ordering::Relaxed),
            created_ms: created >> 16,
            source: (created >> 8) as u8,
            is_mutable: created & 1 == 1,
            owner_node: self.nodes().get(owner_node),
            owner_port: s.owner_port.load(Ordering::Relaxed) as u16,
            owner_worker: ObjectId::from_words(worker).0,
        })
    }

    /// Whether the committed object `id` was deleted while referenced and waits for its last
    /// reference (`DELETE_PENDING`): one directory lookup, no reference count — what a holder
    /// that polls many objects asks (the keeper of `gismo.ray`, on every pass).
    pub fn delete_pending(&self, id: &ObjectId) -> bool {
        self.directory()
            .lookup(id)
            .is_some_and(|(_, w)| w.flags & flags::DELETE_PENDING != 0)
    }

    /// The committed object `id`, if any.
    pub fn lookup_summary(&self, id: &ObjectId) -> Option<ObjectSummary> {
        let (index, _) = self.directory().lookup(id)?;
        self.object_at(index).filter(|o| o.id == *id)
    }

    /// Every committed object.
    pub fn list(&self) -> Vec<ObjectSummary> {
        (0..self.directory().capacity())
            .filter_map(|i| self.object_at(i))
            .collect()
    }

    /// Records that host `index`'s runner is alive.
    pub fn hosts_heartbeat(&self, index: usize, now_ms: u64) {
        if let Some(h) = self.hosts().get(index) {
            h.runner_heartbeat_ms.store(now_ms, Ordering::Relaxed);
        }
    }

    /// Every registered client.
    pub fn clients(&self) -> Vec<ClientSummary> {
        (0..self.max_clients())
            .filter_map(|i| {
                let e = self.client_entry(i);
                let w: EntryWord = e.load_word();
                (w.status != status::FREE).then(|| ClientSummary {
                    index: i,
                    epoch: w.epoch,
                    status: w.status,
                    pid: e.pid.load(Ordering::Relaxed) as u32,
                    name: e.name(),
                    host_hash: e.host_hash.load(Ordering::Relaxed),
                    heartbeat_ms: e.heartbeat_ms.load(Ordering::Relaxed),
                    references: self.ref_table(i).held().len(),
                })
            })
            .collect()
    }

    /// Whether the ref entry generation `g16` held by some client names slot `index`'s object.
    pub(crate) fn entry_names_slot(&self, index: usize, g16: u16) -> Option<Word> {
        let w = self.directory().slot(index).load_word();
        gen_matches(g16, w.gen).then_some(w)
    }
}
