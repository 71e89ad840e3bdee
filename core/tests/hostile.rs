//! Hostile or corrupt regions (issue 15 §3): whatever bytes another mapper leaves in the metadata,
//! the store never reads or writes outside the region, never panics and never loops forever; it
//! returns typed errors, and fsck flags what it finds.
//!
//! Every operation on a scribbled region runs under [`watched`]: on another thread, with
//! `catch_unwind`, and with a deadline, so that a panic and a hang are both test failures (an
//! out-of-bounds access kills the test binary, which fails too).
//!
//! `GISMO_FUZZ_CASES=N` runs the fuzz property with N cases instead of the default.

use std::mem::offset_of;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use gismo_core::format::layout::{CHUNK_DESC_SIZE, DIR_SLOT_SIZE, EVENT_SIZE, HOST_ENTRY_SIZE};
use gismo_core::format::SectionKind;
use gismo_core::store::directory::Slot;
use gismo_core::store::events::HostEntry;
use gismo_core::store::fsck::Problem;
use gismo_core::store::{CreateInfo, ObjectId, Store, StoreError};
use gismo_platform::region::{Region, RegionOptions, RegionSpec};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};

/// How long one watched step may take (debug build, a loaded 2-core machine) before it counts
/// as a hang. Generous on purpose: the bound is there to catch endless loops, not to time work.
const HANG: Duration = Duration::from_secs(60);

fn store(name: &str, size: u64) -> Arc<Store> {
    let region = Region::create(
        &RegionSpec::Memfd {
            name: name.into(),
            huge_pages: false,
        },
        size,
        &RegionOptions::default(),
    )
    .unwrap();
    Store::format(region, &Default::default()).unwrap()
}

/// Runs `f` on another thread; a panic or a run past [`HANG`] fails the test with `what`.
fn watched<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(catch_unwind(AssertUnwindSafe(f)));
    });
    match rx.recv_timeout(HANG) {
        Ok(Ok(v)) => v,
        Ok(Err(_)) => panic!("{what}: panicked on a corrupt region"),
        Err(_) => panic!("{what}: did not return within {HANG:?} (endless loop?)"),
    }
}

/// Writes `bytes` at region offset `offset` (what a hostile or broken host would do).
fn scribble(s: &Store, offset: u64, bytes: &[u8]) {
    assert!(offset as usize + bytes.len() <= s.region().len());
    // SAFETY: in bounds (checked); any byte pattern is allowed in metadata by design (that is
    // what is being tested); the test's own clients are idle while it writes.
    unsafe {
        std::ptr::copy_nonoverlapping(
            bytes.as_ptr(),
            s.region().as_ptr().add(offset as usize),
            bytes.len(),
        )
    };
}

fn read_u64(s: &Store, offset: u64) -> u64 {
    assert!(offset as usize + 8 <= s.region().len() && offset % 8 == 0);
    // SAFETY: in bounds and aligned (checked); a plain read of metadata the test owns.
    unsafe { std::ptr::read_volatile(s.region().as_ptr().add(offset as usize) as *const u64) }
}

fn slot_offset(s: &Store, index: usize) -> u64 {
    s.layout().section(SectionKind::Directory).offset + index as u64 * DIR_SLOT_SIZE
}

fn sealed(s: &Arc<Store>, id: u64, size: u64, meta: &[u8]) -> usize {
    let c = s.connect("sealer").unwrap();
    let mut b = c
        .create(&ObjectId::from_u64(id), size, meta, &CreateInfo::default())
        .unwrap();
    b.data_mut().fill(7);
    b.seal().unwrap();
    s.lookup_summary(&ObjectId::from_u64(id)).unwrap().index
}

