//! Wire compatibility with Ray's own plasma store (Ray from the Python registry, in a private
//! virtual environment made by `tools/ray-venv.sh`), in both directions: our client gets an
//! object `ray.put` made, and creates one the raylet's store then reports; and Ray's own C++
//! client (a driver's core worker) puts, gets and frees objects in our store. Run by the test
//! command's Ray tier:
//!
//! ```text
//! GISMO_RAY_VENV=target/ray-venv cargo test -p gismo-plasma --test ray_plasma -- --ignored
//! ```

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use gismo_core::store::{ObjectId, ObjectSource, OwnerAddress};
use gismo_plasma::{PlasmaClient, PlasmaSettings, Server};
use gismo_plugin::interface::{ObjectStoreClient, RunnerCallbacks};

struct RayHead {
    child: Child,
    stdin: ChildStdin,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
    temp: PathBuf,
}

impl RayHead {
    fn start() -> RayHead {
        let python = ray_python();
        // A short private temp dir under the suite's TMPDIR: Ray's socket paths must fit
        // sockaddr_un.
        let temp = std::env::temp_dir().join(format!("gismo-ray-{}", std::process::id()));
        let mut child = Command::new(python)
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/ray/plasma_peer.py"
            ))
            .env("GISMO_RAY_TEMP", &temp)
            .env_remove("RAY_ADDRESS")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the Ray peer");
        let stdin = child.stdin.take().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        RayHead {
            child,
            stdin,
            lines,
            temp,
        }
    }

    fn line(&mut self, prefix: &str) -> String {
        for l in self.lines.by_ref() {
            let l = l.expect("read from the Ray peer");
            if let Some(rest) = l.strip_prefix(prefix) {
                return rest.trim().to_string();
            }
        }
        panic!("the Ray peer exited before printing {prefix:?}");
    }
}

impl Drop for RayHead {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.stdin.flush();
        for _ in 0..100 {
            if self.child.try_wait().ok().flatten().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.temp);
    }
}

/// `gismoctl` next to this test binary (`target/<profile>/`; tools/test.sh builds it first).
fn gismoctl() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(|d| d.parent())
        .unwrap()
        .join("gismoctl");
    assert!(
        bin.exists(),
        "{} not built: run `cargo build` first",
        bin.display()
    );
    bin
}

