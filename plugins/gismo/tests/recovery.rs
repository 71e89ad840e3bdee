//! Crash recovery with real processes: a client is killed with SIGKILL while it holds an unsealed
//! object, references, and an in-flight allocation; the reaper reclaims all of it, and a client
//! that was only paused past its lease is fenced.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gismo_core::store::{CreateInfo, DeathCause, DeleteOutcome, ObjectId, Store, StoreError};
use gismo_platform::region::{Region, RegionOptions, RegionSpec};

const ROLE: &str = "GISMO_RECOVERY_ROLE";

fn fresh_store(name: &str) -> (Arc<Store>, i32) {
    let region = Region::create(
        &RegionSpec::Memfd {
            name: name.into(),
            huge_pages: false,
        },
        64 << 20,
        &RegionOptions::default(),
    )
    .unwrap();
    let fd = region.inheritable_fd().unwrap();
    (Store::format(region, &Default::default()).unwrap(), fd)
}

fn spawn(role: &str, fd: i32, host: &str) -> (Child, BufReader<std::process::ChildStdout>) {
    spawn_seeded(role, fd, host, 0)
}

fn spawn_seeded(
    role: &str,
    fd: i32,
    host: &str,
    seed: u64,
) -> (Child, BufReader<std::process::ChildStdout>) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env("GISMO_SEED", seed.to_string())
        .args(["--exact", "child", "--nocapture", "--test-threads=1"])
        .env(ROLE, role)
        .env("GISMO_TEST_FD", fd.to_string())
        .env("GISMO_HOST", host)
        .stdout(Stdio::piped())
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    (child, out)
}

/// Calls `reap_dead(lease_ms)` until it reaps someone (a client dead by lease is quarantined
/// first and reaped after twice the lease, as observed by this process); fails after 30 s.
fn reap_until_reaped(
    parent: &gismo_core::store::Client,
    lease_ms: u64,
) -> Vec<gismo_core::store::ReapReport> {
    let t = Instant::now();
    loop {
        let r = parent.reap_dead(lease_ms).unwrap();
        if !r.is_empty() {
            return r;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "nobody was reaped");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The status of client `index`'s entry.
fn status_of(store: &Store, index: usize) -> u8 {
    store
        .clients()
        .iter()
        .find(|c| c.index == index)
        .map_or(gismo_core::store::clients::status::FREE, |c| c.status)
}

/// Reads lines until one starts with `READY`; fails after 30 s.
fn wait_ready(out: &mut BufReader<std::process::ChildStdout>) {
    let t = Instant::now();
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "child exited before READY"
        );
        if line.contains("READY") {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "child never became ready"
        );
    }
}

/// Like [`wait_ready`], returning the number after `READY`.
fn wait_ready_value(out: &mut BufReader<std::process::ChildStdout>) -> usize {
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "child exited before READY"
        );
        if let Some(v) = line.split("READY ").nth(1) {
            return v.trim().parse().unwrap();
        }
    }
}

