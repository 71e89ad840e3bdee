//! The [`Maintainer`] with real processes: a client process is killed with SIGKILL while it holds
//! an unsealed object and a reference; the maintainer, driven only by `tick`, takes the lease and
//! reaps the dead client, giving back everything it held — at once when the process can be checked
//! by pid (same host), after the lease and the quarantine grace when it cannot (another host).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gismo_core::store::allocator::capacity_for;
use gismo_core::store::maintenance::{Maintainer, MaintainerConfig, Reap};
use gismo_core::store::{CreateInfo, ObjectId, ReapReport, Store};

const ROLE: &str = "GISMO_MAINTENANCE_ROLE";
/// How long any wait here may take before the test fails (a watchdog, not a timing assertion).
const WATCHDOG: Duration = Duration::from_secs(30);

fn fresh_store(name: &str) -> (Arc<Store>, i32) {
    let (fd, store) = common::memfd_store_for_children(name, 32 << 20);
    (store, fd)
}
/// Starts this test binary as a child that holds objects in the region behind `fd`, as host
/// `host`, and waits until it says it holds them.
fn spawn_holder(fd: i32, host: &str) -> Child {
    spawn_child(fd, host, "hold")
}

fn spawn_child(fd: i32, host: &str, role: &str) -> Child {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child", "--nocapture", "--test-threads=1"])
        .env(ROLE, role)
        .env("GISMO_TEST_FD", fd.to_string())
        .env("GISMO_HOST", host)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    wait_ready(&mut out);
    child
}

fn wait_ready(out: &mut BufReader<ChildStdout>) {
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
    }
}

/// The child side: attaches through the inherited descriptor, creates an unsealed 1 MiB object
/// and takes a reference on the parent's object 1, then waits to be killed.
#[test]
fn child() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    if role == "own" {
        return own_objects();
    }
    assert_eq!(role, "hold");
    let store = common::attach_inherited();
    let client = store.connect("maintenance-hold").unwrap();
    let unsealed = client
        .create(
            &ObjectId::from_u64(100),
            1 << 20,
            b"",
            &CreateInfo::default(),
        )
        .unwrap();
    std::mem::forget(unsealed);
    let held = client
        .get(&ObjectId::from_u64(1), Some(Duration::ZERO))
        .unwrap()
        .unwrap();
    std::mem::forget(held);
    println!("READY");
    std::thread::sleep(Duration::from_secs(60));
}

/// Objects this child owns: 200 and 201 created to die with it, 202 an ordinary one, each sealed
/// and pinned by a `get` (as `gismo.ray`'s keeper pins what it put); then it waits to be killed.
fn own_objects() {
    let store = common::attach_inherited();
    let client = store.connect("maintenance-own").unwrap();
    for (id, dies) in [(200, true), (201, true), (202, false)] {
        let info = CreateInfo {
            dies_with_creator: dies,
            ..CreateInfo::default()
        };
        let oid = ObjectId::from_u64(id);
        client
            .create(&oid, 4096, b"", &info)
            .unwrap()
            .seal()
            .unwrap();
        std::mem::forget(client.get(&oid, Some(Duration::ZERO)).unwrap().unwrap());
    }
    println!("READY");
    std::thread::sleep(Duration::from_secs(60));
}

