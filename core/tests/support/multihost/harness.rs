//! The parent's side of the multi-process tests: a formatted memfd region, child processes that
//! re-execute this test binary, their reports, and the watchdog.
//!
//! A child is this test binary run as `--exact child_process --nocapture` with its role, the
//! inherited region descriptor and an emulated host name in its environment. It reports on stdout
//! with lines `@@ <kind> key=value ...` (libtest may print its own text before the `@@` on the
//! same line). Scripted children also read one command per line on stdin and answer each with one
//! report.
//!
//! The watchdog is a deadline per child: every wait for a report or an exit is bounded by it, and
//! a child still running when its deadline passes, when the test panics, or when its handle is
//! dropped is killed (`SIGKILL`). A hung child therefore fails its test instead of hanging CI.

use gismo_platform::sync::AtomicU64;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gismo_core::format::FormatOptions;
use gismo_core::store::Store;
use gismo_platform::region::{Region, RegionOptions, RegionSpec};

/// Environment of a child: its role (absent in a normal test run).
pub const ROLE_ENV: &str = "GISMO_MH_ROLE";
/// The inherited descriptor of the store region.
pub const FD_ENV: &str = "GISMO_MH_FD";
/// The inherited descriptor of the coordination region (barriers, ownership words).
pub const COORD_FD_ENV: &str = "GISMO_MH_COORD_FD";
/// Role arguments, `key=value` pairs separated by `;`.
pub const ARGS_ENV: &str = "GISMO_MH_ARGS";
/// Set to make the child reserve address space before mapping the region, so its mapping lands
/// at another address than its siblings' even where ASLR is off.
pub const SHIFT_ENV: &str = "GISMO_MH_SHIFT";
/// The name of the test function children run.
pub const CHILD_TEST: &str = "child_process";
/// Words in the coordination region.
pub const COORD_WORDS: usize = 4096;
/// Default watchdog limit of a child.
pub const CHILD_LIMIT: Duration = Duration::from_secs(60);

/// One `@@ kind key=value ...` line.
#[derive(Clone, Debug)]
pub struct Report {
    pub kind: String,
    pub fields: HashMap<String, String>,
    pub line: String,
}

impl Report {
    pub fn parse(line: &str) -> Option<Report> {
        let at = line.find("@@ ")?;
        let rest = &line[at + 3..];
        let mut words = rest.split_whitespace();
        let kind = words.next()?.to_string();
        let fields = words
            .filter_map(|w| w.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Some(Report {
            kind,
            fields,
            line: rest.to_string(),
        })
    }

    pub fn get(&self, key: &str) -> &str {
        self.fields
            .get(key)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("report `{}` has no field `{key}`", self.line))
    }

    pub fn num(&self, key: &str) -> u64 {
        let v = self.get(key);
        let parsed = match v.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16),
            None => v.parse(),
        };
        parsed.unwrap_or_else(|_| panic!("field `{key}` of `{}` is not a number", self.line))
    }
}

/// A formatted store region plus a small coordination region, shared with children.
pub struct Fixture {
    pub name: String,
    pub store: Arc<Store>,
    region_fd: OwnedFd,
    coord: Region,
    coord_fd: OwnedFd,
    /// `(who, base address)` of every mapping of the store region, the parent's first.
    pub mappings: Vec<(String, usize)>,
    next_child: usize,
    /// Set by [`Fixture::noncoherent`]: every child joins the whole-region emulated host named
    /// after its `host` argument, with its views in this directory.
    emulation_dir: Option<tempfile::TempDir>,
    /// More environment for every child spawned from now on (emulator knobs).
    pub child_env: Vec<(String, String)>,
}

/// Whether this run is the emulated variant (`multihost_emulated`, the same source built as a
/// second test target): regions are formatted for Flush mode and every child is an emulated
/// non-coherent host with a private view of the payloads.
pub fn emulated() -> bool {
    std::env::current_exe()
        .ok()
        .and_then(|p| {
            p.file_name()
                .map(|n| n.to_string_lossy().starts_with("multihost_emulated"))
        })
        .unwrap_or(false)
}

