//! The building blocks on the whole-region emulator: two emulated hosts in one process (each a
//! `Region` mapped as its own host, so each has its own view), threads acting as their CPUs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gismo_platform::emulation::EmulationConfig;
use gismo_platform::region::{Emulation, Region, RegionOptions, RegionSpec};

use super::record::{Record, RecordError};
use crate::coherence::{Coherence, CoherenceMode};
use crate::sync::{AtomicBool, AtomicU64, Ordering};

/// A region file shared by emulated hosts, each mapping it through its own view.
pub struct Hosts {
    pub dir: tempfile::TempDir,
    spec: RegionSpec,
}

/// One emulated host's mapping and coherence.
pub struct Host {
    pub region: Region,
    pub coherence: Coherence,
}

impl Host {
    /// Word `i` of the region (as this host sees it).
    pub fn words(&self, i: usize, n: usize) -> &[AtomicU64] {
        crate::shm::view_slice::<AtomicU64>(&self.region, i * 8, n).expect("words in the region")
    }
}

impl Hosts {
    pub fn new(len: u64) -> Hosts {
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = RegionSpec::File(dir.path().join("device"));
        Region::create(
            &spec,
            len,
            &RegionOptions {
                emulation: Emulation::Off,
                ..Default::default()
            },
        )
        .expect("device");
        Hosts { dir, spec }
    }

    /// Joins host `name` with `rate` spontaneous page samples per second.
    pub fn host(&self, name: &str, rate: u64) -> Host {
        self.host_seeded(name, rate, 0)
    }

    /// As [`Hosts::host`], with the spontaneous events' seed.
    pub fn host_seeded(&self, name: &str, rate: u64, seed: u64) -> Host {
        let mut cfg = EmulationConfig::new(name, self.dir.path().join("emu"));
        cfg.rate = rate;
        cfg.seed = seed;
        let opts = RegionOptions {
            emulation: Emulation::Host(cfg),
            ..Default::default()
        };
        let region = Region::open(&self.spec, &opts).expect("join the emulated host");
        let coherence = Coherence::for_region(CoherenceMode::Flush, &region);
        Host { region, coherence }
    }
}

#[test]
fn a_record_written_on_one_host_is_read_whole_on_another() {
    let hosts = Hosts::new(1 << 20);
    let (a, b) = (hosts.host("a", 0), hosts.host("b", 0));
    // seq on its own line, body on the next two lines.
    let ra = Record::new(&a.words(0, 1)[0], a.words(8, 12));
    let rb = Record::new(&b.words(0, 1)[0], b.words(8, 12));
    let values: Vec<u64> = (1..=12).collect();
    assert_eq!(ra.write(&a.coherence, &values), Ok(2));
    let mut out = vec![0; 12];
    assert_eq!(rb.read(&b.coherence, &mut out), Ok(2));
    assert_eq!(out, values);
    assert_eq!(
        rb.read(&b.coherence, &mut [0; 3]),
        Err(RecordError::WrongLength {
            expected: 12,
            got: 3
        })
    );
}

#[test]
fn a_skipped_write_back_or_evict_leaves_the_reader_with_the_old_record() {
    let hosts = Hosts::new(1 << 20);
    let (a, b) = (hosts.host("a", 0), hosts.host("b", 0));
    let ra = Record::new(&a.words(0, 1)[0], a.words(1, 4));
    let rb = Record::new(&b.words(0, 1)[0], b.words(1, 4));
    ra.write(&a.coherence, &[1, 1, 1, 1]).unwrap();
    let mut out = [0; 4];
    rb.read(&b.coherence, &mut out).unwrap();
    assert_eq!(out, [1; 4]);

    let ha = a.region.emulated_host().unwrap();
    ha.set_skip_write_back(true);
    ra.write(&a.coherence, &[2, 2, 2, 2]).unwrap();
    assert_eq!(rb.read(&b.coherence, &mut out), Ok(2));
    assert_eq!(
        out, [1; 4],
        "without the writer's write-back the reader sees the old record"
    );
    ha.set_skip_write_back(false);
    ra.write(&a.coherence, &[3, 3, 3, 3]).unwrap();

    let hb = b.region.emulated_host().unwrap();
    hb.set_skip_invalidate(true);
    assert_eq!(rb.read(&b.coherence, &mut out), Ok(2));
    assert_eq!(
        out, [1; 4],
        "without the reader's evict it keeps its stale lines"
    );
    hb.set_skip_invalidate(false);
    assert_eq!(rb.read(&b.coherence, &mut out), Ok(6));
    assert_eq!(out, [3; 4]);
}

#[test]
fn a_writer_that_died_mid_write_leaves_the_record_busy_until_rewritten() {
    let hosts = Hosts::new(1 << 20);
    let (a, b) = (hosts.host("a", 0), hosts.host("b", 0));
    let seq = &a.words(0, 1)[0];
    seq.store(5, Ordering::Relaxed);
    crate::xhost::lines::write_back(&a.coherence, std::slice::from_ref(seq));
    let rb = Record::new(&b.words(0, 1)[0], b.words(1, 2));
    assert_eq!(
        rb.read(&b.coherence, &mut [0; 2]),
        Err(RecordError::Busy { seq: 5 })
    );
    let ra = Record::new(seq, a.words(1, 2));
    assert_eq!(ra.write(&a.coherence, &[7, 8]), Ok(6));
    let mut out = [0; 2];
    assert_eq!(rb.read(&b.coherence, &mut out), Ok(6));
    assert_eq!(out, [7, 8]);
}

/// Host a rewrites a 24-word record (three lines) as fast as it can, every word the write's
/// number; host b reads it meanwhile. With spontaneous write-backs and refreshes at a high rate,
/// body lines reach memory at arbitrary moments: every validated read must still be one whole
/// write, and never an older one than a read before it. (Seen to fail — a torn read of writes
/// 127 and 128 — when the writer skips writing back its odd seq first.)
#[test]
fn concurrent_reads_on_another_host_are_never_torn() {
    let hosts = Hosts::new(64 << 10);
    let (a, b) = (hosts.host("a", 200_000), hosts.host("b", 200_000));
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    std::thread::scope(|s| {
        let (stop_w, written_w) = (stop.clone(), written.clone());
        let a = &a;
        s.spawn(move || {
            let rec = Record::new(&a.words(0, 1)[0], a.words(8, 24));
            let mut k = 0u64;
            while !stop_w.load(Ordering::Relaxed) {
                k += 1;
                rec.write(&a.coherence, &[k; 24]).unwrap();
                written_w.store(k, Ordering::Relaxed);
            }
        });
        // Stops the writer also when an assertion below fails (the scope joins it).
        struct StopOnDrop(Arc<AtomicBool>);
        impl Drop for StopOnDrop {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let _stop = StopOnDrop(stop.clone());
        let rec = Record::new(&b.words(0, 1)[0], b.words(8, 24));
        let mut out = [0u64; 24];
        let (mut reads, mut busy, mut last) = (0u64, 0u64, 0u64);
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            match rec.read(&b.coherence, &mut out) {
                Ok(_) => {
                    assert!(out.iter().all(|&w| w == out[0]), "torn read: {out:?}");
                    assert!(out[0] >= last, "went back from {last} to {}", out[0]);
                    last = out[0];
                    reads += 1;
                }
                Err(RecordError::Busy { .. }) => busy += 1,
                Err(e) => panic!("{e}"),
            }
        }
        println!(
            "{reads} reads ({busy} busy), last {last} of {} writes",
            written.load(Ordering::Relaxed)
        );
        assert!(reads > 0 && last > 0);
    });
}
