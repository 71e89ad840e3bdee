//! Hosts and their event rings: how a host's runner learns what its clients sealed and what was
//! deleted, so it can call Ray's `add_object_callback` / `delete_object_callback`.
//!
//! **Host table.** An entry's first word is the host's identity hash (name + boot id, never 0);
//! a host claims its entry by one CAS from 0 to its hash, probing linearly from `hash mod
//! max_hosts`. Because the claim writes the identity atomically and every process of a host
//! probes the same sequence, two processes of one host always agree on its index.
//!
//! **Event rings.** One bounded multi-producer, single-consumer ring per host (Vyukov's sequenced
//! cells, with lap numbers so that an all-zero ring is valid): a producer claims position `p` by
//! CAS on the ring's tail, writes the event and publishes it (`seq = 2·lap + 1`, `Release`); the
//! consumer reads it once published (`Acquire`) and frees the cell for the next lap. A full ring drops the
//! event and counts it in `overflows`; a consumer that sees the counter move rescans the directory
//! (see `GismoRunner`), so nothing is lost for good — only delayed. A producer killed between
//! claiming a cell and publishing it leaves a hole; the consumer skips a hole that stays
//! unpublished for [`HOLE_TIMEOUT_MS`] while later cells are ready, and rescans. A producer that
//! was only paused that long finds its cell taken (it claims and publishes the cell by CAS), drops
//! its event and counts an overflow, so the consumer rescans again.
//!
//! **One consumer per ring.** The ring is single-consumer; the entry's `consumer` word records
//! which client consumes it (see `ring_claim.rs`: claimed at a runner's start, taken over from a
//! dead client, released at stop).

use crate::shm::CachePadded;
use crate::store::object_id::ObjectId;
use crate::sync::{AtomicU32, AtomicU64, Ordering};

/// Marks a cell's `seq` as being written by the producer of the lap in the low bits (see
/// `EventRing::fill`).
const WRITING: u64 = 1 << 63;

/// How long a claimed-but-unpublished event may block the consumer before it is skipped.
pub const HOLE_TIMEOUT_MS: u64 = 1000;

/// The most tries [`EventRing::push`] makes before it drops an event (a bound for corrupt
/// rings; contention among a host's producers settles in far fewer).
pub const PUSH_ATTEMPTS: usize = 1 << 16;

/// Event kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum EventKind {
    Sealed = 1,
    Deleted = 2,
}

/// One host table entry: 384 bytes, three cache lines. The ring's tail (claimed by the host's
/// producers) and head (advanced by its one consumer) are written by different parties at every
/// event, so each has a line of its own ([`CachePadded`]); the first line holds the words that
/// change rarely or only with the consumer's passes.
#[repr(C)]
pub struct HostEntry {
    /// Identity hash; 0 = free.
    pub identity: AtomicU64,
    /// Events dropped because the ring was full (or skipped as holes).
    pub overflows: AtomicU64,
    /// Wall-clock ms of the last consumer pass (0 = no runner).
    pub runner_heartbeat_ms: AtomicU64,
    /// Host name, NUL padded (informational).
    pub name: [AtomicU64; 8],
    /// The client consuming this host's ring: `epoch:32 | (index + 1):32`, 0 = none (see
    /// `ring_claim.rs`).
    pub consumer: AtomicU64,
    pub _reserved: [AtomicU64; 4],
    /// Ring position: next to claim (producers).
    pub tail: CachePadded<AtomicU64>,
    /// Ring position: next to read (consumer).
    pub head: CachePadded<AtomicU64>,
}

#[cfg(not(loom))]
static_assertions::const_assert_eq!(std::mem::offset_of!(HostEntry, consumer), 88);
#[cfg(not(loom))]
static_assertions::const_assert_eq!(std::mem::offset_of!(HostEntry, tail), 128);
#[cfg(not(loom))]
static_assertions::const_assert_eq!(std::mem::offset_of!(HostEntry, head), 256);
#[cfg(not(loom))]
static_assertions::const_assert_eq!(
    std::mem::size_of::<HostEntry>() as u64,
    crate::format::layout::HOST_ENTRY_SIZE
);
// SAFETY: repr(C), integer atomics only, every bit pattern valid, no pointers.
#[cfg(not(loom))]
unsafe impl crate::shm::RegionSafe for HostEntry {}

