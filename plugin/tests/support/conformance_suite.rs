//! The conformance suite: Plasma's lifecycle rules (`../shared/notes/plugin-lifecycle.md`) checked
//! against any [`ObjectStoreClient`] / [`ObjectStoreRunner`] pair, one function per rule. Each
//! plugin's tests include this file as `#[macro_use] mod conformance_suite;` and instantiate it
//! with [`instantiate_conformance_tests_with_module!`] and a [`Plugin`] that makes clients of one
//! store, so that every rule is its own `#[test]` per plugin (`conformance::<plugin>::<rule>`):
//! `plugins/gismo/tests/conformance.rs` (built-in GISMO), `plugins/plasma/tests/plasma.rs`,
//! `plugins/redis/tests/redis.rs` and `plugins/builtins/tests/plugin_load.rs` (shared-library
//! plugins).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gismo_core::store::{ObjectId, ObjectSource, OwnerAddress};
use gismo_plugin::interface::{
    ObjectInfo, ObjectStoreClient, ObjectStoreRunner, RunnerCallbacks, StatusCode,
};

/// What the suite needs from a plugin under test.
pub trait Plugin {
    fn name(&self) -> &str;
    /// A new client of the plugin's single store.
    fn client(&self) -> Arc<dyn ObjectStoreClient>;
    /// The plugin's runner (already holding its store), not yet started.
    fn runner(&self) -> Box<dyn ObjectStoreRunner>;
    /// Heap bytes of the store (for the full-store checks).
    fn capacity(&self) -> u64;
    /// Whether the store counts every get (GISMO: per-client counts in the region), or, as
    /// Plasma's store does, each *client* once (the client counts its own repeated gets).
    fn store_counts_each_get(&self) -> bool {
        true
    }
    /// Whether a create that does not fit in memory falls back to a file-backed allocation
    /// after the grace period (Plasma's `fallback_directory`), instead of failing with
    /// `ObjectStoreFull`. Such a plugin's runner must report it in `fallback_allocated`.
    fn falls_back_to_files(&self) -> bool {
        false
    }
    /// Whether the store manages a fixed capacity itself: evicts unreferenced objects to make
    /// room, refuses (`ObjectStoreFull`) what cannot fit, and asks the raylet to spill above a
    /// threshold. The memory-pressure and full-store cases run only for such stores. Redis has no
    /// such capacity (its own `maxmemory` policy decides; `docs/redis.md`).
    fn has_fixed_capacity(&self) -> bool {
        true
    }
}

pub fn owner() -> OwnerAddress {
    OwnerAddress {
        raylet_id: [7; 28],
        ip: "10.1.2.3".into(),
        port: 4321,
        worker_id: [9; 28],
    }
}

pub fn put(c: &dyn ObjectStoreClient, id: &ObjectId, data: &[u8], meta: &[u8]) {
    let mut b = c
        .create(
            id,
            &owner(),
            false,
            data.len() as u64,
            meta,
            ObjectSource::CreatedByWorker,
        )
        .unwrap();
    b.as_mut_slice().copy_from_slice(data);
    c.seal(id).unwrap();
    drop(b);
}

pub fn code<T: std::fmt::Debug>(r: Result<T, gismo_plugin::interface::Status>) -> StatusCode {
    r.expect_err("expected an error").code
}

pub fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Instantiates the suite for one plugin: `mod $module` with one `#[test]` per rule, named after
/// the rule, each on a fresh plugin made by evaluating `$make` (an expression whose value
/// implements [`Plugin`] and owns everything the store needs), so a failing rule never hides the
/// others and no rule sees another's objects. In the spirit of iceoryx2's macro of that name:
///
/// ```ignore
/// mod conformance {
///     use super::*;
///     instantiate_conformance_tests_with_module!(gismo, GismoPlugin::memfd(CoherenceMode::Hardware));
/// }
/// ```
/// gives tests `conformance::gismo::seal_twice_is_already_sealed`, ….
macro_rules! instantiate_conformance_tests_with_module {
    ($module:ident, $make:expr) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;
            conformance_tests_for! { $make;
                create_then_get_returns_data_and_metadata,
                create_of_an_existing_id_is_object_exists,
                zero_size_objects_exist,
                seal_of_a_missing_object_is_not_found,
                seal_twice_is_already_sealed,
                abort_after_seal_fails,
                only_the_creator_may_abort,
                abort_before_seal_frees_the_id,
                get_with_timeout_zero_returns_at_once,
                get_of_a_missing_object_waits_for_the_timeout,
                get_waits_for_an_object_sealed_later,
                get_of_an_unsealed_object_waits_for_the_seal,
                contains_only_sealed_objects,
                delete_of_an_object_in_use_waits_for_the_last_release,
                delete_of_an_unsealed_object_waits_for_seal_and_release,
                delete_of_a_missing_object_is_ok,
                release_without_a_reference_fails,
                each_get_is_a_reference_and_disconnect_releases_them,
                disconnect_aborts_unsealed_objects,
                runner_reports_added_objects_with_their_owner,
                spillable_means_sealed_and_held_by_one_client,
                runner_reports_deletes_but_never_aborted_objects,
                runner_reports_its_memory_sizes,
                memory_pressure_calls_full_and_spill,
                full_store_and_eviction,
                memory_copy_copies,
            }
        }
    };
}

