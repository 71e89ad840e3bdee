//! The workload roles: processes that run on their own once started together.
//!
//! * `race` — creates the same ids as its siblings, round by round behind a shared barrier;
//! * `unique` — creates, seals and deletes a handful of ids that its siblings hammer too, checking
//!   after each create that the directory holds no second entry for the id;
//! * `stress` — random mixed operations, every get verified;
//! * `stress-final` — deletes everything and checks that the heap is empty;
//! * `churn` — create/seal/get/delete in a loop until killed or stopped.

use gismo_platform::sync::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gismo_core::store::directory::state;
use gismo_core::store::{CreateInfo, DeleteOutcome, ObjectId, ObjectRef, Store, StoreError};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::child::{check_object, create_filled, error_name, Args, Coord};

// ---------------------------------------------------------------------------------------------
// race

/// Creates ids `round * batch .. round * batch + batch` in every round, right after a barrier that
/// all `parties` siblings pass together, and reports one letter per id: `W` (created it), `L`
/// (`ObjectExists`) or `E` (any other error).
pub fn race(store: &Arc<Store>, args: &Args) {
    let (index, parties, rounds, batch) = (
        args.num("index"),
        args.num("parties"),
        args.num("rounds"),
        args.num("batch"),
    );
    let coord = Coord::open();
    let client = store.connect(&format!("mh-race-{index}")).expect("connect");
    let mut outcomes = String::with_capacity((rounds * batch) as usize);
    for round in 0..rounds {
        coord
            .word(1 + index as usize)
            .store(round + 1, Ordering::Relaxed);
        coord.barrier(0, parties, round);
        for k in 0..batch {
            let id = ObjectId::from_u64(round * batch + k);
            match client.create(&id, 8, b"race", &CreateInfo::default()) {
                Ok(mut buf) => {
                    buf.data_mut().copy_from_slice(&index.to_le_bytes());
                    match buf.seal() {
                        Ok(()) => outcomes.push('W'),
                        Err(e) => {
                            // Won the create but could not seal: someone else's entry for the
                            // same id answered the seal's lookup.
                            report!(
                                "race-error",
                                "id={} seal={}",
                                round * batch + k,
                                error_name(&e)
                            );
                            outcomes.push('S');
                        }
                    }
                }
                Err(StoreError::ObjectExists(_)) => outcomes.push('L'),
                Err(e) => {
                    report!(
                        "race-error",
                        "id={} error={}",
                        round * batch + k,
                        error_name(&e)
                    );
                    outcomes.push('E');
                }
            }
        }
    }
    drop(client);
    report!("race", "index={index} outcomes={outcomes}");
}

// ---------------------------------------------------------------------------------------------
// unique

/// Directory entries that name `id`, while the caller holds one of them. `Store::list` skips an
/// entry whose state word changes while it is read (a sibling's waiter flag, say), so a pass that
/// misses the caller's own entry is repeated; `misses` counts those passes.
fn entries_of(store: &Store, id: &ObjectId, misses: &mut u64) -> Vec<String> {
    for _ in 0..100 {
        let seen: Vec<String> = store
            .list()
            .into_iter()
            .filter(|o| o.id == *id)
            .map(|o| {
                format!(
                    "slot{}/gen{}/{}/creator{}",
                    o.index,
                    o.gen,
                    state::name(o.state),
                    o.creator
                )
            })
            .collect();
        if !seen.is_empty() {
            return seen;
        }
        *misses += 1;
    }
    panic!("Store::list never showed object {id}, which this process holds");
}

