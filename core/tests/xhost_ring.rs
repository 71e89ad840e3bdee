//! The cross-host ring (`gismo_core::xhost::ring`) between real processes on the whole-region
//! emulator: producer processes of emulated host a (children of this test binary, re-executed
//! with `GISMO_EMULATED_HOST=a`, `GISMO_EMULATION_DIR`), the consumer in the test process as
//! host b. One producer is killed (`SIGKILL`) holding a claim it never published: the consumer
//! must skip the hole after its timeout and receive every message of the other producer.
//!
//! Seen to fail (the consumer stuck at the hole, the survivor's sends `Full`) with the consumer's
//! hole skipping disabled.
//!
//! A child runs the test `child_process` (a no-op unless `RING_TEST_ROLE` is set) and reports on
//! its stdout in lines holding `RING `.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use gismo_core::xhost::ring::{Consumer, Ring, RingError, PAYLOAD_WORDS};
use gismo_platform::coherence::{Coherence, CoherenceMode};
use gismo_platform::emulation::EmulationConfig;
use gismo_platform::region::{Emulation, Region, RegionOptions, RegionSpec};
use gismo_platform::sync::AtomicU64;

const ROLE_ENV: &str = "RING_TEST_ROLE";
const DEVICE_ENV: &str = "RING_TEST_DEVICE";
const ID_ENV: &str = "RING_TEST_ID";
const COUNT_ENV: &str = "RING_TEST_COUNT";
/// The child claims its message with this index, reports it, and waits to be killed.
const PAUSE_ENV: &str = "RING_TEST_PAUSE_AT";

const CAPACITY: usize = 16;
const KIND: u64 = 7;
const REGION_LEN: u64 = 64 << 10;
const RATE: u64 = 50_000;

fn payload(w: u64, k: u64) -> [u64; PAYLOAD_WORDS] {
    [
        w,
        k,
        (w << 32) ^ k ^ 0xdead_beef,
        !k,
        k.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ w,
    ]
}

fn ring_words(region: &Region) -> &[AtomicU64] {
    gismo_platform::shm::view_slice::<AtomicU64>(region, 0, Ring::words_needed(CAPACITY))
        .expect("ring words in the region")
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| v.parse().expect(name))
}

/// The child half: a producer process of the emulated host its environment names.
#[test]
fn child_process() {
    if std::env::var(ROLE_ENV).is_err() {
        return;
    }
    let device = PathBuf::from(std::env::var(DEVICE_ENV).expect(DEVICE_ENV));
    let w = env_u64(ID_ENV).expect(ID_ENV);
    let count = env_u64(COUNT_ENV).expect(COUNT_ENV);
    let pause_at = env_u64(PAUSE_ENV);
    // The emulated host comes from the environment (`Emulation::FromEnvironment`).
    let region = Region::open(&RegionSpec::File(device), &RegionOptions::default())
        .expect("join the emulated host");
    assert!(region.emulated_host().is_some(), "not an emulated host");
    let c = Coherence::for_region(CoherenceMode::Flush, &region);
    let ring = Ring::new(ring_words(&region), CAPACITY).expect("ring");
    let deadline = Instant::now() + Duration::from_secs(60);
    for k in 0..count {
        let claim = loop {
            match ring.claim(&c) {
                Ok(claim) => break claim,
                Err(RingError::Full { .. }) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_micros(50));
                }
                Err(e) => panic!("producer {w}: claim of {k}: {e}"),
            }
        };
        if pause_at == Some(k) {
            println!("RING claimed {}", claim.position());
            // Killed here, holding the claim.
            std::thread::sleep(Duration::from_secs(600));
            panic!("producer {w} was not killed");
        }
        claim
            .publish(&c, KIND, &payload(w, k))
            .unwrap_or_else(|e| panic!("producer {w}: publish of {k}: {e}"));
    }
    println!("RING done");
}