/// The child side: attaches through the inherited descriptor and does what its role says.
#[test]
fn child() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let fd: i32 = std::env::var("GISMO_TEST_FD").unwrap().parse().unwrap();
    let store =
        Store::attach(Region::open(&RegionSpec::Fd(fd), &RegionOptions::default()).unwrap())
            .unwrap();
    let client = store.connect(&format!("recovery-{role}")).unwrap();
    match role.as_str() {
        "hold" => {
            // An unsealed 1 MiB object, and a reference on the parent's object "shared".
            let buf = client
                .create(
                    &ObjectId::from_u64(100),
                    1 << 20,
                    b"",
                    &CreateInfo::default(),
                )
                .unwrap();
            std::mem::forget(buf);
            let held = client
                .get(&ObjectId::from_u64(1), Some(Duration::ZERO))
                .unwrap()
                .unwrap();
            std::mem::forget(held);
            println!("READY");
            std::thread::sleep(Duration::from_secs(60));
        }
        "pause" => {
            let held = client
                .get(&ObjectId::from_u64(1), Some(Duration::ZERO))
                .unwrap()
                .unwrap();
            println!("READY");
            // Wait for the parent to stop and resume us, then try to use the store.
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).ok();
            let r = client
                .create(&ObjectId::from_u64(200), 10, b"", &CreateInfo::default())
                .map(|_| ());
            match r {
                Err(StoreError::Fenced { .. }) => println!("RESULT fenced"),
                Err(e) => println!("RESULT error {e}"),
                Ok(()) => println!("RESULT created"),
            }
            std::mem::forget(held);
        }
        "reader" => {
            // Holds object 1 (1 MiB of 0xAA) zero-copy, checks a copy, then waits to be paused.
            let held = client
                .get(&ObjectId::from_u64(1), Some(Duration::ZERO))
                .unwrap()
                .unwrap();
            let copy = held.to_vec().expect("not fenced yet");
            assert!(copy.iter().all(|&b| b == 0xAA));
            println!("READY {}", client.index());
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).ok();
            // Resumed after the reap: the zero-copy view still shows the object's bytes (the
            // grace period), and a copying read refuses to return them.
            let view_ok = held.data().iter().all(|&b| b == 0xAA);
            println!("VIEW {}", if view_ok { "old" } else { "changed" });
            match held.to_vec() {
                Err(StoreError::Fenced { .. }) => println!("COPY fenced"),
                Err(e) => println!("COPY error {e}"),
                Ok(_) => println!("COPY returned"),
            }
            match client.get(&ObjectId::from_u64(1), Some(Duration::ZERO)) {
                Err(StoreError::Fenced { .. }) => println!("GET fenced"),
                Err(e) => println!("GET error {e}"),
                Ok(_) => println!("GET returned"),
            }
            drop(held); // a fenced client's release writes nothing
            println!("DONE");
        }
        "quiet" => {
            // Makes no store call at all while it waits: only the heartbeat thread keeps it.
            println!("READY {}", client.index());
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).ok();
            println!(
                "GOT {}",
                if client.heartbeat().is_ok() {
                    "ok"
                } else {
                    "fenced"
                }
            );
        }
        "longget" => {
            // Object 9 exists unsealed (the parent creates it first): a wait for its seal.
            println!("READY {}", client.index());
            let got = client.get(&ObjectId::from_u64(9), Some(Duration::from_secs(60)));
            println!(
                "GOT {}",
                if matches!(got, Ok(Some(_))) {
                    "ok"
                } else {
                    "failed"
                }
            );
        }
        "verify" => {
            // Holds object 1 (4096 bytes of 7), heartbeating, until told to check it.
            let held = client
                .get(&ObjectId::from_u64(1), Some(Duration::ZERO))
                .unwrap()
                .unwrap();
            println!("READY");
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let mut line = String::new();
                std::io::stdin().read_line(&mut line).ok();
                let _ = tx.send(());
            });
            while rx.recv_timeout(Duration::from_millis(50)).is_err() {
                client.heartbeat().unwrap();
            }
            let ok = held.data().iter().all(|&b| b == 7);
            println!("RESULT {}", if ok { "intact" } else { "overwritten" });
        }
        "idle" => {
            println!("READY {}", client.index());
            std::thread::sleep(Duration::from_secs(60));
        }
        "maintain" => {
            let m = store
                .begin_maintenance(client.maintainer_id(), 60_000)
                .unwrap();
            std::mem::forget(m);
            println!("READY");
            std::thread::sleep(Duration::from_secs(60));
        }
        "churn" => {
            // Random creates, writes, seals, gets, releases and deletes until killed.
            let seed: u64 = std::env::var("GISMO_SEED").unwrap().parse().unwrap();
            let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            let mut next = move || {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x
            };
            println!("READY");
            let mut held = Vec::new();
            loop {
                let r = next();
                let id = ObjectId::from_u64(1000 + r % 40);
                let parents = ObjectId::from_u64(1 + (r >> 12) % 3);
                match r % 5 {
                    0 | 1 => {
                        let size =
                            [0u64, 100, 5000, 16_384, 70_000, 300_000][(r >> 8) as usize % 6];
                        if let Ok(mut b) = client.create(&id, size, b"m", &CreateInfo::default()) {
                            b.data_mut().fill(r as u8);
                            if r & 0x100 == 0 {
                                b.seal().unwrap();
                            } else {
                                std::mem::forget(b); // keep it unsealed for a while
                            }
                        }
                    }
                    2 => {
                        // Now and then one of the parent's objects (1..=3), which the parent
                        // holds: both processes hold references to it when we are killed.
                        let id = if r & 0x200 != 0 { parents } else { id };
                        if let Ok(Some(o)) = client.get(&id, Some(Duration::ZERO)) {
                            held.push(o);
                        }
                        if held.len() > 8 {
                            held.remove(0);
                        }
                    }
                    3 => {
                        // The parent's objects too: deferred (the parent holds them), and a
                        // kill in the middle of such a delete must not free them.
                        let id = if r & 0x200 != 0 { parents } else { id };
                        let _ = client.delete(&id);
                    }
                    _ => {
                        let _ = client.seal(&id);
                        held.pop();
                    }
                }
            }
        }
        _ => panic!("unknown role {role}"),
    }
}

#[test]
fn kill_9_with_unsealed_object_and_references_is_reaped() {
    let (store, fd) = fresh_store("gismo-recovery-kill");
    let parent = store.connect("parent").unwrap();
    let shared = ObjectId::from_u64(1);
    let mut b = parent
        .create(&shared, 4096, b"m", &CreateInfo::default())
        .unwrap();
    b.write_at(0, &[7u8; 4096]).unwrap();
    b.seal().unwrap();
    let baseline = store.stats().used_bytes;

    let (mut child, mut out) = spawn("hold", fd, "recovery-host");
    wait_ready(&mut out);
    assert!(
        store.stats().used_bytes > baseline,
        "the child's unsealed object is allocated"
    );
    assert_eq!(
        parent.delete(&shared).unwrap(),
        DeleteOutcome::Deferred,
        "the child holds it"
    );
    // The child's process is alive: nothing to reap yet.
    assert!(store.dead_clients(60_000).is_empty());

    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // Its host identity differs from ours (GISMO_HOST), so only its lease can tell: a long lease
    // keeps it, a zero lease declares it dead once its heartbeat is older than 0 ms.
    std::thread::sleep(Duration::from_millis(5));
    assert!(store.dead_clients(60_000).is_empty());
    let dead = store.dead_clients(0);
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].1, DeathCause::LeaseExpired);

    let reports = parent.reap_dead(0).unwrap();
    assert_eq!(reports.len(), 1);
    let r = &reports[0];
    assert_eq!(r.aborted_objects, 1, "{r:?}");
    assert_eq!(
        r.released_references, 2,
        "the creation reference and the get: {r:?}"
    );
    assert_eq!(
        r.deleted_objects, 1,
        "the pending delete ran once the last reference went: {r:?}"
    );
    assert_eq!(
        store.stats().used_bytes,
        0,
        "every byte the child held is back"
    );
    assert!(store.list().is_empty());
    assert!(
        store.clients().iter().all(|c| c.name != "recovery-hold"),
        "its entry is free"
    );
    // The aborted id can be created again.
    parent
        .create(&ObjectId::from_u64(100), 10, b"", &CreateInfo::default())
        .unwrap()
        .seal()
        .unwrap();
}

