//! A real `redis-server` for tests: on a free loopback port, persistence off
//! (`--save "" --appendonly no`), in its own temporary directory, killed when the guard drops
//! (also when a test panics). `kill` and `start` stop and restart it on the same port.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    port: u16,
    dir: tempfile::TempDir,
    extra: Vec<String>,
    child: Option<Child>,
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers.
    pub fn start_new() -> RedisServer {
        RedisServer::start_with(free_port(), &[])
    }

    /// Starts a server on `port` with extra `redis-server` arguments (e.g. `--maxmemory 4mb`).
    pub fn start_with(port: u16, extra: &[&str]) -> RedisServer {
        let mut s = RedisServer {
            port,
            dir: tempfile::tempdir().expect("temporary directory"),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        s.start();
        s
    }

    /// A guard for `port` with no server running yet (for "unreachable at start").
    pub fn not_started(port: u16) -> RedisServer {
        RedisServer {
            port,
            dir: tempfile::tempdir().expect("temporary directory"),
            extra: Vec::new(),
            child: None,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// (Re)starts the server on its port; waits until `PING` answers.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log: PathBuf = self.dir.path().join("redis.log");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--daemonize", "no"])
            .args(["--dir", &self.dir.path().display().to_string()])
            .args(["--logfile", &log.display().to_string()])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server (apt-get install redis-server)");
        self.child = Some(child);
        let t = Instant::now();
        loop {
            let out = self.cli(&["PING"]);
            if out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "PONG" {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "redis-server exited with {status}: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "redis-server on port {} did not answer",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `kill -9` and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Runs the real `redis-cli` against this server.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli (apt-get install redis-tools)")
    }

    /// Runs `redis-cli -x ARGS`: standard input (`input`, raw bytes) is the last argument.
    pub fn cli_stdin(&self, args: &[&str], input: &[u8]) -> Output {
        use std::io::Write;
        let mut child = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-x"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run redis-cli (apt-get install redis-tools)");
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(input)
            .expect("write redis-cli's input");
        child.wait_with_output().expect("wait for redis-cli")
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `redis-cli ARGS` that must succeed; its standard output, trimmed of the final newline.
    pub fn cli_ok(&self, args: &[&str]) -> Vec<u8> {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "redis-cli {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut v = out.stdout;
        if v.last() == Some(&b'\n') {
            v.pop();
        }
        v
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
