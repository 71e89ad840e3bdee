//! `fsck`: checks the directory, the allocator metadata, the client table and the host table
//! against each other, and flags values no sound store writes (unknown slot states, sizes that
//! overflow, corrupt partial stacks, chunks nothing allocates from again; `docs/store.md`,
//! "Corrupt or hostile regions").
//!
//! Every heap block must be accounted for by exactly one live directory slot or one active
//! client's intent (`docs/store.md`, "Crash consistency"). fsck rebuilds that expectation from the
//! directory and the client table and compares it with the page bitmap, the chunk descriptors and
//! the counters. It only reads (every value read from the region is validated before use) unless
//! asked to repair, and repairs only what is safe: leaked blocks and pages are freed, chunk `used`
//! counts, the page-bitmap summary and the used-bytes counter are recomputed (leaks are only reported while the region
//! has raw heap blocks, `Store::alloc_block`, which no slot names). A client entry left `DEAD` by an interrupted
//! reap is reported; its reap is finished by [`Store::reap_dead`](crate::store::Store::reap_dead)
//! under the maintenance lock (not by fsck, which holds no client). A block that a live object uses but the
//! allocator marks free, or two objects that overlap, cannot be repaired safely and are reported.
//!
//! The result is exact on a quiescent region. While clients are active, a block a client has just
//! allocated but not yet recorded can look leaked for a few instructions; pass `repair` only when
//! no other client is active (`gismoctl fsck --repair` checks that).

use crate::sync::{fence, Ordering};
use std::fmt;

use crate::format::layout::{CHUNK_SIZE, PAGE_SIZE};
use crate::format::SectionKind;
use crate::store::allocator::{capacity_for, class_of, ChunkState, CLASSES};
use crate::store::clients::{intent, status};
use crate::store::directory::state;
use crate::store::handle::Store;

const PAGES_PER_CHUNK: u64 = CHUNK_SIZE / PAGE_SIZE;

