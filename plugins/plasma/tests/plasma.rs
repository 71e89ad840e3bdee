//! The plasma fallback store: the conformance suite over its real socket protocol (directly and
//! through the plugin manager), fallback allocations, bad input on the wire, and clients in
//! other processes that are killed while holding objects.

#[path = "../../../plugin/tests/support/conformance_suite.rs"]
#[macro_use]
mod conformance_suite;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use conformance_suite::{owner, put, wait_until, Plugin};
use gismo_core::store::{ObjectId, ObjectSource};
use gismo_plasma::{PlasmaClient, PlasmaRunner, PlasmaSettings, Server};
use gismo_plugin::interface::{ObjectStoreClient, ObjectStoreRunner, RunnerCallbacks, StatusCode};
use gismo_plugin::PluginManager;

/// A plugin manager that knows this crate's built-in alone (the programs' table,
/// `gismo_builtins::BUILTINS`, is a layer above).
fn plugin_manager() -> &'static PluginManager {
    static BUILTINS: &[gismo_plugin::Builtin] = &[gismo_plasma::BUILTIN];
    static MANAGER: std::sync::OnceLock<PluginManager> = std::sync::OnceLock::new();
    MANAGER.get_or_init(|| PluginManager::new(BUILTINS))
}

fn params(dir: &std::path::Path, memory: &str) -> BTreeMap<String, String> {
    [
        (
            "store_socket_name",
            dir.join("plasma.sock").to_str().unwrap().to_string(),
        ),
        ("object_store_memory", memory.to_string()),
        ("plasma_directory", "/dev/shm".to_string()),
        ("fallback_directory", dir.to_str().unwrap().to_string()),
        ("oom_grace_period_ms", "200".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

struct PlasmaPlugin {
    server: Arc<Server>,
    params: BTreeMap<String, String>,
    via_manager: bool,
    /// The socket and fallback directory; removed when the plugin is dropped.
    _dir: tempfile::TempDir,
}

impl PlasmaPlugin {
    /// A fresh plasma store (32 MiB) with its socket and fallback files in a new temp dir.
    fn start(via_manager: bool) -> PlasmaPlugin {
        let dir = tempfile::tempdir().unwrap();
        let params = params(dir.path(), "32MiB");
        let settings = PlasmaSettings::from_params(&params).unwrap();
        let server = Server::start(settings, RunnerCallbacks::none()).unwrap();
        PlasmaPlugin {
            server,
            params,
            via_manager,
            _dir: dir,
        }
    }
}

impl Plugin for PlasmaPlugin {
    fn name(&self) -> &str {
        if self.via_manager {
            "plasma (plugin manager)"
        } else {
            "plasma"
        }
    }
    fn client(&self) -> Arc<dyn ObjectStoreClient> {
        if self.via_manager {
            let p: BTreeMap<String, String> = [(
                "store_socket_name".to_string(),
                self.params["store_socket_name"].clone(),
            )]
            .into();
            plugin_manager().create_client("plasma", "", &p).unwrap()
        } else {
            Arc::new(PlasmaClient::from_config(&self.params).unwrap())
        }
    }
    fn runner(&self) -> Box<dyn ObjectStoreRunner> {
        Box::new(PlasmaRunner::attach(self.server.clone()))
    }
    fn capacity(&self) -> u64 {
        PlasmaRunner::attach(self.server.clone()).total_memory_size() as u64
    }
    fn store_counts_each_get(&self) -> bool {
        false
    }
    fn falls_back_to_files(&self) -> bool {
        true
    }
}

mod conformance {
    use super::*;
    instantiate_conformance_tests_with_module!(plasma, PlasmaPlugin::start(false));
    instantiate_conformance_tests_with_module!(plasma_plugin_manager, PlasmaPlugin::start(true));
}

#[test]
fn plasma_clients_are_not_global() {
    let p = PlasmaPlugin::start(false);
    assert!(!p.client().is_global());
}

#[test]
fn the_manager_starts_a_plasma_runner_from_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let params = params(dir.path(), "16MiB");
    let runner = plugin_manager().create_runner("", "", &params).unwrap();
    runner
        .start(&BTreeMap::new(), RunnerCallbacks::none())
        .unwrap();
    assert!(runner.total_memory_size() > 15 << 20);
    let c = plugin_manager()
        .create_client("plasma", "", &params)
        .unwrap();
    let id = ObjectId::random();
    put(&*c, &id, b"from the manager", b"m");
    let got = c.get(&[id], 0).unwrap().pop().unwrap().unwrap();
    assert_eq!(got.data(), b"from the manager");
    assert!(c.get_memory_usage().unwrap().contains("1 objects"));
    drop(got);
    // A second store on the same socket is refused while the first lives.
    let second = plugin_manager()
        .create_runner("plasma", "", &params)
        .unwrap();
    let e = second
        .start(&BTreeMap::new(), RunnerCallbacks::none())
        .unwrap_err();
    assert_eq!(e.code, StatusCode::IOError);
    assert!(e.message.contains("another store"), "{e}");
    runner.stop();
    // Stopped: clients get IOError, not a hang.
    let r = c.get(&[id], -1);
    assert_eq!(r.unwrap_err().code, StatusCode::IOError);
    // Unknown keys and bad values are refused with the key named.
    let mut bad = params.clone();
    bad.insert("colour".into(), "blue".into());
    let e = plugin_manager()
        .create_runner("plasma", "", &bad)
        .err()
        .unwrap();
    assert!(e.to_string().contains("colour"), "{e}");
}

#[test]
fn a_full_fallback_disk_is_out_of_disk() {
    // The fallback directory is a tiny tmpfs: a fallback allocation larger than it fails with
    // OutOfDisk (space is reserved with fallocate first: never a SIGBUS later).
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small");
    std::fs::create_dir(&small).unwrap();
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&small)
        .status();
    if !status.is_ok_and(|s| s.success()) {
        panic!("cannot mount a tmpfs (the suite runs as root)");
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            // Lazily if busy: a child process that another test of this binary forks meanwhile
            // inherits our mapping of the fallback file and keeps the tmpfs busy until it exits
            // (a plain umount then failed, and the mount outlived the suite's temp directory).
            let umount = |args: &[&str]| {
                std::process::Command::new("umount")
                    .args(args)
                    .arg(&self.0)
                    .status()
                    .is_ok_and(|s| s.success())
            };
            if !umount(&[]) {
                umount(&["-l"]);
            }
        }
    }
    let _guard = Unmount(small.clone());
    let mut p = params(dir.path(), "8MiB");
    p.insert("fallback_directory".into(), small.to_str().unwrap().into());
    let runner = PlasmaRunner::new(&p).unwrap();
    runner
        .start(&BTreeMap::new(), RunnerCallbacks::none())
        .unwrap();
    let c = PlasmaClient::from_config(&p).unwrap();
    let r = c.try_create_immediately(
        &ObjectId::random(),
        &owner(),
        16 << 20,
        b"",
        ObjectSource::CreatedByWorker,
    );
    assert_eq!(r.unwrap_err().code, StatusCode::OutOfDisk);
    // One that fits the disk works and is counted.
    let id = ObjectId::random();
    let mut b = c
        .try_create_immediately(&id, &owner(), 9 << 20, b"", ObjectSource::CreatedByWorker)
        .map(|_| ())
        .err();
    // 9 MiB does not fit 1 MiB of disk either; 768 KiB past a full segment does.
    assert_eq!(b.take().unwrap().code, StatusCode::OutOfDisk);
    let filler = ObjectId::random();
    let room = runner.total_memory_size() as u64 - (256 << 10);
    let fb = c
        .create(
            &filler,
            &owner(),
            false,
            room,
            b"",
            ObjectSource::CreatedByWorker,
        )
        .unwrap();
    let small_obj = ObjectId::random();
    let sb = c
        .try_create_immediately(
            &small_obj,
            &owner(),
            768 << 10,
            b"",
            ObjectSource::CreatedByWorker,
        )
        .unwrap();
    assert_eq!(runner.fallback_allocated(), 768 << 10);
    drop((fb, sb));
}