/// A killed creator's objects made with `dies_with_creator` are deleted by its reap (one at
/// once, one its reader still holds when the reader lets go); its ordinary object stays,
/// unreferenced. What makes a killed Ray cluster's `gismo.ray` objects leave the region.
#[test]
fn a_killed_creators_objects_that_die_with_it_are_deleted_by_its_reap() {
    let (store, fd) = fresh_store("gismo-maintenance-dies-with-creator");
    let reader = store.connect("reader").unwrap();
    let baseline = store.stats().used_bytes;
    let mut m = Maintainer::new(&store, MaintainerConfig::new("maintainer", 200)).unwrap();
    let mut child = spawn_child(fd, &local_host(), "own");
    let held = reader
        .get(&ObjectId::from_u64(201), Some(Duration::ZERO))
        .unwrap()
        .expect("201 is sealed");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let reports = tick_until_reaped(&mut m);
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert_eq!(reports[0].released_references, 3, "{:?}", reports[0]);
    assert_eq!(
        reports[0].deleted_objects, 1,
        "200 at once: {:?}",
        reports[0]
    );
    assert!(!reader.contains(&ObjectId::from_u64(200)).unwrap());
    let o201 = store.lookup_summary(&ObjectId::from_u64(201)).unwrap();
    assert!(o201.delete_pending && o201.refcount == 1, "{o201:?}");
    assert_eq!(held.data().len(), 4096, "the reader's view stays valid");
    let o202 = store.lookup_summary(&ObjectId::from_u64(202)).unwrap();
    assert!(!o202.delete_pending && o202.refcount == 0, "{o202:?}");
    drop(held);
    assert!(
        !reader.contains(&ObjectId::from_u64(201)).unwrap(),
        "deleted at the release"
    );
    assert_eq!(
        store.stats().used_bytes,
        baseline + capacity_for(4096),
        "only the ordinary object is left"
    );
}

/// Ticks `m` on this process's monotonic clock until a tick reaps someone; returns the reports.
fn tick_until_reaped(m: &mut Maintainer) -> Vec<ReapReport> {
    let start = Instant::now();
    loop {
        let tick = m.tick(gismo_platform::clock::monotonic_ms());
        if let Some(reap) = tick.reap {
            match reap.expect("reap") {
                Reap::Reaped(r) if !r.is_empty() => return r,
                Reap::Reaped(_) => {}
                other => panic!("unexpected reap outcome {other:?}"),
            }
        }
        assert!(start.elapsed() < WATCHDOG, "the maintainer never reaped");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn reaps_a_killed_client(name: &str, host: &str) {
    let (store, fd) = fresh_store(name);
    let parent = store.connect("parent").unwrap();
    parent
        .create(&ObjectId::from_u64(1), 64, b"", &CreateInfo::default())
        .unwrap()
        .seal()
        .unwrap();
    let baseline = store.stats().used_bytes;
    assert_eq!(baseline, capacity_for(64));
    let mut m = Maintainer::new(&store, MaintainerConfig::new("maintainer", 200)).unwrap();
    let mut child = spawn_holder(fd, host);
    let pid = child.id();
    assert!(store.stats().used_bytes > baseline, "the child holds heap");
    assert_eq!(
        store
            .lookup_summary(&ObjectId::from_u64(1))
            .map(|o| o.refcount),
        Some(1),
        "the child references object 1"
    );
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let reports = tick_until_reaped(&mut m);
    assert!(m.is_leader(gismo_platform::clock::monotonic_ms()));
    assert_eq!(
        store.leader().holder,
        Some(m.me()),
        "it leads while reaping"
    );
    assert_eq!(reports.len(), 1, "{reports:?}");
    let r = &reports[0];
    assert_eq!(r.pid, pid);
    assert_eq!(r.aborted_objects, 1, "{r:?}");
    // Its creation reference on the unsealed object, and its `get` of object 1.
    assert_eq!(r.released_references, 2, "{r:?}");
    assert!(
        !store.clients().iter().any(|c| c.name == "maintenance-hold"),
        "the dead client's entry is free"
    );
    assert_eq!(
        store.stats().used_bytes,
        baseline,
        "its heap was given back"
    );
    assert!(!parent.contains(&ObjectId::from_u64(100)).unwrap());
    assert!(parent.contains(&ObjectId::from_u64(1)).unwrap());
    // Dropping the maintainer releases the lease.
    drop(m);
    assert_eq!(store.leader().holder, None);
}

/// Same host: the dead process is found by its pid at the first reap.
#[test]
fn the_maintainer_reaps_a_client_killed_on_this_host() {
    reaps_a_killed_client("gismo-maintenance-local", &local_host());
}

/// Another host: the dead client is found by its heartbeat age (quarantined, then reaped after the
/// grace period).
#[test]
fn the_maintainer_reaps_a_client_killed_on_another_host() {
    reaps_a_killed_client("gismo-maintenance-remote", "maintenance-remote-host");
}

/// This process's host identity as a child inherits it (`GISMO_HOST` if set).
fn local_host() -> String {
    gismo_core::store::clients::HostIdentity::current().name
}
