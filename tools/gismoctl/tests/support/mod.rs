//! What the `gismoctl` tests share: running gismoctl under a watchdog, a region fixture, and
//! helpers. Every child runs under a watchdog (killed, and the test failed, after
//! [`WATCHDOG`]); no test asserts how fast anything is.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const GISMOCTL: &str = env!("CARGO_BIN_EXE_gismoctl");
/// A child still running after this long is hung: kill it and fail.
pub const WATCHDOG: Duration = Duration::from_secs(120);

/// What a finished child left.
#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Output {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout_text()))
    }

    #[track_caller]
    pub fn assert_ok(&self) -> &Self {
        assert_eq!(self.code, 0, "expected success, got {self:?}");
        self
    }

    /// Failed with `code` and exactly one `gismoctl: ` line on stderr, no panic.
    #[track_caller]
    pub fn assert_one_line_failure(&self, code: i32) -> &Self {
        assert_eq!(self.code, code, "exit code of {self:?}");
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "expected one stderr line, got {:?}",
            self.stderr
        );
        assert!(lines[0].starts_with("gismoctl: "), "{:?}", lines[0]);
        assert!(!self.stderr.contains("panicked"), "{:?}", self.stderr);
        self
    }
}

/// Waits for `child` under the watchdog, feeding it `stdin` (then closing it).
pub fn finish(mut child: Child, stdin: Option<Vec<u8>>) -> Output {
    let writer = stdin.map(|bytes| {
        let mut pipe = child.stdin.take().expect("stdin was piped");
        thread::spawn(move || {
            let _ = pipe.write_all(&bytes);
        })
    });
    let pid = child.id();
    let start = Instant::now();
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = thread::spawn(move || {
        let out = child.wait_with_output();
        let _ = tx.send(());
        out
    });
    while rx.recv_timeout(Duration::from_millis(50)).is_err() {
        if start.elapsed() > WATCHDOG {
            // SAFETY: `kill` only sends a signal; `pid` is our own child, not yet reaped (the
            // waiter has not returned), so the pid cannot have been reused.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("watchdog: gismoctl (pid {pid}) still running after {WATCHDOG:?}");
        }
    }
    if let Some(w) = writer {
        let _ = w.join();
    }
    let out = waiter
        .join()
        .expect("waiter thread")
        .expect("wait for gismoctl");
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A region in a temporary directory and the gismoctl invocations on it.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub region: String,
}

impl Fixture {
    /// A fresh, unformatted region spec.
    pub fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let region = format!("file:{}", dir.path().join("region").display());
        Fixture { dir, region }
    }

    /// A formatted 64 MiB region.
    pub fn formatted() -> Fixture {
        let f = Fixture::new();
        f.run(&["format", "--size", "64MiB"]).assert_ok();
        f
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("region")
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(GISMOCTL);
        c.arg("--region")
            .arg(&self.region)
            .args(args)
            .env_remove("GISMO_REGION")
            .env_remove("RAY_object_store_plugin_name")
            .env_remove("RAY_object_store_plugin_path")
            .env_remove("RAY_object_store_plugin_config")
            .env_remove("RAY_object_store_plugin_mode")
            .env_remove("GISMO_EMULATED_HOST")
            .env_remove("GISMO_EMULATION_DIR")
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    pub fn spawn(&self, args: &[&str]) -> Child {
        self.command(args).spawn().expect("spawn gismoctl")
    }

    pub fn run(&self, args: &[&str]) -> Output {
        finish(self.spawn(args), None)
    }

    pub fn run_with_stdin(&self, args: &[&str], stdin: Vec<u8>) -> Output {
        let child = self
            .command(args)
            .stdin(Stdio::piped())
            .spawn()
            .expect("spawn gismoctl");
        finish(child, Some(stdin))
    }

    pub fn write_file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, bytes).expect("write input file");
        p
    }

    pub fn ls(&self) -> Vec<Value> {
        match self.run(&["ls", "--json"]).assert_ok().json() {
            Value::Array(rows) => rows,
            other => panic!("ls --json is not an array: {other}"),
        }
    }
}

pub fn id(n: u8) -> String {
    format!("{n:02x}").repeat(28)
}

/// Deterministic bytes covering every byte value.
pub fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x as u8) ^ (i as u8)
        })
        .collect()
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}
