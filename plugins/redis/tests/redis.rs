//! The redis plugin against a real `redis-server` (started per test on a free loopback port,
//! persistence off, killed on drop): the conformance suite directly and through the
//! `PluginManager`, the documented key schema checked with the real `redis-cli` both ways, and
//! faults made with real process kills, stops and restarts.

#[path = "../../../plugin/tests/support/conformance_suite.rs"]
#[macro_use]
mod conformance_suite;
#[path = "support/redis_server.rs"]
mod redis_server;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use conformance_suite::{code, owner, put, Plugin};
use gismo_core::store::{ObjectId, ObjectSource};
use gismo_plugin::interface::{ObjectStoreClient, ObjectStoreRunner, RunnerCallbacks, StatusCode};
use gismo_plugin::{PluginError, PluginManager};
use gismo_redis::{RedisClient, RedisRunner};
use redis_server::{free_port, RedisServer};

/// A plugin manager that knows this crate's built-in alone (the programs' table,
/// `gismo_builtins::BUILTINS`, is a layer above).
fn plugin_manager() -> &'static PluginManager {
    static BUILTINS: &[gismo_plugin::Builtin] = &[gismo_redis::BUILTIN];
    static MANAGER: std::sync::OnceLock<PluginManager> = std::sync::OnceLock::new();
    MANAGER.get_or_init(|| PluginManager::new(BUILTINS))
}

fn config(url: &str, prefix: &str, extra: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut c: BTreeMap<String, String> = [
        ("url".to_string(), url.to_string()),
        ("prefix".to_string(), prefix.to_string()),
    ]
    .into();
    for (k, v) in extra {
        c.insert(k.to_string(), v.to_string());
    }
    c
}

struct RedisPlugin {
    config: BTreeMap<String, String>,
    via_manager: bool,
    /// The plugin's own `redis-server`, killed when the plugin is dropped.
    _server: RedisServer,
}

impl RedisPlugin {
    /// A fresh `redis-server` and a plugin configured for it (with `pool_size` 4 through the
    /// manager, the default directly).
    fn start(via_manager: bool) -> RedisPlugin {
        let server = RedisServer::start_new();
        let config = if via_manager {
            config(&server.url(), "manager:", &[("pool_size", "4")])
        } else {
            config(&server.url(), "conf:", &[])
        };
        RedisPlugin {
            config,
            via_manager,
            _server: server,
        }
    }
}

impl Plugin for RedisPlugin {
    fn name(&self) -> &str {
        if self.via_manager {
            "redis (PluginManager)"
        } else {
            "redis"
        }
    }
    fn client(&self) -> Arc<dyn ObjectStoreClient> {
        if self.via_manager {
            plugin_manager()
                .create_client("redis", "", &self.config)
                .unwrap()
        } else {
            Arc::new(RedisClient::from_config(&self.config).unwrap())
        }
    }
    fn runner(&self) -> Box<dyn ObjectStoreRunner> {
        if self.via_manager {
            plugin_manager()
                .create_runner("redis", "", &self.config)
                .unwrap()
        } else {
            Box::new(RedisRunner::from_config(&self.config).unwrap())
        }
    }
    fn capacity(&self) -> u64 {
        64 << 20
    }
    fn has_fixed_capacity(&self) -> bool {
        false
    }
}

mod conformance {
    use super::*;
    instantiate_conformance_tests_with_module!(redis, RedisPlugin::start(false));
    instantiate_conformance_tests_with_module!(redis_plugin_manager, RedisPlugin::start(true));
}

#[test]
fn redis_clients_are_global() {
    for via_manager in [false, true] {
        let plugin = RedisPlugin::start(via_manager);
        assert!(plugin.client().is_global());
    }
}

