//! The owner-node table (core review L6): a full table is counted, not silent, and an entry a
//! writer claimed and never published is reported by fsck and freed by its repair.

mod common;

use gismo_core::format::{FormatOptions, SectionKind};
use gismo_core::store::fsck::Problem;
use gismo_core::store::{CreateInfo, ObjectId, OwnerAddress, Store};

fn owner(i: u8) -> CreateInfo {
    CreateInfo {
        owner: OwnerAddress {
            raylet_id: [i; 28],
            ip: format!("10.0.0.{i}"),
            ..OwnerAddress::default()
        },
        ..CreateInfo::default()
    }
}

fn small_table_store(name: &str) -> std::sync::Arc<Store> {
    let opts = FormatOptions {
        node_capacity: 16,
        ..FormatOptions::default()
    };
    Store::format(common::memfd_region(name, 16 << 20), &opts).unwrap()
}

#[test]
fn creates_past_a_full_owner_node_table_are_counted() {
    let s = small_table_store("nodes-full");
    let c = s.connect("maker").unwrap();
    for i in 1..=17u8 {
        c.create(&ObjectId::from_u64(u64::from(i)), 100, b"", &owner(i))
            .unwrap()
            .seal()
            .unwrap();
    }
    assert_eq!(s.stats().owner_nodes_dropped, 1);
    let first = s.lookup_summary(&ObjectId::from_u64(1)).unwrap();
    assert_eq!(first.owner_node.unwrap().ip, "10.0.0.1");
    let last = s.lookup_summary(&ObjectId::from_u64(17)).unwrap();
    assert!(last.owner_node.is_none(), "{last:?}");
    // An owner already in the table is still recorded.
    c.create(&ObjectId::from_u64(18), 100, b"", &owner(3))
        .unwrap()
        .seal()
        .unwrap();
    assert_eq!(s.stats().owner_nodes_dropped, 1);
}

#[test]
fn an_entry_claimed_and_never_published_is_reported_and_repaired() {
    let s = small_table_store("nodes-stuck");
    let nodes = s.layout().section(SectionKind::Nodes).offset as usize;
    let entry = 5usize;
    let at = nodes + entry * gismo_core::format::layout::NODE_ENTRY_SIZE as usize;
    assert!(at + 8 <= s.region().len());
    // SAFETY: in bounds (checked), 8-aligned (sections and entries are); no client of this test
    // touches the node table meanwhile. A writer killed right after its claim leaves this word.
    unsafe { std::ptr::write_volatile(s.region().as_ptr().add(at) as *mut u64, 1) };
    let report = s.fsck(false);
    assert!(
        report.problems.contains(&Problem::StuckNode {
            index: entry,
            state: 1
        }),
        "{:?}",
        report.problems
    );
    let repaired = s.fsck(true);
    assert_eq!(repaired.repaired, 1, "{:?}", repaired.problems);
    let after = s.fsck(false);
    assert!(after.is_clean(), "{:?}", after.problems);
    // Every entry is usable again: 16 distinct owners fit.
    let c = s.connect("maker").unwrap();
    for i in 1..=16u8 {
        c.create(&ObjectId::from_u64(u64::from(i)), 100, b"", &owner(i))
            .unwrap()
            .seal()
            .unwrap();
    }
    assert_eq!(s.stats().owner_nodes_dropped, 0);
}