/// One `#[test]` per listed rule, calling `conformance_suite::<rule>` on a fresh `$make`.
macro_rules! conformance_tests_for {
    ($make:expr; $($rule:ident),* $(,)?) => {
        $(
            #[test]
            fn $rule() {
                let plugin = $make;
                $crate::conformance_suite::$rule(&plugin);
            }
        )*
    };
}

fn skipped(p: &dyn Plugin, why: &str) {
    println!("conformance: {}: {why}: rule skipped", p.name());
}

/// A sealed object reads back with its data and metadata.
pub fn create_then_get_returns_data_and_metadata(p: &dyn Plugin) {
    let c = p.client();
    let id = ObjectId::random();
    let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
    put(&*c, &id, &data, b"meta!");
    let got = c
        .get(&[id], 0)
        .unwrap()
        .pop()
        .unwrap()
        .expect("sealed object");
    assert_eq!(got.data(), &data[..]);
    assert_eq!(got.metadata(), b"meta!");
}

/// Rule: create of an existing id → ObjectExists, from the creator and from another client.
pub fn create_of_an_existing_id_is_object_exists(p: &dyn Plugin) {
    let c = p.client();
    let id = ObjectId::random();
    put(&*c, &id, b"first", b"");
    let again = c.create(&id, &owner(), false, 10, b"", ObjectSource::CreatedByWorker);
    assert_eq!(code(again), StatusCode::ObjectExists);
    let other = p.client();
    let again = other.create(&id, &owner(), false, 10, b"", ObjectSource::CreatedByWorker);
    assert_eq!(code(again), StatusCode::ObjectExists);
}

/// Zero-size objects exist too.
pub fn zero_size_objects_exist(p: &dyn Plugin) {
    let c = p.client();
    let empty = ObjectId::random();
    put(&*c, &empty, b"", b"");
    let e = c.get(&[empty], 0).unwrap().pop().unwrap().unwrap();
    assert!(e.data().is_empty() && e.metadata().is_empty());
}

/// Seal of an id that was never created → ObjectNotFound.
pub fn seal_of_a_missing_object_is_not_found(p: &dyn Plugin) {
    let c = p.client();
    assert_eq!(
        code(c.seal(&ObjectId::random())),
        StatusCode::ObjectNotFound
    );
}

/// A second seal → ObjectAlreadySealed.
pub fn seal_twice_is_already_sealed(p: &dyn Plugin) {
    let c = p.client();
    let id = ObjectId::random();
    put(&*c, &id, b"x", b"");
    assert_eq!(code(c.seal(&id)), StatusCode::ObjectAlreadySealed);
}

/// Abort after seal fails.
pub fn abort_after_seal_fails(p: &dyn Plugin) {
    let c = p.client();
    let id = ObjectId::random();
    put(&*c, &id, b"x", b"");
    assert!(c.abort(&id).is_err(), "abort after seal must fail");
}

/// Only the creator may abort an unsealed object; the creator's abort still works after
/// another client's was refused.
pub fn only_the_creator_may_abort(p: &dyn Plugin) {
    let c = p.client();
    let a = ObjectId::random();
    let b = c
        .create(&a, &owner(), false, 100, b"", ObjectSource::CreatedByWorker)
        .unwrap();
    drop(b);
    let other = p.client();
    assert!(other.abort(&a).is_err(), "only the creator may abort");
    c.abort(&a).unwrap();
}