/// Loops over a few ids shared with the siblings: create (and, while our object exists, check
/// that the directory holds exactly one entry for its id), seal, check again, delete; on
/// `ObjectExists`, sometimes wait briefly for the sibling's seal (which sets the waiters flag).
///
/// While this client holds its freshly created object, nobody else may delete it, so a second
/// entry for the same id seen at that time is a real duplicate, not a stale read.
pub fn unique(store: &Arc<Store>, args: &Args) {
    let (index, parties, iterations) = (
        args.num("index"),
        args.num("parties"),
        args.num("iterations"),
    );
    let ids = args.list("ids");
    let coord = Coord::open();
    let client = store
        .connect(&format!("mh-unique-{index}"))
        .expect("connect");
    let mut rng = SmallRng::seed_from_u64(0x0123 + index);
    let (mut created, mut exists, mut waited, mut duplicates, mut seal_failures) = (0, 0, 0, 0, 0);
    let mut list_misses = 0;
    coord.barrier(0, parties, 0);
    for _ in 0..iterations {
        let n = ids[rng.gen_range(0..ids.len())];
        let id = ObjectId::from_u64(n);
        match create_filled(&client, &id, rng.gen_range(0..512), rng.gen()) {
            Ok(buf) => {
                created += 1;
                let seen = entries_of(store, &id, &mut list_misses);
                if seen.len() != 1 {
                    duplicates += 1;
                    report!(
                        "duplicate",
                        "id={n} when=after-create entries={}",
                        seen.join(",")
                    );
                }
                if let Err(e) = buf.seal() {
                    seal_failures += 1;
                    report!("seal-failed", "id={n} error={}", error_name(&e));
                    continue;
                }
                let seen = entries_of(store, &id, &mut list_misses);
                if seen.len() != 1 {
                    duplicates += 1;
                    report!(
                        "duplicate",
                        "id={n} when=after-seal entries={}",
                        seen.join(",")
                    );
                }
                match client.delete(&id) {
                    Ok(_) => {}
                    Err(e) => panic!("delete of our own sealed object {n}: {e}"),
                }
            }
            Err(StoreError::ObjectExists(_)) => {
                exists += 1;
                if rng.gen_bool(0.5) {
                    if let Some(obj) = client
                        .get(&id, Some(Duration::from_micros(300)))
                        .expect("get")
                    {
                        check_object(store, &obj);
                        waited += 1;
                    }
                }
            }
            Err(e) => panic!("create {n}: {e}"),
        }
    }
    drop(client);
    report!(
        "unique",
        "index={index} created={created} exists={exists} got={waited} duplicates={duplicates} \
         seal_failures={seal_failures} list_misses={list_misses}"
    );
}

// ---------------------------------------------------------------------------------------------
// stress

/// Object sizes, skewed small: 2 % empty, 58 % up to 1 KiB, 30 % up to 64 KiB, 9 % up to
/// 512 KiB, 1 % up to 4 MiB.
fn stress_size(rng: &mut SmallRng) -> u64 {
    match rng.gen_range(0..100) {
        0..=1 => 0,
        2..=59 => rng.gen_range(1..=1024),
        60..=89 => rng.gen_range(1025..=64 << 10),
        90..=98 => rng.gen_range((64 << 10) + 1..=512 << 10),
        _ => rng.gen_range((512 << 10) + 1..=4 << 20),
    }
}

#[derive(Default)]
struct StressCounts {
    creates: u64,
    exists: u64,
    full: u64,
    aborts: u64,
    hits: u64,
    misses: u64,
    deleted: u64,
    deferred: u64,
    not_found: u64,
    contains_true: u64,
    contains_false: u64,
    releases: u64,
    bytes_written: u64,
    bytes_verified: u64,
}