impl Fixture {
    /// A memfd of `size` bytes formatted with `opts`.
    pub fn new(name: &str, size: u64, opts: &FormatOptions) -> Fixture {
        let spec = RegionSpec::Memfd {
            name: format!("gismo-mh-{name}"),
            huge_pages: false,
        };
        let region = Region::create(&spec, size, &RegionOptions::default()).expect("memfd region");
        let mut opts = opts.clone();
        if emulated() {
            opts.coherence = gismo_platform::coherence::CoherenceMode::Flush;
        }
        let store = Store::format(region, &opts).expect("format the region");
        let region_fd = store
            .region()
            .inheritable_owned_fd()
            .expect("inheritable descriptor");
        let coord_spec = RegionSpec::Memfd {
            name: format!("gismo-mh-{name}-coord"),
            huge_pages: false,
        };
        let coord = Region::create(
            &coord_spec,
            (COORD_WORDS * 8) as u64,
            &RegionOptions::default(),
        )
        .expect("coordination memfd");
        let coord_fd = coord
            .inheritable_owned_fd()
            .expect("inheritable descriptor");
        let parent_base = store.region().as_ptr() as usize;
        Fixture {
            name: name.to_string(),
            store,
            region_fd,
            coord,
            coord_fd,
            mappings: vec![("parent".to_string(), parent_base)],
            next_child: 0,
            emulation_dir: None,
            child_env: Vec::new(),
        }
    }

    /// As [`Fixture::new`] (formatted for Flush coherence), with every child an emulated
    /// non-coherent host of the whole region (`gismo_platform::emulation`), joined through its
    /// environment; the parent keeps mapping the device itself, so it observes what reached
    /// memory. `rate` is `GISMO_EMULATION_RATE`.
    #[allow(dead_code)] // used by noncoherent.rs, not by multihost.rs
    pub fn noncoherent(name: &str, size: u64, opts: &FormatOptions, rate: u64) -> Fixture {
        let mut opts = opts.clone();
        opts.coherence = gismo_platform::coherence::CoherenceMode::Flush;
        let mut fx = Fixture::new(name, size, &opts);
        fx.emulation_dir = Some(tempfile::tempdir().expect("emulation directory"));
        fx.child_env
            .push(("GISMO_EMULATION_RATE".into(), rate.to_string()));
        fx
    }

    /// Word `i` of the coordination region.
    pub fn coord_word(&self, i: usize) -> &AtomicU64 {
        gismo_platform::shm::view::<AtomicU64>(&self.coord, i * 8).expect("coordination word")
    }

    /// Spawns a child with `role` on emulated host `host`, waits for its `ready` report and
    /// records where it mapped the region.
    pub fn spawn(&mut self, role: &str, host: &str, args: &[(&str, String)]) -> ChildProc {
        self.spawn_with_limit(role, host, args, CHILD_LIMIT)
    }

    pub fn spawn_with_limit(
        &mut self,
        role: &str,
        host: &str,
        args: &[(&str, String)],
        limit: Duration,
    ) -> ChildProc {
        let index = self.next_child;
        self.next_child += 1;
        let label = format!("{}#{index}({role}@{host})", self.name);
        let args: Vec<String> = args.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut cmd = Command::new(std::env::current_exe().expect("test binary"));
        cmd.args([
            "--exact",
            CHILD_TEST,
            "--nocapture",
            "--test-threads=1",
            "-q",
        ])
        .env(ROLE_ENV, role)
        .env(FD_ENV, self.region_fd.as_raw_fd().to_string())
        .env(COORD_FD_ENV, self.coord_fd.as_raw_fd().to_string())
        .env(ARGS_ENV, args.join(";"))
        .env("GISMO_HOST", host)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        if let Some(dir) = &self.emulation_dir {
            cmd.env("GISMO_EMULATED_HOST", host)
                .env("GISMO_EMULATION_DIR", dir.path());
        }
        cmd.envs(self.child_env.iter().map(|(k, v)| (k, v)));
        if index % 2 == 1 {
            cmd.env(SHIFT_ENV, ((index + 1) * (2 << 20)).to_string());
        }
        let mut child = ChildProc::start(cmd, label, limit);
        let ready = child.expect("ready");
        self.mappings
            .push((child.label.clone(), ready.num("base") as usize));
        assert_eq!(ready.num("pid"), u64::from(child.pid()), "{}", ready.line);
        child
    }