#[test]
fn same_host_death_is_detected_by_pid_at_once() {
    let (store, fd) = fresh_store("gismo-recovery-pid");
    let host = gismo_core::store::clients::HostIdentity::current().name;
    let parent = store.connect("parent").unwrap();
    parent
        .create(&ObjectId::from_u64(1), 64, b"", &CreateInfo::default())
        .unwrap()
        .seal()
        .unwrap();
    let (mut child, mut out) = spawn("hold", fd, &host);
    wait_ready(&mut out);
    assert!(store.dead_clients(u64::MAX).is_empty());
    child.kill().unwrap();
    child.wait().unwrap();
    let dead = store.dead_clients(u64::MAX);
    assert_eq!(
        dead.len(),
        1,
        "a dead pid on this host is found without waiting for a lease"
    );
    assert_eq!(dead[0].1, DeathCause::ProcessGone);
    parent.reap_dead(u64::MAX).unwrap();
    assert_eq!(
        store.stats().used_bytes,
        gismo_core::store::allocator::capacity_for(64)
    );
}

#[test]
fn a_paused_client_reaped_past_its_lease_is_fenced_on_resume() {
    let (store, fd) = fresh_store("gismo-recovery-pause");
    let parent = store.connect("parent").unwrap();
    parent
        .create(&ObjectId::from_u64(1), 64, b"", &CreateInfo::default())
        .unwrap()
        .seal()
        .unwrap();
    let (mut child, mut out) = spawn("pause", fd, "paused-host");
    let mut stdin = child.stdin.take();
    wait_ready(&mut out);
    let pid = child.id() as i32;
    // SAFETY: plain signal to our own child process.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    std::thread::sleep(Duration::from_millis(20));
    let reaped = reap_until_reaped(&parent, 10);
    assert_eq!(reaped.len(), 1);
    assert_eq!(reaped[0].released_references, 1);
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    drop(stdin.take());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "child exited without a result"
        );
        if let Some(r) = line.split("RESULT ").nth(1) {
            assert_eq!(r.trim(), "fenced", "a reaped client must fail cleanly");
            break;
        }
    }
    child.wait().unwrap();
    // Nothing was damaged: the parent's object is intact and nothing of the child's remains.
    let o = parent
        .get(&ObjectId::from_u64(1), Some(Duration::ZERO))
        .unwrap()
        .unwrap();
    assert_eq!(o.data().len(), 64);
    drop(o);
    assert!(store.lookup_summary(&ObjectId::from_u64(200)).is_none());
}

/// Kills a churning client at seeded random points (inside create, write, seal, get, release and
/// delete) 200 times (`GISMO_SOAK=1`: 2000), while this process holds references to its own
/// objects, which the children also get and delete (deferred). After each reap, fsck is clean,
/// the heap holds exactly the live objects, and the held objects' bytes are intact; at the end our
/// release and delete remove them.
#[test]
fn random_kill_points_leave_no_leak_and_no_damage() {
    let iterations: u64 = if std::env::var("GISMO_SOAK").is_ok_and(|v| v == "1") {
        2000
    } else {
        200
    };
    let (store, fd) = fresh_store("gismo-recovery-random");
    let host = gismo_core::store::clients::HostIdentity::current().name;
    let parent = store.connect("parent").unwrap();
    let mine: Vec<(ObjectId, Vec<u8>)> = (0..3u64)
        .map(|i| {
            let data: Vec<u8> = (0..20_000u32 + i as u32 * 7)
                .map(|b| (b * 31 + i as u32) as u8)
                .collect();
            let id = ObjectId::from_u64(i + 1);
            let mut b = parent
                .create(&id, data.len() as u64, b"", &CreateInfo::default())
                .unwrap();
            b.write_at(0, &data).unwrap();
            b.seal().unwrap();
            (id, data)
        })
        .collect();
    // The parent reads its objects throughout: the children get and delete them too, so every
    // kill may land while two processes hold references to an object being deleted.
    let held: Vec<_> = mine
        .iter()
        .map(|(id, _)| parent.get(id, Some(Duration::ZERO)).unwrap().unwrap())
        .collect();
    let mut orphans = 0u64;
    for i in 0..iterations {
        let (mut child, mut out) = spawn_seeded("churn", fd, &host, i + 1);
        wait_ready(&mut out);
        // A pseudo-random pause of 0–4 ms, then SIGKILL wherever the child is.
        std::thread::sleep(Duration::from_micros((i * 7919) % 4000));
        child.kill().unwrap();
        child.wait().unwrap();
        let reports = parent.reap_dead(u64::MAX).unwrap();
        assert_eq!(
            reports.len(),
            1,
            "iteration {i}: the killed client is found by pid"
        );
        orphans += reports[0].orphan_bytes;
        let check = store.fsck(false);
        assert!(check.is_clean(), "iteration {i}: {:?}", check.problems);
        let live: u64 = store
            .list()
            .iter()
            .map(|o| {
                gismo_core::store::allocator::capacity_for((o.data_size + o.metadata_size).max(1))
            })
            .sum();
        assert_eq!(
            check.used_bytes, live,
            "iteration {i}: heap holds exactly the live objects"
        );
        assert!(store
            .list()
            .iter()
            .all(|o| o.state == gismo_core::store::directory::state::SEALED));
        for (o, (_, data)) in held.iter().zip(&mine) {
            assert_eq!(o.data(), &data[..], "iteration {i}: a held object changed");
        }
    }
    // Every child's references are gone: our release of the last ones runs the deferred deletes.
    drop(held);
    for (id, _) in &mine {
        let _ = parent.delete(id);
    }
    assert!(store
        .list()
        .iter()
        .all(|o| mine.iter().all(|(id, _)| o.id != *id)));
    println!("random kills: {iterations} iterations, {orphans} orphaned bytes collected");
}