/// The reproduction from issue 15: `data_size = u64::MAX`, `metadata_size = 1` wraps to a zero
/// length that passes the heap range check; `get` built a 2^64-byte slice (a debug build panicked
/// on the addition) and fsck counted "1 B live".
#[test]
fn a_wrapped_payload_size_is_a_typed_error_and_flagged() {
    let s = store("hostile-wrap", 16 << 20);
    let index = sealed(&s, 1, 1000, b"");
    let base = slot_offset(&s, index);
    scribble(
        &s,
        base + offset_of!(Slot, data_size) as u64,
        &u64::MAX.to_le_bytes(),
    );
    scribble(
        &s,
        base + offset_of!(Slot, metadata_size) as u64,
        &1u32.to_le_bytes(),
    );
    let s2 = Arc::clone(&s);
    let got = watched("get", move || {
        let c = s2.connect("getter").unwrap();
        c.get(&ObjectId::from_u64(1), Some(Duration::ZERO))
            .map(|o| o.map(|o| o.data().len()))
    });
    assert!(matches!(got, Err(StoreError::Corrupt(_))), "{got:?}");
    let s2 = Arc::clone(&s);
    let r = watched("fsck", move || s2.fsck(false));
    assert!(
        r.problems.iter().any(|p| matches!(
            p,
            Problem::BadObjectRange { slot, .. } if *slot == index
        )),
        "{:?}",
        r.problems
    );
    assert_eq!(
        r.live_bytes, 0,
        "a wrapped size must not count as live bytes"
    );
    assert!(!r.is_clean());
    // Deleting it neither panics nor frees a block of a made-up size.
    let s2 = Arc::clone(&s);
    watched("delete", move || {
        let c = s2.connect("deleter").unwrap();
        let _ = c.delete(&ObjectId::from_u64(1));
    });
}

/// A directory full of random bytes is not "clean": slots in unknown states are flagged, not
/// skipped.
#[test]
fn a_random_directory_is_not_clean() {
    let s = store("hostile-random-dir", 16 << 20);
    sealed(&s, 1, 1000, b"m");
    let dir = s.layout().section(SectionKind::Directory);
    let mut rng = rand::rngs::SmallRng::seed_from_u64(15);
    let bytes: Vec<u8> = (0..dir.len).map(|_| rng.gen()).collect();
    scribble(&s, dir.offset, &bytes);
    let s2 = Arc::clone(&s);
    let r = watched("fsck", move || s2.fsck(false));
    assert!(!r.is_clean(), "a random directory was reported clean");
    assert!(
        r.problems
            .iter()
            .any(|p| matches!(p, Problem::BadSlot { .. })),
        "{:?}",
        &r.problems[..r.problems.len().min(5)]
    );
    let s2 = Arc::clone(&s);
    watched("operations", move || {
        let c = s2.connect("after").unwrap();
        for i in 0..64 {
            let id = ObjectId::from_u64(i);
            let _ = c
                .get(&id, Some(Duration::ZERO))
                .map(|o| o.map(|o| o.data().len()));
            let _ = c.delete(&id);
        }
        let _ = s2.list();
        let _ = s2.stats();
    });
}