#[test]
fn the_manager_refuses_unknown_keys_and_bad_values() {
    let m = plugin_manager();
    let unknown = config("redis://127.0.0.1:1/0", "x:", &[("region", "file:/x")]);
    assert!(matches!(
        m.create_client("redis", "", &unknown),
        Err(PluginError::Config(_))
    ));
    let bad = config("redis://127.0.0.1:1/0", "x:", &[("pool_size", "zero")]);
    match m.create_runner("redis", "", &bad) {
        Err(PluginError::Status(s)) => {
            assert_eq!(s.code, StatusCode::Invalid);
            assert!(s.message.contains("pool_size"), "{}", s.message);
        }
        other => panic!("expected Invalid, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn redis_cli_reads_what_the_plugin_put() {
    let server = RedisServer::start_new();
    let c = RedisClient::from_config(&config(&server.url(), "ray:", &[])).unwrap();
    let id = ObjectId::random();
    // Binary data with newlines and zero bytes, no trailing newline.
    let data: Vec<u8> = (0..5000u32).map(|i| (i * 13 % 256) as u8).collect();
    put(&c, &id, &data, b"meta\x00data");
    assert!(c.get(&[], 0).unwrap().is_empty());
    let key = format!("ray:obj:{id}");
    assert_eq!(server.cli_ok(&["HGET", &key, "state"]), b"sealed");
    assert_eq!(server.cli_ok(&["HGET", &key, "data"]), data);
    assert_eq!(server.cli_ok(&["HGET", &key, "metadata"]), b"meta\x00data");
    assert_eq!(server.cli_ok(&["HGET", &key, "data_size"]), b"5000");
    assert_eq!(server.cli_ok(&["HGET", &key, "metadata_size"]), b"9");
    assert_eq!(server.cli_ok(&["HGET", &key, "owner_ip"]), b"10.1.2.3");
    assert_eq!(server.cli_ok(&["HGET", &key, "owner_port"]), b"4321");
    assert_eq!(
        server.cli_ok(&["HGET", &key, "owner_raylet_id"]),
        "07".repeat(28).as_bytes()
    );
    assert_eq!(server.cli_ok(&["HGET", &key, "refs"]), b"0");
    // An unsealed object is visible as such, without data.
    let u = ObjectId::random();
    let b = c
        .create(&u, &owner(), false, 3, b"", ObjectSource::CreatedByWorker)
        .unwrap();
    let ukey = format!("ray:obj:{u}");
    assert_eq!(server.cli_ok(&["HGET", &ukey, "state"]), b"created");
    assert_eq!(server.cli_ok(&["HEXISTS", &ukey, "data"]), b"0");
    c.abort(&u).unwrap();
    drop(b);
    assert_eq!(server.cli_ok(&["EXISTS", &ukey]), b"0");
    // A delete through the plugin removes the key.
    c.delete(&[id]).unwrap();
    assert_eq!(server.cli_ok(&["EXISTS", &key]), b"0");
}

#[test]
fn the_plugin_gets_what_redis_cli_wrote() {
    let server = RedisServer::start_new();
    // A re-check interval far beyond the waits below: only the PUBLISH can wake them in time.
    let c = RedisClient::from_config(&config(
        &server.url(),
        "ext:",
        &[("wait_recheck_ms", "600000")],
    ))
    .unwrap();
    let id = ObjectId::random();
    let key = format!("ext:obj:{id}");
    let bytes: Vec<u8> = (0..70_000u32).map(|i| (i % 253) as u8).collect();
    let out = server.cli_stdin(
        &["HSET", &key, "state", "sealed", "metadata", "md", "data"],
        &bytes,
    );
    assert!(out.status.success(), "{out:?}");
    assert!(c.contains(&id).unwrap());
    let got = c
        .get(&[id], 0)
        .unwrap()
        .pop()
        .unwrap()
        .expect("written by redis-cli");
    assert_eq!(got.data(), &bytes[..]);
    assert_eq!(got.metadata(), b"md");
    // The plugin counts its reference in the hash, and gives it back on drop.
    assert_eq!(server.cli_ok(&["HGET", &key, "refs"]), b"1");
    drop(got);
    assert_eq!(server.cli_ok(&["HGET", &key, "refs"]), b"0");

    // A get waiting for an id that redis-cli writes and then announces on the seal channel.
    let late = ObjectId::random();
    let waiter = {
        let c = RedisClient::from_config(&config(
            &server.url(),
            "ext:",
            &[("wait_recheck_ms", "600000")],
        ))
        .unwrap();
        woken_get(c, late)
    };
    std::thread::sleep(std::time::Duration::from_millis(100));
    let lkey = format!("ext:obj:{late}");
    server.cli_ok(&["HSET", &lkey, "state", "sealed", "data", "from redis-cli"]);
    server.cli_ok(&["PUBLISH", "ext:sealed", &late.to_string()]);
    assert_eq!(watchdog(waiter), b"from redis-cli");
}

/// A `get` of `id` that waits forever (`timeout_ms = -1`) on its own thread; its data arrives on
/// the returned channel.
fn woken_get(
    c: RedisClient,
    id: ObjectId,
) -> std::sync::mpsc::Receiver<Result<Vec<u8>, gismo_plugin::interface::Status>> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let r = c.get(&[id], -1).map(|mut v| {
            v.pop()
                .flatten()
                .map(|b| b.data().to_vec())
                .unwrap_or_default()
        });
        let _ = tx.send(r);
    });
    rx
}