/// Flags of a forged `DELETING` word: a delete or eviction that came from `SEALED`.
const SEALED_ORIGIN: u64 = 4;
const EVICTING: u64 = 8;

/// The region's atomic word at byte offset `at`.
fn region_word(store: &Store, at: usize) -> &std::sync::atomic::AtomicU64 {
    assert!(at + 8 <= store.region().len() && at % 8 == 0);
    // SAFETY: in bounds and aligned (checked above), inside the live mapping owned by `store`;
    // the store treats any value there as valid input.
    unsafe { &*(store.region().as_ptr().add(at) as *const std::sync::atomic::AtomicU64) }
}

/// The state word of `id`'s slot.
fn slot_word<'a>(store: &'a Store, id: &ObjectId) -> &'a std::sync::atomic::AtomicU64 {
    let o = store.lookup_summary(id).unwrap();
    let at = store
        .layout()
        .section(gismo_core::format::SectionKind::Directory)
        .offset as usize
        + o.index * 128;
    region_word(store, at)
}

/// Word `word` (0 = entry word, 10 = op_seq) of client entry `index`.
fn entry_word(store: &Store, index: usize, word: usize) -> &std::sync::atomic::AtomicU64 {
    let at = store
        .layout()
        .section(gismo_core::format::SectionKind::Clients)
        .offset as usize
        + index * 128
        + word * 8;
    region_word(store, at)
}

/// Overwrites the state word of `id`'s slot with `DELETING` (flags `fl`), owned by client
/// `owner`: what a deleter that died right after claiming the delete leaves behind.
fn forge_deleting_flags(store: &Store, id: &ObjectId, owner: u16, fl: u64) {
    let o = store.lookup_summary(id).unwrap();
    let word: u64 = u64::from(o.gen) << 32 | 5u64 << 24 | fl << 16 | u64::from(owner);
    slot_word(store, id).store(word, std::sync::atomic::Ordering::SeqCst);
}

/// An abort (or a delete whose origin the word does not record) left half done.
fn forge_deleting(store: &Store, id: &ObjectId, owner: u16) {
    forge_deleting_flags(store, id, owner, 0);
}

/// Marks client `index` as inside an operation (`op_seq` odd), as a client killed in the middle
/// of the delete a test forges is: every step that leaves a slot `DELETING` runs in one.
fn forge_inside_operation(store: &Store, index: usize) {
    let op_seq = entry_word(store, index, 10);
    op_seq.fetch_or(1, std::sync::atomic::Ordering::SeqCst);
}

fn judged(store: &Store, index: usize) -> gismo_core::store::clients::EntryWord {
    gismo_core::store::clients::EntryWord::unpack(
        entry_word(store, index, 0).load(std::sync::atomic::Ordering::SeqCst),
    )
}

#[test]
fn deletes_left_half_done_are_finished() {
    let (store, _fd) = fresh_store("gismo-recovery-halfdelete");
    let a = store.connect("a").unwrap();
    let (x, y, z) = (
        ObjectId::from_u64(1),
        ObjectId::from_u64(2),
        ObjectId::from_u64(3),
    );
    for (id, size) in [(x, 300_000u64), (y, 1000), (z, 5000)] {
        a.create(&id, size, b"", &CreateInfo::default())
            .unwrap()
            .seal()
            .unwrap();
    }
    // A deleter that dies after claiming the delete of x, nobody referencing x: the reaper
    // re-runs the reference check, finds none, and finishes it.
    let b = store.connect("b").unwrap();
    forge_deleting_flags(&store, &x, b.index() as u16, SEALED_ORIGIN);
    forge_inside_operation(&store, b.index());
    let m = store.begin_maintenance(a.maintainer_id(), 60_000).unwrap();
    let r = store
        .reap_client(&m, b.index(), judged(&store, b.index()))
        .unwrap()
        .expect("b was active");
    drop(m);
    assert_eq!(r.finished_deletes, 1, "{r:?}");
    drop(b); // fenced: its disconnect does nothing
    assert!(store.lookup_summary(&x).is_none());
    // A reaper that died while finishing a delete (or an abort) for a client already gone: the
    // owner is no longer active, so the next pass finishes it.
    forge_deleting(&store, &y, 77);
    forge_deleting_flags(&store, &z, 78, SEALED_ORIGIN | EVICTING);
    let m = store.begin_maintenance(a.maintainer_id(), 60_000).unwrap();
    assert_eq!(store.finish_orphaned_deletes(&m), 2);
    assert!(store.lookup_summary(&y).is_none());
    assert!(store.lookup_summary(&z).is_none());
    let check = store.fsck(false);
    assert!(check.is_clean(), "{:?}", check.problems);
    assert_eq!(check.used_bytes, 0);
    // A delete in progress by a live client is left alone.
    a.create(&x, 10, b"", &CreateInfo::default())
        .unwrap()
        .seal()
        .unwrap();
    forge_deleting_flags(&store, &x, a.index() as u16, SEALED_ORIGIN);
    assert_eq!(store.finish_orphaned_deletes(&m), 0);
}

