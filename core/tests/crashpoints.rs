//! Every named crash point, with real processes: a worker process runs a workload that passes
//! through every store protocol (connect, create, seal, abort, get, release, delete, deferred
//! delete, evict, reap, orphan collection, allocator chunk and run transitions) and SIGKILLs
//! itself at the point `GISMO_CRASHPOINT` names (`core/src/store/crashpoint.rs`). Meanwhile this
//! process holds references to objects of its own, one of them deleted by the worker (deferred).
//!
//! After each crash, recovery (the reaper, then orphan collection) must leave: the held objects'
//! bytes intact, also after their space could have been reused by new objects; nothing leaked
//! (used bytes back to zero once everything is deleted and released); fsck clean. A point the
//! workload never reaches fails the test: the list and the workload cannot drift apart.
//!
//! Built only with the `crashpoints` feature (tools/test.sh runs it).

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use gismo_core::store::crashpoint;
use gismo_core::store::{CreateInfo, ObjectId, ObjectRef, Store, StoreError};
use gismo_platform::region::{Region, RegionOptions, RegionSpec};

const ROLE: &str = "GISMO_CRASHPOINT_ROLE";
const FD: &str = "GISMO_TEST_FD";
/// Objects this process creates and holds: ids 1..=HELD.
const HELD: u64 = 4;
/// The held object the worker deletes (deferred: we hold it).
const DELETED_BY_WORKER: u64 = 2;
/// The held object a client dies deleting (in DELETING, before its reference check: C1).
const HALF_DELETED: u64 = 3;
/// A worker object in its first (full) chunk, deleted to list the chunk again.
const LISTED: u64 = 110;
/// The id the victim (a client killed before the worker runs) leaves unsealed.
const VICTIM_UNSEALED: u64 = 900;

fn pattern(id: u64, len: usize) -> Vec<u8> {
    let mut x = id.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn held_size(id: u64) -> u64 {
    // Small (size-class blocks) and large (page runs) objects both.
    [3000, 70_000, 700, 300_000][(id as usize - 1) % 4]
}

fn attach_inherited() -> Arc<Store> {
    let fd: i32 = std::env::var(FD).unwrap().parse().unwrap();
    Store::attach(Region::open(&RegionSpec::Fd(fd), &RegionOptions::default()).unwrap()).unwrap()
}

fn put(client: &gismo_core::store::Client, id: u64, size: u64) {
    let mut b = client
        .create(
            &ObjectId::from_u64(id),
            size,
            b"meta",
            &CreateInfo::default(),
        )
        .unwrap();
    b.write_at(0, &pattern(id, size as usize)).unwrap();
    b.seal().unwrap();
}

/// The child roles: `victim` (connects, leaves an unsealed object and a reference, waits to be
/// killed), `leaker` (dies between allocating and recording its intent: an orphaned block),
/// `half_deleter` (dies deleting a held object, before its reference check) and `work` (the
/// workload; dies at the armed crash point).
#[test]
fn child() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let store = attach_inherited();
    match role.as_str() {
        "victim" => {
            let c = store.connect("victim").unwrap();
            let b = c
                .create(
                    &ObjectId::from_u64(VICTIM_UNSEALED),
                    50_000,
                    b"",
                    &CreateInfo::default(),
                )
                .unwrap();
            std::mem::forget(b);
            let r = c
                .get(&ObjectId::from_u64(1), Some(Duration::ZERO))
                .unwrap()
                .unwrap();
            std::mem::forget(r);
            println!("READY");
            std::thread::sleep(Duration::from_secs(60));
        }
        "leaker" => {
            let c = store.connect("leaker").unwrap();
            let _ = c.create(&ObjectId::from_u64(901), 3000, b"", &CreateInfo::default());
            panic!("the leaker should have died at create.allocated");
        }
        "half_deleter" => {
            let c = store.connect("half-deleter").unwrap();
            let _ = c.delete(&ObjectId::from_u64(HALF_DELETED));
            panic!("the half deleter should have died at delete.deleting");
        }
        "work" => workload(&store),
        _ => panic!("unknown role {role}"),
    }
}