fn object_hex(id: &ObjectId) -> String {
    id.as_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

fn hex_id(s: &str) -> ObjectId {
    let bytes: Vec<u8> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect();
    ObjectId::from_bytes(bytes.try_into().expect("28-byte id"))
}

#[test]
#[ignore = "needs Ray: run by tools/test.sh's Ray tier"]
fn our_client_speaks_to_rays_plasma_store() {
    let mut ray = RayHead::start();
    let socket = PathBuf::from(ray.line("socket "));
    let object = ray.line("object ");
    let version = ray.line("ray ");
    println!("Ray {version}, plasma socket {}", socket.display());
    let mut parts = object.split_whitespace();
    let id = hex_id(parts.next().unwrap());
    let size: usize = parts.next().unwrap().parse().unwrap();

    let client = PlasmaClient::connect(&socket, Duration::from_secs(30), Duration::from_millis(10))
        .expect("connect to Ray's plasma store");
    assert!(
        client.capacity() >= 256 << 20,
        "capacity {}",
        client.capacity()
    );

    // 1. Get the array ray.put made and find the pattern in its payload (Ray's serialization
    //    puts the array's bytes, 64-byte aligned, after a small header).
    let got = client
        .get(&[id], 5_000)
        .unwrap()
        .pop()
        .unwrap()
        .expect("the object");
    let pattern: Vec<u8> = (0..size as u64)
        .map(|i| ((i * 2_654_435_761) % 251) as u8)
        .collect();
    let data = got.data();
    assert!(data.len() >= size, "payload of {} bytes", data.len());
    let at = data
        .windows(4096)
        .position(|w| w == &pattern[..4096])
        .expect("the array's bytes are in the payload");
    assert_eq!(
        &data[at..at + size],
        &pattern[..],
        "the whole array, in place"
    );
    println!(
        "found the {size}-byte array at offset {at} of a {}-byte payload",
        data.len()
    );
    let payload_len = data.len();
    drop(got);

    // 1b. The same from the command line: gismoctl through the plasma plugin.
    let out = tempfile::NamedTempFile::new().unwrap();
    let status = Command::new(gismoctl())
        .args(["--plugin", "plasma", "--plugin-config"])
        .arg(format!("store_socket_name={}", socket.display()))
        .args(["get", &object_hex(&id), "--timeout-ms", "5000", "-o"])
        .arg(out.path())
        .status()
        .expect("run gismoctl");
    assert!(status.success(), "gismoctl get through plasma: {status}");
    let file = std::fs::read(out.path()).unwrap();
    assert_eq!(file.len(), payload_len);
    assert_eq!(&file[at..at + size], &pattern[..]);
    println!("gismoctl --plugin plasma get: the same {payload_len} bytes");

    // 2. Create and seal an object in Ray's store; the store reports it, and a second client
    //    (a new connection) reads it back.
    let before = client.get_memory_usage().unwrap();
    let mine = ObjectId::random();
    let payload: Vec<u8> = (0..1_000_000u32).map(|i| (i % 253) as u8).collect();
    let mut b = client
        .create(
            &mine,
            &OwnerAddress::default(),
            false,
            payload.len() as u64,
            b"gismo",
            ObjectSource::CreatedByWorker,
        )
        .unwrap();
    b.as_mut_slice().copy_from_slice(&payload);
    client.seal(&mine).unwrap();
    drop(b);
    let after = client.get_memory_usage().unwrap();
    println!("Ray's store before: {before}\nafter: {after}");
    let created = |report: &str| -> u64 {
        report
            .lines()
            .find_map(|l| l.trim().strip_prefix("- objects created by worker:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("Ray's store reports objects created by worker")
    };
    assert_eq!(
        created(&after),
        created(&before) + 1,
        "Ray's store counts our object"
    );
    let other =
        PlasmaClient::connect(&socket, Duration::from_secs(5), Duration::from_millis(10)).unwrap();
    assert!(other.contains(&mine).unwrap());
    let back = other.get(&[mine], 1_000).unwrap().pop().unwrap().unwrap();
    assert_eq!(back.data(), &payload[..]);
    assert_eq!(back.metadata(), b"gismo");
    drop(back);
    other.delete(&[mine]).unwrap();
}

fn ray_python() -> PathBuf {
    let venv = std::env::var("GISMO_RAY_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/ray-venv")
        });
    let python = venv.join("bin/python");
    assert!(
        python.exists(),
        "no Ray venv at {} (run tools/ray-venv.sh)",
        venv.display()
    );
    python
}

/// A process of `tests/ray/plasma_client.py` in its own process group, with a line protocol on
/// stdin/stdout. Dropping it asks it to quit, then kills its whole group (the Ray head's GCS,
/// raylet and workers are its children), so nothing outlives the test.
struct RayProcess {
    name: &'static str,
    child: Child,
    stdin: ChildStdin,
    /// Its stdout's lines, read by a thread (so a hung Ray fails the test instead of blocking
    /// it); closed at EOF.
    lines: std::sync::mpsc::Receiver<String>,
}

/// How long one step of the Ray processes may take (a head's start is the slowest, ~3 s idle).
const RAY_STEP_TIMEOUT: Duration = Duration::from_secs(120);

impl RayProcess {
    fn spawn(name: &'static str, args: &[&str], tmp: &std::path::Path) -> RayProcess {
        use std::os::unix::process::CommandExt;
        let mut child = Command::new(ray_python())
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/ray/plasma_client.py"
            ))
            .args(args)
            .env("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
            // A loopback-only head and its one driver: no token (a new local cluster would
            // otherwise turn token auth on and write ~/.ray/auth_token).
            .env("RAY_AUTH_MODE", "disabled")
            .env("GISMO_RAY_TEMP", tmp.join("ray"))
            .env("TMPDIR", tmp)
            .env_remove("RAY_ADDRESS")
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start the Ray {name}: {e}"));
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in stdout.lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        RayProcess {
            name,
            child,
            stdin,
            lines,
        }
    }

    /// Its next stdout line, `None` at EOF; panics after [`RAY_STEP_TIMEOUT`] (`what` names
    /// the step).
    fn next_line(&mut self, deadline: std::time::Instant, what: &str) -> Option<String> {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match self.lines.recv_timeout(left) {
            Ok(l) => Some(l),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => None,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!(
                "the Ray {} did not finish {what} in {RAY_STEP_TIMEOUT:?}",
                self.name
            ),
        }
    }

    /// The rest of the next line starting with `prefix` (other lines are Ray's and are shown).
    fn line(&mut self, prefix: &str) -> String {
        let deadline = std::time::Instant::now() + RAY_STEP_TIMEOUT;
        while let Some(l) = self.next_line(deadline, prefix) {
            if let Some(rest) = l.strip_prefix(prefix) {
                return rest.trim().to_string();
            }
            println!("[{}] {l}", self.name);
        }
        let status = self.child.wait().ok();
        panic!(
            "the Ray {} exited ({status:?}) before printing {prefix:?}",
            self.name
        );
    }

    /// Sends a command and returns its "ok" reply; an "error" reply fails the test.
    fn command(&mut self, cmd: &str) -> String {
        writeln!(self.stdin, "{cmd}")
            .and_then(|()| self.stdin.flush())
            .unwrap_or_else(|e| panic!("send {cmd:?} to the Ray {}: {e}", self.name));
        let deadline = std::time::Instant::now() + RAY_STEP_TIMEOUT;
        while let Some(l) = self.next_line(deadline, cmd) {
            if let Some(rest) = l.strip_prefix("ok") {
                return rest.trim().to_string();
            }
            if let Some(rest) = l.strip_prefix("error ") {
                panic!("the Ray {} failed {cmd:?}: {rest}", self.name);
            }
            println!("[{}] {l}", self.name);
        }
        let status = self.child.wait().ok();
        panic!(
            "the Ray {} exited ({status:?}) during {cmd:?}: a crash of Ray's client?",
            self.name
        );
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for RayProcess {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.stdin.flush();
        for _ in 0..150 {
            if self.child.try_wait().ok().flatten().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // The group's id is the child's pid (`process_group(0)`): this kills what it started
        // and nothing else.
        if let Ok(pgid) = i32::try_from(self.child.id()) {
            // SAFETY: kill(2) with a negative pid signals that process group; no memory is
            // involved.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
        let _ = self.child.wait();
    }
}

/// Our plasma store in this process, on a socket in the test's temp dir; stopped on drop.
struct OurStore {
    server: std::sync::Arc<Server>,
    socket: PathBuf,
}

impl OurStore {
    fn start(dir: &std::path::Path) -> OurStore {
        let socket = dir.join("plasma.sock");
        let params: std::collections::BTreeMap<String, String> = [
            ("store_socket_name", socket.to_str().unwrap().to_string()),
            ("object_store_memory", "64MiB".to_string()),
            ("plasma_directory", "/dev/shm".to_string()),
            ("fallback_directory", dir.to_str().unwrap().to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let settings = PlasmaSettings::from_params(&params).expect("plasma settings");
        let server = Server::start(settings, RunnerCallbacks::none()).expect("start our store");
        OurStore { server, socket }
    }
}

impl Drop for OurStore {
    fn drop(&mut self) {
        self.server.shutdown();
    }
}

#[test]
#[ignore = "needs Ray: run by tools/test.sh's Ray tier"]
fn rays_client_speaks_to_our_plasma_store() {
    // A fresh, short temp dir (Ray's socket paths must fit sockaddr_un) for the store's socket,
    // Ray's session and the children's TMPDIR; removed last, after every process is gone.
    let tmp = tempfile::Builder::new()
        .prefix("gismo-rc-")
        .tempdir_in(std::env::temp_dir())
        .unwrap();
    let store = OurStore::start(tmp.path());
    let mut head = RayProcess::spawn("head", &["head"], tmp.path());
    let gcs = head.line("gcs ");
    let version = head.line("ray ");
    println!(
        "Ray {version} head at {gcs}; our store at {}",
        store.socket.display()
    );

    let mut driver = RayProcess::spawn(
        "driver",
        &["driver", &gcs, store.socket.to_str().unwrap()],
        tmp.path(),
    );
    let socket = driver.line("ready ");
    assert_eq!(
        PathBuf::from(&socket),
        store.socket,
        "the driver's plasma socket"
    );
    let c0 = store.server.counters();
    let audit0 = store.server.audit().expect("audit");
    println!("after connect: {}", store.server.debug_string());
    // Ray's driver may already have put small objects of its own while connecting (2.60 puts
    // one of 8 bytes); what follows counts from here.
    assert_eq!(c0.unsealed_bytes, 0, "{c0:?}");

    // put: Ray's client creates and seals both objects in our store (Create, Seal, Release).
    let ids = driver.command("put");
    let ids: Vec<ObjectId> = ids.split_whitespace().map(hex_id).collect();
    assert_eq!(ids.len(), 2, "two object ids");
    let c1 = store.server.counters();
    println!("after put: {}", store.server.debug_string());
    assert_eq!(
        c1.created_objects,
        c0.created_objects + 2,
        "our store saw both creates: {c1:?}"
    );
    assert_eq!(
        c1.sealed_objects,
        c0.sealed_objects + 2,
        "and both seals: {c1:?}"
    );
    assert!(
        c1.created_bytes >= c0.created_bytes + (4 << 20),
        "the array's bytes are in our store: {c1:?}"
    );
    assert_eq!(c1.unsealed_bytes, 0, "{c1:?}");

    // Our own client sees Ray's objects, sealed, with the array's bytes in the payload.
    let ours = PlasmaClient::connect(
        &store.socket,
        Duration::from_secs(5),
        Duration::from_millis(10),
    )
    .expect("connect our client");
    for id in &ids {
        assert!(
            ours.contains(id).unwrap(),
            "our store has {}",
            object_hex(id)
        );
    }
    {
        let got = ours.get(&ids[..1], 1_000).unwrap().pop().unwrap().unwrap();
        let size = 4 << 20;
        let pattern: Vec<u8> = (0..size as u64)
            .map(|i| ((i * 2_654_435_761) % 251) as u8)
            .collect();
        let data = got.data();
        let at = data
            .windows(4096)
            .position(|w| w == &pattern[..4096])
            .expect("the array's bytes are in the object Ray wrote");
        assert_eq!(&data[at..at + size], &pattern[..]);
    }

    let c1b = store.server.counters();

    // get: Ray's client gets both from our store (Get, descriptors, reads in place) and the
    // driver checks them against what it put.
    let got = driver.command("get");
    println!("ray.get: crc32 and small length {got}");
    let c2 = store.server.counters();
    println!("after get: {}", store.server.debug_string());
    assert_eq!(
        c2.created_objects, c1.created_objects,
        "a get creates nothing: {c2:?}"
    );
    assert!(
        c2.got_objects >= c1b.got_objects + 2,
        "Ray's client got both from our store: {c2:?}"
    );
    assert!(
        c2.pinned_bytes >= 4 << 20,
        "the driver holds the array it got (a zero-copy view): {c2:?}"
    );

    // An experimental mutable object: refused by our store (UnexpectedError, which Ray's
    // client turns into an error status), and the driver lives on.
    let refused = driver.command("mutable");
    println!("mutable create: {refused}");
    let cm = store.server.counters();
    assert_eq!(
        cm.refused_mutable,
        c0.refused_mutable + 1,
        "our store refused it: {cm:?}"
    );
    assert_eq!(cm.created_objects, c1.created_objects, "{cm:?}");
    assert!(driver.alive(), "Ray's driver survives the refusal");

    // release: the driver drops the values, Ray's client releases its buffers; only the raylet
    // would pin them, and it cannot (the objects are not in its store), so they are unreferenced.
    driver.command("release");
    std::thread::sleep(Duration::from_millis(500));
    let c3 = store.server.counters();
    println!("after release: {}", store.server.debug_string());
    assert_eq!(
        c3.pinned_bytes, 0,
        "nothing holds Ray's objects now: {c3:?}"
    );
    let a3 = store.server.audit().expect("audit");
    assert_eq!(a3.objects, audit0.objects + 2, "{a3:?}");
    assert_eq!(a3.evictable, audit0.evictable + 2, "both evictable: {a3:?}");

    // free: the core worker frees its refs. Ray routes frees through the raylet, which deletes
    // from its own store, so our store may or may not see a delete; either way nothing breaks.
    driver.command("free");
    std::thread::sleep(Duration::from_millis(500));
    let c4 = store.server.counters();
    println!("after free: {}", store.server.debug_string());
    if c4.deleted_objects == c0.deleted_objects {
        // Delete them through our client: the store's own delete, counted.
        ours.delete(&ids).unwrap();
    }
    let c5 = store.server.counters();
    assert_eq!(
        c5.deleted_objects,
        c0.deleted_objects + 2,
        "both deleted: {c5:?}"
    );
    for id in &ids {
        assert!(!ours.contains(id).unwrap());
    }
    assert!(driver.alive(), "Ray's driver is still running");
    drop(ours);
    drop(driver);
    let end = store.server.audit().expect("audit");
    assert_eq!(
        end.objects, audit0.objects,
        "only Ray's own objects are left: {end:?}"
    );
    assert!(head.alive(), "the Ray head is still running");
    drop(head);
    drop(store);
}
