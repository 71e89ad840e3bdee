//! What the server tests share: a server process whose log lines are collected, `gismoctl`
//! runs, and watchdogs. Every wait is bounded by [`WATCHDOG`]; nothing asserts a duration.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

pub const SERVER: &str = env!("CARGO_BIN_EXE_gismo-server");
pub const WATCHDOG: Duration = Duration::from_secs(120);

pub fn gismoctl() -> PathBuf {
    let path = PathBuf::from(SERVER).with_file_name("gismoctl");
    assert!(
        path.exists(),
        "{} not built: run `cargo test --workspace` (or `cargo build -p gismoctl` first)",
        path.display()
    );
    path
}

/// A running server and what it has said so far.
pub struct Server {
    child: Child,
    stderr_lines: mpsc::Receiver<String>,
    log: Vec<String>,
}

impl Server {
    pub fn start(args: &[&str]) -> Server {
        Server::start_on_host(args, None)
    }

    /// Starts a server that emulates host `host` (`GISMO_HOST`): clients on other emulated hosts
    /// are judged by their heartbeats, not their pids.
    pub fn start_on_host(args: &[&str], host: Option<&str>) -> Server {
        let mut command = Command::new(SERVER);
        if let Some(h) = host {
            command.env("GISMO_HOST", h);
        }
        let mut child = command
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
    pub fn wait_for(&mut self, needle: &str) -> String {
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

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every line the server logged so far that `wait_for` has read.
    pub fn log(&self) -> &[String] {
        &self.log
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: `kill` only sends a signal; the child is not reaped yet (we own its `Child`
        // and have not waited), so its pid still names it.
        let rc = unsafe { libc::kill(self.child.id() as i32, sig) };
        assert_eq!(rc, 0, "kill failed");
    }

    /// Waits for the exit under the watchdog; returns the code and everything on stdout.
    pub fn wait(mut self) -> (i32, String) {
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

pub fn ctl(region: &str, args: &[&str], stdin: &[u8]) -> std::process::Output {
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