/// C1: a deleter (or evicter) killed between its CAS to DELETING and its reference check must
/// not get the object freed under a client that still holds it. Forged deterministically (the
/// window is a reference scan): the object comes back SEALED (delete-pending for a delete), its
/// bytes intact, and the last release deletes it.
#[test]
fn a_half_done_delete_of_a_referenced_object_is_not_freed() {
    let (store, _fd) = fresh_store("gismo-recovery-halfdelete-ref");
    let a = store.connect("a").unwrap();
    let (x, y) = (ObjectId::from_u64(1), ObjectId::from_u64(2));
    for id in [x, y] {
        let mut b = a.create(&id, 5000, b"m", &CreateInfo::default()).unwrap();
        b.write_at(0, &[9u8; 5000]).unwrap();
        b.seal().unwrap();
    }
    let rx = a.get(&x, Some(Duration::ZERO)).unwrap().unwrap();
    let ry = a.get(&y, Some(Duration::ZERO)).unwrap().unwrap();

    // The reaper of the dead deleter.
    let d = store.connect("deleter").unwrap();
    forge_deleting_flags(&store, &x, d.index() as u16, SEALED_ORIGIN);
    forge_inside_operation(&store, d.index());
    let m = store.begin_maintenance(a.maintainer_id(), 60_000).unwrap();
    let r = store
        .reap_client(&m, d.index(), judged(&store, d.index()))
        .unwrap()
        .expect("d was active");
    drop(m);
    drop(d);
    assert_eq!(r.finished_deletes, 0, "{r:?}");
    assert_eq!(r.restored_objects, 1, "{r:?}");
    let o = store.lookup_summary(&x).expect("x still exists");
    assert_eq!(o.state, gismo_core::store::directory::state::SEALED);
    assert!(o.delete_pending, "the delete it asked for is kept");

    // The orphan pass, for an evicter that died mid-probe: restored, not delete-pending.
    forge_deleting_flags(&store, &y, 77, SEALED_ORIGIN | EVICTING);
    assert!(
        a.contains(&y).unwrap(),
        "an object in an eviction probe exists"
    );
    let m = store.begin_maintenance(a.maintainer_id(), 60_000).unwrap();
    assert_eq!(store.finish_orphaned_deletes(&m), 0);
    drop(m);
    let o = store.lookup_summary(&y).expect("y still exists");
    assert_eq!(o.state, gismo_core::store::directory::state::SEALED);
    assert!(!o.delete_pending, "an eviction never marks a delete");

    // Nothing was freed: a create of the same size does not get x's or y's block.
    let z = ObjectId::from_u64(3);
    let mut b = a.create(&z, 5000, b"m", &CreateInfo::default()).unwrap();
    b.write_at(0, &[1u8; 5000]).unwrap();
    b.seal().unwrap();
    assert_eq!(rx.data(), &[9u8; 5000][..]);
    assert_eq!(ry.data(), &[9u8; 5000][..]);
    let check = store.fsck(false);
    assert!(check.is_clean(), "{:?}", check.problems);

    // The last release runs x's pending delete; y stays.
    drop(rx);
    drop(ry);
    assert!(store.lookup_summary(&x).is_none(), "the pending delete ran");
    assert!(store.lookup_summary(&y).is_some());
}