/// The woken get's data. The waits in these tests can only end by a seal message (the re-check
/// interval is 10 minutes and the timeout infinite), so a lost wakeup hangs: the watchdog turns
/// that into a failure.
fn watchdog(
    rx: std::sync::mpsc::Receiver<Result<Vec<u8>, gismo_plugin::interface::Status>>,
) -> Vec<u8> {
    rx.recv_timeout(std::time::Duration::from_secs(60))
        .expect("the waiting get was not woken by the seal message")
        .expect("get")
}

#[test]
fn a_writer_that_does_not_publish_is_found_by_the_recheck() {
    let server = RedisServer::start_new();
    let c = RedisClient::from_config(&config(
        &server.url(),
        "quiet:",
        &[("wait_recheck_ms", "50")],
    ))
    .unwrap();
    let id = ObjectId::random();
    let key = format!("quiet:obj:{id}");
    let h = {
        let port = server.port();
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(100));
            let out = std::process::Command::new("redis-cli")
                .args(["-p", &port.to_string(), "HSET", &key, "state", "sealed"])
                .args(["data", "quiet"])
                .output()
                .unwrap();
            assert!(out.status.success());
        })
    };
    let got = c.get(&[id], 30_000).unwrap().pop().unwrap();
    h.join().unwrap();
    assert_eq!(got.expect("found by the re-check").data(), b"quiet");
}

#[test]
fn objects_over_the_redis_value_limit_are_refused_with_the_limit_named() {
    let server = RedisServer::start_new();
    let c = RedisClient::from_config(&config(&server.url(), "big:", &[])).unwrap();
    let id = ObjectId::random();
    let r = c.create(
        &id,
        &owner(),
        false,
        (512 << 20) + 1,
        b"",
        ObjectSource::CreatedByWorker,
    );
    let e = r.expect_err("over the limit");
    assert_eq!(e.code, StatusCode::Invalid);
    assert!(e.message.contains("512 MiB"), "{}", e.message);
    assert!(!c.contains(&id).unwrap());
}