/// Abort before seal: as if it never existed; the id can be created again.
pub fn abort_before_seal_frees_the_id(p: &dyn Plugin) {
    let c = p.client();
    let a = ObjectId::random();
    let b = c
        .create(&a, &owner(), false, 100, b"", ObjectSource::CreatedByWorker)
        .unwrap();
    drop(b);
    c.abort(&a).unwrap();
    assert!(!c.contains(&a).unwrap());
    assert!(c.get(&[a], 0).unwrap()[0].is_none());
    put(&*c, &a, b"second life", b"");
}

/// Timeout 0: returns at once with an empty entry and an OK status.
pub fn get_with_timeout_zero_returns_at_once(p: &dyn Plugin) {
    let c = p.client();
    let missing = ObjectId::random();
    let t = Instant::now();
    let r = c.get(&[missing], 0).unwrap();
    assert!(r[0].is_none());
    assert!(t.elapsed() < Duration::from_secs(1));
}

/// A positive timeout on a missing object returns empty after about that long.
pub fn get_of_a_missing_object_waits_for_the_timeout(p: &dyn Plugin) {
    let c = p.client();
    let missing = ObjectId::random();
    let t = Instant::now();
    assert!(c.get(&[missing], 50).unwrap()[0].is_none());
    assert!(t.elapsed() >= Duration::from_millis(45));
}

/// A get waits for an object created and sealed later by another client.
pub fn get_waits_for_an_object_sealed_later(p: &dyn Plugin) {
    let c = p.client();
    let missing = ObjectId::random();
    let id = ObjectId::random();
    let creator = p.client();
    let h = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        put(&*creator, &id, b"late", b"m");
    });
    let got = c.get(&[id, missing], 5_000).unwrap();
    h.join().unwrap();
    assert_eq!(
        got[0].as_ref().expect("waited for the seal").data(),
        b"late"
    );
    assert!(got[1].is_none());
}

/// A get on a created-but-unsealed object waits for the seal (or times out).
pub fn get_of_an_unsealed_object_waits_for_the_seal(p: &dyn Plugin) {
    let c = p.client();
    let u = ObjectId::random();
    let creator = p.client();
    let b = creator
        .create(&u, &owner(), false, 3, b"", ObjectSource::CreatedByWorker)
        .unwrap();
    assert!(c.get(&[u], 20).unwrap()[0].is_none());
    let mut b = b;
    b.as_mut_slice().copy_from_slice(b"abc");
    let h = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(30));
        creator.seal(&u).unwrap();
        drop(b);
    });
    assert_eq!(c.get(&[u], -1).unwrap()[0].as_ref().unwrap().data(), b"abc");
    h.join().unwrap();
}

/// Unsealed objects are not contained; sealed ones are.
pub fn contains_only_sealed_objects(p: &dyn Plugin) {
    let c = p.client();
    let id = ObjectId::random();
    let b = c
        .create(&id, &owner(), false, 8, b"", ObjectSource::CreatedByWorker)
        .unwrap();
    assert!(
        !p.client().contains(&id).unwrap(),
        "unsealed objects are not contained"
    );
    c.seal(&id).unwrap();
    drop(b);
    assert!(p.client().contains(&id).unwrap());
}

/// Rule 8: in use → not deleted now; the holder still reads it; the last release deletes it.
pub fn delete_of_an_object_in_use_waits_for_the_last_release(p: &dyn Plugin) {
    let (a, b) = (p.client(), p.client());
    let id = ObjectId::random();
    put(&*a, &id, b"keep me", b"");
    let held = b.get(&[id], 0).unwrap().pop().unwrap().unwrap();
    a.delete(&[id]).unwrap();
    assert_eq!(held.data(), b"keep me");
    drop(held);
    wait_until("deferred delete", || !a.contains(&id).unwrap());
    assert!(a.get(&[id], 0).unwrap()[0].is_none());
}

/// Unsealed: the delete waits for seal and release.
pub fn delete_of_an_unsealed_object_waits_for_seal_and_release(p: &dyn Plugin) {
    let (a, b) = (p.client(), p.client());
    let u = ObjectId::random();
    let buf = a
        .create(&u, &owner(), false, 4, b"", ObjectSource::CreatedByWorker)
        .unwrap();
    b.delete(&[u]).unwrap();
    a.seal(&u).unwrap();
    drop(buf);
    wait_until("delete after seal and release", || !a.contains(&u).unwrap());
}

/// Deleting something that does not exist is not an error.
pub fn delete_of_a_missing_object_is_ok(p: &dyn Plugin) {
    let a = p.client();
    a.delete(&[ObjectId::random()]).unwrap();
}