/// C1 with real processes: a reader process holds object x; a deleter process is killed with
/// SIGKILL inside its delete of x (forged at the instant after its CAS to DELETING, before its
/// reference check); the reaper runs; creates reuse whatever was freed. The reader's bytes must be
/// x's.
#[test]
fn a_deleter_killed_mid_delete_does_not_free_a_readers_object() {
    let (store, fd) = fresh_store("gismo-recovery-kill-deleter");
    let parent = store.connect("parent").unwrap();
    let x = ObjectId::from_u64(1);
    let mut b = parent
        .create(&x, 4096, b"m", &CreateInfo::default())
        .unwrap();
    b.write_at(0, &[7u8; 4096]).unwrap();
    b.seal().unwrap();

    let host = gismo_core::store::clients::HostIdentity::current().name;
    let (mut reader, mut rout) = spawn("verify", fd, &host);
    let mut rin = reader.stdin.take().unwrap();
    wait_ready(&mut rout);
    let (mut deleter, mut dout) = spawn("idle", fd, &host);
    let dindex = wait_ready_value(&mut dout);
    forge_deleting_flags(&store, &x, dindex as u16, SEALED_ORIGIN);
    deleter.kill().unwrap(); // SIGKILL
    deleter.wait().unwrap();
    // Same host: the killed deleter is dead by its pid; the reader is alive.
    let reports = parent.reap_dead(u64::MAX).unwrap();
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert_eq!(reports[0].client, dindex);
    // Reuse the heap: if x's block had been freed, one of these gets it and overwrites it.
    for i in 0..64u64 {
        let mut c = parent
            .create(
                &ObjectId::from_u64(100 + i),
                4096,
                b"m",
                &CreateInfo::default(),
            )
            .unwrap();
        c.write_at(0, &[0xEEu8; 4096]).unwrap();
        c.seal().unwrap();
    }
    use std::io::Write;
    writeln!(rin).unwrap();
    let result = wait_result(&mut rout);
    reader.wait().unwrap();
    assert_eq!(result, "intact", "the reader's object was freed under it");
    let check = store.fsck(false);
    assert!(check.is_clean(), "{:?}", check.problems);
}

fn wait_result(out: &mut BufReader<std::process::ChildStdout>) -> String {
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "child exited without a result"
        );
        if let Some(r) = line.split("RESULT ").nth(1) {
            return r.trim().to_string();
        }
    }
}

/// H2: the maintenance lock serializes reapers, and a reap acts only on the exact client word it
/// judged dead (a reused entry's new client is never reaped).
#[test]
fn reapers_are_serialized_and_never_reap_a_reused_entry() {
    let (store, fd) = fresh_store("gismo-recovery-serial");
    let parent = store.connect("parent").unwrap();
    parent
        .create(&ObjectId::from_u64(1), 64, b"", &CreateInfo::default())
        .unwrap()
        .seal()
        .unwrap();
    let other = store.connect("other").unwrap();
    let host = gismo_core::store::clients::HostIdentity::current().name;
    let (mut child, mut out) = spawn("hold", fd, &host);
    wait_ready(&mut out);
    child.kill().unwrap();
    child.wait().unwrap();
    let dead = store.dead_clients(u64::MAX);
    assert_eq!(dead.len(), 1);
    let index = dead[0].0;
    let stale = judged(&store, index);

    // While `other` maintains, `parent` may not reap.
    let m = store
        .begin_maintenance(other.maintainer_id(), 60_000)
        .unwrap();
    assert!(matches!(
        parent.reap_dead(u64::MAX),
        Err(StoreError::MaintenanceBusy { .. })
    ));
    assert_eq!(store.dead_clients(u64::MAX).len(), 1, "nothing was reaped");
    drop(m);
    assert_eq!(parent.reap_dead(u64::MAX).unwrap().len(), 1);

    // A second reaper that judged the same client dead before: the entry was reaped and claimed
    // again by a new client, which must not be reaped from the stale judgement.
    let again = store.connect("new-occupant").unwrap();
    assert_eq!(again.index(), index, "the freed entry is reused");
    let m = store
        .begin_maintenance(parent.maintainer_id(), 60_000)
        .unwrap();
    assert!(store.reap_client(&m, index, stale).unwrap().is_none());
    drop(m);
    again.heartbeat().expect("the new client is not fenced");

    // A maintainer that died holding the lock loses it to the next one.
    drop(again);
    let (mut child, mut out) = spawn("maintain", fd, &host);
    wait_ready(&mut out);
    child.kill().unwrap();
    child.wait().unwrap();
    let reports = parent.reap_dead(u64::MAX).unwrap();
    assert_eq!(
        reports.len(),
        1,
        "the dead maintainer's lock was taken over"
    );
}

/// M3: a client killed inside an operation leaves `op_seq` odd; the reaper and `connect` make it
/// even again (else every later occupant looks permanently busy to the orphan collector).
#[test]
fn a_client_killed_inside_an_operation_does_not_disable_orphan_collection() {
    let (store, fd) = fresh_store("gismo-recovery-opseq");
    let parent = store.connect("parent").unwrap();
    parent
        .create(&ObjectId::from_u64(1), 64, b"", &CreateInfo::default())
        .unwrap()
        .seal()
        .unwrap();
    let host = gismo_core::store::clients::HostIdentity::current().name;
    let (mut child, mut out) = spawn("hold", fd, &host);
    wait_ready(&mut out);
    child.kill().unwrap();
    child.wait().unwrap();
    let index = store.dead_clients(u64::MAX)[0].0;
    let op_seq = entry_word(&store, index, 10);
    op_seq.store(7, std::sync::atomic::Ordering::SeqCst); // killed inside an OpGuard
    parent.reap_dead(u64::MAX).unwrap();
    assert_eq!(op_seq.load(std::sync::atomic::Ordering::SeqCst) % 2, 0);
    // And connect resets what a region written by an older reaper left.
    op_seq.store(9, std::sync::atomic::Ordering::SeqCst);
    let c = store.connect("next").unwrap();
    assert_eq!(c.index(), index);
    assert_eq!(op_seq.load(std::sync::atomic::Ordering::SeqCst) % 2, 0);
}

