//! Host registers and the leader lease across real processes, each its own emulated
//! non-coherent host of one region file (`GISMO_EMULATED_HOST`, `GISMO_EMULATION_DIR`): three
//! children join and elect; the leader is SIGKILLed; the survivors elect another within the
//! documented bound (`xhost::lease`, "Liveness": `L + 2H` after the leader's last write, plus
//! the scheduling slack below) and the new leader takes the dead host's register over.
//!
//! A child is this test binary run as `--exact child_process` with `XH_ROLE` set; it reports on
//! stdout with `@@ <kind> key=value ...` lines and exits when its stdin closes (the parent died
//! or dropped it) or after `CHILD_LIMIT`.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use gismo_core::xhost::hosts::{
    join, HostTable, Identity, Observer, State, Timing, REGISTER_WORDS,
};
use gismo_core::xhost::lease::{Lease, LeaseEvent};
use gismo_platform::coherence::{Coherence, CoherenceMode};
use gismo_platform::region::{Emulation, Region, RegionOptions, RegionSpec};
use gismo_platform::sync::{AtomicBool, AtomicU64, Ordering};

const ROLE_ENV: &str = "XH_ROLE";
const DEVICE_ENV: &str = "XH_DEVICE";
const NAME_ENV: &str = "XH_NAME";
const N: usize = 8;
const REGION_LEN: u64 = 64 << 10;
const CHILD_LIMIT: Duration = Duration::from_secs(20);
/// Periods for processes on a shared two-core machine.
const TIMING: Timing = Timing {
    heartbeat_ms: 25,
    confirm_ms: 120,
    lease_ms: 400,
    pause_ms: 40,
};
/// Scheduling slack over the protocol's bound (process start-up is not in it: the clock starts
/// at the kill, when every survivor is running).
const SLACK: Duration = Duration::from_millis(300);

fn table(region: &Region) -> HostTable<'_> {
    let words = gismo_platform::shm::view_slice::<AtomicU64>(region, 0, N * REGISTER_WORDS)
        .expect("table words");
    HostTable::new(words).expect("table")
}

/// The child half: a no-op unless this binary was started as a child.
#[test]
fn child_process() {
    if std::env::var(ROLE_ENV).is_ok() {
        run_child();
    }
}