/// Rule 2: release without a reference is an error.
pub fn release_without_a_reference_fails(p: &dyn Plugin) {
    let c = p.client();
    let id = ObjectId::random();
    put(&*c, &id, b"ref", b"");
    assert!(c.release(&id).is_err());
}

/// Two gets → two references; each buffer's drop releases one; disconnect gives back the
/// references of buffers that were never dropped.
pub fn each_get_is_a_reference_and_disconnect_releases_them(p: &dyn Plugin) {
    let c = p.client();
    let id = ObjectId::random();
    put(&*c, &id, b"ref", b"");
    let g1 = c.get(&[id], 0).unwrap().pop().unwrap().unwrap();
    let g2 = c.get(&[id], 0).unwrap().pop().unwrap().unwrap();
    c.delete(&[id]).unwrap();
    drop(g1);
    assert!(c.contains(&id).unwrap(), "one reference still held");
    std::mem::forget(g2); // leak the buffer: only disconnect can give the reference back
    assert!(c.contains(&id).unwrap());
    c.disconnect().unwrap();
    let other = p.client();
    wait_until("disconnect releases references", || {
        !other.contains(&id).unwrap()
    });
}

/// Disconnect aborts unsealed objects.
pub fn disconnect_aborts_unsealed_objects(p: &dyn Plugin) {
    let other = p.client();
    let d = p.client();
    let u = ObjectId::random();
    let b = d
        .create(&u, &owner(), false, 4, b"", ObjectSource::CreatedByWorker)
        .unwrap();
    std::mem::forget(b);
    d.disconnect().unwrap();
    let again = other.create(&u, &owner(), false, 4, b"", ObjectSource::CreatedByWorker);
    assert!(again.is_ok(), "aborted by disconnect: the id is free again");
}

/// A started runner with callbacks that record what the store reports.
struct RecordingRunner {
    runner: Box<dyn ObjectStoreRunner>,
    added: Arc<Mutex<Vec<ObjectInfo>>>,
    deleted: Arc<Mutex<Vec<ObjectId>>>,
}

impl RecordingRunner {
    fn start(p: &dyn Plugin) -> RecordingRunner {
        let added: Arc<Mutex<Vec<ObjectInfo>>> = Arc::default();
        let deleted: Arc<Mutex<Vec<ObjectId>>> = Arc::default();
        let (a2, d2) = (added.clone(), deleted.clone());
        let cb = RunnerCallbacks {
            add_object: Arc::new(move |i| a2.lock().unwrap().push(i.clone())),
            delete_object: Arc::new(move |id| d2.lock().unwrap().push(*id)),
            ..RunnerCallbacks::none()
        };
        let runner = p.runner();
        runner.start(&BTreeMap::new(), cb).unwrap();
        RecordingRunner {
            runner,
            added,
            deleted,
        }
    }

    fn wait_added(&self, id: &ObjectId) -> ObjectInfo {
        wait_until("add_object_callback", || {
            self.added
                .lock()
                .unwrap()
                .iter()
                .any(|i| i.object_id == *id)
        });
        self.added
            .lock()
            .unwrap()
            .iter()
            .find(|i| i.object_id == *id)
            .cloned()
            .unwrap()
    }
}

/// A sealed object is reported to the runner's add_object callback with its sizes and owner.
pub fn runner_reports_added_objects_with_their_owner(p: &dyn Plugin) {
    let r = RecordingRunner::start(p);
    let c = p.client();
    let id = ObjectId::random();
    put(&*c, &id, &[1u8; 300], b"md");
    let info = r.wait_added(&id);
    assert_eq!((info.data_size, info.metadata_size), (300, 2));
    assert_eq!(info.owner_ip_address, "10.1.2.3");
    assert_eq!(info.owner_port, 4321);
    assert_eq!(info.owner_raylet_id, [7; 28]);
    assert_eq!(info.owner_worker_id, [9; 28]);
    r.runner.stop();
}