/// M1: an entry being connected is `CONNECTING` and never judged by the fields it still carries
/// from its previous occupant; one left there by a connector that died is reclaimed once it has
/// stayed so for longer than the lease.
#[test]
fn a_connecting_entry_is_not_reaped_and_a_dead_connector_is_reclaimed() {
    let (store, fd) = fresh_store("gismo-recovery-connecting");
    let parent = store.connect("parent").unwrap();
    parent
        .create(&ObjectId::from_u64(1), 64, b"", &CreateInfo::default())
        .unwrap()
        .seal()
        .unwrap();
    let host = gismo_core::store::clients::HostIdentity::current().name;
    let (mut child, mut out) = spawn("hold", fd, &host);
    wait_ready(&mut out);
    child.kill().unwrap();
    child.wait().unwrap();
    let index = store.dead_clients(u64::MAX)[0].0;
    parent.reap_dead(u64::MAX).unwrap();
    // A connector claimed the freed entry (whose fields name the dead child) and died there.
    let word = entry_word(&store, index, 0);
    let w = gismo_core::store::clients::EntryWord::unpack(
        word.load(std::sync::atomic::Ordering::SeqCst),
    );
    assert_eq!(w.status, gismo_core::store::clients::status::FREE);
    let connecting = gismo_core::store::clients::EntryWord {
        epoch: w.epoch + 1,
        status: gismo_core::store::clients::status::CONNECTING,
    };
    word.store(connecting.pack(), std::sync::atomic::Ordering::SeqCst);
    assert!(
        store.dead_clients(0).is_empty(),
        "never judged by stale fields"
    );
    parent.reap_dead(60_000).unwrap();
    assert_eq!(
        word.load(std::sync::atomic::Ordering::SeqCst),
        connecting.pack()
    );
    // Seen CONNECTING by this process for longer than a 1 ms lease: reclaimed.
    std::thread::sleep(Duration::from_millis(5));
    parent.reap_dead(1).unwrap();
    let now = gismo_core::store::clients::EntryWord::unpack(
        word.load(std::sync::atomic::Ordering::SeqCst),
    );
    assert_eq!(now.status, gismo_core::store::clients::status::FREE);
    assert_eq!(store.connect("next").unwrap().index(), index);
}

/// The GISMO runner plays the server's roles in-process (`embedded_server`, on by default): it
/// takes the leader lease and reaps a client killed on another host once its lease expires.
#[test]
fn the_embedded_runner_reaps_dead_clients() {
    use gismo::GismoRunner;
    use gismo_plugin::interface::{ObjectStoreRunner, RunnerCallbacks};
    let (store, fd) = fresh_store("gismo-recovery-embedded");
    let runner = GismoRunner::with_store(store.clone());
    let params = [("lease_ms".to_string(), "200".to_string())]
        .into_iter()
        .collect();
    runner.start(&params, RunnerCallbacks::none()).unwrap();
    let parent = store.connect("parent").unwrap();
    parent
        .create(&ObjectId::from_u64(1), 64, b"", &CreateInfo::default())
        .unwrap()
        .seal()
        .unwrap();
    let (mut child, mut out) = spawn("hold", fd, "remote-host");
    wait_ready(&mut out);
    assert!(store.stats().used_bytes > gismo_core::store::allocator::capacity_for(64));
    child.kill().unwrap();
    child.wait().unwrap();
    let t = Instant::now();
    while store.clients().iter().any(|c| c.name == "recovery-hold") {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the embedded runner never reaped the dead client"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        store.leader().holder.is_some(),
        "the runner holds the leader lease"
    );
    assert_eq!(
        store.stats().used_bytes,
        gismo_core::store::allocator::capacity_for(64)
    );
    runner.stop();
    assert!(
        store.leader().holder.is_none(),
        "a stopped runner releases the lease"
    );
}

