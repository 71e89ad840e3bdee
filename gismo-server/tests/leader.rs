//! Several `gismo-server`s on one region: exactly one leads (reaps and evicts); when it is
//! killed with SIGKILL another takes over, reaps what the dead left behind, and the region stays
//! consistent. Real processes on a file region in a temporary directory.
//!
//! The documented takeover bound is `lease + leader slack + min(lease / 3, 100 ms)` after the leader's
//! death; the tests print how long takeover took but assert only that it happens (under the
//! watchdog): speed lives in benchmarks, not in tests.

mod support;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use gismo_core::format::FormatOptions;
use gismo_core::store::{CreateInfo, ObjectId, Store};
use gismo_platform::region::{Region, RegionOptions, RegionSpec};
use serde_json::Value;
use support::{ctl, gismoctl, Server, WATCHDOG};

const LEASE: &str = "300";
const SLACK: &str = "50";

fn server_args<'a>(region: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "--region",
        region,
        "--lease-ms",
        LEASE,
        "--leader-slack-ms",
        SLACK,
    ];
    v.extend_from_slice(extra);
    v
}

fn json(region: &str, args: &[&str]) -> Value {
    let out = ctl(region, args, b"");
    assert!(out.status.success(), "gismoctl {args:?}: {out:?}");
    serde_json::from_slice(&out.stdout).expect("json")
}

/// Waits (under the watchdog) until `cond` holds.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WATCHDOG;
    while !cond() {
        assert!(Instant::now() < deadline, "watchdog: never {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

fn client_pids(region: &str) -> Vec<u64> {
    json(region, &["clients", "--json"])
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|c| c["pid"].as_u64())
        .collect()
}

/// A `gismoctl get` waiting forever for an object nobody puts: a registered client.
fn waiting_client(region: &str) -> Child {
    Command::new(gismoctl())
        .args([
            "--region",
            region,
            "get",
            &"cd".repeat(28),
            "--timeout-ms",
            "-1",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn gismoctl get")
}

#[test]
fn a_killed_leader_is_replaced_and_the_dead_are_reaped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let region = format!("file:{}", dir.path().join("region").display());
    let mut a = Server::start(&server_args(&region, &["--format", "--size", "64MiB"]));
    a.wait_for("became leader");
    let mut b = Server::start(&server_args(&region, &[]));
    b.wait_for("following leader");
    let leader = json(&region, &["stat", "--json"]);
    assert_eq!(leader["leader"]["pid"].as_u64(), Some(u64::from(a.pid())));

    let mut client = waiting_client(&region);
    let client_pid = u64::from(client.id());
    eventually("saw the client attach", || {
        client_pids(&region).contains(&client_pid)
    });

    // Kill the leader, then the client while nobody leads: only the new leader can reap it.
    let killed_at = Instant::now();
    a.signal(libc::SIGKILL);
    client.kill().expect("kill client");
    client.wait().expect("reap client");
    // Collect the zombie: a zombie's /proc entry still looks like a running process.
    let a_pid = u64::from(a.pid());
    assert_eq!(a.wait().0, -1);
    b.wait_for("became leader");
    eprintln!(
        "takeover after {:?} (bound: lease {LEASE} ms + slack {SLACK} ms + poll {} ms)",
        killed_at.elapsed(),
        (LEASE.parse::<u64>().unwrap() / 3).min(100)
    );
    b.wait_for(&format!("(pid {client_pid})"));
    eventually("saw both dead clients gone", || {
        let pids = client_pids(&region);
        !pids.contains(&client_pid) && !pids.contains(&a_pid)
    });
    let stat = json(&region, &["stat", "--json"]);
    assert_eq!(stat["leader"]["pid"].as_u64(), Some(u64::from(b.pid())));
    assert!(
        stat["counters"]["clients_reaped"].as_u64() >= Some(2),
        "{stat}"
    );

    // A clean stop releases the lease: nobody holds it afterwards.
    b.signal(libc::SIGTERM);
    b.wait_for("released the leader lease");
    assert_eq!(b.wait().0, 0);
    assert!(json(&region, &["stat", "--json"])["leader"].is_null());
}

#[test]
fn a_clean_stop_hands_over_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let region = format!("file:{}", dir.path().join("region").display());
    // A long lease: only the release can make the follower lead before the watchdog.
    let mut a = Server::start(&[
        "--region",
        &region,
        "--format",
        "--size",
        "32MiB",
        "--lease-ms",
        "600000",
    ]);
    a.wait_for("became leader");
    let mut b = Server::start(&["--region", &region, "--lease-ms", "600000"]);
    b.wait_for("following leader");
    a.signal(libc::SIGINT);
    a.wait_for("released the leader lease");
    assert_eq!(a.wait().0, 0);
    b.wait_for("became leader");
    b.signal(libc::SIGTERM);
    assert_eq!(b.wait().0, 0);
}

#[test]
fn a_server_paused_past_its_lease_is_fenced_and_registers_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let region = format!("file:{}", dir.path().join("region").display());
    // Two emulated hosts: each judges the other's clients by heartbeat age.
    let mut a = Server::start_on_host(
        &server_args(&region, &["--format", "--size", "32MiB"]),
        Some("host-a"),
    );
    a.wait_for("became leader");
    let mut b = Server::start_on_host(&server_args(&region, &[]), Some("host-b"));
    b.wait_for("following leader");
    a.signal(libc::SIGSTOP);
    b.wait_for("became leader");
    // A's heartbeat ages past the lease: B's reaper declares its client dead.
    b.wait_for(&format!("(pid {})", a.pid()));
    a.signal(libc::SIGCONT);
    a.wait_for("lost leadership");
    a.wait_for("registered again as");
    a.wait_for("following leader");
    let stat = json(&region, &["stat", "--json"]);
    assert_eq!(stat["leader"]["pid"].as_u64(), Some(u64::from(b.pid())));
    let a_pid = u64::from(a.pid());
    assert!(client_pids(&region).contains(&a_pid));
    for s in [a, b] {
        s.signal(libc::SIGTERM);
        assert_eq!(s.wait().0, 0);
    }
}