/// A partial-chunk stack that is a cycle of full chunks: create used to pop forever.
#[test]
fn a_cyclic_partial_stack_does_not_hang_create() {
    let s = store("hostile-cycle", 16 << 20);
    let c = s.connect("filler").unwrap();
    // Fill one chunk of the 1024-byte class (64 blocks) completely.
    let ids: Vec<ObjectId> = (0..64).map(|i| ObjectId::from_u64(100 + i)).collect();
    for id in &ids {
        c.create(id, 1000, b"", &CreateInfo::default())
            .unwrap()
            .seal()
            .unwrap();
    }
    let chunk = (s.lookup_summary(&ids[0]).unwrap().offset
        - s.layout().section(SectionKind::Heap).offset)
        / (64 * 1024);
    let class = 10; // CLASSES[10] == 1024
    let control = s.layout().section(SectionKind::Control).offset;
    let chunks = s.layout().section(SectionKind::Chunks).offset;
    // AllocHeads is the control block's first field: 32 stack heads, then 32 hints, each on a
    // 128-byte line of its own (docs/region-format.md).
    scribble(&s, control + class * 128, &(chunk + 1).to_le_bytes());
    scribble(&s, control + (32 + class) * 128, &0u64.to_le_bytes());
    // The chunk's `next` (its descriptor's second word) points at itself.
    scribble(
        &s,
        chunks + chunk * CHUNK_DESC_SIZE + 8,
        &(chunk + 1).to_le_bytes(),
    );
    let s2 = Arc::clone(&s);
    let r = watched("create", move || {
        let c = s2.connect("creator").unwrap();
        c.create(&ObjectId::from_u64(1), 1000, b"", &CreateInfo::default())
            .map(|b| b.seal())
            .map(|_| ())
    });
    // Either a new chunk served it or a typed error came back; both are fine, a hang is not.
    let _ = r;
    let s2 = Arc::clone(&s);
    let report = watched("fsck", move || s2.fsck(false));
    assert!(
        report
            .problems
            .iter()
            .any(|p| matches!(p, Problem::BadPartialStack { .. })),
        "{:?}",
        report.problems
    );
    drop(c);
}

/// An event cell whose sequence number is ahead of the ring's tail: seal used to spin forever.
#[test]
fn a_corrupt_event_cell_does_not_hang_seal() {
    let s = store("hostile-ring", 16 << 20);
    let c = s.connect("t").unwrap();
    let host = c.host_index() as u64;
    let ring_cap = u64::from(s.layout().geometry.ring_capacity);
    let hosts = s.layout().section(SectionKind::Hosts).offset;
    let events = s.layout().section(SectionKind::Events).offset;
    let tail = read_u64(
        &s,
        hosts + host * HOST_ENTRY_SIZE + offset_of!(HostEntry, tail) as u64,
    );
    let cell = events + (host * ring_cap + tail % ring_cap) * EVENT_SIZE;
    scribble(&s, cell, &(u64::MAX - 3).to_le_bytes());
    drop(c);
    let s2 = Arc::clone(&s);
    watched("create + seal", move || {
        let c = s2.connect("t").unwrap();
        c.create(&ObjectId::from_u64(1), 100, b"", &CreateInfo::default())
            .unwrap()
            .seal()
            .unwrap();
        c.delete(&ObjectId::from_u64(1)).unwrap();
    });
}

/// A reference word with a zero slot field: the reaper decoded `(w >> 32) - 1`, which underflows.
#[test]
fn a_corrupt_reference_word_does_not_panic_the_reaper() {
    let s = store("hostile-refs", 16 << 20);
    let c = s.connect("victim").unwrap();
    let index = c.index() as u64;
    let per = u64::from(s.layout().geometry.refs_per_client);
    let refs = s.layout().section(SectionKind::ClientRefs).offset;
    for k in 0..4 {
        scribble(
            &s,
            refs + (index * per + k) * 8,
            &0x0000_0000_1234_0005u64.to_le_bytes(),
        );
    }
    let s2 = Arc::clone(&s);
    watched("clients + reap", move || {
        let _ = s2.clients();
        reap_forcibly(&s2, index as usize);
    });
    drop(c);
}

