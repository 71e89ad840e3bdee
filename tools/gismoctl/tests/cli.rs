//! `gismoctl` as a user runs it: real processes on a file region in a temporary directory.
//!
//! Every child runs under a watchdog (killed, and the test failed, after [`WATCHDOG`]); no test
//! asserts how fast anything is.

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

#[allow(unused_imports)]
use support::*;

#[test]
fn format_then_stat_in_text_and_json() {
    let f = Fixture::new();
    let out = f.run(&["format", "--size", "64MiB", "--coherence", "flush"]);
    out.assert_ok();
    assert!(out.stdout_text().contains("formatted"), "{out:?}");

    let text = f.run(&["stat"]).assert_ok().stdout_text();
    for word in [
        "uuid",
        "coherence",
        "flush",
        "objects",
        "clients",
        "counters",
    ] {
        assert!(text.contains(word), "stat lacks {word:?}: {text}");
    }
    let j = f.run(&["stat", "--json"]).assert_ok().json();
    assert_eq!(j["region_bytes"], 64 << 20);
    assert_eq!(j["coherence"], "flush");
    assert!(j["heap_bytes"].as_u64().unwrap() > 0);
    assert_eq!(j["used_bytes"], 0);
    assert_eq!(j["objects"]["sealed"], 0);
    assert_eq!(j["clients"]["active"], 0);
    assert_eq!(j["clients"]["max"], 128);
    assert!(j["size_classes"].is_array());
    assert!(j["counters"]["objects_created"].is_u64());
}

#[test]
fn format_refuses_a_formatted_region_without_force() {
    let f = Fixture::formatted();
    let uuid = f.run(&["stat", "--json"]).json()["uuid"].clone();
    let out = f.run(&["format", "--size", "32MiB"]);
    out.assert_one_line_failure(4);
    assert!(out.stderr.contains("--force"), "{out:?}");
    // Refused before anything changed: same store, same size.
    let j = f.run(&["stat", "--json"]).assert_ok().json();
    assert_eq!(j["uuid"], uuid);
    assert_eq!(j["region_bytes"], 64 << 20);

    f.run(&[
        "format",
        "--force",
        "--max-clients",
        "8",
        "--refs-per-client",
        "64",
        "--dir-capacity",
        "1024",
    ])
    .assert_ok();
    let j = f.run(&["stat", "--json"]).assert_ok().json();
    assert_ne!(j["uuid"], uuid);
    assert_eq!(j["clients"]["max"], 8);
    assert_eq!(j["clients"]["refs_per_client"], 64);
    assert_eq!(j["dir_capacity"], 1024);
}

#[test]
fn format_without_size_needs_an_existing_region() {
    let f = Fixture::new();
    f.run(&["format"]).assert_one_line_failure(2);
    f.run(&["format", "--size", "1MiB"])
        .assert_one_line_failure(2);
    f.run(&["format", "--size", "64MiB", "--dir-capacity", "1000"])
        .assert_one_line_failure(2);
}

#[test]
fn put_get_round_trip_is_byte_exact() {
    let f = Fixture::formatted();
    // Small (size-class chunk), large (page run), and empty objects.
    for (n, len) in [(1u8, 1000usize), (2, 3 << 20), (3, 0), (4, 64 * 1024 + 1)] {
        let data = payload(len, u64::from(n));
        let file = f.write_file(&format!("in{n}"), &data);
        f.run(&["put", &id(n), path_str(&file)]).assert_ok();
        let out = f.run(&["get", &id(n)]);
        out.assert_ok();
        assert!(out.stdout == data, "object {n}: {len} bytes differ");
    }
    // -o FILE
    let dest = f.dir.path().join("out2");
    f.run(&["get", &id(2), "-o", path_str(&dest)]).assert_ok();
    assert!(std::fs::read(&dest).unwrap() == payload(3 << 20, 2));
}

