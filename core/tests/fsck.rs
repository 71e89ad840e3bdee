//! fsck, and hostile metadata: random bytes written into the directory, the allocator metadata
//! and the client table never make a client, the tools or fsck crash or touch memory outside the
//! region; fsck reports, clients get typed errors.

use std::sync::Arc;
use std::time::Duration;

use gismo_core::format::SectionKind;
use gismo_core::store::fsck::Problem;
use gismo_core::store::{CreateInfo, ObjectId, Store};
use gismo_platform::region::{Region, RegionOptions, RegionSpec};
use proptest::prelude::*;

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

fn populate(s: &Arc<Store>, n: u64) -> Vec<ObjectId> {
    let c = s.connect("populate").unwrap();
    let sizes = [0u64, 100, 3000, 16384, 20_000, 300_000];
    let ids: Vec<ObjectId> = (0..n).map(ObjectId::from_u64).collect();
    for (i, id) in ids.iter().enumerate() {
        let size = sizes[i % sizes.len()];
        let mut b = c.create(id, size, b"meta", &CreateInfo::default()).unwrap();
        b.data_mut().fill(i as u8);
        b.seal().unwrap();
    }
    for id in ids.iter().step_by(3) {
        c.delete(id).unwrap();
    }
    ids
}

/// Writes `bytes` at `offset` of the region (a hostile host would).
fn scribble(s: &Store, offset: u64, bytes: &[u8]) {
    assert!(offset as usize + bytes.len() <= s.region().len());
    // SAFETY: in bounds (checked); the test's clients are idle; any byte pattern is allowed in
    // metadata by design (that is what is being tested).
    unsafe {
        std::ptr::copy_nonoverlapping(
            bytes.as_ptr(),
            s.region().as_ptr().add(offset as usize),
            bytes.len(),
        )
    };
}

#[test]
fn a_used_region_is_clean() {
    let s = store("fsck-clean", 64 << 20);
    populate(&s, 60);
    let r = s.fsck(false);
    assert!(r.is_clean(), "{:?}", r.problems);
    assert_eq!(r.objects, 40);
}

#[test]
fn a_lost_slot_is_a_leak_and_repair_frees_it() {
    let s = store("fsck-leak", 64 << 20);
    let c = s.connect("t").unwrap();
    for (i, size) in [(1u64, 1000u64), (2, 500_000)] {
        c.create(&ObjectId::from_u64(i), size, b"", &CreateInfo::default())
            .unwrap()
            .seal()
            .unwrap();
    }
    // Lose both slots (as if their state words were wiped): the payloads are now unaccounted.
    for o in s.list() {
        let slot = s.layout().section(SectionKind::Directory).offset + o.index as u64 * 128;
        scribble(&s, slot, &[0u8; 8]);
    }
    let r = s.fsck(false);
    assert!(
        r.problems.iter().any(|p| matches!(
            p,
            Problem::LeakedBlock {
                class_size: 1024,
                ..
            }
        )),
        "{:?}",
        r.problems
    );
    assert!(
        r.problems
            .iter()
            .any(|p| matches!(p, Problem::LeakedPages { pages: 123, .. })),
        "{:?}",
        r.problems
    );
    assert!(r.problems.iter().all(Problem::repairable));
    let fixed = s.fsck(true);
    assert!(fixed.repaired > 0);
    let again = s.fsck(false);
    assert!(again.is_clean(), "after repair: {:?}", again.problems);
    assert_eq!(s.stats().used_bytes, 0);
}

#[test]
fn an_object_in_a_free_block_is_reported_not_repaired() {
    let s = store("fsck-free", 16 << 20);
    let c = s.connect("t").unwrap();
    c.create(&ObjectId::from_u64(1), 500_000, b"", &CreateInfo::default())
        .unwrap()
        .seal()
        .unwrap();
    // Clear the page bitmap: the live object now sits in "free" pages.
    let bitmap = s.layout().section(SectionKind::PageBitmap);
    scribble(&s, bitmap.offset, &vec![0u8; bitmap.len as usize]);
    let r = s.fsck(true);
    assert!(
        r.problems
            .iter()
            .any(|p| matches!(p, Problem::MarkedFree { .. })),
        "{:?}",
        r.problems
    );
    assert!(!s.fsck(false).is_clean());
}