/// Formats a region with room for many small objects and fills it to `fill` of its heap with
/// sealed, unreferenced objects; returns the number of objects.
fn fill(path: &std::path::Path, fill: f64) -> usize {
    let spec = RegionSpec::File(path.to_path_buf());
    let region = Region::create(&spec, 64 << 20, &RegionOptions::default()).expect("create");
    let store: Arc<Store> = Store::format(
        region,
        &FormatOptions {
            dir_capacity: Some(32768),
            ..FormatOptions::default()
        },
    )
    .expect("format");
    let client = store.connect("filler").expect("connect");
    let heap = store.stats().heap_bytes;
    let mut n = 0usize;
    while (store.stats().used_bytes as f64) < heap as f64 * fill {
        for _ in 0..256 {
            let mut id = [0u8; 28];
            id[..8].copy_from_slice(&(n as u64 + 1).to_le_bytes());
            let mut buf = client
                .create(&ObjectId(id), 2000, b"", &CreateInfo::default())
                .expect("create");
            buf.data_mut()[0] = n as u8;
            buf.seal().expect("seal");
            n += 1;
        }
    }
    client.disconnect();
    n
}

#[test]
fn a_leader_killed_while_evicting_leaves_a_consistent_region() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("region");
    let objects = fill(&path, 0.95);
    let region = format!("file:{}", path.display());
    let used_before = json(&region, &["stat", "--json"])["used_bytes"]
        .as_u64()
        .expect("used");
    eprintln!("filled with {objects} objects, {used_before} bytes used");

    // The first server leads and starts evicting at once; it is killed as soon as it says so,
    // which lands in the middle of the eviction or just after it (either must be survived).
    let watermarks = ["--high-watermark", "0.9", "--low-watermark", "0.1"];
    let mut leader = Server::start(&server_args(&region, &watermarks));
    leader.wait_for("became leader");
    let mut a = Server::start(&server_args(&region, &watermarks));
    a.wait_for("following leader");
    // Watch the heap from this process (an attachment, not a client) and kill the leader as
    // soon as its eviction has freed something: in the middle of it, unless it was very quick.
    let watcher = Store::attach(
        Region::open(&RegionSpec::File(path.clone()), &RegionOptions::default()).expect("open"),
    )
    .expect("attach");
    let deadline = Instant::now() + WATCHDOG;
    while watcher.stats().used_bytes >= used_before {
        assert!(
            Instant::now() < deadline,
            "watchdog: the leader never evicted"
        );
        thread::yield_now();
    }
    leader.signal(libc::SIGKILL);
    assert_eq!(leader.wait().0, -1);
    let at_kill = json(&region, &["stat", "--json"]);
    eprintln!(
        "at the kill: used {} objects {}",
        at_kill["used_bytes"], at_kill["objects"]
    );
    a.wait_for("became leader");

    // The new leader reaps the dead server's client and finishes the eviction.
    eventually("used bytes at or below the high watermark", || {
        let s = json(&region, &["stat", "--json"]);
        let (used, heap) = (s["used_bytes"].as_u64(), s["heap_bytes"].as_u64());
        used.zip(heap)
            .is_some_and(|(u, h)| (u as f64) <= h as f64 * 0.9)
    });
    a.signal(libc::SIGTERM);
    assert_eq!(a.wait().0, 0);

    let out = ctl(&region, &["fsck", "--json"], b"");
    let report: Value = serde_json::from_slice(&out.stdout).expect("fsck json");
    assert!(out.status.success(), "fsck: {report}");
    assert_eq!(report["clean"], Value::Bool(true), "{report}");
    assert!(report["counter_drift"].is_null(), "{report}");
    let stat = json(&region, &["stat", "--json"]);
    assert_eq!(
        stat["used_bytes"], report["used_bytes"],
        "{stat} vs {report}"
    );
    // Every remaining object's allocation, and nothing else, is in use.
    let live: u64 = json(&region, &["ls", "--json"])
        .as_array()
        .expect("ls array")
        .iter()
        .map(|o| {
            let size = o["size"].as_u64().unwrap_or(0) + o["metadata_size"].as_u64().unwrap_or(0);
            gismo_core::store::allocator::capacity_for(size.max(1))
        })
        .sum();
    assert_eq!(report["used_bytes"].as_u64(), Some(live), "{report}");
    assert!(live < used_before);
}