#[test]
fn put_from_stdin_and_metadata() {
    let f = Fixture::formatted();
    let data = payload(200_003, 9);
    f.run_with_stdin(&["put", &id(9), "-", "--metadata", "pickle5"], data.clone())
        .assert_ok();
    assert!(f.run(&["get", &id(9)]).assert_ok().stdout == data);
    let meta = f.run(&["get", &id(9), "--metadata"]);
    assert_eq!(meta.assert_ok().stdout, b"pickle5");
    let row = &f.ls()[0];
    assert_eq!(row["size"], 200_003);
    assert_eq!(row["metadata_size"], 7);
}

#[test]
fn ls_stat_and_rm() {
    let f = Fixture::formatted();
    let file = f.write_file("in", &payload(5000, 1));
    for n in 1..=3 {
        f.run(&["put", &id(n), path_str(&file)]).assert_ok();
    }
    let rows = f.ls();
    assert_eq!(rows.len(), 3);
    for (n, row) in (1..=3).zip(&rows) {
        assert_eq!(row["id"], id(n));
        assert_eq!(row["size"], 5000);
        assert_eq!(row["state"], "sealed");
        assert_eq!(row["refcount"], 0);
    }
    let text = f.run(&["ls"]).assert_ok().stdout_text();
    assert_eq!(text.lines().count(), 4, "{text}");
    assert!(text.contains(&id(2)));

    let j = f.run(&["stat", "--json"]).assert_ok().json();
    assert_eq!(j["objects"]["sealed"], 3);
    assert_eq!(j["counters"]["objects_sealed"], 3);

    f.run(&["rm", &id(2)]).assert_ok();
    let ids: Vec<Value> = f.ls().iter().map(|r| r["id"].clone()).collect();
    assert_eq!(ids, vec![Value::from(id(1)), Value::from(id(3))]);
    f.run(&["rm", &id(2)]).assert_one_line_failure(3);
    f.run(&["get", &id(2)]).assert_one_line_failure(3);
    // Freed space is reused: the id can be stored again.
    f.run(&["put", &id(2), path_str(&file)]).assert_ok();
}

#[test]
fn duplicate_put_fails_with_one_line() {
    let f = Fixture::formatted();
    let first = f.write_file("a", b"first");
    let second = f.write_file("b", b"second");
    f.run(&["put", &id(7), path_str(&first)]).assert_ok();
    let out = f.run(&["put", &id(7), path_str(&second)]);
    out.assert_one_line_failure(4);
    assert!(out.stderr.contains("already exists"), "{out:?}");
    assert_eq!(f.run(&["get", &id(7)]).assert_ok().stdout, b"first");
    assert_eq!(f.ls().len(), 1);
}

#[test]
fn get_of_a_missing_object_times_out_with_one_line() {
    let f = Fixture::formatted();
    let out = f.run(&["get", &id(5), "--timeout-ms", "300"]);
    out.assert_one_line_failure(3);
    assert!(out.stderr.contains("not found within 300 ms"), "{out:?}");
    assert!(out.stdout.is_empty());
    f.run(&["get", &id(5)]).assert_one_line_failure(3);
    // The timed-out get left no client behind.
    assert_eq!(f.run(&["stat", "--json"]).json()["clients"]["active"], 0);
}

#[test]
fn waiting_get_receives_an_object_put_by_another_process() {
    let f = Fixture::formatted();
    let data = payload(100_000, 42);
    let file = f.write_file("in", &data);
    let getter = f.spawn(&["get", &id(8), "--timeout-ms", "5000"]);
    // Put only once the getter is attached and waiting (its client appears in the table).
    wait_until_attached(&f, getter.id());
    f.run(&["put", &id(8), path_str(&file)]).assert_ok();
    let out = finish(getter, None);
    out.assert_ok();
    assert!(out.stdout == data);
}