/// A chunk with free blocks that is on no stack and not the hint (core review M4): flagged, and
/// `repair` lists it again.
#[test]
fn an_unlisted_chunk_is_flagged_and_repaired() {
    let s = store("hostile-unlisted", 16 << 20);
    let c = s.connect("t").unwrap();
    for i in 0..3 {
        c.create(&ObjectId::from_u64(i), 1000, b"", &CreateInfo::default())
            .unwrap()
            .seal()
            .unwrap();
    }
    assert!(s.fsck(false).is_clean());
    // Lose the hint of the 1024-byte class (as a SIGKILL right after `new_chunk` would).
    let control = s.layout().section(SectionKind::Control).offset;
    scribble(&s, control + (32 + 10) * 128, &0u64.to_le_bytes());
    let r = s.fsck(false);
    assert!(
        r.problems
            .iter()
            .any(|p| matches!(p, Problem::UnlistedChunk { used: 3, .. })),
        "{:?}",
        r.problems
    );
    assert!(r.problems.iter().all(Problem::repairable));
    let fixed = s.fsck(true);
    assert!(fixed.repaired > 0);
    let again = s.fsck(false);
    assert!(again.is_clean(), "after repair: {:?}", again.problems);
    // The relisted chunk serves the next create of its class.
    let before = s.stats().used_bytes;
    c.create(&ObjectId::from_u64(9), 1000, b"", &CreateInfo::default())
        .unwrap()
        .seal()
        .unwrap();
    assert_eq!(s.stats().used_bytes, before + 1024);
    assert!(s.fsck(false).is_clean());
}

// ---- the fuzz property ------------------------------------------------------------------------

/// Values that break naive arithmetic, written as whole aligned words.
const FORGED: [u64; 12] = [
    0,
    1,
    2,
    0xffff,
    0xffff_ffff,
    0x1_0000_0000,
    0x1_0000_0001,
    u64::MAX,
    u64::MAX - 1,
    1 << 63,
    (1 << 63) - 1,
    0x0000_0001_0000_0000 | 0xffff,
];

#[derive(Clone, Debug)]
enum Write {
    /// Random bytes at a random offset of the section.
    Bytes(u64, Vec<u8>),
    /// A forged word (from [`FORGED`], or `FORGED[i] + region-derived value`) at an aligned
    /// offset in the section's "hot" part, where live state sits.
    Word { at: u64, value: usize, plus: u8 },
}

fn write_strategy() -> impl Strategy<Value = (usize, Write)> {
    let bytes = (any::<u64>(), proptest::collection::vec(any::<u8>(), 1..48))
        .prop_map(|(at, b)| Write::Bytes(at, b));
    let word = (any::<u64>(), 0..FORGED.len(), 0u8..4).prop_map(|(at, value, plus)| Write::Word {
        at,
        value,
        plus,
    });
    (0..SectionKind::COUNT, prop_oneof![bytes, word])
}

/// Where live state sits in a section of a small populated region (so forged words hit it).
fn hot(s: &Store, kind: SectionKind, live_slots: &[usize]) -> (u64, u64) {
    let sec = s.layout().section(kind);
    let g = s.layout().geometry;
    let (start, len) = match kind {
        SectionKind::Directory if !live_slots.is_empty() => return (0, 0), // per slot, below
        SectionKind::ClientRefs => (0, 2 * u64::from(g.refs_per_client) * 8),
        SectionKind::Events => (0, 2 * u64::from(g.ring_capacity) * EVENT_SIZE),
        SectionKind::Chunks => (0, 16 * CHUNK_DESC_SIZE),
        SectionKind::PageBitmap => (0, 64),
        SectionKind::Clients | SectionKind::Nodes => (0, 4 * 128),
        SectionKind::Hosts => (0, 4 * HOST_ENTRY_SIZE),
        _ => (0, sec.len),
    };
    (sec.offset + start, len.min(sec.len))
}

fn apply(s: &Store, live_slots: &[usize], kind: SectionKind, w: &Write) {
    let sec = s.layout().section(kind);
    match w {
        Write::Bytes(at, b) => {
            let off = sec.offset + at % sec.len.saturating_sub(b.len() as u64).max(1);
            scribble(s, off, b);
        }
        Write::Word { at, value, plus } => {
            let (start, len) = match kind {
                SectionKind::Directory if !live_slots.is_empty() => {
                    let slot = live_slots[(*at as usize / 16) % live_slots.len()];
                    (slot_offset(s, slot), DIR_SLOT_SIZE)
                }
                _ => hot(s, kind, live_slots),
            };
            let off = start + (at % (len / 8).max(1)) * 8;
            let heap = s.layout().section(SectionKind::Heap);
            let base = [0, heap.offset, heap.end(), s.region().len() as u64][*plus as usize];
            scribble(s, off, &FORGED[*value].wrapping_add(base).to_le_bytes());
        }
    }
}