/// Passes through every protocol step once (or more); see the module doc.
fn workload(store: &Arc<Store>) {
    let c = store.connect("worker").unwrap();
    // create / seal: small and large objects; enough small ones to fill a chunk and take a
    // fresh one.
    for i in 0..40 {
        put(&c, 100 + i, 2000);
    }
    // A block freed in the full first chunk lists it again (partial stack); filling the second
    // chunk then pops the first from the stack.
    c.delete(&ObjectId::from_u64(LISTED)).unwrap();
    for i in 0..40 {
        put(&c, 500 + i, 2000);
    }
    put(&c, 200, 1 << 20);
    // abort: an unsealed object given up.
    let b = c
        .create(&ObjectId::from_u64(300), 5000, b"", &CreateInfo::default())
        .unwrap();
    b.abort().unwrap();
    // get / release of a held object.
    let r = c
        .get(&ObjectId::from_u64(1), Some(Duration::ZERO))
        .unwrap()
        .unwrap();
    drop(r);
    // delete while the worker holds it (deferred), then the last release deletes it.
    let id = ObjectId::from_u64(100);
    let r = c.get(&id, Some(Duration::ZERO)).unwrap().unwrap();
    c.delete(&id).unwrap();
    drop(r);
    // delete of unreferenced objects, small and large: frees blocks, a whole chunk, a run.
    for id in (101..140).chain(500..540).filter(|&id| id != LISTED) {
        c.delete(&ObjectId::from_u64(id)).unwrap();
    }
    c.delete(&ObjectId::from_u64(200)).unwrap();
    // delete of an object this process's parent holds: deferred, its bytes must survive.
    c.delete(&ObjectId::from_u64(DELETED_BY_WORKER)).unwrap();
    // evict: unreferenced sealed objects go, the held ones stay.
    for i in 0..8 {
        put(&c, 400 + i, 10_000);
    }
    c.evict(40_000).unwrap();
    // reap: the victims were killed before we started; having reaped, the maintainer also
    // finishes orphaned deletes and collects the block the second victim leaked.
    c.reap_dead(60_000).unwrap();
    c.disconnect();
    println!("DONE");
}

/// Runs the child role `role` with `extra` environment; returns its exit status.
fn run_child(fd: i32, role: &str, extra: &[(&str, &str)]) -> std::process::ExitStatus {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "child", "--nocapture", "--test-threads=1"])
        .env(ROLE, role)
        .env(FD, fd.to_string())
        .stdout(std::process::Stdio::null());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd.status().unwrap()
}