/// Spillable: sealed and held once (the raylet's pin); a second holder makes it a shared copy.
pub fn spillable_means_sealed_and_held_by_one_client(p: &dyn Plugin) {
    let r = RecordingRunner::start(p);
    let runner = &r.runner;
    let c = p.client();
    let id = ObjectId::random();
    put(&*c, &id, &[1u8; 300], b"md");
    r.wait_added(&id);
    // Unreferenced after the put (a plugin may send the creation buffer's release
    // asynchronously: wait for it).
    wait_until("the creator's release", || !runner.is_object_spillable(&id));
    let pin = c.get(&[id], 0).unwrap().pop().unwrap().unwrap();
    assert!(runner.is_object_spillable(&id));
    if p.store_counts_each_get() {
        let second = c.get(&[id], 0).unwrap().pop().unwrap().unwrap();
        assert!(!runner.is_object_spillable(&id));
        drop(second);
        assert!(runner.is_object_spillable(&id));
    }
    // A second holder (another client) makes it a shared copy, not spillable.
    let other = p.client();
    let shared = other.get(&[id], 0).unwrap().pop().unwrap().unwrap();
    assert!(!runner.is_object_spillable(&id));
    drop((pin, shared));
    runner.stop();
}

/// Delete → delete_object_callback; an aborted object never reports either way.
pub fn runner_reports_deletes_but_never_aborted_objects(p: &dyn Plugin) {
    let r = RecordingRunner::start(p);
    let c = p.client();
    let id = ObjectId::random();
    put(&*c, &id, &[1u8; 300], b"md");
    r.wait_added(&id);
    let ab = ObjectId::random();
    let b = c
        .create(&ab, &owner(), false, 4, b"", ObjectSource::CreatedByWorker)
        .unwrap();
    drop(b);
    c.abort(&ab).unwrap();
    c.delete(&[id]).unwrap();
    wait_until("delete_object_callback", || {
        r.deleted.lock().unwrap().contains(&id)
    });
    assert!(!r.added.lock().unwrap().iter().any(|i| i.object_id == ab));
    assert!(!r.deleted.lock().unwrap().contains(&ab));
    r.runner.stop();
}

/// The runner reports its memory: some total, no more available than that, a maximum at least
/// the total.
pub fn runner_reports_its_memory_sizes(p: &dyn Plugin) {
    let r = RecordingRunner::start(p);
    let runner = &r.runner;
    let c = p.client();
    let id = ObjectId::random();
    put(&*c, &id, &[1u8; 300], b"md");
    r.wait_added(&id);
    assert!(runner.total_memory_size() > 0);
    assert!(runner.available_memory() <= runner.total_memory_size());
    assert!(runner.max_memory_size() >= runner.total_memory_size());
    runner.stop();
}

/// Rule 5: above the spilling threshold the runner asks to spill; a create that cannot be
/// served even after eviction calls the full callback (and fails, or falls back to a file).
pub fn memory_pressure_calls_full_and_spill(p: &dyn Plugin) {
    if !p.has_fixed_capacity() {
        skipped(p, "no fixed capacity");
        return;
    }
    use std::sync::atomic::{AtomicUsize, Ordering};
    let (full, spill) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (f2, s2) = (full.clone(), spill.clone());
    let cb = RunnerCallbacks {
        object_store_full: Arc::new(move || {
            f2.fetch_add(1, Ordering::SeqCst);
        }),
        spill_objects: Arc::new(move || {
            s2.fetch_add(1, Ordering::SeqCst);
            false
        }),
        ..RunnerCallbacks::none()
    };
    let runner = p.runner();
    let params: BTreeMap<String, String> =
        [("object_spilling_threshold".to_string(), "0.5".to_string())].into();
    runner.start(&params, cb).unwrap();
    let c = p.client();
    assert_eq!(
        full.load(Ordering::SeqCst),
        0,
        "no pressure yet: no full callback"
    );
    // Pin (hold) objects past the spilling threshold: the runner asks for spilling (rule 5).
    let chunk = p.capacity() / 8;
    let mut pinned = Vec::new();
    for _ in 0..5 {
        let id = ObjectId::random();
        let b = c
            .create(
                &id,
                &owner(),
                false,
                chunk,
                b"",
                ObjectSource::CreatedByWorker,
            )
            .unwrap();
        c.seal(&id).unwrap();
        drop(b);
        pinned.push((id, c.get(&[id], 0).unwrap().pop().unwrap().unwrap()));
    }
    wait_until("spill_objects_callback above the threshold", || {
        spill.load(Ordering::SeqCst) > 0
    });
    // A create that cannot be served even after eviction (everything is pinned): the store is
    // full, and the runner calls the full callback (the raylet's global GC) and asks to spill.
    let big = ObjectId::random();
    let r = c.create(
        &big,
        &owner(),
        false,
        chunk * 4,
        b"",
        ObjectSource::CreatedByWorker,
    );
    if p.falls_back_to_files() {
        // After the grace period the store allocates the object in a file, and counts it.
        let b = r.expect("fallback allocation");
        c.seal(&big).unwrap();
        drop(b);
        assert!(runner.fallback_allocated() >= (chunk * 4) as i64);
        c.delete(&[big]).unwrap();
        wait_until("fallback object deleted", || {
            runner.fallback_allocated() == 0
        });
    } else {
        assert_eq!(code(r), StatusCode::ObjectStoreFull);
    }
    wait_until("object_store_full_callback", || {
        full.load(Ordering::SeqCst) > 0
    });
    runner.stop();
    let ids: Vec<ObjectId> = pinned.iter().map(|(id, _)| *id).collect();
    drop(pinned);
    c.delete(&ids).unwrap();
}