#[test]
fn garbage_on_the_socket_closes_only_that_connection() {
    use std::io::{Read, Write};
    let p = PlasmaPlugin::start(false);
    let good = p.client();
    let id = ObjectId::random();
    put(&*good, &id, b"still here", b"");
    for junk in [
        vec![0u8; 24], // bad cookie
        [
            0x5241_5900_0000_0000i64.to_le_bytes(),
            999i64.to_le_bytes(),
            0u64.to_le_bytes(),
        ]
        .concat(), // unknown type
        [
            0x5241_5900_0000_0000i64.to_le_bytes(),
            8i64.to_le_bytes(),
            16u64.to_le_bytes(),
        ]
        .concat()
        .into_iter()
        .chain([0xffu8; 16])
        .collect(), // a get request that is not a flatbuffer
    ] {
        let mut s =
            std::os::unix::net::UnixStream::connect(&p.params["store_socket_name"]).unwrap();
        s.write_all(&junk).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 1];
        assert_eq!(
            s.read(&mut buf).unwrap(),
            0,
            "the store closes a garbled connection"
        );
    }
    let got = good.get(&[id], 0).unwrap().pop().unwrap().unwrap();
    assert_eq!(got.data(), b"still here");
}

// ---- clients in other processes -----------------------------------------------------------