/// One event: 64 bytes.
#[repr(C)]
pub struct EventCell {
    seq: AtomicU64,
    /// `kind:8 | 0:24 | slot:32`.
    what: AtomicU64,
    gen: AtomicU32,
    id: [AtomicU32; 7],
    _reserved: [AtomicU64; 2],
}

#[cfg(not(loom))]
static_assertions::const_assert_eq!(
    std::mem::size_of::<EventCell>() as u64,
    crate::format::layout::EVENT_SIZE
);
// SAFETY: repr(C), integer atomics only, every bit pattern valid, no pointers.
#[cfg(not(loom))]
unsafe impl crate::shm::RegionSafe for EventCell {}

impl EventCell {
    /// A zeroed cell (free for lap 0), for process-local rings (tests, loom models).
    pub fn new_free() -> EventCell {
        EventCell {
            seq: AtomicU64::new(0),
            what: AtomicU64::new(0),
            gen: AtomicU32::new(0),
            id: std::array::from_fn(|_| AtomicU32::new(0)),
            _reserved: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// A decoded event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub slot: u32,
    pub gen: u32,
    pub id: ObjectId,
}

impl HostEntry {
    /// A zeroed (free, unclaimed, empty-ring) entry, for process-local tables (tests, loom
    /// models); the region's entries are the formatted zeroes.
    pub fn new_free() -> HostEntry {
        HostEntry {
            identity: AtomicU64::new(0),
            overflows: AtomicU64::new(0),
            runner_heartbeat_ms: AtomicU64::new(0),
            name: std::array::from_fn(|_| AtomicU64::new(0)),
            consumer: AtomicU64::new(0),
            _reserved: std::array::from_fn(|_| AtomicU64::new(0)),
            tail: CachePadded::new(AtomicU64::new(0)),
            head: CachePadded::new(AtomicU64::new(0)),
        }
    }

    /// The host name recorded at the claim (informational; NUL padded).
    pub fn name(&self) -> String {
        let mut b = [0u8; 64];
        for (j, w) in self.name.iter().enumerate() {
            b[j * 8..j * 8 + 8].copy_from_slice(&w.load(Ordering::Relaxed).to_le_bytes());
        }
        let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
        String::from_utf8_lossy(&b[..end]).into_owned()
    }
}

fn store_name(e: &HostEntry, name: &str) {
    let mut b = [0u8; 64];
    let m = name.len().min(64);
    b[..m].copy_from_slice(&name.as_bytes()[..m]);
    for (j, w) in e.name.iter().enumerate() {
        let mut x = [0u8; 8];
        x.copy_from_slice(&b[j * 8..j * 8 + 8]);
        w.store(u64::from_le_bytes(x), Ordering::Relaxed);
    }
}

/// Finds or claims the entry of the host with identity `hash` (≠ 0); `None` if the table is full.
pub fn host_index(hosts: &[HostEntry], hash: u64, name: &str) -> Option<usize> {
    let n = hosts.len();
    let start = (hash % n as u64) as usize;
    // An entry of ours anywhere (a claim from before an earlier entry was reclaimed) wins over
    // a free one earlier in the probe sequence, so every process of a host finds the same one.
    if let Some(i) = (0..n)
        .map(|k| (start + k) % n)
        // Acquire: pairs with the AcqRel claim CAS of `identity` below and in
        // `host_index_reclaiming`; the claim publishes nothing but itself (the name is
        // informational).
        .find(|&i| hosts[i].identity.load(Ordering::Acquire) == hash)
    {
        return Some(i);
    }
    for k in 0..n {
        let i = (start + k) % n;
        let e = &hosts[i];
        // Acquire: as above (pairs with the AcqRel claim CAS of `identity`).
        match e.identity.load(Ordering::Acquire) {
            h if h == hash => return Some(i),
            0 => {
                // AcqRel: pairs with the Acquire loads of `identity` above and in
                // `host_index_reclaiming` and with a competing claim CAS; the winner's later name
                // stores are informational, the identity itself is the claim.
                match e
                    .identity
                    .compare_exchange(0, hash, Ordering::AcqRel, Ordering::Acquire)
                {
                    Ok(_) => {
                        store_name(e, name);
                        return Some(i);
                    }
                    Err(h) if h == hash => return Some(i),
                    Err(_) => continue,
                }
            }
            _ => continue,
        }
    }
    None
}

/// As [`host_index`], but a full table gives up an entry of a host that is gone (core review
/// M7): one that no active client uses (`in_use(identity)` is false), preferring an earlier boot
/// of this host (same name, other identity). The takeover is one CAS from the old identity to
/// ours, so processes of this host that race for it agree on the entry. `None` if every entry
/// is in use.
pub fn host_index_reclaiming(
    hosts: &[HostEntry],
    hash: u64,
    name: &str,
    in_use: impl Fn(u64) -> bool,
) -> Option<usize> {
    if let Some(i) = host_index(hosts, hash, name) {
        return Some(i);
    }
    let n = hosts.len();
    let start = (hash % n as u64) as usize;
    let mine = &name.as_bytes()[..name.len().min(64)];
    let order: Vec<usize> = (0..n).map(|k| (start + k) % n).collect();
    let earlier_boot = order
        .iter()
        .filter(|&&i| hosts[i].name().as_bytes() == mine);
    let any = order.iter();
    for &i in earlier_boot.chain(any) {
        let e = &hosts[i];
        // Acquire: pairs with the AcqRel claim CAS of `identity` in `host_index` and below.
        let old = e.identity.load(Ordering::Acquire);
        if old == 0 || old == hash || in_use(old) {
            if old == hash {
                return Some(i);
            }
            continue;
        }
        // AcqRel: as the claim in `host_index` (pairs with its Acquire loads and claim CAS).
        match e
            .identity
            .compare_exchange(old, hash, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => {
                store_name(e, name);
                e.runner_heartbeat_ms.store(0, Ordering::Relaxed);
                // Make the next runner rescan: events left in the ring were for the old host.
                e.overflows.fetch_add(1, Ordering::Relaxed);
                return Some(i);
            }
            Err(h) if h == hash => return Some(i),
            Err(_) => continue,
        }
    }
    None
}

/// A claimed event cell was never published (its producer died) and was skipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HoleSkipped;

/// One host's ring.
pub struct EventRing<'a> {
    host: &'a HostEntry,
    cells: &'a [EventCell],
}

impl<'a> EventRing<'a> {
    /// `cells.len()` must be a power of two.
    pub fn new(host: &'a HostEntry, cells: &'a [EventCell]) -> EventRing<'a> {
        assert!(cells.len().is_power_of_two());
        EventRing { host, cells }
    }