/// One inconsistency.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// A slot's payload range is not a valid allocation inside the heap.
    BadObjectRange {
        slot: usize,
        offset: u64,
        size: u64,
        why: &'static str,
    },
    /// Two accounted allocations overlap.
    Overlap { first: u64, second: u64 },
    /// A live object's block or pages are marked free in the allocator.
    MarkedFree { offset: u64, size: u64 },
    /// Pages in use that nothing accounts for.
    LeakedPages { first_page: u64, pages: u64 },
    /// A small-object block in use that nothing accounts for.
    LeakedBlock { offset: u64, class_size: u32 },
    /// A chunk's `used` count differs from its bitmap.
    ChunkCount {
        chunk: u64,
        recorded: u32,
        actual: u32,
    },
    /// A chunk descriptor that is corrupt (unknown state or class).
    BadChunk { chunk: u64 },
    /// A client entry left `DEAD` by an interrupted reap.
    DeadClient { client: usize },
    /// A directory slot whose state word no sound store writes (an unknown state or flag bits,
    /// or an owner outside the client table): the slot is skipped by every operation.
    BadSlot {
        slot: usize,
        word: u64,
        why: &'static str,
    },
    /// Page-bitmap words whose summary bits disagree with them, and nodes of the free-run index
    /// that disagree with the bitmap (a process killed between a word's change and its summary
    /// update, or corrupt bits): the allocator may search past free pages or place a run worse
    /// than best fit (it falls back to a full scan before reporting the heap full). Safe to
    /// repair at any time.
    StaleSummary { words: u64, nodes: u64 },
    /// A size class's partial-chunk stack is corrupt (a cycle, or an index outside the table).
    BadPartialStack { class_size: u32, why: &'static str },
    /// A chunk with free blocks (or marked as listed) that is neither on its class's partial
    /// stack nor the class's hint: nothing allocates from it or retires it again.
    UnlistedChunk { chunk: u64, used: u32 },
    /// A host table entry of this host's name with another boot id, used by no active client:
    /// a host entry past its boot.
    StaleHost { host: usize, name: String },
    /// An owner-node entry neither empty nor published (a writer killed between its claim and
    /// its publish, or garbage): one entry lost to the table for good unless repaired.
    StuckNode { index: usize, state: u64 },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::BadObjectRange {
                slot,
                offset,
                size,
                why,
            } => {
                write!(
                    f,
                    "slot {slot}: payload {offset:#x}+{size} is invalid: {why}"
                )
            }
            Problem::Overlap { first, second } => {
                write!(f, "allocations at {first:#x} and {second:#x} overlap")
            }
            Problem::MarkedFree { offset, size } => {
                write!(
                    f,
                    "live payload {offset:#x}+{size} is marked free in the allocator"
                )
            }
            Problem::LeakedPages { first_page, pages } => {
                write!(
                    f,
                    "leak: {pages} page(s) from page {first_page} in use but not accounted for"
                )
            }
            Problem::LeakedBlock { offset, class_size } => {
                write!(
                    f,
                    "leak: {class_size}-byte block at {offset:#x} in use but not accounted for"
                )
            }
            Problem::ChunkCount {
                chunk,
                recorded,
                actual,
            } => {
                write!(
                    f,
                    "chunk {chunk}: used count {recorded}, bitmap says {actual}"
                )
            }
            Problem::BadChunk { chunk } => write!(f, "chunk {chunk}: corrupt descriptor"),
            Problem::DeadClient { client } => {
                write!(f, "client {client} left dead by an interrupted reap")
            }
            Problem::BadSlot { slot, word, why } => {
                write!(f, "slot {slot}: corrupt state word {word:#018x}: {why}")
            }
            Problem::BadPartialStack { class_size, why } => {
                write!(
                    f,
                    "partial-chunk stack of the {class_size}-byte class {why}"
                )
            }
            Problem::UnlistedChunk { chunk, used } => write!(
                f,
                "chunk {chunk} ({used} blocks used) is neither listed nor the hint: its free \
                 blocks are lost"
            ),
            Problem::StaleSummary { words, nodes } => write!(
                f,
                "{words} page-bitmap words disagree with their summary bits, {nodes} free-run \
                 index nodes with the bitmap"
            ),
            Problem::StaleHost { host, name } => write!(
                f,
                "host entry {host} ({name:?}) belongs to an earlier boot of this host"
            ),
            Problem::StuckNode { index, state } => write!(
                f,
                "owner-node entry {index} is neither free nor published (state {state:#x})"
            ),
        }
    }
}

impl Problem {
    /// Whether `repair` fixes it.
    pub fn repairable(&self) -> bool {
        matches!(
            self,
            Problem::LeakedPages { .. }
                | Problem::LeakedBlock { .. }
                | Problem::ChunkCount { .. }
                | Problem::DeadClient { .. }
                | Problem::BadPartialStack { .. }
                | Problem::UnlistedChunk { .. }
                | Problem::StaleSummary { .. }
                | Problem::StaleHost { .. }
                | Problem::StuckNode { .. }
        )
    }
}

/// How long an owner-node entry must stay claimed and unpublished before fsck reports it.
const NODE_CLAIM_PATIENCE: std::time::Duration = std::time::Duration::from_millis(20);

/// What fsck found (and repaired).
#[derive(Clone, Debug, Default)]
pub struct FsckReport {
    pub objects: u64,
    pub live_bytes: u64,
    pub accounted_allocations: u64,
    pub active_clients: u64,
    pub problems: Vec<Problem>,
    pub repaired: usize,
    /// Heap bytes in use according to the allocator's bitmaps (the ground truth).
    pub used_bytes: u64,
    /// The fast used-bytes counter, when it has drifted from `used_bytes` (a process killed
    /// between an allocator step and its counter update). A statistic, not an inconsistency:
    /// `repair` resets it.
    pub counter_drift: Option<u64>,
}

