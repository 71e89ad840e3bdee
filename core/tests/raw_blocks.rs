//! Raw heap blocks (`Store::alloc_block`): accounted in the used bytes like objects, freed on
//! drop, and never freed as leaks by fsck or the orphan collector.

mod common;

use std::sync::Arc;
use std::time::Duration;

use gismo_core::store::{CreateInfo, HeapBlock, ObjectId, Store, StoreError};

fn store(name: &str, size: u64) -> Arc<Store> {
    common::memfd_store(name, size)
}
#[test]
fn blocks_are_accounted_disjoint_and_freed_on_drop() {
    let s = store("raw-account", 32 << 20);
    let sizes = [0u64, 1, 100, 128, 129, 3000, 16384, 16385, 20_000, 300_000];
    let mut blocks: Vec<HeapBlock> = Vec::new();
    for round in 0..20 {
        for &size in &sizes {
            blocks.push(s.alloc_block(size + round).unwrap());
        }
    }
    let reserved: u64 = blocks.iter().map(HeapBlock::capacity).sum();
    assert_eq!(s.stats().used_bytes, reserved);
    assert_eq!(s.raw_bytes(), reserved);
    assert_eq!(s.stats().allocations, blocks.len() as u64);
    let mut ranges: Vec<(u64, u64)> = blocks
        .iter()
        .map(|b| {
            assert!(b.capacity() >= b.size().max(1));
            assert_eq!(b.offset() % 64, 0);
            (b.offset(), b.offset() + b.capacity())
        })
        .collect();
    ranges.sort_unstable();
    for w in ranges.windows(2) {
        assert!(w[0].1 <= w[1].0, "blocks overlap: {w:?}");
    }
    // Free every other block, then the rest: the counters follow exactly.
    let mut i = 0;
    blocks.retain(|_| {
        i += 1;
        i % 2 == 0
    });
    let reserved: u64 = blocks.iter().map(HeapBlock::capacity).sum();
    assert_eq!(s.stats().used_bytes, reserved);
    assert_eq!(s.raw_bytes(), reserved);
    drop(blocks);
    assert_eq!(s.stats().used_bytes, 0);
    assert_eq!(s.raw_bytes(), 0);
    assert_eq!(s.stats().allocations, 0);
    let r = s.fsck(false);
    assert!(r.is_clean(), "{:?}", r.problems);
}

#[test]
fn a_full_heap_is_a_typed_error() {
    let s = store("raw-full", 8 << 20);
    let heap = s.stats().heap_bytes;
    assert!(matches!(
        s.alloc_block(heap + 1),
        Err(StoreError::StoreFull { .. })
    ));
    assert!(matches!(
        s.alloc_block(u64::MAX),
        Err(StoreError::StoreFull { .. })
    ));
    let mut held = Vec::new();
    let err = loop {
        match s.alloc_block(1 << 20) {
            Ok(b) => held.push(b),
            Err(e) => break e,
        }
    };
    assert!(matches!(err, StoreError::StoreFull { .. }), "{err}");
    assert!(!held.is_empty());
    // A failed allocation reserves nothing.
    let reserved: u64 = held.iter().map(HeapBlock::capacity).sum();
    assert_eq!(s.raw_bytes(), reserved);
    assert_eq!(s.stats().used_bytes, reserved);
    drop(held);
    assert_eq!(s.stats().used_bytes, 0);
    assert!(s.alloc_block(1 << 20).is_ok());
}

#[test]
fn fsck_and_the_orphan_collector_leave_raw_blocks_alone() {
    let s = store("raw-fsck", 32 << 20);
    let c = s.connect("t").unwrap();
    c.create(&ObjectId::from_u64(1), 5000, b"", &CreateInfo::default())
        .unwrap()
        .seal()
        .unwrap();
    let blocks: Vec<HeapBlock> = [100u64, 5000, 300_000]
        .iter()
        .map(|&n| s.alloc_block(n).unwrap())
        .collect();
    let used = s.stats().used_bytes;
    // They look like leaks ...
    let r = s.fsck(false);
    assert!(!r.is_clean());
    // ... but neither repair nor the collector frees them.
    let _ = s.fsck(true);
    assert_eq!(s.stats().used_bytes, used);
    let m = s.begin_maintenance(c.maintainer_id(), 5000).unwrap();
    assert_eq!(s.collect_orphans(&m, Duration::from_millis(50)), 0);
    drop(m);
    assert_eq!(s.stats().used_bytes, used);
    drop(blocks);
    let r = s.fsck(false);
    assert!(r.is_clean(), "{:?}", r.problems);
    c.delete(&ObjectId::from_u64(1)).unwrap();
    assert_eq!(s.stats().used_bytes, 0);
}