/// A producer process of host a whose stdout reports (after `RING `) are sent to `lines`.
fn spawn_producer(
    dir: &Path,
    w: u64,
    count: u64,
    pause_at: Option<u64>,
    lines: mpsc::Sender<(u64, String)>,
) -> Child {
    let mut cmd = Command::new(std::env::current_exe().expect("test binary"));
    cmd.args([
        "--exact",
        "child_process",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(ROLE_ENV, "producer")
    .env(DEVICE_ENV, dir.join("device"))
    .env(ID_ENV, w.to_string())
    .env(COUNT_ENV, count.to_string())
    .env("GISMO_EMULATED_HOST", "a")
    .env("GISMO_EMULATION_DIR", dir.join("emu"))
    .env("GISMO_EMULATION_RATE", RATE.to_string())
    .env("GISMO_EMULATION_SEED", w.to_string())
    .stdout(Stdio::piped());
    if let Some(k) = pause_at {
        cmd.env(PAUSE_ENV, k.to_string());
    }
    let mut child = cmd.spawn().expect("spawn a producer");
    let stdout = child.stdout.take().expect("piped stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // (libtest prints `test child_process ... ` before the test's first line.)
            if let Some(i) = line.find("RING ") {
                let _ = lines.send((w, line[i + 5..].to_string()));
            }
        }
    });
    child
}

/// Kills its child when dropped (a failing assertion must not leave a producer running).
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A fresh device file and this process joined to it as emulated host `b` (the consumer).
fn device_and_consumer_host() -> (tempfile::TempDir, Region, Coherence) {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = RegionSpec::File(dir.path().join("device"));
    let off = RegionOptions {
        emulation: Emulation::Off,
        ..Default::default()
    };
    Region::create(&spec, REGION_LEN, &off).expect("device");
    let mut cfg = EmulationConfig::new("b", dir.path().join("emu"));
    cfg.rate = RATE;
    let region = Region::open(
        &spec,
        &RegionOptions {
            emulation: Emulation::Host(cfg),
            ..Default::default()
        },
    )
    .expect("join host b");
    let c = Coherence::for_region(CoherenceMode::Flush, &region);
    (dir, region, c)
}

#[test]
fn a_producer_killed_holding_a_claim_leaves_a_hole_the_consumer_skips() {
    let (dir, region, c) = device_and_consumer_host();
    let hole_timeout = Duration::from_millis(200);
    let mut consumer = Consumer::new(
        &c,
        Ring::new(ring_words(&region), CAPACITY).unwrap(),
        hole_timeout,
    )
    .unwrap();

    // Producer 1 publishes messages 0..PAUSE, claims message PAUSE and is killed; producer 0
    // sends COUNT messages meanwhile.
    const COUNT: u64 = 3000;
    const PAUSE: u64 = 5;
    let (tx, rx) = mpsc::channel();
    let mut victim = KillOnDrop(spawn_producer(dir.path(), 1, 100, Some(PAUSE), tx.clone()));
    let mut survivor = KillOnDrop(spawn_producer(dir.path(), 0, COUNT, None, tx));

    let deadline = Instant::now() + Duration::from_secs(60);
    let mut next = [0u64; 2];
    let mut positions = Vec::new();
    let mut killed_at = None;
    let mut hole_position = None;
    let mut survivor_done = false;
    let mut skipped_after = None;
    // Until every message arrived and the consumer has moved past the hole.
    while next[0] < COUNT
        || next[1] < PAUSE
        || !survivor_done
        || hole_position.is_none_or(|h| consumer.tail() <= h)
    {
        assert!(
            Instant::now() < deadline,
            "consumer stuck: received {next:?}, stats {:?}",
            consumer.stats()
        );
        while let Ok((w, line)) = rx.try_recv() {
            if let Some(p) = line.strip_prefix("claimed ") {
                assert_eq!(w, 1);
                victim.0.kill().expect("SIGKILL the producer");
                victim.0.wait().expect("reap it");
                killed_at = Some(Instant::now());
                hole_position = Some(p.parse::<u64>().unwrap());
                println!("killed producer 1 holding position {p}");
            } else if line == "done" {
                assert_eq!(w, 0);
                survivor_done = true;
            }
        }
        match consumer.try_recv(&c) {
            Ok(Some(m)) => {
                let (w, k) = (m.payload[0], m.payload[1]);
                assert_eq!(m.kind, KIND, "{m:?}");
                assert!(w < 2, "{m:?}");
                assert_eq!(m.payload, payload(w, k), "torn message {m:?}");
                assert_eq!(k, next[w as usize], "producer {w} out of order");
                next[w as usize] += 1;
                if positions.last().is_some_and(|&l| m.position != l + 1) {
                    let t = killed_at.map(|t| t.elapsed());
                    println!("a gap before position {}, {t:?} after the kill", m.position);
                }
                positions.push(m.position);
            }
            Ok(None) => {
                if skipped_after.is_none() && consumer.stats().holes > 0 {
                    skipped_after = killed_at.map(|t| t.elapsed());
                }
                std::thread::sleep(Duration::from_micros(20));
            }
            Err(e) => panic!("recv: {e}"),
        }
    }
    let status = survivor.0.wait().expect("survivor exits");
    assert!(status.success(), "survivor: {status}");
    let stats = consumer.stats();
    let hole = hole_position.expect("the victim reported its claim");
    println!(
        "stats {stats:?}, received {next:?}, hole at {hole} (timeout {hole_timeout:?}, \
         skipped by {skipped_after:?} after the kill)"
    );
    assert_eq!(next, [COUNT, PAUSE], "every published message arrived");
    assert_eq!(stats.holes, 1, "one hole skipped and counted");
    assert_eq!(stats.corrupt, 0);
    let missing: Vec<u64> = (0..consumer.tail())
        .filter(|p| positions.binary_search(p).is_err())
        .collect();
    assert_eq!(missing, vec![hole], "exactly the killed claim is missing");
    assert_eq!(consumer.mismatches(), 0);
}