/// Issue 15 §2 / H1: a reader on another host holds an object (zero copy) and is SIGSTOPped past
/// its lease; the maintainer fences it by lease (quarantine), the object is deleted and the heap
/// filled with new objects. After SIGCONT its copying reads fail with `Fenced`, and its zero-copy
/// view still shows the old bytes: the quarantine kept the block out of the allocator for the
/// grace period. Then the grace passes, the reap completes the deferred delete, and the block is
/// reused. (Before the quarantine, the delete freed the block at once and the reader's copy
/// returned the new objects' bytes.)
#[test]
fn a_paused_reader_is_fenced_and_its_view_survives_the_grace_period() {
    use gismo_core::store::clients::status;
    let (store, fd) = fresh_store("gismo-recovery-reader");
    let parent = store.connect("parent").unwrap();
    let a = ObjectId::from_u64(1);
    let mut b = parent
        .create(&a, 1 << 20, b"", &CreateInfo::default())
        .unwrap();
    b.data_mut().fill(0xAA);
    b.seal().unwrap();
    let (mut child, mut out) = spawn("reader", fd, "reader-host");
    let mut stdin = child.stdin.take().unwrap();
    let index = wait_ready_value(&mut out);
    let pid = child.id() as i32;
    // SAFETY: plain signal to our own child process.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    // Its heartbeat thread is stopped too: after a lease (observed by us) it is quarantined.
    let lease_ms = 50;
    let t = Instant::now();
    while status_of(&store, index) != status::QUARANTINED {
        assert!(
            parent.reap_dead(lease_ms).unwrap().is_empty(),
            "nothing is reaped before the grace period"
        );
        assert!(t.elapsed() < Duration::from_secs(30), "never quarantined");
        std::thread::sleep(Duration::from_millis(5));
    }
    // Its reference still counts: the delete is deferred, and the block stays allocated while
    // new objects fill the heap.
    assert_eq!(parent.delete(&a).unwrap(), DeleteOutcome::Deferred);
    let mut filled = Vec::new();
    for i in 1000.. {
        match parent.create(&ObjectId::from_u64(i), 1 << 20, b"", &CreateInfo::default()) {
            Ok(mut c) => {
                c.data_mut().fill(0x55);
                c.seal().unwrap();
                filled.push(ObjectId::from_u64(i));
            }
            Err(StoreError::StoreFull { .. }) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(!filled.is_empty());
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    use std::io::Write;
    writeln!(stdin).unwrap();
    let mut results = Vec::new();
    let mut line = String::new();
    while !line.starts_with("DONE") {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "child exited early");
        if ["VIEW", "COPY", "GET"].iter().any(|p| line.starts_with(p)) {
            results.push(line.trim().to_string());
        }
    }
    assert!(child.wait().unwrap().success());
    assert_eq!(results, ["VIEW old", "COPY fenced", "GET fenced"]);
    // The child exited: its entry stays quarantined (a process on another host cannot be
    // checked) until the grace is over; then the reap runs the deferred delete.
    let reports = reap_until_reaped(&parent, lease_ms);
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].released_references, 1, "{:?}", reports[0]);
    assert_eq!(reports[0].deleted_objects, 1, "{:?}", reports[0]);
    assert!(store.lookup_summary(&a).is_none());
    // A's block is free again: one more object fits.
    parent
        .create(&ObjectId::from_u64(1), 1 << 20, b"", &CreateInfo::default())
        .expect("the quarantined block was returned after the grace")
        .seal()
        .unwrap();
    assert!(store.fsck(false).problems.is_empty());
}

/// A client that makes no call for many leases, or waits in a long get for another client's
/// seal, is kept alive by the heartbeat thread: a reaper on "another host" (own GISMO_HOST)
/// never judges it dead by lease. (Before the thread, both were reaped after one lease.)
#[test]
fn an_idle_client_and_a_long_waiting_get_keep_their_lease() {
    use std::io::Write;
    let (store, fd) = fresh_store("gismo-recovery-longget");
    let parent = store.connect("parent").unwrap();
    let (mut idle, mut idle_out) = spawn("quiet", fd, "quiet-host");
    let idle_index = wait_ready_value(&mut idle_out);
    let creating = parent
        .create(&ObjectId::from_u64(9), 8, b"", &CreateInfo::default())
        .unwrap();
    let (mut child, mut out) = spawn("longget", fd, "waiting-host");
    let index = wait_ready_value(&mut out);
    // Observe both for many leases: never dead.
    let lease_ms = 300;
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(lease_ms * 4) {
        assert!(parent.reap_dead(lease_ms).unwrap().is_empty());
        for i in [index, idle_index] {
            assert_eq!(
                status_of(&store, i),
                gismo_core::store::clients::status::ACTIVE
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    creating.seal().unwrap();
    let mut line = String::new();
    while !line.starts_with("GOT") {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "child exited early");
    }
    assert_eq!(line.trim(), "GOT ok");
    assert!(child.wait().unwrap().success());
    writeln!(idle.stdin.take().unwrap()).unwrap();
    line.clear();
    while !line.starts_with("GOT") {
        line.clear();
        assert!(
            idle_out.read_line(&mut line).unwrap() > 0,
            "quiet child exited early"
        );
    }
    assert_eq!(line.trim(), "GOT ok");
    assert!(idle.wait().unwrap().success());
}

/// A `DEAD` entry (an interrupted reap) is finished only under the maintenance lock, by a
/// registered maintainer: `fsck --repair` (which holds no client) reports it and leaves it, and
/// the next `reap_dead` finishes it.
#[test]
fn fsck_repair_does_not_reap_without_the_maintenance_lock() {
    let (store, fd) = fresh_store("gismo-recovery-fsck-dead");
    let parent = store.connect("parent").unwrap();
    parent
        .create(&ObjectId::from_u64(1), 64, b"", &CreateInfo::default())
        .unwrap()
        .seal()
        .unwrap();
    let host = gismo_core::store::clients::HostIdentity::current().name;
    let (mut child, mut out) = spawn("hold", fd, &host);
    wait_ready(&mut out);
    child.kill().unwrap();
    child.wait().unwrap();
    let index = store.dead_clients(u64::MAX)[0].0;
    // A maintainer fenced it and died.
    let word = entry_word(&store, index, 0);
    let dead = gismo_core::store::clients::EntryWord {
        status: gismo_core::store::clients::status::DEAD,
        ..judged(&store, index)
    };
    word.store(dead.pack(), std::sync::atomic::Ordering::SeqCst);
    let r = store.fsck(true);
    assert!(r
        .problems
        .contains(&gismo_core::store::fsck::Problem::DeadClient { client: index }));
    assert_eq!(judged(&store, index), dead, "fsck reaped without the lock");
    let reports = parent.reap_dead(60_000).unwrap();
    assert_eq!(reports.len(), 1);
    assert!(store.fsck(false).is_clean());
}