    fn cell(&self, pos: u64) -> &EventCell {
        &self.cells[pos as usize & (self.cells.len() - 1)]
    }

    /// Appends an event; `false` (and the overflow counter bumped) if the ring is full.
    ///
    /// A cell's `seq` is `2 * lap` while free for lap `lap` and `2 * lap + 1` once published for
    /// it, where position `p` uses cell `p mod capacity` in lap `p / capacity` (all-zero = every
    /// cell free for lap 0, which is what `format` writes).
    ///
    /// Bounded: positions and sequence numbers are read from the region, so the arithmetic wraps
    /// instead of overflowing, and a cell that stays ahead of the tail (`seq > 2 * lap`, which a
    /// sound ring shows only to a producer holding a stale tail) ends the attempt after
    /// [`PUSH_ATTEMPTS`] tries: the event is dropped and counted like an overflow, which makes the
    /// runner rescan.
    pub fn push(&self, ev: &Event) -> bool {
        let cap = self.cells.len() as u64;
        let mut pos = self.host.tail.load(Ordering::Relaxed);
        for _ in 0..PUSH_ATTEMPTS {
            let cell = self.cell(pos);
            let lap = pos / cap;
            // Acquire: pairs with the consumer's Release that freed the cell.
            let seq = cell.seq.load(Ordering::Acquire);
            if seq == lap.wrapping_mul(2) {
                match self.host.tail.compare_exchange_weak(
                    pos,
                    pos.wrapping_add(1),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return self.fill(pos, ev),
                    Err(actual) => pos = actual,
                }
            } else if seq & !WRITING < lap.wrapping_mul(2) {
                // Still holds the previous lap's event: full.
                self.host.overflows.fetch_add(1, Ordering::Relaxed);
                return false;
            } else {
                crate::sync::spin_hint();
                pos = self.host.tail.load(Ordering::Relaxed);
            }
        }
        // A corrupt cell (or a tail that never moves past it): drop the event, as when full.
        self.host.overflows.fetch_add(1, Ordering::Relaxed);
        false
    }