const CHILD_ENV: &str = "GISMO_PLASMA_TEST_CHILD";

/// Runs in a child process: creates objects, seals one, holds one unsealed and one got, then
/// says "ready" and waits to be killed.
#[test]
fn child_client() {
    let Ok(socket) = std::env::var(CHILD_ENV) else {
        return;
    };
    let p: BTreeMap<String, String> = [("store_socket_name".to_string(), socket)].into();
    let c = PlasmaClient::from_config(&p).unwrap();
    let sealed = ObjectId::from_bytes([1; 28]);
    put(&c, &sealed, b"sealed by the child", b"");
    let held = c.get(&[sealed], 0).unwrap().pop().unwrap().unwrap();
    let unsealed = ObjectId::from_bytes([2; 28]);
    let b = c
        .create(
            &unsealed,
            &owner(),
            false,
            1 << 20,
            b"",
            ObjectSource::CreatedByWorker,
        )
        .unwrap();
    println!("ready");
    std::io::Write::flush(&mut std::io::stdout()).unwrap();
    std::thread::sleep(Duration::from_secs(60));
    drop((held, b));
}

#[test]
fn a_killed_client_loses_its_references_and_unsealed_objects() {
    use std::io::BufRead;
    let p = PlasmaPlugin::start(false);
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_client", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, &p.params["store_socket_name"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    assert!(lines.any(|l| l.is_ok_and(|l| l.contains("ready"))));
    let runner = p.runner();
    let sealed = ObjectId::from_bytes([1; 28]);
    let unsealed = ObjectId::from_bytes([2; 28]);
    let c = p.client();
    // The child's object is readable from this process (its payload was written by the child
    // in the shared segment), and the child's reference makes it its pin.
    let got = c.get(&[sealed], 0).unwrap().pop().unwrap().unwrap();
    assert_eq!(got.data(), b"sealed by the child");
    drop(got);
    // Held once, by the child (our release is a one-way message: wait for it to land).
    wait_until("the child's pin alone", || {
        runner.is_object_spillable(&sealed)
    });
    assert!(!c.contains(&unsealed).unwrap());
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    wait_until("the store notices the death", || {
        !runner.is_object_spillable(&sealed)
    });
    // The unsealed object was aborted: its id is free again.
    let b = c
        .create(
            &unsealed,
            &owner(),
            false,
            8,
            b"",
            ObjectSource::CreatedByWorker,
        )
        .unwrap();
    drop(b);
    // The sealed one is still there, unreferenced (evictable).
    assert!(c.contains(&sealed).unwrap());
}

// ---- segment backends ----------------------------------------------------------------------