#[test]
fn a_full_redis_is_object_store_full_and_calls_the_full_callback() {
    let port = free_port();
    let server = RedisServer::start_with(
        port,
        &["--maxmemory", "4mb", "--maxmemory-policy", "noeviction"],
    );
    let cfg = config(&server.url(), "full:", &[]);
    let full = Arc::new(AtomicUsize::new(0));
    let f2 = full.clone();
    let runner = plugin_manager().create_runner("redis", "", &cfg).unwrap();
    runner
        .start(
            &BTreeMap::new(),
            RunnerCallbacks {
                object_store_full: Arc::new(move || {
                    f2.fetch_add(1, Ordering::SeqCst);
                }),
                ..RunnerCallbacks::none()
            },
        )
        .unwrap();
    assert_eq!(runner.total_memory_size(), 4 << 20);
    let c = plugin_manager().create_client("redis", "", &cfg).unwrap();
    let chunk = vec![5u8; 256 << 10];
    let mut refused = None;
    for _ in 0..64 {
        let id = ObjectId::random();
        let mut b = match c.create(
            &id,
            &owner(),
            false,
            chunk.len() as u64,
            b"",
            ObjectSource::CreatedByWorker,
        ) {
            Ok(b) => b,
            Err(e) => {
                refused = Some(e.code);
                break;
            }
        };
        b.as_mut_slice().copy_from_slice(&chunk);
        if let Err(e) = c.seal(&id) {
            refused = Some(e.code);
            c.abort(&id).unwrap();
            break;
        }
    }
    assert_eq!(refused, Some(StatusCode::ObjectStoreFull));
    assert!(full.load(Ordering::SeqCst) > 0);
    runner.stop();
}

/// A status that says the server is gone: typed, never a hang or a panic.
fn is_unavailable(code: StatusCode) -> bool {
    matches!(code, StatusCode::IOError | StatusCode::TimedOut)
}

fn fault_config(url: &str, prefix: &str) -> BTreeMap<String, String> {
    config(
        url,
        prefix,
        &[
            ("connect_timeout_ms", "300"),
            ("io_timeout_ms", "1000"),
            ("wait_recheck_ms", "100"),
        ],
    )
}

#[test]
fn unreachable_at_start_fails_typed_then_recovers() {
    let port = free_port();
    let mut server = RedisServer::not_started(port);
    let cfg = fault_config(&server.url(), "down:");
    // Making a client or runner never touches the network.
    let c = plugin_manager().create_client("redis", "", &cfg).unwrap();
    let runner = plugin_manager().create_runner("redis", "", &cfg).unwrap();
    let id = ObjectId::random();
    let r = c.create(&id, &owner(), false, 4, b"", ObjectSource::CreatedByWorker);
    assert!(is_unavailable(code(r)));
    assert!(is_unavailable(code(c.contains(&id))));
    assert!(is_unavailable(code(c.get(&[id], 0))));
    assert!(is_unavailable(code(c.get(&[id], -1))));
    assert!(is_unavailable(code(c.delete(&[id]))));
    assert!(is_unavailable(code(c.get_memory_usage())));
    assert!(is_unavailable(code(
        runner.start(&BTreeMap::new(), RunnerCallbacks::none())
    )));
    assert!(!runner.is_object_spillable(&id));
    server.start();
    runner
        .start(&BTreeMap::new(), RunnerCallbacks::none())
        .unwrap();
    put(&*c, &id, b"after", b"");
    assert_eq!(
        c.get(&[id], 0).unwrap()[0].as_ref().unwrap().data(),
        b"after"
    );
    assert!(c.get_memory_usage().unwrap().contains("1 objects"));
    runner.stop();
}

#[test]
fn killed_mid_run_fails_typed_then_recovers_after_restart() {
    let mut server = RedisServer::start_new();
    let cfg = fault_config(&server.url(), "kill:");
    let c = RedisClient::from_config(&cfg).unwrap();
    let kept = ObjectId::random();
    put(&c, &kept, b"before", b"");
    let held = c.get(&[kept], 0).unwrap().pop().unwrap().unwrap();
    // A get waiting forever for an object nobody seals: the kill must end it with an error.
    let waiting = {
        let c = RedisClient::from_config(&cfg).unwrap();
        std::thread::spawn(move || c.get(&[ObjectId::random()], -1).map(|_| ()))
    };
    std::thread::sleep(std::time::Duration::from_millis(200));
    server.kill();
    let r = waiting.join().expect("no panic");
    assert!(is_unavailable(code(r)));
    let id = ObjectId::random();
    let r = c.create(&id, &owner(), false, 4, b"", ObjectSource::CreatedByWorker);
    assert!(is_unavailable(code(r)));
    assert!(is_unavailable(code(c.get(&[kept], 0))));
    assert!(is_unavailable(code(c.contains(&kept))));
    // The local copy a get made stays readable while Redis is down.
    assert_eq!(held.data(), b"before");
    // Releasing it cannot reach Redis: typed error, the reference stays in the client's ledger.
    assert!(is_unavailable(code(c.release(&kept))));
    std::mem::forget(held);

    server.start();
    // Persistence is off: the restarted server is empty.
    assert!(c.get(&[kept], 0).unwrap()[0].is_none());
    put(&c, &id, b"after restart", b"m");
    let got = c.get(&[id], 0).unwrap().pop().unwrap().unwrap();
    assert_eq!(
        (got.data(), got.metadata()),
        (&b"after restart"[..], &b"m"[..])
    );
}