    /// Writes `ev` into the cell of position `pos`, which our tail CAS gave us, and publishes it.
    /// The cell is claimed by a CAS (`2·lap → WRITING | 2·lap`) and published by a CAS from that
    /// claim, so a producer paused past [`HOLE_TIMEOUT_MS`] — whose cell the consumer skipped and
    /// freed for the next lap — finds the word changed, writes nothing more (or publishes
    /// nothing, if it was paused while writing), and counts an overflow, which makes the consumer
    /// rescan: the event is delayed, not lost (core review L5). Only a producer paused in the
    /// middle of its field stores can still mix them into the next lap's event, which the
    /// consumer validates against the directory anyway.
    fn fill(&self, pos: u64, ev: &Event) -> bool {
        let cell = self.cell(pos);
        let lap = pos / self.cells.len() as u64;
        let free = lap.wrapping_mul(2);
        let writing = free | WRITING;
        // Acquire: pairs with the consumer's Release that freed the cell (as the load in `push`).
        if cell
            .seq
            .compare_exchange(free, writing, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            self.host.overflows.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        cell.what.store(
            u64::from(ev.kind as u8) << 56 | u64::from(ev.slot),
            Ordering::Relaxed,
        );
        cell.gen.store(ev.gen, Ordering::Relaxed);
        for (d, w) in cell.id.iter().zip(ev.id.words()) {
            d.store(w, Ordering::Relaxed);
        }
        // Release: pairs with the consumer's Acquire load of `seq` in `pop`; publishes the event
        // fields to it.
        if cell
            .seq
            .compare_exchange(
                writing,
                free.wrapping_add(1),
                Ordering::Release,
                Ordering::Relaxed,
            )
            .is_err()
        {
            self.host.overflows.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Takes the next published event (consumer only). `Err(HoleSkipped)` signals a hole that was
    /// skipped: the caller must rescan.
    pub fn pop(
        &self,
        now_ms: u64,
        hole_since: &mut Option<u64>,
    ) -> Result<Option<Event>, HoleSkipped> {
        let pos = self.host.head.load(Ordering::Relaxed);
        let cell = self.cell(pos);
        let lap = pos / self.cells.len() as u64;
        // Acquire: pairs with the producer's Release publish.
        let seq = cell.seq.load(Ordering::Acquire);
        if seq != lap.wrapping_mul(2).wrapping_add(1) {
            // Nothing published here. A hole if producers have moved past it.
            if self.host.tail.load(Ordering::Relaxed) > pos {
                let since = *hole_since.get_or_insert(now_ms);
                if now_ms.saturating_sub(since) >= HOLE_TIMEOUT_MS {
                    *hole_since = None;
                    self.release_cell(pos);
                    self.host.overflows.fetch_add(1, Ordering::Relaxed);
                    return Err(HoleSkipped);
                }
            }
            return Ok(None);
        }
        *hole_since = None;
        let what = cell.what.load(Ordering::Relaxed);
        let kind = match (what >> 56) as u8 {
            1 => Some(EventKind::Sealed),
            2 => Some(EventKind::Deleted),
            _ => None,
        };
        let ev = kind.map(|kind| Event {
            kind,
            slot: what as u32,
            gen: cell.gen.load(Ordering::Relaxed),
            id: ObjectId::from_words(std::array::from_fn(|i| cell.id[i].load(Ordering::Relaxed))),
        });
        self.release_cell(pos);
        Ok(ev)
    }

    fn release_cell(&self, pos: u64) {
        let lap = pos / self.cells.len() as u64;
        // Release: pairs with the producers' Acquire load of `seq` in `push`: our reads of the
        // cell happen before a producer reuses it.
        self.cell(pos)
            .seq
            .store(lap.wrapping_add(1).wrapping_mul(2), Ordering::Release);
        self.host.head.store(pos.wrapping_add(1), Ordering::Relaxed);
    }

    pub fn overflows(&self) -> u64 {
        self.host.overflows.load(Ordering::Relaxed)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn host() -> HostEntry {
        HostEntry::new_free()
    }

    fn cells(n: usize) -> Vec<EventCell> {
        (0..n).map(|_| EventCell::new_free()).collect()
    }

    fn ev(i: u32) -> Event {
        Event {
            kind: EventKind::Sealed,
            slot: i,
            gen: i * 3,
            id: ObjectId::from_u64(u64::from(i)),
        }
    }

    #[test]
    fn fifo_across_laps_and_full_ring() {
        let h = host();
        let c = cells(4);
        let r = EventRing::new(&h, &c);
        let mut hole = None;
        for lap in 0..5u32 {
            for i in 0..4 {
                assert!(r.push(&ev(lap * 4 + i)));
            }
            assert!(!r.push(&ev(99)), "a full ring refuses");
            for i in 0..4 {
                assert_eq!(r.pop(0, &mut hole).unwrap(), Some(ev(lap * 4 + i)));
            }
            assert_eq!(r.pop(0, &mut hole).unwrap(), None);
        }
        assert_eq!(r.overflows(), 5);
    }

    #[test]
    fn a_hole_left_by_a_dead_producer_is_skipped_after_the_timeout() {
        let h = host();
        let c = cells(4);
        let r = EventRing::new(&h, &c);
        h.tail.store(1, Ordering::Relaxed); // position 0 claimed, never published
        assert!(r.push(&ev(1)));
        let mut hole = None;
        assert_eq!(r.pop(10, &mut hole).unwrap(), None);
        assert!(r.pop(10 + HOLE_TIMEOUT_MS, &mut hole).is_err());
        assert_eq!(r.pop(10 + HOLE_TIMEOUT_MS, &mut hole).unwrap(), Some(ev(1)));
    }

    /// L5: a producer paused between its tail CAS and its cell claim past the hole timeout finds
    /// its cell skipped and taken by the next lap's producer: it writes nothing into that cell
    /// (the next lap's event is popped whole) and counts an overflow, so the consumer rescans.
    #[test]
    fn a_producer_whose_cell_was_skipped_writes_nothing_and_counts_an_overflow() {
        let h = host();
        let c = cells(2);
        let r = EventRing::new(&h, &c);
        h.tail.store(1, Ordering::Relaxed); // position 0 claimed by the paused producer
        assert!(r.push(&ev(1))); // position 1
        let mut hole = None;
        assert_eq!(r.pop(0, &mut hole).unwrap(), None);
        assert!(
            r.pop(HOLE_TIMEOUT_MS, &mut hole).is_err(),
            "the hole is skipped"
        );
        assert_eq!(r.pop(HOLE_TIMEOUT_MS, &mut hole).unwrap(), Some(ev(1)));
        assert!(r.push(&ev(2))); // position 2: lap 1 of the skipped cell 0
        let overflows = r.overflows();
        // The paused producer resumes with its position 0 (lap 0).
        assert!(!r.fill(0, &ev(7)), "a skipped producer publishes nothing");
        assert_eq!(r.overflows(), overflows + 1, "and says an event was lost");
        assert_eq!(
            r.pop(0, &mut hole).unwrap(),
            Some(ev(2)),
            "the next lap's event is whole"
        );
    }

    #[test]
    fn hosts_agree_on_their_index() {
        let hosts: Vec<HostEntry> = (0..4).map(|_| host()).collect();
        let a = host_index(&hosts, 42, "a").unwrap();
        let b = host_index(&hosts, 46, "b").unwrap(); // same start slot (mod 4)
        assert_ne!(a, b);
        assert_eq!(host_index(&hosts, 42, "a"), Some(a));
        assert_eq!(host_index(&hosts, 46, "b"), Some(b));
        host_index(&hosts, 7, "c").unwrap();
        host_index(&hosts, 8, "d").unwrap();
        assert_eq!(host_index(&hosts, 9, "e"), None);
    }
}