/// A put and a get through a store whose segment lives in `plasma_directory` (with `extra`
/// settings).
fn round_trip_in(directory: &str, extra: &[(&str, &str)]) {
    let dir = tempfile::tempdir().unwrap();
    let mut p = params(dir.path(), "16MiB");
    p.insert("plasma_directory".into(), directory.into());
    for (k, v) in extra {
        p.insert(k.to_string(), v.to_string());
    }
    let runner = PlasmaRunner::new(&p).unwrap();
    runner
        .start(&BTreeMap::new(), RunnerCallbacks::none())
        .unwrap_or_else(|e| panic!("plasma segment in {directory}: {e}"));
    let c = PlasmaClient::from_config(&p).unwrap();
    let id = ObjectId::random();
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 241) as u8).collect();
    put(&c, &id, &data, b"seg");
    let got = c.get(&[id], 0).unwrap().pop().unwrap().unwrap();
    assert_eq!(got.data(), &data[..]);
    assert_eq!(got.metadata(), b"seg");
    drop(got);
    runner.stop();
}

#[test]
fn segments_in_dev_shm_memfd_and_hugetlbfs() {
    round_trip_in("/dev/shm", &[]);
    round_trip_in("memfd", &[]);
    // hugetlbfs (Ray's `huge_pages`): a 2 MiB-page mount and enough free pages (the suite runs
    // as root; raised, never lowered).
    let mount = "/mnt/gismo-plasma-huge";
    std::fs::create_dir_all(mount).unwrap();
    let mounted = std::fs::read_to_string("/proc/mounts")
        .unwrap()
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some(mount));
    if !mounted {
        let ok = std::process::Command::new("mount")
            .args(["-t", "hugetlbfs", "-o", "pagesize=2M", "none", mount])
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "cannot mount hugetlbfs at {mount} (the suite runs as root)"
        );
    }
    let free = |p: &str| -> u64 {
        std::fs::read_to_string(format!("/sys/kernel/mm/hugepages/hugepages-2048kB/{p}"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    if free("free_hugepages") < 16 {
        let nr = free("nr_hugepages");
        std::fs::write("/proc/sys/vm/nr_hugepages", (nr + 16).to_string()).unwrap();
    }
    round_trip_in(mount, &[("huge_pages", "true")]);
}

// ---- one record of object state: the table and the segment's allocator agree -------------

/// The server's audit, which must pass: the object table agrees with itself and with the
/// segment's allocator.
fn audit(server: &Server) -> gismo_plasma::store::MemoryAudit {
    server
        .audit()
        .unwrap_or_else(|e| panic!("table and allocator disagree: {e}"))
}

fn assert_no_bytes_left(server: &Server) {
    let a = audit(server);
    assert_eq!(
        (
            a.objects,
            a.table_bytes,
            a.allocator_bytes,
            a.allocator_allocations
        ),
        (0, 0, 0, 0),
        "{a:?}"
    );
}

#[test]
fn a_client_that_disconnects_holding_references_leaves_no_bytes_behind() {
    let p = PlasmaPlugin::start(false);
    assert_no_bytes_left(&p.server);
    let a = p.client();
    let sizes = [0usize, 10, 4000, 16384, 40_000, 300_000];
    let ids: Vec<ObjectId> = (0..300).map(|_| ObjectId::random()).collect();
    for (i, id) in ids.iter().enumerate() {
        put(&*a, id, &vec![i as u8; sizes[i % sizes.len()]], b"meta");
    }
    // References held at the disconnect: gets of the first 30 objects, and unsealed creates.
    let held = a.get(&ids[..30], 0).unwrap();
    let unsealed: Vec<_> = (0..5)
        .map(|_| {
            a.create(
                &ObjectId::random(),
                &owner(),
                false,
                100_000,
                b"",
                ObjectSource::CreatedByWorker,
            )
            .unwrap()
        })
        .collect();
    assert!(audit(&p.server).table_bytes > 0);
    a.disconnect().unwrap();
    wait_until("the store drops the client", || {
        audit(&p.server).clients == 0
    });
    let b = p.client();
    let a1 = audit(&p.server);
    assert_eq!(
        a1.evictable, a1.objects,
        "only sealed, unreferenced objects are left"
    );
    let left: Vec<ObjectId> = ids
        .iter()
        .copied()
        .filter(|id| b.contains(id).unwrap())
        .collect();
    assert_eq!(left.len(), a1.objects);
    b.delete(&left).unwrap();
    assert_no_bytes_left(&p.server);
    drop((held, unsealed));
}

#[test]
fn creates_past_capacity_evict_and_fail_with_store_full_when_all_is_pinned() {
    let dir = tempfile::tempdir().unwrap();
    let mut params = params(dir.path(), "8MiB");
    // No fallback files: a create the segment cannot hold fails.
    params.insert(
        "fallback_directory".into(),
        dir.path().join("missing").to_str().unwrap().into(),
    );
    let settings = PlasmaSettings::from_params(&params).unwrap();
    let server = Server::start(settings, RunnerCallbacks::none()).unwrap();
    let runner = PlasmaRunner::attach(server.clone());
    let c = PlasmaClient::from_config(&params).unwrap();
    let size = 512 << 10;
    let n = 3 * runner.total_memory_size() as usize / size;
    let ids: Vec<ObjectId> = (0..n).map(|_| ObjectId::random()).collect();
    for id in &ids {
        put(&c, id, &vec![1u8; size], b"");
        audit(&server);
    }
    assert_eq!(runner.fallback_allocated(), 0);
    assert!(!c.contains(&ids[0]).unwrap(), "the oldest was evicted");
    assert!(c.contains(&ids[n - 1]).unwrap());
    // Pin everything left, then fill the segment with objects held by their creator.
    let present: Vec<ObjectId> = ids
        .iter()
        .copied()
        .filter(|id| c.contains(id).unwrap())
        .collect();
    let pins = c.get(&present, 0).unwrap();
    assert!(pins.iter().all(Option::is_some));
    let mut more = Vec::new();
    let err = loop {
        let id = ObjectId::random();
        match c.try_create_immediately(
            &id,
            &owner(),
            size as u64,
            b"",
            ObjectSource::CreatedByWorker,
        ) {
            Ok(b) => {
                c.seal(&id).unwrap();
                more.push((id, b));
            }
            Err(e) => break e,
        }
    };
    assert_eq!(err.code, StatusCode::ObjectStoreFull, "{err}");
    assert!(
        present.iter().all(|id| c.contains(id).unwrap()),
        "a pinned object was evicted"
    );
    let a = audit(&server);
    assert_eq!(a.evictable, 0);
    assert_eq!(runner.fallback_allocated(), 0);
    // Released and deleted, every byte comes back.
    let mut all = present;
    all.extend(more.iter().map(|(id, _)| *id));
    drop((pins, more));
    c.delete(&all).unwrap();
    wait_until("the deletes", || audit(&server).objects == 0);
    assert_no_bytes_left(&server);
}

/// Experimental mutable objects need Ray's `PlasmaObjectHeader`, which this store does not lay
/// out: a create asking for one is refused on the wire (`UnexpectedError`, Ray's `UnknownError`)
/// and leaves nothing behind; the connection goes on.
#[test]
fn mutable_creates_are_refused_on_the_wire() {
    let p = PlasmaPlugin::start(false);
    let c = p.client();
    let id = ObjectId::random();
    let Err(err) = c.create(
        &id,
        &owner(),
        true,
        1000,
        b"",
        ObjectSource::CreatedByWorker,
    ) else {
        panic!("a mutable create was accepted");
    };
    assert_eq!(err.code, StatusCode::UnknownError, "{err:?}");
    assert!(!c.contains(&id).unwrap());
    assert_eq!(p.server.counters().refused_mutable, 1);
    assert_eq!(p.server.counters().created_objects, 0);
    assert!(p
        .server
        .debug_string()
        .contains("refused 1 mutable creates"));
    // The same id, immutable, on the same connection.
    put(&*c, &id, b"not mutable", b"");
    assert!(c.contains(&id).unwrap());
    c.delete(&[id]).unwrap();
    assert_no_bytes_left(&p.server);
}