/// Stale page-bitmap summary bits (as a process killed between a page word's change and its
/// summary update leaves them, or garbage) are reported as repairable and repaired; the heap's
/// free space stays usable meanwhile.
#[test]
fn a_stale_page_summary_is_reported_and_repaired() {
    let s = store("fsck-summary", 16 << 20);
    populate(&s, 30);
    assert!(s.fsck(false).is_clean());
    let bitmap = s.layout().section(SectionKind::PageBitmap);
    let g = s.layout().geometry;
    let summary_at = bitmap.offset + g.heap_pages.div_ceil(64) * 8;
    let summary_len = bitmap.offset + bitmap.len - summary_at;
    assert!(
        summary_len >= 16,
        "the summary follows the bitmap in its section"
    );
    // Every word "full": nothing looks free.
    scribble(&s, summary_at, &vec![0xffu8; summary_len as usize]);
    let r = s.fsck(false);
    assert!(
        r.problems
            .iter()
            .any(|p| matches!(p, Problem::StaleSummary { words, .. } if *words > 0)),
        "{:?}",
        r.problems
    );
    assert!(
        r.problems.iter().all(Problem::repairable),
        "{:?}",
        r.problems
    );
    // Allocations still find the free pages (the fallback scan), and repair the summary.
    let c = s.connect("after").unwrap();
    c.create(
        &ObjectId::from_u64(500),
        200_000,
        b"",
        &CreateInfo::default(),
    )
    .unwrap()
    .seal()
    .unwrap();
    scribble(&s, summary_at, &vec![0xffu8; summary_len as usize]);
    let fixed = s.fsck(true);
    assert!(fixed.repaired > 0);
    assert!(s.fsck(false).is_clean(), "{:?}", s.fsck(false).problems);
}

/// Stale nodes of the free-run index alone (the summary bits right): reported with the count of
/// stale nodes, repairable, and repaired; an allocation meanwhile still succeeds.
#[test]
fn a_stale_free_run_index_is_reported_and_repaired() {
    let s = store("fsck-run-index", 64 << 20);
    populate(&s, 30);
    assert!(s.fsck(false).is_clean());
    let bitmap = s.layout().section(SectionKind::PageBitmap);
    let words = s.layout().geometry.heap_pages.div_ceil(64);
    // After the bitmap and the two summary arrays: the index, a leaf (4 words) per 64 words.
    let index_at = bitmap.offset + (words + 2 * words.div_ceil(64)) * 8;
    let index_len = bitmap.offset + bitmap.len - index_at;
    assert_eq!(
        index_len,
        4 * 8 * words.div_ceil(64).max(1) + if words > 64 { 32 } else { 0 }
    );
    // "Wholly free" everywhere (all zero): the index hides every used page.
    scribble(&s, index_at, &vec![0u8; index_len as usize]);
    let r = s.fsck(false);
    assert!(
        r.problems
            .iter()
            .any(|p| matches!(p, Problem::StaleSummary { words: 0, nodes } if *nodes > 0)),
        "{:?}",
        r.problems
    );
    assert!(
        r.problems.iter().all(Problem::repairable),
        "{:?}",
        r.problems
    );
    let c = s.connect("after").unwrap();
    c.create(
        &ObjectId::from_u64(600),
        200_000,
        b"",
        &CreateInfo::default(),
    )
    .unwrap()
    .seal()
    .unwrap();
    scribble(&s, index_at, &vec![0u8; index_len as usize]);
    assert!(s.fsck(true).repaired > 0);
    assert!(s.fsck(false).is_clean(), "{:?}", s.fsck(false).problems);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    /// Random bytes anywhere in the metadata: nothing panics, nothing reads or writes outside the
    /// region (payload offsets are validated before use), and every call returns.
    #[test]
    fn hostile_metadata_never_crashes(
        writes in proptest::collection::vec((0usize..4, any::<u64>(), proptest::collection::vec(any::<u8>(), 1..64)), 1..24)
    ) {
        let s = store("fsck-hostile", 16 << 20);
        let ids = populate(&s, 30);
        for (section, at, bytes) in &writes {
            let kind = [SectionKind::Directory, SectionKind::Chunks, SectionKind::Clients, SectionKind::PageBitmap][*section];
            let sec = s.layout().section(kind);
            let off = sec.offset + at % sec.len.saturating_sub(bytes.len() as u64).max(1);
            scribble(&s, off, bytes);
        }
        let _ = s.fsck(false);
        let _ = s.list();
        let _ = s.stats();
        let _ = s.clients();
        if let Ok(c) = s.connect("after") {
            for id in &ids {
                if let Ok(Some(o)) = c.get(id, Some(Duration::ZERO)) {
                    // A payload handed out lies inside the heap of this mapping.
                    let heap = s.layout().section(SectionKind::Heap);
                    let base = s.region().as_ptr() as usize;
                    let p = o.data().as_ptr() as usize;
                    prop_assert!(p >= base + heap.offset as usize);
                    prop_assert!(p + o.data().len() + o.metadata().len() <= base + heap.end() as usize);
                    let _ = o.data().iter().fold(0u8, |a, b| a ^ b);
                }
                let _ = c.contains(id);
                let _ = c.delete(id);
            }
            let _ = c.create(&ObjectId::from_u64(999), 5000, b"", &CreateInfo::default()).map(|b| b.seal());
        }
        let _ = s.fsck(false);
    }
}