/// `ops` random operations on ids `0..pool` shared with the siblings, all starting together.
pub fn stress(store: &Arc<Store>, args: &Args) {
    let (index, parties, ops, pool, hold_max) = (
        args.num("index"),
        args.num("parties"),
        args.num("ops"),
        args.num("pool"),
        args.num("hold_max") as usize,
    );
    let coord = Coord::open();
    let client = store
        .connect(&format!("mh-stress-{index}"))
        .expect("connect");
    let mut rng = SmallRng::seed_from_u64(args.num("seed"));
    let mut held: Vec<ObjectRef<'_>> = Vec::new();
    let mut c = StressCounts::default();
    coord.barrier(0, parties, 0);
    let start = Instant::now();
    for _ in 0..ops {
        let n = rng.gen_range(0..pool);
        let id = ObjectId::from_u64(n);
        match rng.gen_range(0..100) {
            0..=29 => {
                let size = stress_size(&mut rng);
                match create_filled(&client, &id, size, rng.gen()) {
                    Ok(buf) if rng.gen_ratio(1, 20) => {
                        buf.abort().expect("abort our unsealed object");
                        c.aborts += 1;
                    }
                    Ok(buf) => {
                        buf.seal().expect("seal our object");
                        c.creates += 1;
                        c.bytes_written += size;
                    }
                    Err(StoreError::ObjectExists(_)) => c.exists += 1,
                    Err(StoreError::StoreFull { .. }) => c.full += 1,
                    Err(e) => panic!("create {n} ({size} bytes): {e}"),
                }
            }
            30..=64 => {
                let timeout = if rng.gen_ratio(1, 20) {
                    Duration::from_millis(2)
                } else {
                    Duration::ZERO
                };
                match client.get(&id, Some(timeout)).expect("get") {
                    Some(obj) => {
                        check_object(store, &obj);
                        c.hits += 1;
                        c.bytes_verified += obj.data().len() as u64;
                        if held.len() < hold_max && rng.gen_bool(0.3) {
                            held.push(obj);
                        }
                    }
                    None => c.misses += 1,
                }
            }
            65..=79 => match client.delete(&id) {
                Ok(DeleteOutcome::Deleted) => c.deleted += 1,
                Ok(DeleteOutcome::Deferred) => c.deferred += 1,
                Err(StoreError::ObjectNotFound(_)) => c.not_found += 1,
                Err(e) => panic!("delete {n}: {e}"),
            },
            80..=89 => {
                if client.contains(&id).expect("contains") {
                    c.contains_true += 1;
                } else {
                    c.contains_false += 1;
                }
            }
            _ => {
                if !held.is_empty() {
                    // A held object must be intact however long we held it, deleted or not.
                    let obj = held.swap_remove(rng.gen_range(0..held.len()));
                    check_object(store, &obj);
                    c.bytes_verified += obj.data().len() as u64;
                    c.releases += 1;
                }
            }
        }
    }
    for obj in held {
        check_object(store, &obj);
    }
    let elapsed = start.elapsed();
    drop(client);
    report!(
        "stress",
        "index={index} ops={ops} elapsed_us={} creates={} exists={} full={} aborts={} hits={} \
         misses={} deleted={} deferred={} not_found={} contains_true={} contains_false={} \
         releases={} bytes_written={} bytes_verified={}",
        elapsed.as_micros(),
        c.creates,
        c.exists,
        c.full,
        c.aborts,
        c.hits,
        c.misses,
        c.deleted,
        c.deferred,
        c.not_found,
        c.contains_true,
        c.contains_false,
        c.releases,
        c.bytes_written,
        c.bytes_verified
    );
}

/// After the stress children: verify and delete every object, then check the heap is empty.
pub fn stress_final(store: &Arc<Store>) {
    let client = store.connect("mh-stress-final").expect("connect");
    let (mut verified, mut deleted) = (0u64, 0u64);
    for pass in 0.. {
        let objects = store.list();
        if objects.is_empty() {
            break;
        }
        assert!(pass < 5, "objects survive deletion: {objects:?}");
        for o in objects {
            assert_eq!(
                o.state,
                state::SEALED,
                "after every creator disconnected, {o:?} is not sealed"
            );
            assert_eq!(
                o.refcount, 0,
                "after every client disconnected, {o:?} is held"
            );
            if let Some(obj) = client.get(&o.id, Some(Duration::ZERO)).expect("get") {
                check_object(store, &obj);
                verified += 1;
            }
            match client.delete(&o.id).expect("delete") {
                DeleteOutcome::Deleted => deleted += 1,
                DeleteOutcome::Deferred => panic!("delete of unused {o:?} was deferred"),
            }
        }
    }
    drop(client);
    let s = store.stats();
    report!(
        "final",
        "verified={verified} deleted={deleted} used={} allocations={} objects={} created={} \
         sealed={} aborted={} deleted_total={} clients={}",
        s.used_bytes,
        s.allocations,
        store.list().len(),
        s.objects_created,
        s.objects_sealed,
        s.objects_aborted,
        s.objects_deleted,
        s.clients_active
    );
}

// ---------------------------------------------------------------------------------------------
// churn

/// Create, seal, get, verify, release and delete objects of ids `base..base + pool`, forever.
pub fn churn(store: &Arc<Store>, args: &Args) {
    let (base, pool, max_size) = (args.num("base"), args.num("pool"), args.num("max_size"));
    let client = store.connect("mh-churn").expect("connect");
    let mut rng = SmallRng::seed_from_u64(base);
    report!("churning", "pid={}", std::process::id());
    loop {
        let id = ObjectId::from_u64(base + rng.gen_range(0..pool));
        match create_filled(&client, &id, rng.gen_range(0..=max_size), rng.gen()) {
            Ok(buf) => buf.seal().expect("seal"),
            Err(StoreError::ObjectExists(_)) => {}
            Err(e) => panic!("churn create: {e}"),
        }
        if let Some(obj) = client.get(&id, Some(Duration::ZERO)).expect("get") {
            check_object(store, &obj);
        }
        let _ = client.delete(&id);
    }
}