/// As above, but the victim is killed at an arbitrary moment of its sending (a few ms in, taken
/// from the clock): anywhere in a claim, a body, a write-back or a publish. The consumer must
/// never hang or deliver a damaged message; the victim's delivered messages are a gap-free prefix
/// of what it sent, and at most one position (the claim it died holding, if any) is skipped.
#[test]
fn a_producer_killed_at_an_arbitrary_moment_costs_at_most_its_claim() {
    let (dir, region, c) = device_and_consumer_host();
    let hole_timeout = Duration::from_millis(200);
    let mut consumer = Consumer::new(
        &c,
        Ring::new(ring_words(&region), CAPACITY).unwrap(),
        hole_timeout,
    )
    .unwrap();

    const COUNT: u64 = 3000;
    let (tx, rx) = mpsc::channel();
    let mut victim = KillOnDrop(spawn_producer(dir.path(), 1, 1_000_000, None, tx.clone()));
    let mut survivor = KillOnDrop(spawn_producer(dir.path(), 0, COUNT, None, tx));
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let nanos = u64::from(nanos);
    let kill_at = Instant::now() + Duration::from_millis(20 + nanos % 80);

    let deadline = Instant::now() + Duration::from_secs(60);
    let mut next = [0u64; 2];
    let mut positions = Vec::new();
    let mut killed = false;
    let mut survivor_done = false;
    // Quiet for three hole timeouts after the survivor is done: any hole has been skipped.
    let mut quiet_since: Option<Instant> = None;
    loop {
        assert!(
            Instant::now() < deadline,
            "consumer stuck: received {next:?}, stats {:?}",
            consumer.stats()
        );
        if !killed && Instant::now() >= kill_at {
            victim.0.kill().expect("SIGKILL the producer");
            victim.0.wait().expect("reap it");
            killed = true;
        }
        while let Ok((w, line)) = rx.try_recv() {
            if w == 0 && line == "done" {
                survivor_done = true;
            }
        }
        match consumer.try_recv(&c) {
            Ok(Some(m)) => {
                let (w, k) = (m.payload[0], m.payload[1]);
                assert_eq!(m.kind, KIND, "{m:?}");
                assert!(w < 2, "{m:?}");
                assert_eq!(m.payload, payload(w, k), "torn message {m:?}");
                assert_eq!(k, next[w as usize], "producer {w} out of order or a gap");
                next[w as usize] += 1;
                positions.push(m.position);
                quiet_since = None;
            }
            Ok(None) => {
                if killed && survivor_done && next[0] == COUNT {
                    let since = *quiet_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > 3 * hole_timeout {
                        break;
                    }
                }
                std::thread::sleep(Duration::from_micros(20));
            }
            Err(e) => panic!("recv: {e}"),
        }
    }
    let status = survivor.0.wait().expect("survivor exits");
    assert!(status.success(), "survivor: {status}");
    let stats = consumer.stats();
    let missing: Vec<u64> = (0..consumer.tail())
        .filter(|p| positions.binary_search(p).is_err())
        .collect();
    println!(
        "killed after {} of its messages; stats {stats:?}; missing {missing:?}",
        next[1]
    );
    assert_eq!(next[0], COUNT, "every message of the survivor arrived");
    assert!(
        stats.holes <= 1,
        "at most the victim's last claim: {stats:?}"
    );
    assert_eq!(stats.corrupt, 0);
    assert_eq!(
        missing.len() as u64,
        stats.holes,
        "the skipped positions are the holes"
    );
    assert_eq!(consumer.mismatches(), 0);
}