/// Rules 3 and 4: create evicts unreferenced objects (LRU), never referenced ones;
/// `try_create_immediately` never evicts; what cannot fit fails cleanly.
pub fn full_store_and_eviction(p: &dyn Plugin) {
    if !p.has_fixed_capacity() {
        skipped(p, "no fixed capacity");
        return;
    }
    let c = p.client();
    let cap = p.capacity();
    let chunk = cap / 8;
    // Fill with unreferenced objects, then keep one pinned.
    let mut ids = Vec::new();
    for _ in 0..7 {
        let id = ObjectId::random();
        let b = c
            .create(
                &id,
                &owner(),
                false,
                chunk,
                b"",
                ObjectSource::CreatedByWorker,
            )
            .unwrap();
        c.seal(&id).unwrap();
        drop(b);
        ids.push(id);
    }
    let pinned = c.get(&[ids[0]], 0).unwrap().pop().unwrap().unwrap();
    // Rule 3: nothing was evicted while we only created within capacity.
    for id in &ids {
        assert!(c.contains(id).unwrap());
    }
    // try_create_immediately never evicts: a request larger than what is free fails.
    let big = ObjectId::random();
    let r = c.try_create_immediately(
        &big,
        &owner(),
        chunk * 3,
        b"",
        ObjectSource::CreatedByWorker,
    );
    if p.falls_back_to_files() {
        // Plasma serves TryCreateImmediately at once: evicting unreferenced objects (it is a
        // create), then with the fallback allocator; never queued, never failed for memory.
        let b = r.expect("immediate allocation");
        drop(b);
        c.abort(&big).unwrap();
        assert!(
            c.contains(&ids[0]).unwrap(),
            "a referenced object must never be evicted"
        );
    } else {
        assert_eq!(code(r), StatusCode::ObjectStoreFull);
    }
    // create evicts unreferenced objects (LRU), never the pinned one.
    let b = c
        .create(
            &big,
            &owner(),
            false,
            chunk * 3,
            b"",
            ObjectSource::CreatedByWorker,
        )
        .unwrap();
    c.seal(&big).unwrap();
    drop(b);
    assert!(
        c.contains(&ids[0]).unwrap(),
        "a referenced object must never be evicted"
    );
    assert!(
        ids[1..].iter().any(|id| !c.contains(id).unwrap()),
        "something was evicted"
    );
    // A request that cannot fit even after evicting everything evictable fails cleanly.
    let huge = ObjectId::random();
    let r = c.create(
        &huge,
        &owner(),
        false,
        cap * 2,
        b"",
        ObjectSource::CreatedByWorker,
    );
    if p.falls_back_to_files() {
        let b = r.expect("fallback allocation of an object larger than memory");
        drop(b);
        c.abort(&huge).unwrap();
    } else {
        assert_eq!(code(r), StatusCode::ObjectStoreFull);
    }
    drop(pinned);
    let all: Vec<ObjectId> = ids.iter().copied().chain([big]).collect();
    c.delete(&all).unwrap();
}

/// `memory_copy` copies into a writable buffer.
pub fn memory_copy_copies(p: &dyn Plugin) {
    let c = p.client();
    let id = ObjectId::random();
    let src: Vec<u8> = (0..100_003u32).map(|i| (i % 251) as u8).collect();
    let mut b = c
        .create(
            &id,
            &owner(),
            false,
            src.len() as u64,
            b"",
            ObjectSource::CreatedByWorker,
        )
        .unwrap();
    // SAFETY: the buffer is writable for its length; `src` is a distinct allocation.
    unsafe { c.memory_copy(b.as_mut_ptr(), src.as_ptr(), src.len()) };
    c.seal(&id).unwrap();
    drop(b);
    let got = p.client().get(&[id], 0).unwrap().pop().unwrap().unwrap();
    assert_eq!(got.data(), &src[..]);
}