impl FsckReport {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// An allocation somebody accounts for.
#[derive(Clone, Copy, Debug)]
struct Owned {
    offset: u64,
    size: u64,
}

impl Store {
    /// Checks the region; with `repair`, fixes what is safe to fix (see the module docs).
    pub fn fsck(&self, repair: bool) -> FsckReport {
        let mut report = FsckReport::default();
        // Raw heap blocks (`Store::alloc_block`) look like leaks: none is freed while any exist.
        let repair_leaks = repair && self.raw_bytes() == 0;
        let heap = self.layout().section(SectionKind::Heap);
        let heap_pages = heap.len / PAGE_SIZE;
        let nchunks = heap_pages / PAGES_PER_CHUNK;
        let dir = self.directory();

        // 1. What should be allocated: live slots, uncommitted slots of active clients, intents.
        let mut owned: Vec<Owned> = Vec::new();
        for (i, slot) in dir.slots().iter().enumerate() {
            let w = slot.load_word();
            if let Some(why) = self.bad_word(w) {
                report.problems.push(Problem::BadSlot {
                    slot: i,
                    word: w.pack(),
                    why,
                });
                continue;
            }
            let live = dir.live_word(i).is_some();
            let uncommitted = matches!(w.state, state::RESERVED | state::PENDING)
                && (w.owner as usize) < self.max_clients()
                && status::holds_resources(self.client_entry(w.owner as usize).load_word().status);
            if !live && !uncommitted {
                continue;
            }
            let offset = slot.data_offset.load(Ordering::Relaxed);
            if offset == 0 {
                // Claimed with fields not written yet, or a delete past freeing its payload.
                continue;
            }
            if live {
                report.objects += 1;
            }
            // Checked: a sum that wraps must be flagged, not counted as a small object.
            let Some(size) = slot.payload_len().map(|s| s.max(1)) else {
                report.problems.push(Problem::BadObjectRange {
                    slot: i,
                    offset,
                    size: slot.data_size.load(Ordering::Relaxed),
                    why: "data_size + metadata_size overflows",
                });
                continue;
            };
            match self.check_range(offset, size) {
                Ok(()) => {
                    if live {
                        report.live_bytes = report.live_bytes.saturating_add(size);
                    }
                    owned.push(Owned { offset, size })
                }
                Err(why) => report.problems.push(Problem::BadObjectRange {
                    slot: i,
                    offset,
                    size,
                    why,
                }),
            }
        }
        for c in 0..self.max_clients() {
            let e = self.client_entry(c);
            match e.load_word().status {
                // A quarantined client still owns its intent (reaped after its grace).
                st if status::holds_resources(st) => {
                    report.active_clients += u64::from(st == status::ACTIVE);
                    // Acquire: pairs with the Release store of ALLOCATED in `Registered::record_intent`, so
                    // the offset and size read next are the ones it recorded.
                    if e.intent.load(Ordering::Acquire) == intent::ALLOCATED {
                        let (offset, size) = (
                            e.intent_offset.load(Ordering::Relaxed),
                            e.intent_size.load(Ordering::Relaxed),
                        );
                        if self.check_range(offset, size).is_ok()
                            && !owned.iter().any(|o| o.offset == offset)
                        {
                            owned.push(Owned { offset, size });
                        }
                    }
                }
                status::DEAD => report.problems.push(Problem::DeadClient { client: c }),
                _ => {}
            }
        }
        owned.sort_by_key(|o| o.offset);
        for pair in owned.windows(2) {
            if pair[0].offset + capacity_for(pair[0].size) > pair[1].offset {
                report.problems.push(Problem::Overlap {
                    first: pair[0].offset,
                    second: pair[1].offset,
                });
            }
        }
        report.accounted_allocations = owned.len() as u64;

        // 2. Expected page bits (large objects) and per-chunk expected blocks (small objects).
        let mut expect_pages = vec![0u64; heap_pages.div_ceil(64) as usize];
        let mut expect_blocks: Vec<[u64; 8]> = vec![[0; 8]; nchunks as usize];
        for o in &owned {
            let rel = o.offset - heap.offset;
            match class_of(o.size) {
                Some(c) => {
                    let chunk = rel / CHUNK_SIZE;
                    let block = (rel % CHUNK_SIZE) / u64::from(CLASSES[c]);
                    expect_blocks[chunk as usize][(block / 64) as usize] |= 1 << (block % 64);
                }
                None => {
                    for p in rel / PAGE_SIZE..(rel + o.size).div_ceil(PAGE_SIZE) {
                        expect_pages[(p / 64) as usize] |= 1 << (p % 64);
                    }
                }
            }
        }

        // 3. Compare with the allocator.
        let alloc = self.allocator();
        let mut actual_bytes = 0u64;
        // Which chunks can be allocated from again: those on their class's partial stack, and
        // the hints (M4 in the core review: anything else with free blocks is lost capacity).
        let mut reachable = vec![false; nchunks as usize];
        for (c, &class_size) in CLASSES.iter().enumerate() {
            match alloc.partial_stack(c) {
                Ok(chunks) => {
                    for idx in chunks {
                        reachable[idx] = true;
                    }
                }
                Err(why) => {
                    report
                        .problems
                        .push(Problem::BadPartialStack { class_size, why });
                    if repair {
                        // Rebuilt below: every chunk of the class is then unlisted and relisted.
                        alloc.reset_partial_stack(c);
                        report.repaired += 1;
                    }
                }
            }
            if let Some(h) = alloc.hint(c) {
                if let Some(r) = reachable.get_mut(h) {
                    *r = true;
                }
            }
        }
        for chunk in 0..nchunks {
            let info = alloc.chunk_info(chunk as usize);
            let first_page = chunk * PAGES_PER_CHUNK;
            let lane_set = alloc.pages_set(first_page, PAGES_PER_CHUNK);
            match info.state {
                ChunkState::Active | ChunkState::Zombie => {
                    let Some(c) = info.class.filter(|c| *c < CLASSES.len()) else {
                        report.problems.push(Problem::BadChunk { chunk });
                        continue;
                    };
                    let size = CLASSES[c];
                    let cap = crate::store::allocator::blocks_per_chunk(c) as u64;
                    let mut actual = 0u32;
                    for block in 0..cap {
                        let (wi, bit) = ((block / 64) as usize, block % 64);
                        let set = info.bitmap[wi] & (1 << bit) != 0;
                        let expected = expect_blocks[chunk as usize][wi] & (1 << bit) != 0;
                        actual += u32::from(set);
                        let offset = heap.offset + chunk * CHUNK_SIZE + block * u64::from(size);
                        if set && !expected {
                            report.problems.push(Problem::LeakedBlock {
                                offset,
                                class_size: size,
                            });
                            if repair_leaks && alloc.free(offset, u64::from(size)).is_ok() {
                                report.repaired += 1;
                                actual -= 1;
                                continue;
                            }
                        } else if expected && !set {
                            report.problems.push(Problem::MarkedFree {
                                offset,
                                size: u64::from(size),
                            });
                        }
                        if set {
                            actual_bytes += u64::from(size);
                        }
                    }
                    if lane_set != PAGES_PER_CHUNK {
                        report.problems.push(Problem::BadChunk { chunk });
                    }
                    let now = alloc.chunk_info(chunk as usize);
                    let recorded = now.used;
                    if recorded != actual {
                        report.problems.push(Problem::ChunkCount {
                            chunk,
                            recorded,
                            actual,
                        });
                        if repair && alloc.set_chunk_used(chunk as usize, actual) {
                            report.repaired += 1;
                        }
                    }
                    let used = if repair { actual } else { recorded };
                    let free_blocks = u64::from(used) < cap;
                    if !reachable[chunk as usize]
                        && lane_set == PAGES_PER_CHUNK
                        && (free_blocks || now.in_list || info.state == ChunkState::Zombie)
                    {
                        report.problems.push(Problem::UnlistedChunk { chunk, used });
                        if repair && alloc.relist_chunk(chunk as usize) {
                            report.repaired += 1;
                        }
                    }
                }
                ChunkState::Unused => {
                    // Pages of this chunk belong to large objects (or nobody).
                    for p in first_page..first_page + PAGES_PER_CHUNK {
                        let set = alloc.pages_set(p, 1) == 1;
                        let expected = expect_pages[(p / 64) as usize] & (1 << (p % 64)) != 0;
                        if set && !expected {
                            report.problems.push(Problem::LeakedPages {
                                first_page: p,
                                pages: 1,
                            });
                            if repair_leaks && alloc.release_page_run(p, 1) {
                                report.repaired += 1;
                                continue;
                            }
                        } else if expected && !set {
                            report.problems.push(Problem::MarkedFree {
                                offset: heap.offset + p * PAGE_SIZE,
                                size: PAGE_SIZE,
                            });
                        }
                        if set {
                            actual_bytes += PAGE_SIZE;
                        }
                    }
                }
                ChunkState::Corrupt => report.problems.push(Problem::BadChunk { chunk }),
            }
        }
        merge_page_leaks(&mut report.problems);
        // After the page repairs above (which keep the summary in step themselves).
        let (words, nodes) = alloc.check_summary_parts(false);
        if words + nodes > 0 {
            report.problems.push(Problem::StaleSummary { words, nodes });
            if repair {
                alloc.check_summary(true);
                report.repaired += 1;
            }
        }
        report.used_bytes = actual_bytes;
        let recorded = alloc.used_bytes();
        if recorded != actual_bytes {
            report.counter_drift = Some(recorded);
            // (The allocation count below would miss raw blocks.)
            if repair_leaks {
                alloc.set_used_bytes(actual_bytes, owned.len() as u64);
                report.repaired += 1;
            }
        }
        self.check_hosts(repair, &mut report);
        self.check_nodes(repair, &mut report);
        // A `DEAD` entry (an interrupted reap) is not repaired here: a reap runs only under the
        // maintenance lock, which only a registered client can hold. `Store::reap_dead` finishes
        // it (`gismoctl fsck --repair` runs one as its own client first).
        report
    }

