//! Disconnect (and `release_all`) give back everything a client holds: its references, and its
//! unsealed objects aborted — those it still references (found from its own reference table,
//! without a directory scan) and those whose reference it released before sealing (found by the
//! scan it falls back to then).

mod common;

use std::sync::Arc;
use std::time::Duration;

use gismo_core::store::{CreateInfo, ObjectId, Store};

fn store(name: &str) -> Arc<Store> {
    common::memfd_store(name, 32 << 20)
}
fn sealed(store: &Arc<Store>, id: u64, size: u64) {
    let c = store.connect("maker").unwrap();
    let id = ObjectId::from_u64(id);
    c.create(&id, size, b"m", &CreateInfo::default())
        .unwrap()
        .seal() // drops the creator's reference
        .unwrap();
}

fn gone(store: &Arc<Store>, id: u64) -> bool {
    store.lookup_summary(&ObjectId::from_u64(id)).is_none()
}

/// Creates `id` unsealed and keeps it (and its reference) past the buffer's drop.
fn unsealed(c: &gismo_core::store::Client, id: u64, size: u64) {
    let buf = c
        .create(&ObjectId::from_u64(id), size, &[], &CreateInfo::default())
        .unwrap();
    std::mem::forget(buf);
}

#[test]
fn disconnect_aborts_referenced_unsealed_objects_and_releases_references() {
    let s = store("disc-referenced");
    for id in 1..=4 {
        sealed(&s, id, 3000);
    }
    let baseline = s.used_bytes();
    let c = s.connect("holder").unwrap();
    for id in 1..=4 {
        c.get_raw(&ObjectId::from_u64(id), Some(Duration::ZERO))
            .unwrap()
            .unwrap();
    }
    unsealed(&c, 10, 100);
    unsealed(&c, 11, 200_000);
    assert!(s.used_bytes() > baseline);
    c.disconnect();
    assert!(gone(&s, 10) && gone(&s, 11), "unsealed objects survived");
    for id in 1..=4 {
        let o = s.lookup_summary(&ObjectId::from_u64(id)).unwrap();
        assert_eq!(o.refcount, 0, "{o:?}");
    }
    assert_eq!(s.used_bytes(), baseline);
    assert!(s.clients().is_empty(), "{:?}", s.clients());
}

#[test]
fn disconnect_aborts_unsealed_objects_released_before_their_seal() {
    let s = store("disc-released");
    let baseline = s.used_bytes();
    let c = s.connect("creator").unwrap();
    unsealed(&c, 20, 5000);
    unsealed(&c, 21, 70_000);
    // Both references go before the seal: the objects are in no table of ours now.
    c.release(&ObjectId::from_u64(20)).unwrap();
    c.release(&ObjectId::from_u64(21)).unwrap();
    assert!(!gone(&s, 20) && !gone(&s, 21));
    c.release_all();
    assert!(
        gone(&s, 20) && gone(&s, 21),
        "released unsealed objects survived"
    );
    assert_eq!(s.used_bytes(), baseline);
    // The client goes on; a later disconnect finds nothing more to do.
    unsealed(&c, 22, 64);
    c.disconnect();
    assert!(gone(&s, 22));
    assert_eq!(s.used_bytes(), baseline);
}

#[test]
fn another_clients_unsealed_objects_survive_a_disconnect() {
    let s = store("disc-other");
    let a = s.connect("a").unwrap();
    let b = s.connect("b").unwrap();
    unsealed(&a, 30, 100);
    unsealed(&b, 31, 100);
    b.release(&ObjectId::from_u64(31)).unwrap();
    a.release(&ObjectId::from_u64(30)).unwrap();
    // b's disconnect scans (its object lost its reference) and must abort only its own.
    b.disconnect();
    assert!(gone(&s, 31));
    assert!(
        !gone(&s, 30),
        "another client's unsealed object was aborted"
    );
    a.disconnect();
    assert!(gone(&s, 30));
}