/// One crash point: set up, crash, recover, check. `Ok(false)`: the point was never reached.
fn one(point: &str) -> Result<bool, String> {
    use std::os::unix::process::ExitStatusExt;
    let region = Region::create(
        &RegionSpec::Memfd {
            name: format!("gismo-crashpoint-{point}"),
            huge_pages: false,
        },
        32 << 20,
        &RegionOptions::default(),
    )
    .unwrap();
    let fd = region.inheritable_fd().unwrap();
    let store = Store::format(region, &Default::default()).unwrap();
    let me = store.connect("holder").unwrap();
    for id in 1..=HELD {
        put(&me, id, held_size(id));
    }
    let held: Vec<ObjectRef<'_>> = (1..=HELD)
        .map(|id| {
            me.get(&ObjectId::from_u64(id), Some(Duration::ZERO))
                .unwrap()
                .unwrap()
        })
        .collect();

    // A client that dies holding an unsealed object and a reference (the worker reaps it).
    let mut victim = Command::new(std::env::current_exe().unwrap());
    victim
        .args(["--exact", "child", "--nocapture", "--test-threads=1"])
        .env(ROLE, "victim")
        .env(FD, fd.to_string())
        .stdout(std::process::Stdio::piped());
    let mut v = victim.spawn().unwrap();
    let mut out = std::io::BufReader::new(v.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("READY") {
        line.clear();
        if std::io::BufRead::read_line(&mut out, &mut line).unwrap() == 0 {
            panic!("the victim exited before READY");
        }
    }
    v.kill().unwrap();
    v.wait().unwrap();
    // A block leaked by a client killed between its allocation and its intent record.
    let leaker = run_child(fd, "leaker", &[("GISMO_CRASHPOINT", "create.allocated")]);
    assert_eq!(leaker.signal(), Some(libc::SIGKILL), "the leaker: {leaker}");
    // A delete of an object we hold, left in DELETING before its reference check.
    let half = run_child(
        fd,
        "half_deleter",
        &[("GISMO_CRASHPOINT", "delete.deleting")],
    );
    assert_eq!(
        half.signal(),
        Some(libc::SIGKILL),
        "the half deleter: {half}"
    );

    let status = run_child(fd, "work", &[("GISMO_CRASHPOINT", point)]);
    let reached = status.signal() == Some(libc::SIGKILL);
    if !reached && !status.success() {
        return Err(format!(
            "{point}: the worker failed without crashing: {status}"
        ));
    }

    // Recovery, as a leader's maintenance does it: reap the dead (the worker, and whatever it
    // did not get to), finish their deletes, collect orphans.
    let admin = store.connect("admin").unwrap();
    admin
        .reap_dead(60_000)
        .map_err(|e| format!("{point}: reap: {e}"))?;

    // Reuse whatever was freed (every size class and run size the held objects use), then check
    // what we hold.
    let filler = store.connect("filler").unwrap();
    let sizes: Vec<u64> = (1..=HELD).map(held_size).chain([20_000]).collect();
    let mut full = vec![false; sizes.len()];
    let mut next = 10_000;
    while !full.iter().all(|f| *f) {
        for (k, &size) in sizes.iter().enumerate() {
            if full[k] {
                continue;
            }
            match filler.create(&ObjectId::from_u64(next), size, b"", &CreateInfo::default()) {
                Ok(mut b) => {
                    b.data_mut().fill(0xEE);
                    b.seal().unwrap();
                    next += 1;
                }
                Err(StoreError::StoreFull { .. }) => full[k] = true,
                Err(StoreError::DirectoryFull { .. }) => full.iter_mut().for_each(|f| *f = true),
                Err(e) => return Err(format!("{point}: filling: {e}")),
            }
        }
    }
    for (i, r) in held.iter().enumerate() {
        let id = i as u64 + 1;
        if r.data() != &pattern(id, held_size(id) as usize)[..] {
            return Err(format!(
                "{point}: held object {id} changed under its reader"
            ));
        }
    }

    // Nothing leaked: delete everything, release what we hold.
    drop(held);
    for o in store.list() {
        let _ = me.delete(&o.id);
    }
    me.disconnect();
    filler.disconnect();
    let left = store.list();
    let stats = store.stats();
    if !left.is_empty() || stats.used_bytes != 0 {
        return Err(format!(
            "{point}: after recovery and deleting everything: {} objects, {} bytes used ({left:?})",
            left.len(),
            stats.used_bytes
        ));
    }
    let report = store.fsck(false);
    if !report.is_clean() {
        return Err(format!("{point}: fsck: {report:?}"));
    }
    Ok(reached)
}

#[test]
fn every_crash_point_is_reached_and_recovered() {
    if std::env::var(ROLE).is_ok() {
        return;
    }
    let mut failures = Vec::new();
    let mut unreached = Vec::new();
    for point in crashpoint::ALL {
        match one(point) {
            Ok(true) => {}
            Ok(false) => unreached.push(*point),
            Err(e) => failures.push(e),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} crash points failed:\n{}",
        failures.len(),
        crashpoint::ALL.len(),
        failures.join("\n")
    );
    assert!(
        unreached.is_empty(),
        "the workload never reached: {unreached:?}"
    );
}