    /// Frees leaked blocks and pages while clients keep working: waits (up to `wait`) for a
    /// moment when no client is inside a create, checks, and frees what is leaked only if no
    /// create started or finished during the check. Returns the bytes freed.
    ///
    /// Correctness: a create marks itself in flight (odd `op_seq`) and fences before it
    /// allocates; we fence before and after the scan and compare `op_seq` snapshots taken
    /// outside the fences. Equal, even snapshots mean no allocation was in flight during the
    /// scan, so every unaccounted block it saw is a true orphan (a client killed between its
    /// allocation and its intent record).
    pub fn collect_orphans(
        &self,
        m: &crate::store::reaper::Maintenance<'_>,
        wait: std::time::Duration,
    ) -> u64 {
        self.collect_orphans_pass(m, wait).unwrap_or(0)
    }

    /// [`Store::collect_orphans`]; `None` if no quiet scan was had within `wait` (or the lock was
    /// lost): the orphans, if any, are still there. Raw heap blocks make leaks uncollectable;
    /// that counts as done (fsck reports them).
    pub(crate) fn collect_orphans_pass(
        &self,
        m: &crate::store::reaper::Maintenance<'_>,
        wait: std::time::Duration,
    ) -> Option<u64> {
        let deadline = std::time::Instant::now() + wait;
        loop {
            let before = self.op_snapshot();
            if before.iter().all(|(_, seq)| seq % 2 == 0) {
                // SeqCst fence: pairs with the SeqCst fence in `OpGuard::begin` (fencing.rs): a
                // client whose heap change the scan below sees has its odd `op_seq` seen by the
                // second snapshot.
                fence(Ordering::SeqCst);
                let report = self.fsck(false);
                // SeqCst fence: the other half around the scan; pairs with the same
                // `OpGuard::begin` fence and orders the scan before the second `op_snapshot`.
                // It also pairs with the fence in `Store::alloc_block` (heap_block.rs): raw
                // blocks look like leaks, so none is freed while any exist.
                fence(Ordering::SeqCst);
                if self.raw_bytes() != 0 {
                    return Some(0);
                }
                // Only the maintainer frees leaks: two collectors could both see block B leaked,
                // and the second would free it again after a create reused it.
                if self.op_snapshot() == before && m.held() {
                    crate::crash_point!("orphans.scanned");
                    return Some(self.free_leaks(&report, m));
                }
            }
            if std::time::Instant::now() >= deadline || !m.held() {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    fn op_snapshot(&self) -> Vec<(usize, u64)> {
        (0..self.max_clients())
            .filter(|&c| status::holds_resources(self.client_entry(c).load_word().status))
            // SeqCst: pairs with the SeqCst fences in `OpGuard::begin` and around the scan in
            // `collect_orphans`, and with the Release store of the even `op_seq` in
            // `OpGuard::drop`.
            .map(|c| (c, self.client_entry(c).op_seq.load(Ordering::SeqCst)))
            .collect()
    }

    /// Frees the leaks a quiet scan found, and lowers chunk counts and the byte counter that a
    /// killed process left one step ahead — each with a CAS from the value the scan saw, so
    /// anything that changed since is left alone.
    ///
    /// The lock is checked before every step (review follow-up R6): a maintainer paused in
    /// this list for longer than the lock's lease was replaced, its successor may have freed
    /// the same leaks and someone reused them, and what is left of the list is stale.
    fn free_leaks(&self, report: &FsckReport, m: &crate::store::reaper::Maintenance<'_>) -> u64 {
        let alloc = self.allocator();
        let mut freed = 0;
        // Counts first (from the values the scan saw), then the frees, which adjust them.
        for p in &report.problems {
            if let Problem::ChunkCount {
                chunk,
                recorded,
                actual,
            } = *p
            {
                if recorded > actual {
                    if !m.held() {
                        return freed;
                    }
                    alloc.cas_chunk_used(chunk as usize, recorded, actual);
                }
            }
        }
        for p in &report.problems {
            if !m.held() {
                return freed;
            }
            match *p {
                Problem::LeakedBlock { offset, class_size }
                    if alloc.free(offset, u64::from(class_size)).is_ok() =>
                {
                    freed += u64::from(class_size);
                    crate::crash_point!("orphans.freed");
                }
                Problem::LeakedPages { first_page, pages }
                    if alloc.release_page_run(first_page, pages) =>
                {
                    freed += pages * PAGE_SIZE;
                }
                // Safe while clients work: nothing but a free of one of its blocks can touch a
                // chunk that is on no stack and not the hint, and `relist_chunk` changes the
                // chunk word by CAS (a racing free wins or sees the chunk listed).
                Problem::UnlistedChunk { chunk, .. } => {
                    alloc.relist_chunk(chunk as usize);
                }
                // Safe at any time: a sync is what every page-word change does anyway.
                Problem::StaleSummary { .. } => {
                    alloc.check_summary(true);
                }
                _ => {}
            }
        }
        if let Some(recorded) = report.counter_drift {
            // Frees above already adjusted the counter by what they freed.
            let now = alloc.used_bytes();
            let expected = recorded.saturating_sub(freed);
            if now == expected {
                alloc.cas_used_bytes(now, report.used_bytes.saturating_sub(freed));
            }
        }
        freed
    }

    /// Why a slot's state word is one no sound store writes, if it is.
    fn bad_word(&self, w: crate::store::directory::Word) -> Option<&'static str> {
        use crate::store::directory::{flags, NO_OWNER};
        if w.state > state::DELETING {
            return Some("unknown state");
        }
        // A delete's own flags only on a DELETING word: there they mark a delete in progress
        // (its payload is still owned; core review follow-up R1: flagging them made the
        // orphan collector free the payload of a delete that was still referenced).
        let known = match w.state {
            state::DELETING => {
                flags::DELETE_PENDING
                    | flags::WAITERS
                    | flags::SEALED_ORIGIN
                    | flags::EVICTING
                    | flags::FINISHING
            }
            _ => flags::DELETE_PENDING | flags::WAITERS,
        };
        if w.flags & !known != 0 {
            return Some("unknown flag bits");
        }
        if w.state == state::FREE {
            return (w.flags != 0).then_some("flags on a free slot");
        }
        (usize::from(w.owner) >= self.max_clients() && w.owner != NO_OWNER)
            .then_some("owner outside the client table")
    }

    /// Owner-node entries neither free nor published (core review L6). A writer holds its claim
    /// for a few instructions, so an entry is reported only if it is still stuck, with the same
    /// word, after a pause of [`NODE_CLAIM_PATIENCE`]. Repair frees them (meant for a quiescent
    /// region, like every repair: a writer slow past that pause would publish over a re-claim).
    fn check_nodes(&self, repair: bool, report: &mut FsckReport) {
        let nodes = self.nodes();
        let first = nodes.stuck();
        if first.is_empty() {
            return;
        }
        std::thread::sleep(NODE_CLAIM_PATIENCE);
        let again = nodes.stuck();
        for (index, state) in first.into_iter().filter(|e| again.contains(e)) {
            report.problems.push(Problem::StuckNode { index, state });
            if repair && nodes.free_stuck(index, state) {
                report.repaired += 1;
            }
        }
    }

    /// Host entries past their boot: this host's name with another identity (boot id), and no
    /// active client of that identity. Repair frees them (the event ring is left as it is: a
    /// later owner's runner validates every event it reads).
    fn check_hosts(&self, repair: bool, report: &mut FsckReport) {
        let me = crate::store::clients::HostIdentity::current();
        let my_hash = me.hash();
        for (i, h) in self.hosts().iter().enumerate() {
            // Acquire: pairs with the AcqRel claim CAS of `identity` in `host_index` /
            // `host_index_reclaiming`.
            let id = h.identity.load(Ordering::Acquire);
            // The entry keeps at most 64 bytes of the name.
            let mine = &me.name.as_bytes()[..me.name.len().min(64)];
            if id == 0 || id == my_hash || h.name().as_bytes() != mine {
                continue;
            }
            if self.host_in_use(id) {
                continue;
            }
            report.problems.push(Problem::StaleHost {
                host: i,
                name: h.name(),
            });
            // AcqRel: pairs with the claim CAS and the Acquire loads of `identity` in `host_index`
            // / `host_index_reclaiming`: the freed entry is seen free by the next claimer.
            if repair
                && h.identity
                    .compare_exchange(id, 0, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            {
                report.repaired += 1;
            }
        }
    }

    /// Whether an active client records host identity `id`: a host-table entry no active client
    /// names may be reclaimed ([`host_index_reclaiming`](crate::store::events::host_index_reclaiming)).
    pub fn host_in_use(&self, id: u64) -> bool {
        // Clients record their host by its index in the host table (their `host_hash` is the
        // liveness identity, which adds the pid namespace).
        let Some(h) = self
            .hosts()
            .iter()
            // Acquire: pairs with the AcqRel claim CAS of `identity` in `host_index` /
            // `host_index_reclaiming`.
            .position(|e| e.identity.load(Ordering::Acquire) == id)
        else {
            return false;
        };
        (0..self.max_clients()).any(|c| {
            let e = self.client_entry(c);
            e.load_word().status != status::FREE && e.host_index.load(Ordering::Relaxed) == h as u64
        })
    }

    /// Whether `offset..offset+size` can be an allocation of `size` bytes in the heap.
    fn check_range(&self, offset: u64, size: u64) -> Result<(), &'static str> {
        let heap = self.layout().section(SectionKind::Heap);
        let cap = capacity_for(size);
        let end = offset.checked_add(cap).ok_or("overflows")?;
        if offset < heap.offset || end > heap.end() {
            return Err("outside the heap");
        }
        let rel = offset - heap.offset;
        match class_of(size) {
            Some(c) if (rel % CHUNK_SIZE) % u64::from(CLASSES[c]) != 0 => {
                Err("not on a block boundary")
            }
            Some(c)
                if (rel % CHUNK_SIZE) / u64::from(CLASSES[c])
                    >= u64::from(crate::store::allocator::blocks_per_chunk(c)) =>
            {
                Err("past the last block of its chunk")
            }
            None if rel % PAGE_SIZE != 0 => Err("not on a page boundary"),
            _ => Ok(()),
        }
    }
}

/// Joins adjacent single-page leaks into runs.
fn merge_page_leaks(problems: &mut Vec<Problem>) {
    let mut out: Vec<Problem> = Vec::with_capacity(problems.len());
    for p in problems.drain(..) {
        if let (
            Problem::LeakedPages { first_page, pages },
            Some(Problem::LeakedPages {
                first_page: f0,
                pages: n0,
            }),
        ) = (&p, out.last_mut())
        {
            if *f0 + *n0 == *first_page {
                *n0 += pages;
                continue;
            }
        }
        out.push(p);
    }
    *problems = out;
}