#[test]
fn a_restart_between_operations_is_invisible_to_the_next_one() {
    let mut server = RedisServer::start_new();
    // Long re-check: a waiting get below can only be woken by the re-established subscription.
    let cfg = config(
        &server.url(),
        "restart:",
        &[
            ("connect_timeout_ms", "2000"),
            ("wait_recheck_ms", "600000"),
        ],
    );
    let c = RedisClient::from_config(&cfg).unwrap();
    let sealer = RedisClient::from_config(&cfg).unwrap();
    let a = ObjectId::random();
    put(&c, &a, b"one", b"");
    // Fill the pool with connections, and start the subscriber.
    assert!(c.get(&[ObjectId::random()], 10).unwrap()[0].is_none());
    server.kill();
    server.start();
    // Pooled connections are stale: the first operation still succeeds (one retry on a new
    // connection, and the failure retires the other stale ones).
    let b = ObjectId::random();
    put(&c, &b, b"two", b"");
    assert!(c.contains(&b).unwrap());
    let waiting = woken_get(RedisClient::from_config(&cfg).unwrap(), a);
    std::thread::sleep(std::time::Duration::from_millis(100));
    put(&sealer, &a, b"one again", b"");
    assert_eq!(watchdog(waiting), b"one again");
}

#[test]
fn a_stopped_server_times_out_then_recovers() {
    let server = RedisServer::start_new();
    let cfg = fault_config(&server.url(), "stop:");
    let c = RedisClient::from_config(&cfg).unwrap();
    let id = ObjectId::random();
    put(&c, &id, b"x", b"");
    let pid = server.pid().unwrap().to_string();
    let signal = |sig: &str| {
        let s = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap();
        assert!(s.success());
    };
    signal("-STOP");
    let r = c.contains(&id);
    signal("-CONT");
    assert_eq!(code(r), StatusCode::TimedOut);
    assert!(c.contains(&id).unwrap());
    assert_eq!(c.get(&[id], 0).unwrap()[0].as_ref().unwrap().data(), b"x");
}