/// Everything a store does, on a region that may be corrupt; results are ignored, only panics,
/// hangs and bad memory accesses count.
fn exercise(s: Arc<Store>, ids: Vec<ObjectId>, holder: usize) {
    // attach: a second, independent attachment of the same region.
    if let Some(fd) = s.region().raw_fd() {
        if let Ok(region) = Region::open(&RegionSpec::Fd(fd), &RegionOptions::default()) {
            let _ = Store::attach(region).map(|other| other.fsck(false));
        }
    }
    let heap = s.layout().section(SectionKind::Heap);
    let base = s.payload_base() as usize;
    if let Ok(c) = s.connect("fuzz") {
        for id in &ids {
            if let Ok(Some(o)) = c.get(id, Some(Duration::ZERO)) {
                // A payload handed out lies inside the heap of this mapping.
                let p = o.data().as_ptr() as usize;
                assert!(p >= base + heap.offset as usize);
                assert!(p + o.data().len() + o.metadata().len() <= base + heap.end() as usize);
                let _ = o.data().iter().fold(0u8, |a, b| a ^ b);
                let _ = o.metadata().iter().fold(0u8, |a, b| a ^ b);
                let _ = o.capacity();
            }
            let _ = c.contains(id);
            let _ = c.held(id);
            let _ = c.release(id);
            let _ = c.delete(id);
        }
        for (i, size) in [100u64, 1000, 5000, 16384, 70_000].into_iter().enumerate() {
            let id = ObjectId::from_u64(1000 + i as u64);
            if let Ok(mut b) = c.create(&id, size, b"meta", &CreateInfo::default()) {
                b.data_mut().fill(1);
                let _ = b.seal();
            }
            let _ = c
                .get(&id, Some(Duration::ZERO))
                .map(|o| o.map(|o| o.data().len()));
            let _ = c.delete(&id);
        }
        let _ = c.evict(1 << 20);
        reap_forcibly(&s, holder);
        if let Ok(m) = s.begin_maintenance(c.maintainer_id(), 5000) {
            let _ = s.finish_orphaned_deletes(&m);
            let _ = s.collect_orphans(&m, Duration::ZERO);
        }
        let _ = s.list();
        let _ = s.stats();
        let _ = s.clients();
        let _ = s.dead_clients(5000);
        let _ = s.leader();
        if s.claim_event_ring(c.host_index() as usize, &c, 5000)
            .is_ok()
        {
            s.release_event_ring(c.host_index() as usize, &c);
        }
        for h in 0..s.layout().geometry.max_hosts as usize {
            if let Some(ring) = s.event_ring(h) {
                let mut hole = None;
                for k in 0..2 * s.layout().geometry.ring_capacity as u64 {
                    if ring.pop(k * 2000, &mut hole).is_ok_and(|e| e.is_none()) {
                        break;
                    }
                }
            }
        }
        c.release_all();
    }
    let _ = s.fsck(false);
    let _ = s.fsck(true);
    let _ = s.fsck(false);
}

/// Reaps client `index` whatever its entry says (the entry word as `clients` reads it), as a
/// maintainer of our own (when one can register and take the lock on this region).
fn reap_forcibly(s: &Arc<Store>, index: usize) {
    let Ok(me) = s.connect("forcible-reaper") else {
        return;
    };
    let Ok(m) = s.begin_maintenance(me.maintainer_id(), 5000) else {
        return;
    };
    if let Some(e) = s.clients().into_iter().find(|e| e.index == index) {
        let judged = gismo_core::store::clients::EntryWord {
            epoch: e.epoch,
            status: e.status,
        };
        let _ = s.reap_client(&m, index, judged);
    }
}