/// Polls `clients --json` until a client of process `pid` is attached.
fn wait_until_attached(f: &Fixture, pid: u32) {
    let deadline = Instant::now() + WATCHDOG;
    loop {
        let clients = f.run(&["clients", "--json"]).assert_ok().json();
        let rows = clients.as_array().expect("clients --json is an array");
        if rows.iter().any(|c| c["pid"] == pid) {
            return;
        }
        assert!(Instant::now() < deadline, "process {pid} never attached");
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn interrupted_get_detaches_cleanly() {
    let f = Fixture::formatted();
    let getter = f.spawn(&["get", &id(6), "--timeout-ms", "-1"]);
    let pid = getter.id();
    wait_until_attached(&f, pid);
    // SAFETY: `kill` only sends a signal; the child is not reaped yet, so `pid` still names it.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGINT) }, 0);
    let out = finish(getter, None);
    out.assert_one_line_failure(130);
    assert!(out.stderr.contains("interrupted"), "{out:?}");
    // Its client table entry was freed on the way out.
    assert_eq!(f.run(&["clients", "--json"]).json(), Value::Array(vec![]));
}

#[test]
fn concurrent_put_processes_all_succeed() {
    let f = Fixture::formatted();
    let n = 8u8;
    let files: Vec<PathBuf> = (1..=n)
        .map(|i| {
            f.write_file(
                &format!("in{i}"),
                &payload(10_000 * usize::from(i), i.into()),
            )
        })
        .collect();
    let children: Vec<Child> = (1..=n)
        .zip(&files)
        .map(|(i, file)| f.spawn(&["put", &id(i), path_str(file)]))
        .collect();
    for child in children {
        finish(child, None).assert_ok();
    }
    let rows = f.ls();
    assert_eq!(rows.len(), usize::from(n));
    for i in 1..=n {
        assert!(
            rows.iter()
                .any(|r| r["id"] == id(i) && r["size"] == 10_000 * u64::from(i)),
            "object {i} missing from ls"
        );
        let out = f.run(&["get", &id(i)]);
        assert!(out.assert_ok().stdout == payload(10_000 * usize::from(i), i.into()));
    }
}

#[test]
fn bad_command_lines_fail_with_one_line() {
    let f = Fixture::formatted();
    f.run(&["get", "not-an-id"]).assert_one_line_failure(2);
    f.run(&["get", &"a".repeat(55)]).assert_one_line_failure(2);
    f.run(&["rm", &"zz".repeat(28)]).assert_one_line_failure(2);
    f.run(&["format", "--size", "12XB"])
        .assert_one_line_failure(2);
    f.run(&["get", &id(1), "--timeout-ms", "-5"])
        .assert_one_line_failure(2);
    f.run(&["frobnicate"]).assert_one_line_failure(2);
    f.run(&["put", &id(1)]).assert_one_line_failure(2);
    let missing = f.dir.path().join("no-such-input");
    f.run(&["put", &id(1), path_str(&missing)])
        .assert_one_line_failure(1);
}

#[test]
fn missing_or_bad_region_fails_with_one_line() {
    let out = finish(
        Command::new(GISMOCTL)
            .arg("stat")
            .env_remove("GISMO_REGION")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn"),
        None,
    );
    out.assert_one_line_failure(2);
    assert!(out.stderr.contains("GISMO_REGION"), "{out:?}");

    // From the environment, when --region is absent.
    let f = Fixture::formatted();
    let out = finish(
        Command::new(GISMOCTL)
            .arg("stat")
            .env("GISMO_REGION", &f.region)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn"),
        None,
    );
    out.assert_ok();

    let nowhere = Fixture::new();
    nowhere.run(&["stat"]).assert_one_line_failure(6);
    nowhere.run(&["ls"]).assert_one_line_failure(6);
    let mut bad = Fixture::new();
    bad.region = "daxx:/dev/dax0.0".into();
    bad.run(&["stat"]).assert_one_line_failure(2);
}

#[test]
fn unformatted_region_is_refused_with_one_line() {
    let f = Fixture::new();
    std::fs::File::create(f.path())
        .and_then(|file| file.set_len(8 << 20))
        .expect("zero file");
    let out = f.run(&["stat"]);
    out.assert_one_line_failure(6);
    assert!(out.stderr.contains("not a GISMO region"), "{out:?}");
    f.run(&["put", &id(1), "-"]).assert_one_line_failure(6);
    // ... and can be formatted in place, at its current size.
    f.run(&["format"]).assert_ok();
    assert_eq!(f.run(&["stat", "--json"]).json()["region_bytes"], 8 << 20);
}

#[test]
fn corrupt_superblock_is_refused_with_one_line() {
    let f = Fixture::formatted();
    let file = f.write_file("in", b"payload");
    f.run(&["put", &id(1), path_str(&file)]).assert_ok();
    let mut bytes = std::fs::read(f.path()).expect("read region");
    for (i, b) in bytes[..64].iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(37) ^ 0x5a;
    }
    std::fs::write(f.path(), &bytes).expect("corrupt region");
    for args in [&["stat"][..], &["ls"], &["clients"], &["get", &id(1)]] {
        f.run(args).assert_one_line_failure(6);
    }
    // A damaged checksum (magic intact) is caught too.
    let f = Fixture::formatted();
    let mut bytes = std::fs::read(f.path()).expect("read region");
    bytes[40] ^= 0xff; // inside the uuid
    std::fs::write(f.path(), &bytes).expect("corrupt region");
    let out = f.run(&["stat"]);
    out.assert_one_line_failure(6);
    assert!(out.stderr.contains("checksum"), "{out:?}");
}

#[test]
fn store_full_is_reported() {
    let f = Fixture::new();
    f.run(&["format", "--size", "8MiB"]).assert_ok();
    let file = f.write_file("big", &payload(16 << 20, 3));
    let out = f.run(&["put", &id(1), path_str(&file)]);
    out.assert_one_line_failure(5);
    // Nothing was left behind by the failed put.
    assert!(f.ls().is_empty());
    assert_eq!(f.run(&["stat", "--json"]).json()["used_bytes"], 0);
}

#[test]
fn clients_lists_nothing_when_idle() {
    let f = Fixture::formatted();
    let j = f.run(&["clients", "--json"]).assert_ok().json();
    assert_eq!(j, Value::Array(vec![]));
    let text = f.run(&["clients"]).assert_ok().stdout_text();
    assert!(text.starts_with("INDEX"), "{text}");
}

#[test]
fn help_documents_exit_codes() {
    let out = finish(
        Command::new(GISMOCTL)
            .arg("--help")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn"),
        None,
    );
    let text = out.assert_ok().stdout_text();
    for needle in [
        "Exit codes",
        "3  object not found",
        "6  region unusable",
        "GISMO_REGION",
    ] {
        assert!(text.contains(needle), "--help lacks {needle:?}");
    }
}

#[test]
fn fsck_reports_a_clean_region_in_text_and_json() {
    let f = Fixture::formatted();
    let input = f.write_file("in", &payload(100_000, 3));
    f.run(&["put", &id(7), path_str(&input)]).assert_ok();
    let text = f.run(&["fsck"]).assert_ok().stdout_text();
    let last = text.lines().last().expect("a summary line");
    assert!(last.starts_with("clean: 1 objects"), "{text}");
    let report = f.run(&["fsck", "--json"]).assert_ok().json();
    assert_eq!(report["clean"], true);
    assert_eq!(report["objects"], 1);
    assert_eq!(report["problems"], Value::Array(vec![]));
    // The allocator's ground truth agrees with what stat reports.
    let stat = f.run(&["stat", "--json"]).assert_ok().json();
    assert_eq!(report["used_bytes"], stat["used_bytes"]);
    // Nothing to repair on a quiet region.
    let repaired = f.run(&["fsck", "--repair", "--json"]).assert_ok().json();
    assert_eq!(repaired["repaired"]["count"], 0);
}

#[test]
fn fsck_repair_refuses_while_a_client_is_active_unless_forced() {
    let f = Fixture::formatted();
    let getter = f.spawn(&["get", &id(8), "--timeout-ms", "-1"]);
    let pid = getter.id();
    wait_until_attached(&f, pid);
    // Checking is always allowed.
    f.run(&["fsck"]).assert_ok();
    let refused = f.run(&["fsck", "--repair"]);
    refused.assert_one_line_failure(1);
    assert!(refused.stderr.contains("--force"), "{refused:?}");
    f.run(&["fsck", "--repair", "--force"]).assert_ok();
    // --force means nothing without --repair.
    f.run(&["fsck", "--force"]).assert_one_line_failure(2);
    // SAFETY: `kill` only sends a signal; the child is not reaped yet, so `pid` still names it.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGINT) }, 0);
    finish(getter, None);
}

#[test]
fn stat_shows_no_leader_without_a_server() {
    let f = Fixture::formatted();
    let text = f.run(&["stat"]).assert_ok().stdout_text();
    assert!(text.contains("leader      none"), "{text}");
    let stat = f.run(&["stat", "--json"]).assert_ok().json();
    assert_eq!(stat["leader"], Value::Null);
}

#[test]
fn format_creates_region_files_private_unless_asked_to_share() {
    use std::os::unix::fs::PermissionsExt;
    let f = Fixture::new();
    f.run(&["format", "--size", "16MiB"]).assert_ok();
    let mode = std::fs::metadata(f.dir.path().join("region"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "default: owner only");
    let g = Fixture::new();
    g.run(&["format", "--size", "16MiB", "--mode", "660"])
        .assert_ok();
    let mode = std::fs::metadata(g.dir.path().join("region"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o660, "--mode 660 shares with the group");
    let bad = Fixture::new().run(&["format", "--size", "16MiB", "--mode", "999"]);
    assert_eq!(bad.code, 2, "a bad mode is a usage error: {}", bad.stderr);
}

#[test]
fn crashpoints_lists_every_named_point_one_per_line() {
    let f = Fixture::new();
    let out = f.run(&["crashpoints"]).assert_ok().stdout_text();
    let listed: Vec<&str> = out.lines().collect();
    assert_eq!(listed, gismo_core::store::crashpoint::ALL, "{out}");
}

/// Issue 15's reproduction from outside: a slot with `data_size = u64::MAX` and
/// `metadata_size = 1` (the sum wraps to 0). `get` used to build a 2^64-byte slice and fail only
/// because write(2) returned EFAULT, and fsck reported "1 B live"; now `get` fails with one line
/// and the region-unusable exit code, and fsck flags the slot.
#[test]
fn a_slot_with_a_wrapping_size_is_refused_by_get_and_flagged_by_fsck() {
    use gismo_core::store::directory::Slot;
    use gismo_platform::region::{Region, RegionOptions, RegionSpec};
    use std::os::unix::fs::FileExt;

    let f = Fixture::formatted();
    let input = f.write_file("in", &payload(1000, 5));
    f.run(&["put", &id(5), path_str(&input)]).assert_ok();
    let slot = {
        let region = Region::open(&RegionSpec::File(f.path()), &RegionOptions::default())
            .expect("open region");
        let store = gismo_core::store::Store::attach(region).expect("attach");
        let index = store
            .lookup_summary(&id(5).parse().expect("id"))
            .expect("object")
            .index as u64;
        store
            .layout()
            .section(gismo_core::format::SectionKind::Directory)
            .offset
            + index * gismo_core::format::layout::DIR_SLOT_SIZE
    };
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(f.path())
        .expect("open region file");
    file.write_all_at(
        &u64::MAX.to_le_bytes(),
        slot + std::mem::offset_of!(Slot, data_size) as u64,
    )
    .expect("forge data_size");
    file.write_all_at(
        &1u32.to_le_bytes(),
        slot + std::mem::offset_of!(Slot, metadata_size) as u64,
    )
    .expect("forge metadata_size");
    drop(file);
    let out = f.run(&["get", &id(5)]);
    out.assert_one_line_failure(6);
    assert!(
        out.stdout.is_empty(),
        "get wrote {} bytes",
        out.stdout.len()
    );
    assert!(out.stderr.contains("corrupt"), "{out:?}");
    let report = f.run(&["fsck", "--json"]).json();
    assert_eq!(report["clean"], false, "{report}");
    assert!(
        report["problems"].to_string().contains("overflows"),
        "{report}"
    );
}

/// Issue 15 §2 (H1), reproduced from outside: a `gismoctl get` on "host B" (its own
/// `GISMO_HOST`), blocked writing to a pipe nobody reads, is stopped with SIGSTOP past its lease
/// while this process maintains the region; the object is deleted and its space reused by new
/// objects. After SIGCONT the reader must fail with the fenced exit code (9) and must never have
/// printed another object's bytes: what it printed is a prefix of the object. (Before: it
/// finished with exit 0, most of its output another object's bytes.)
#[test]
fn a_paused_get_fails_fenced_and_never_prints_reused_memory() {
    use gismo_core::store::{
        clients::status, CreateInfo, DeleteOutcome, ObjectId, Store, StoreError,
    };
    use gismo_platform::region::{Region, RegionOptions};
    use std::io::Read;

    let f = Fixture::formatted();
    let len = 8 << 20;
    let data = payload(len, 77);
    let file = f.write_file("big", &data);
    f.run(&["put", &id(1), path_str(&file)]).assert_ok();

    let mut getter = f
        .command(&["get", &id(1)])
        .env("GISMO_HOST", "gismoctl-host-b")
        .spawn()
        .expect("spawn gismoctl");
    let pid = getter.id();
    wait_until_attached(&f, pid);

    let spec = f.region.parse().expect("region spec");
    let store = Store::attach(Region::open(&spec, &RegionOptions::default()).unwrap()).unwrap();
    let me = store.connect("maintainer").unwrap();
    let index = store
        .clients()
        .iter()
        .find(|c| c.pid == pid)
        .expect("the getter is attached")
        .index;
    // Attached is not yet holding: stop it only once its reference is taken (it then blocks
    // writing to the pipe we do not read, the object still held), or the delete below would
    // not be deferred.
    let a: ObjectId = id(1).parse().unwrap();
    let deadline = Instant::now() + WATCHDOG;
    while store.lookup_summary(&a).is_none_or(|o| o.refcount == 0) {
        assert!(
            Instant::now() < deadline,
            "the getter never took its reference"
        );
        thread::sleep(Duration::from_millis(5));
    }
    // SAFETY: `kill` only sends a signal; the child is not reaped yet, so `pid` still names it.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGSTOP) }, 0);
    let lease_ms = 50;
    let status_of = |i: usize| {
        store
            .clients()
            .iter()
            .find(|c| c.index == i)
            .map_or(status::FREE, |c| c.status)
    };
    let deadline = Instant::now() + WATCHDOG;
    while status_of(index) != status::QUARANTINED {
        me.reap_dead(lease_ms).unwrap();
        assert!(
            Instant::now() < deadline,
            "the stopped getter was never fenced"
        );
        thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(me.delete(&a).unwrap(), DeleteOutcome::Deferred);
    // After the grace period its references go and the deferred delete runs.
    while store.lookup_summary(&a).is_some() {
        me.reap_dead(lease_ms).unwrap();
        assert!(Instant::now() < deadline, "the deferred delete never ran");
        thread::sleep(Duration::from_millis(5));
    }
    // New objects take the space (the freed block among them).
    for i in 100.. {
        match me.create(&ObjectId::from_u64(i), 1 << 20, b"", &CreateInfo::default()) {
            Ok(mut c) => {
                c.data_mut().fill(0x55);
                c.seal().unwrap();
            }
            Err(StoreError::StoreFull { .. }) => break,
            Err(e) => panic!("{e}"),
        }
    }
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGCONT) }, 0);
    let mut printed = Vec::new();
    getter
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut printed)
        .unwrap();
    let out = finish(getter, None);
    out.assert_one_line_failure(9);
    assert!(out.stderr.contains("declared dead"), "{out:?}");
    assert!(
        printed.len() < len,
        "it cannot have printed the whole object"
    );
    assert!(
        printed == data[..printed.len()],
        "everything printed is the object's own bytes"
    );
}