    /// Asserts that at least two processes mapped the region at different addresses (the store
    /// must work with per-process addresses: nothing in the region is a pointer) and prints them.
    pub fn check_mappings_differ(&self) {
        let distinct: std::collections::BTreeSet<usize> =
            self.mappings.iter().map(|m| m.1).collect();
        let listing: Vec<String> = self
            .mappings
            .iter()
            .map(|(who, base)| format!("{who}@{base:#x}"))
            .collect();
        println!(
            "[{}] region mapped at {} distinct addresses: {}",
            self.name,
            distinct.len(),
            listing.join(", ")
        );
        assert!(
            distinct.len() >= 2,
            "every process mapped the region at the same address: {listing:?}"
        );
    }
}

/// A running child process and its reports.
pub struct ChildProc {
    pub label: String,
    child: Child,
    stdin: Option<ChildStdin>,
    reports: Receiver<Report>,
    transcript: Arc<Mutex<String>>,
    deadline: Instant,
    exited: Option<ExitStatus>,
}

impl ChildProc {
    fn start(mut cmd: Command, label: String, limit: Duration) -> ChildProc {
        let mut child = cmd.spawn().expect("spawn a child process");
        let transcript = Arc::new(Mutex::new(String::new()));
        let (tx, reports) = mpsc::channel();
        let stdout = child.stdout.take().expect("piped stdout");
        let log = Arc::clone(&transcript);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                push_line(&log, "out", &line);
                if let Some(r) = Report::parse(&line) {
                    if tx.send(r).is_err() {
                        break;
                    }
                }
            }
        });
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::clone(&transcript);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                push_line(&log, "err", &line);
            }
        });
        ChildProc {
            label,
            stdin: child.stdin.take(),
            child,
            reports,
            transcript,
            deadline: Instant::now() + limit,
            exited: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the child printed so far.
    pub fn transcript(&self) -> String {
        self.transcript
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Kills the child and fails the test with `why` and the child's output.
    fn fail(&mut self, why: &str) -> ! {
        let _ = self.child.kill();
        let status = self.child.wait().ok();
        // Let the reader threads drain the pipes.
        std::thread::sleep(Duration::from_millis(50));
        panic!(
            "{}: {why} (exit: {status:?})\n--- child output ---\n{}",
            self.label,
            self.transcript()
        );
    }

    /// Sends one command line (scripted children).
    pub fn send(&mut self, command: &str) {
        let ok = self
            .stdin
            .as_mut()
            .map(|s| writeln!(s, "{command}").and_then(|()| s.flush()).is_ok())
            .unwrap_or(false);
        if !ok {
            self.fail(&format!("cannot send `{command}`: stdin closed"));
        }
    }

    /// The next report, which must be of `kind`; waits until the watchdog deadline.
    pub fn expect(&mut self, kind: &str) -> Report {
        let r = self.next_report();
        if r.kind != kind {
            self.fail(&format!("expected a `{kind}` report, got `{}`", r.line));
        }
        r
    }

    /// The next report of any kind.
    pub fn next_report(&mut self) -> Report {
        self.next_report_within(self.deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|| self.fail("watchdog: no report before the deadline"))
    }

    /// The next report within `limit` (never past the deadline); `None` on timeout.
    pub fn next_report_within(&mut self, limit: Duration) -> Option<Report> {
        let limit = limit.min(self.deadline.saturating_duration_since(Instant::now()));
        match self.reports.recv_timeout(limit) {
            Ok(r) => Some(r),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => {
                self.fail("the child exited before reporting");
            }
        }
    }

    /// Sends `command` and returns the answer, which must be of `kind`.
    pub fn call(&mut self, command: &str, kind: &str) -> Report {
        self.send(command);
        self.expect(kind)
    }

    /// Sends `command` and returns the answer, whatever its kind.
    pub fn call_any(&mut self, command: &str) -> Report {
        self.send(command);
        self.next_report()
    }

    /// Waits for the child to exit (bounded by the watchdog) and returns its status.
    pub fn wait(&mut self) -> ExitStatus {
        drop(self.stdin.take());
        if let Some(s) = self.exited {
            return s;
        }
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    self.exited = Some(status);
                    return status;
                }
                Ok(None) if Instant::now() < self.deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Ok(None) => self.fail("watchdog: the child did not exit before the deadline"),
                Err(e) => self.fail(&format!("wait failed: {e}")),
            }
        }
    }

    /// Waits for the child to exit and requires success.
    pub fn finish(mut self) {
        let status = self.wait();
        if !status.success() {
            std::thread::sleep(Duration::from_millis(50));
            panic!(
                "{} failed: {status}\n--- child output ---\n{}",
                self.label,
                self.transcript()
            );
        }
    }

    /// `kill -9`, then reaps the process.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        if let Ok(s) = self.child.wait() {
            self.exited = Some(s);
        }
    }

    /// Sends `signal` (e.g. `SIGSTOP`, `SIGCONT`) to the running child.
    pub fn signal(&self, signal: i32) {
        assert!(self.exited.is_none(), "{} has exited", self.label);
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: `kill` has no memory effects; `pid` is our own unreaped child (not yet waited
        // for, so its pid cannot have been reused).
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill({pid}, {signal}) failed");
    }

    /// Whether every thread of the child is stopped (`T` in /proc/PID/task/*/stat).
    pub fn is_stopped(&self) -> bool {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", self.child.id())) else {
            return false;
        };
        let mut any = false;
        for task in tasks.flatten() {
            let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
            let stopped = stat
                .rfind(')')
                .is_some_and(|i| stat[i + 1..].trim_start().starts_with('T'));
            if !stopped {
                return false;
            }
            any = true;
        }
        any
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn push_line(log: &Mutex<String>, stream: &str, line: &str) {
    let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
    log.push_str(stream);
    log.push_str("| ");
    log.push_str(line);
    log.push('\n');
}

/// Waits for every child, requiring success, and fails on the first that did not succeed.
pub fn finish_all(children: Vec<ChildProc>) {
    for c in children {
        c.finish();
    }
}

/// Waits on all `children` at once until each has sent a report of `kind`, and returns, per
/// child, the reports it sent before that one and that one. If any child exits first or a
/// deadline passes, every child is killed and the test fails with all their outputs and
/// `context()` (say, progress words in the coordination region): a child stuck at a barrier
/// because a sibling died is then reported with the sibling's panic, not as a mystery hang.
pub fn collect(
    children: &mut [ChildProc],
    kind: &str,
    context: impl Fn() -> String,
) -> Vec<(Vec<Report>, Report)> {
    let mut before: Vec<Vec<Report>> = children.iter().map(|_| Vec::new()).collect();
    let mut done: Vec<Option<Report>> = children.iter().map(|_| None).collect();
    while done.iter().any(Option::is_none) {
        let mut progressed = false;
        for (i, c) in children.iter_mut().enumerate() {
            if done[i].is_some() {
                continue;
            }
            let failure = match c.reports.try_recv() {
                Ok(r) if r.kind == kind => {
                    done[i] = Some(r);
                    progressed = true;
                    None
                }
                Ok(r) => {
                    before[i].push(r);
                    progressed = true;
                    None
                }
                Err(mpsc::TryRecvError::Disconnected) => {
                    Some(format!("{} exited before its `{kind}` report", c.label))
                }
                Err(mpsc::TryRecvError::Empty) if Instant::now() >= c.deadline => Some(format!(
                    "watchdog: {} sent no `{kind}` report in time",
                    c.label
                )),
                Err(mpsc::TryRecvError::Empty) => None,
            };
            if let Some(why) = failure {
                fail_all(children, &why, &context());
            }
        }
        if !progressed {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    before.into_iter().zip(done.into_iter().flatten()).collect()
}

/// Kills every child and fails with all their outputs.
fn fail_all(children: &mut [ChildProc], why: &str, context: &str) -> ! {
    for c in children.iter_mut() {
        c.kill9();
    }
    std::thread::sleep(Duration::from_millis(50));
    let outputs: Vec<String> = children
        .iter()
        .map(|c| format!("--- {} ---\n{}", c.label, c.transcript()))
        .collect();
    panic!("{why}\n{context}\n{}", outputs.join("\n"));
}
