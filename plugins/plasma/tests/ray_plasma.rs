//! Wire compatibility with Ray's own plasma store (Ray from the Python registry, in a private
//! virtual environment made by `tools/ray-venv.sh`): our client gets an object `ray.put` made,
//! and creates one the raylet's store then reports. Run by the test command's Ray tier:
//!
//! ```text
//! GISMO_RAY_VENV=target/ray-venv cargo test -p gismo-plasma --test ray_plasma -- --ignored
//! ```

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use gismo_core::store::{ObjectId, ObjectSource, OwnerAddress};
use gismo_plasma::PlasmaClient;
use gismo_plugin::interface::ObjectStoreClient;

struct RayHead {
    child: Child,
    stdin: ChildStdin,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
    temp: PathBuf,
}

impl RayHead {
    fn start() -> RayHead {
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
