//! `gismo-server` as an operator runs it: a real process on a file region in a temporary
//! directory, used through `gismoctl`, stopped with SIGTERM.
//!
//! `gismoctl` is the workspace's sibling binary, next to `gismo-server` in the target directory;
//! `cargo test --workspace` (what `tools/test.sh` runs) builds it. Every wait has a watchdog;
//! no test asserts how fast anything is.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

const SERVER: &str = env!("CARGO_BIN_EXE_gismo-server");
const WATCHDOG: Duration = Duration::from_secs(120);

fn gismoctl() -> PathBuf {
    let path = PathBuf::from(SERVER).with_file_name("gismoctl");
    assert!(
        path.exists(),
        "{} not built: run `cargo test --workspace` (or `cargo build -p gismoctl` first)",
        path.display()
    );
    path
}

/// A running server and what it has said so far.
struct Server {
    child: Child,
    stderr_lines: mpsc::Receiver<String>,
    log: Vec<String>,
}

impl Server {
    fn start(args: &[&str]) -> Server {
        let mut child = Command::new(SERVER)
            .args(args)
            .env_remove("GISMO_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn gismo-server");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Server {
            child,
            stderr_lines: rx,
            log: Vec::new(),
        }
    }

    /// Waits for a log line containing `needle`; fails if the server exits first.
    fn wait_for(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + WATCHDOG;
        loop {
            match self.stderr_lines.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    self.log.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    panic!("server exited before {needle:?}; log: {:#?}", self.log)
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "watchdog: no {needle:?} from the server; log: {:#?}",
                    self.log
                );
            }
        }
    }

    fn signal(&self, sig: i32) {
        // SAFETY: `kill` only sends a signal; the child is not reaped yet (we own its `Child`
        // and have not waited), so its pid still names it.
        let rc = unsafe { libc::kill(self.child.id() as i32, sig) };
        assert_eq!(rc, 0, "kill failed");
    }

    /// Waits for the exit under the watchdog; returns the code and everything on stdout.
    fn wait(mut self) -> (i32, String) {
        let deadline = Instant::now() + WATCHDOG;
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("watchdog: the server did not exit; log: {:#?}", self.log);
            }
            thread::sleep(Duration::from_millis(20));
        };
        let mut out = String::new();
        if let Some(mut s) = self.child.stdout.take() {
            let _ = s.read_to_string(&mut out);
        }
        (status.code().unwrap_or(-1), out)
    }
}

fn ctl(region: &str, args: &[&str], stdin: &[u8]) -> std::process::Output {
    let mut child = Command::new(gismoctl())
        .arg("--region")
        .arg(region)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn gismoctl");
    {
        use std::io::Write;
        let mut pipe = child.stdin.take().expect("stdin");
        pipe.write_all(stdin).expect("feed gismoctl");
    }
    child.wait_with_output().expect("gismoctl output")
}

#[test]
fn serves_a_region_until_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let region = format!("file:{}", dir.path().join("region").display());
    let mut server = Server::start(&[
        "--region",
        &region,
        "--size",
        "64MiB",
        "--format",
        "--log-level",
        "debug",
        "--stats-interval-ms",
        "100",
    ]);
    let ready = server.wait_for("ready");
    // Timestamped, levelled lines.
    assert!(ready.contains(" INFO "), "{ready}");
    assert!(
        ready.as_bytes()[4] == b'-' && ready.contains('T'),
        "{ready}"
    );

    let id = "ab".repeat(28);
    let put = ctl(&region, &["put", &id, "-"], b"hello from a test");
    assert!(put.status.success(), "{put:?}");
    let get = ctl(&region, &["get", &id], b"");
    assert!(get.status.success(), "{get:?}");
    assert_eq!(get.stdout, b"hello from a test");
    let stat = ctl(&region, &["stat", "--json"], b"");
    assert!(stat.status.success(), "{stat:?}");
    let stats = String::from_utf8_lossy(&stat.stdout).to_string();
    assert!(stats.contains("\"sealed\": 1"), "{stats}");
    // The periodic statistics (debug level) see the object.
    server.wait_for("sealed 1");

    server.signal(libc::SIGTERM);
    server.wait_for("stopping");
    let (code, stdout) = server.wait();
    assert_eq!(code, 0);
    assert!(
        stdout.contains(&format!("export GISMO_REGION={region}")),
        "{stdout}"
    );

    // A restart attaches to the same store: the object is still there.
    let mut again = Server::start(&["--region", &region]);
    again.wait_for("attached to the existing store");
    again.wait_for("ready");
    let get = ctl(&region, &["get", &id], b"");
    assert_eq!(get.stdout, b"hello from a test");
    again.signal(libc::SIGINT);
    assert_eq!(again.wait().0, 0);
}

#[test]
fn refuses_an_unformatted_region_without_format() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("region");
    let region = format!("file:{}", path.display());
    let mut missing = Server::start(&["--region", &region]);
    missing.wait_for("ERROR");
    assert_eq!(missing.wait().0, 6);

    std::fs::File::create(&path)
        .and_then(|f| f.set_len(16 << 20))
        .expect("zero file");
    let mut zero = Server::start(&["--region", &region]);
    let line = zero.wait_for("ERROR");
    assert!(line.contains("--format"), "{line}");
    assert_eq!(zero.wait().0, 6);

    // --format formats it at its current size.
    let mut ok = Server::start(&["--region", &region, "--format"]);
    ok.wait_for("ready");
    ok.signal(libc::SIGTERM);
    assert_eq!(ok.wait().0, 0);
}

#[test]
fn rejects_bad_options() {
    for args in [
        &["--region", "daxx:/x"][..],
        &["--low-watermark", "0.9", "--high-watermark", "0.5"],
        &["--lease-ms", "0"],
        &["--force"],
        &["--log-level", "loud"],
    ] {
        let out = Command::new(SERVER)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run gismo-server");
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
    }
}