fn run_child() {
    let device = std::env::var(DEVICE_ENV).expect("device");
    let name = std::env::var(NAME_ENV).expect("name");
    // Exit when the parent goes away (stdin closes).
    let gone = std::sync::Arc::new(AtomicBool::new(false));
    let g = gone.clone();
    std::thread::spawn(move || {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        g.store(true, Ordering::Relaxed);
    });
    let region = Region::open(&RegionSpec::File(device.into()), &RegionOptions::default())
        .expect("open the region as the environment's emulated host");
    assert!(
        region.emulated_host().is_some(),
        "child is not an emulated host"
    );
    let c = Coherence::for_region(CoherenceMode::Flush, &region);
    let clock = gismo_platform::clock::monotonic_ms;
    let boot = u64::from(std::process::id());
    let mut m = join(
        table(&region),
        &c,
        Identity::new(&name, boot),
        TIMING,
        &clock,
    )
    .expect("join");
    let me = m.index();
    println!("@@ joined index={me} pid={}", std::process::id());
    let mut lease = Lease::new(true);
    let mut obs = Observer::new(N);
    let end = Instant::now() + CHILD_LIMIT;
    while !gone.load(Ordering::Relaxed) && Instant::now() < end {
        if let Err(e) = lease.beat(&mut m, clock()) {
            println!("@@ fenced index={me} error={e:?}");
            return;
        }
        let (ev, seen) = lease.poll(&mut m, &mut obs, clock()).expect("poll");
        if let LeaseEvent::Acquired { term } = ev {
            println!("@@ acquired index={me} term={term}");
        }
        if let LeaseEvent::Lost { why } = ev {
            println!("@@ lost index={me} why={why:?}");
        }
        if lease.guard(&mut m, clock()).is_ok() {
            for (j, o) in seen.iter().enumerate() {
                // LIVE, or unreadable (a host killed inside its register write leaves the seq
                // odd for ever): both are taken over once dead.
                let takeable = o.state.map_or(true, |s| s.state == State::Live);
                if j != me && takeable && obs.is_dead(j, clock(), TIMING.lease_ms) {
                    if let Ok(s) = m.take_over(j, clock()) {
                        println!("@@ took index={j} by={me} epoch={}", s.epoch);
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(TIMING.heartbeat_ms / 2));
    }
}

struct Kid {
    child: Child,
}

impl Drop for Kid {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `(child number, kind, fields)` of one report line.
type Report = (usize, String, Vec<(String, String)>);

fn parse(k: usize, line: &str) -> Option<Report> {
    let rest = &line[line.find("@@ ")? + 3..];
    let mut words = rest.split_whitespace();
    let kind = words.next()?.to_string();
    let fields = words
        .filter_map(|w| w.split_once('='))
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    Some((k, kind, fields))
}

fn field(r: &Report, key: &str) -> usize {
    r.2.iter()
        .find(|(k, _)| k == key)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or_else(|| panic!("report {r:?} has no numeric {key}"))
}

/// Spawns three children on the emulated hosts `proc-0..3` with `extra` environment; their
/// reports arrive on the returned channel.
fn spawn_three(
    dir: &std::path::Path,
    device: &std::path::Path,
    extra: &[(&str, &str)],
) -> (Vec<Kid>, mpsc::Receiver<Report>) {
    let (tx, rx) = mpsc::channel::<Report>();
    let mut kids = Vec::new();
    for k in 0..3 {
        let mut cmd = Command::new(std::env::current_exe().expect("test binary"));
        cmd.args([
            "--exact",
            "child_process",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ])
        .env(ROLE_ENV, "host")
        .env(DEVICE_ENV, device)
        .env(NAME_ENV, format!("proc-{k}"))
        .env("GISMO_EMULATED_HOST", format!("proc-{k}"))
        .env("GISMO_EMULATION_DIR", dir.join("emu"))
        .env("GISMO_EMULATION_RATE", "2000")
        .env("GISMO_EMULATION_SEED", k.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .envs(extra.iter().copied())
        .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("spawn a child");
        let out = child.stdout.take().expect("stdout");
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if let Some(r) = parse(k, &line) {
                    println!("child {k}: {line}");
                    if tx.send(r).is_err() {
                        break;
                    }
                }
            }
        });
        kids.push(Kid { child });
    }
    (kids, rx)
}

#[test]
fn three_processes_elect_and_survivors_take_a_killed_leader_over() {
    let dir = tempfile::tempdir().expect("tempdir");
    let device = dir.path().join("device");
    let spec = RegionSpec::File(device.clone());
    let off = RegionOptions {
        emulation: Emulation::Off,
        ..Default::default()
    };
    let region = Region::create(&spec, REGION_LEN, &off).expect("device");
    let (mut kids, rx) = spawn_three(dir.path(), &device, &[]);
    let deadline = Instant::now() + Duration::from_secs(15);
    let next = |what: &str| -> Report {
        rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("watchdog: no report while waiting for {what}"))
    };
    let mut index_of = [usize::MAX; 3];
    let mut leader = None;
    while index_of.contains(&usize::MAX) || leader.is_none() {
        let r = next("joins and a leader");
        match r.1.as_str() {
            "joined" => index_of[r.0] = field(&r, "index"),
            "acquired" => {
                assert!(
                    leader.is_none(),
                    "two leaders acquired before any death: {r:?}"
                );
                leader = Some((r.0, field(&r, "term")));
            }
            "fenced" | "lost" | "took" => panic!("unexpected before the kill: {r:?}"),
            _ => {}
        }
    }
    let mut distinct = index_of.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "indices {index_of:?}");
    let (k1, term1) = leader.expect("leader");
    std::thread::sleep(Duration::from_millis(200));
    let killed = Instant::now();
    let _ = kids[k1].child.kill();
    let _ = kids[k1].child.wait();
    let dead = index_of[k1];
    let bound = Duration::from_millis(TIMING.lease_ms + 2 * TIMING.heartbeat_ms) + SLACK;
    let (mut new_leader, mut took) = (None, false);
    while new_leader.is_none() || !took {
        let r = next("a new leader and the takeover");
        match r.1.as_str() {
            "acquired" => {
                assert!(new_leader.is_none(), "two leaders after the kill: {r:?}");
                assert_ne!(r.0, k1);
                assert!(field(&r, "term") > term1, "{r:?}");
                let after = killed.elapsed();
                assert!(after <= bound, "new leader after {after:?} > {bound:?}");
                println!("new leader after {after:?} (bound {bound:?})");
                new_leader = Some(r.0);
            }
            "took" => {
                assert_eq!(
                    Some(r.0),
                    new_leader,
                    "only the new leader takes over: {r:?}"
                );
                assert_eq!(field(&r, "index"), dead, "{r:?}");
                took = true;
            }
            "fenced" | "lost" => panic!("a survivor fenced or lost: {r:?}"),
            _ => {}
        }
    }
    // The device holds the takeover (the parent maps the device itself, not a host view).
    let c = Coherence::for_region(CoherenceMode::Flush, &region);
    let s = table(&region).read(&c, dead).expect("dead register");
    let k2 = new_leader.expect("new leader");
    assert_eq!(s.state, State::TakenBy(index_of[k2]), "{s:?}");
    drop(kids);
}

/// Negative control: with evictions skipped (`GISMO_EMULATION_SKIP_INVALIDATE=1`, no
/// spontaneous events) each child reads only its own cache: nobody sees another's ballot, so
/// more than one acquires the lease — caught.
#[test]
fn with_evictions_skipped_several_processes_lead_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let device = dir.path().join("device");
    let off = RegionOptions {
        emulation: Emulation::Off,
        ..Default::default()
    };
    let _region =
        Region::create(&RegionSpec::File(device.clone()), REGION_LEN, &off).expect("device");
    let (kids, rx) = spawn_three(
        dir.path(),
        &device,
        &[
            ("GISMO_EMULATION_SKIP_INVALIDATE", "1"),
            ("GISMO_EMULATION_RATE", "0"),
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut leaders = std::collections::BTreeSet::new();
    while leaders.len() < 2 {
        let Ok(r) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) else {
            panic!("not caught: only {leaders:?} acquired with evictions skipped");
        };
        if r.1 == "acquired" {
            leaders.insert(r.0);
        }
    }
    println!("caught: children {leaders:?} all lead");
    drop(kids);
}