/// Runs the ignored test `name` of this binary as a helper process with `env`, its standard
/// input and output piped.
fn spawn_helper(name: &str, env: &[(&str, String)]) -> std::process::Child {
    std::process::Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--ignored", "--nocapture"])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// The other process of `references_and_wakeups_cross_processes`, run by re-executing this test
/// binary; does nothing when run on its own.
#[test]
#[ignore = "helper process of references_and_wakeups_cross_processes"]
fn cross_process_helper() {
    use std::io::{Read, Write};
    let Ok(url) = std::env::var("GISMO_REDIS_HELPER_URL") else {
        return;
    };
    let id = |var: &str| -> ObjectId { std::env::var(var).unwrap().parse().unwrap() };
    let (held, waited) = (
        id("GISMO_REDIS_HELPER_HELD"),
        id("GISMO_REDIS_HELPER_WAITED"),
    );
    let c = RedisClient::from_config(&config(&url, "xproc:", &[("wait_recheck_ms", "600000")]))
        .unwrap();
    let h = c
        .get(&[held], 0)
        .unwrap()
        .pop()
        .unwrap()
        .expect("held object");
    let mut out = std::io::stdout();
    writeln!(out, "helper: held {}", String::from_utf8_lossy(h.data())).unwrap();
    out.flush().unwrap();
    let w = c.get(&[waited], -1).unwrap().pop().unwrap().expect("woken");
    writeln!(out, "helper: woken {}", String::from_utf8_lossy(w.data())).unwrap();
    out.flush().unwrap();
    // Hold the reference until the parent closes our standard input.
    let _ = std::io::stdin().read(&mut [0u8; 1]);
    drop(h);
}

#[test]
fn references_and_wakeups_cross_processes() {
    use std::io::BufRead;
    let server = RedisServer::start_new();
    let c = RedisClient::from_config(&config(&server.url(), "xproc:", &[])).unwrap();
    let (held, waited) = (ObjectId::random(), ObjectId::random());
    put(&c, &held, b"in both", b"");
    let mut child = spawn_helper(
        "cross_process_helper",
        &[
            ("GISMO_REDIS_HELPER_URL", server.url()),
            ("GISMO_REDIS_HELPER_HELD", held.to_string()),
            ("GISMO_REDIS_HELPER_WAITED", waited.to_string()),
        ],
    );
    let (tx, lines) = std::sync::mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let expect = |want: &str| loop {
        let line = lines
            .recv_timeout(std::time::Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("the helper never said {want:?}"));
        if line == want {
            return;
        }
    };
    expect("helper: held in both");
    // Another process holds a reference: the delete is deferred, and visible as such in Redis.
    c.delete(&[held]).unwrap();
    assert!(c.contains(&held).unwrap());
    let key = format!("xproc:obj:{held}");
    assert_eq!(server.cli_ok(&["HGET", &key, "refs"]), b"1");
    assert_eq!(server.cli_ok(&["HGET", &key, "delete_pending"]), b"1");
    // A seal here wakes the helper's get (its re-check interval is 10 minutes).
    put(&c, &waited, b"from the parent", b"");
    expect("helper: woken from the parent");
    // The helper's release (on its way out) completes the delete.
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    conformance_suite::wait_until("the other process's release deletes", || {
        !c.contains(&held).unwrap()
    });
    assert_eq!(server.cli_ok(&["EXISTS", &key]), b"0");
}

/// The process `kill -9`'d by `a_killed_client_is_reaped`: takes a reference on the held
/// object, reserves the creating one, says so, and waits to be killed.
#[test]
#[ignore = "helper process of a_killed_client_is_reaped"]
fn killed_client_helper() {
    use std::io::Write;
    let Ok(url) = std::env::var("GISMO_REDIS_KILLED_URL") else {
        return;
    };
    let id = |var: &str| -> ObjectId { std::env::var(var).unwrap().parse().unwrap() };
    let (held, creating) = (
        id("GISMO_REDIS_KILLED_HELD"),
        id("GISMO_REDIS_KILLED_CREATING"),
    );
    let c = RedisClient::from_config(&config(&url, "reap:", &[("lease_ms", "300")])).unwrap();
    let h = c.get(&[held], 0).unwrap().pop().unwrap().expect("held");
    let b = c
        .create(
            &creating,
            &owner(),
            false,
            4,
            b"",
            ObjectSource::CreatedByWorker,
        )
        .unwrap();
    println!("helper: holding");
    std::io::stdout().flush().unwrap();
    std::thread::sleep(std::time::Duration::from_secs(120));
    drop((h, b));
}

/// A client process killed with SIGKILL gives nothing back itself; once its lease runs out,
/// another node reaps it: its reference goes (completing the delete it held up, reported to
/// that node's runner) and its unsealed creation is aborted (the id is free again).
#[test]
fn a_killed_client_is_reaped() {
    use std::io::BufRead;
    let server = RedisServer::start_new();
    let cfg = config(&server.url(), "reap:", &[("lease_ms", "300")]);
    let c = RedisClient::from_config(&cfg).unwrap();
    let deleted = Arc::new(std::sync::Mutex::new(Vec::<ObjectId>::new()));
    let d2 = deleted.clone();
    let runner = RedisRunner::from_config(&cfg).unwrap();
    runner
        .start(
            &BTreeMap::new(),
            RunnerCallbacks {
                delete_object: Arc::new(move |id| d2.lock().unwrap().push(*id)),
                ..RunnerCallbacks::none()
            },
        )
        .unwrap();
    let (held, creating) = (ObjectId::random(), ObjectId::random());
    put(&c, &held, b"held by the victim", b"");
    let mut child = spawn_helper(
        "killed_client_helper",
        &[
            ("GISMO_REDIS_KILLED_URL", server.url()),
            ("GISMO_REDIS_KILLED_HELD", held.to_string()),
            ("GISMO_REDIS_KILLED_CREATING", creating.to_string()),
        ],
    );
    let stdout = child.stdout.take().unwrap();
    let ready = std::io::BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|l| l == "helper: holding");
    assert!(ready, "the helper never took its references");
    let key = format!("reap:obj:{held}");
    assert_eq!(server.cli_ok(&["HGET", &key, "refs"]), b"1");
    c.delete(&[held]).unwrap();
    assert!(
        c.contains(&held).unwrap(),
        "the victim's reference defers the delete"
    );
    assert!(
        c.create(
            &creating,
            &owner(),
            false,
            4,
            b"",
            ObjectSource::CreatedByWorker
        )
        .is_err(),
        "the victim's reservation holds the id"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    // Within a few leases (300 ms each), a node reaps the dead client.
    let t = std::time::Instant::now();
    while c.contains(&held).unwrap() {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(30),
            "the dead client's reference was never reaped"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // The runner hears of the delete by its own subscription: reported soon, not necessarily
    // before the object is gone.
    conformance_suite::wait_until("delete_object reported", || {
        deleted.lock().unwrap().contains(&held)
    });
    let b = c
        .create(
            &creating,
            &owner(),
            false,
            4,
            b"",
            ObjectSource::CreatedByWorker,
        )
        .expect("the dead client's creation was aborted");
    drop(b);
    c.abort(&creating).unwrap();
    // Nothing of the victim is left in Redis; this live client's lease stays.
    let keys = server.cli_ok(&["KEYS", "reap:held:*"]);
    assert!(
        !String::from_utf8_lossy(&keys).contains(&format!("{}-", child.id())),
        "the victim's held hash was removed: {}",
        String::from_utf8_lossy(&keys)
    );
    runner.stop();
}

/// A client whose references were reaped while it was presumed dead (paused past its lease)
/// gives nothing back when it resumes: the other holders' counts stay.
#[test]
fn a_release_after_being_reaped_takes_nothing_from_others() {
    let server = RedisServer::start_new();
    let cfg = config(&server.url(), "paused:", &[]);
    let c = RedisClient::from_config(&cfg).unwrap();
    let id = ObjectId::random();
    put(&c, &id, b"shared", b"");
    let got = c.get(&[id], 0).unwrap().pop().unwrap().unwrap();
    let key = format!("paused:obj:{id}");
    assert_eq!(server.cli_ok(&["HGET", &key, "refs"]), b"1");
    // What a reap of this client does to it: its held hash goes and its reference is given
    // back; meanwhile another holder (here: a count set by hand) takes one.
    let held = String::from_utf8(server.cli_ok(&["KEYS", "paused:held:*"])).unwrap();
    let held = held.trim();
    assert!(held.starts_with("paused:held:"), "{held:?}");
    server.cli_ok(&["DEL", held]);
    server.cli_ok(&["HSET", &key, "refs", "1"]);
    drop(got); // the resumed client's release
    assert_eq!(
        server.cli_ok(&["HGET", &key, "refs"]),
        b"1",
        "the other holder's reference survives"
    );
}