fn fuzz_cases() -> u32 {
    std::env::var("GISMO_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(800)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: fuzz_cases(), failure_persistence: None, .. ProptestConfig::default() })]

    /// Random bytes and forged words in any of the ten sections (the superblock is validated by
    /// attach and left alone): zero panics, zero hangs, zero accesses outside the region.
    #[test]
    fn hostile_sections_never_crash_or_hang(
        writes in proptest::collection::vec(write_strategy(), 1..12)
    ) {
        let s = store("hostile-fuzz", 8 << 20);
        let c = s.connect("populate").unwrap();
        let sizes = [0u64, 100, 3000, 16384, 20_000, 300_000];
        let ids: Vec<ObjectId> = (0..18).map(ObjectId::from_u64).collect();
        for (i, id) in ids.iter().enumerate() {
            let mut b = c.create(id, sizes[i % sizes.len()], b"meta", &CreateInfo::default()).unwrap();
            b.data_mut().fill(i as u8);
            if i % 5 != 4 {
                b.seal().unwrap();
            } else {
                std::mem::forget(b); // left CREATING
            }
        }
        for id in ids.iter().step_by(4) {
            let _ = c.delete(id);
        }
        // A second client holding references (reaped below).
        let holder = s.connect("holder").unwrap();
        for id in ids.iter().skip(1).step_by(3) {
            if let Ok(Some(o)) = holder.get(id, Some(Duration::ZERO)) {
                std::mem::forget(o); // the reference stays recorded in the region
            }
        }
        let holder_index = holder.index();
        let live: Vec<usize> = s.list().iter().map(|o| o.index).collect();
        for (section, w) in &writes {
            apply(&s, &live, SectionKind::ALL[*section], w);
        }
        let s2 = Arc::clone(&s);
        watched("operations on a scribbled region", move || {
            exercise(s2, ids, holder_index);
            // Disconnecting on a corrupt region is an operation too.
            drop(holder);
            drop(c);
        });
    }
}

// ---- the host table (core review M7) -----------------------------------------------------------

fn store_with_hosts(name: &str, max_hosts: u32) -> Arc<Store> {
    let region = Region::create(
        &RegionSpec::Memfd {
            name: name.into(),
            huge_pages: false,
        },
        16 << 20,
        &RegionOptions::default(),
    )
    .unwrap();
    Store::format(
        region,
        &gismo_core::format::FormatOptions {
            max_hosts,
            ..Default::default()
        },
    )
    .unwrap()
}

/// Forges host entry `i`: identity `id`, name `name`.
fn forge_host(s: &Store, i: u64, id: u64, name: &str) {
    let base = s.layout().section(SectionKind::Hosts).offset + i * HOST_ENTRY_SIZE;
    scribble(s, base, &id.to_le_bytes());
    let mut b = [0u8; 64];
    b[..name.len()].copy_from_slice(name.as_bytes());
    scribble(s, base + offset_of!(HostEntry, name) as u64, &b);
}

fn my_host() -> gismo_core::store::clients::HostIdentity {
    gismo_core::store::clients::HostIdentity::current()
}

/// A full host table of hosts that are gone: connect takes over one, preferring an earlier boot
/// of this host, instead of silently using host 0's ring.
#[test]
fn a_full_host_table_reclaims_the_entry_of_a_host_that_is_gone() {
    let s = store_with_hosts("hostile-hosts-reclaim", 2);
    let me = my_host();
    forge_host(&s, 0, 0x1111, "another-host");
    forge_host(&s, 1, me.hash() ^ 0x5555, &me.name); // this host, an earlier boot
    let r = s.fsck(false);
    assert!(
        r.problems
            .iter()
            .any(|p| matches!(p, Problem::StaleHost { host: 1, .. })),
        "{:?}",
        r.problems
    );
    let c = s.connect("t").unwrap();
    assert_eq!(c.host_index(), 1, "the earlier boot's entry is taken over");
    // Every process of this host agrees on it.
    let c2 = s.connect("t2").unwrap();
    assert_eq!(c2.host_index(), 1);
    drop((c, c2));
    // Once no client of the other host is active, its entry can go too.
    forge_host(&s, 1, 0x2222, "a-third-host");
    let c = s.connect("t").unwrap();
    assert!(c.host_index() < 2);
}

/// A host table full of hosts that still have active clients: a typed error, and the client
/// entry is given back.
#[test]
fn a_host_table_full_of_live_hosts_is_a_typed_error() {
    use gismo_core::store::clients::ClientEntry;
    let s = store_with_hosts("hostile-hosts-full", 2);
    let a = s.connect("a").unwrap();
    let b = s.connect("b").unwrap();
    // Move both clients to two other (live) hosts that fill the table (a client names its host
    // by its index in the host table).
    let clients = s.layout().section(SectionKind::Clients).offset;
    for (i, (c, id)) in [(&a, 0x1111u64), (&b, 0x2222)].into_iter().enumerate() {
        forge_host(&s, i as u64, id, &format!("live-{i}"));
        scribble(
            &s,
            clients + c.index() as u64 * 128 + offset_of!(ClientEntry, host_index) as u64,
            &(i as u64).to_le_bytes(),
        );
    }
    let before = s.stats().clients_active;
    let err = s.connect("c").unwrap_err();
    assert!(
        matches!(err, StoreError::HostTableFull { capacity: 2 }),
        "{err:?}"
    );
    assert_eq!(s.stats().clients_active, before);
    drop((a, b));
}

// ---- scale limits (core review L10) ------------------------------------------------------------

/// A derived directory capacity is clamped to what attach accepts, and a heap whose chunk
/// indices would not fit the allocator's 32-bit fields is refused at format time.
#[test]
fn huge_regions_get_a_clamped_directory_or_a_typed_error() {
    use gismo_core::format::{FormatError, FormatOptions, Layout};
    let opts = FormatOptions::default();
    let big = Layout::compute(100 << 40, &opts).expect("100 TiB lays out");
    assert_eq!(big.geometry.dir_capacity, 1 << 31);
    Layout::check_geometry(&big.geometry).expect("and attach would accept it");
    let err = Layout::compute(1 << 50, &opts).unwrap_err();
    assert!(matches!(err, FormatError::TooLarge { .. }), "{err:?}");
}

/// L8: `release(id)` drops the reference this client holds even when the directory lookup
/// cannot find the object (it gives up on a slot whose word keeps changing; here its commit
/// record names another home) — from the client's own reference table, never leaking it.
#[test]
fn release_by_id_finds_a_held_object_the_lookup_cannot() {
    let s = store("gismo-hostile-release-held", 16 << 20);
    let index = sealed(&s, 7, 3000, b"m");
    let c = s.connect("holder").unwrap();
    let id = ObjectId::from_u64(7);
    let r = c.get(&id, Some(Duration::ZERO)).unwrap().unwrap();
    std::mem::forget(r); // a plugin's buffer: released by id later
    let commit_at = slot_offset(&s, index) + 8;
    let commit = read_u64(&s, commit_at);
    scribble(&s, commit_at, &(commit ^ 1).to_le_bytes());
    assert!(
        s.lookup_summary(&id).is_none(),
        "the lookup no longer finds it"
    );
    c.release(&id)
        .expect("released from the client's own table");
    assert!(
        c.release(&id).is_err(),
        "a second release finds nothing to drop"
    );
    scribble(&s, commit_at, &commit.to_le_bytes());
    assert_eq!(
        s.lookup_summary(&id).unwrap().refcount,
        0,
        "the reference is gone"
    );
    c.delete(&id).unwrap();
    c.disconnect();
    assert_eq!(s.stats().used_bytes, 0);
}
