//! The emulator against its model: what one host stores reaches another only by a write-back
//! and an eviction; a cross-host read-modify-write loses updates; a host's processes share its
//! view; the negative-control switches and the spontaneous events do what they say.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{EmulationConfig, EmulationError, HostView};

const LEN: usize = 64 * 1024;

fn device(dir: &Path, name: &str, len: usize) -> File {
    let f = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(dir.join(name))
        .unwrap();
    f.set_len(len as u64).unwrap();
    f
}

fn host(dir: &Path, name: &str, dev: &File, rate: u64) -> Arc<HostView> {
    let mut cfg = EmulationConfig::new(name, dir.join("emu"));
    cfg.rate = rate;
    HostView::open(&cfg, dev, 0, LEN).unwrap()
}

/// Word `i` of `h`'s view.
fn word(h: &HostView, i: usize) -> &AtomicU64 {
    assert!(i * 8 < h.len());
    // SAFETY: inside the view (checked), 8-aligned (page-aligned base), alive as long as `h`;
    // accessed atomically only.
    unsafe { AtomicU64::from_ptr(h.view_base().add(i * 8).cast()) }
}

fn device_word(dev: &File, i: usize) -> u64 {
    let mut b = [0u8; 8];
    dev.read_exact_at(&mut b, (i * 8) as u64).unwrap();
    u64::from_ne_bytes(b)
}

#[test]
fn a_store_reaches_another_host_only_by_write_back_then_eviction() {
    let dir = tempfile::tempdir().unwrap();
    let dev = device(dir.path(), "dev", LEN);
    let (a, b) = (
        host(dir.path(), "a", &dev, 0),
        host(dir.path(), "b", &dev, 0),
    );
    word(&a, 9).store(42, Ordering::Relaxed);
    assert_eq!(a.dirty_lines(0, LEN), 1);
    assert_eq!(device_word(&dev, 9), 0, "a store stays in the host's cache");
    b.evict(64, 64);
    assert_eq!(
        word(&b, 9).load(Ordering::Relaxed),
        0,
        "nothing written back yet"
    );
    a.write_back(72, 8);
    assert_eq!(device_word(&dev, 9), 42);
    assert_eq!(a.dirty_lines(0, LEN), 0);
    assert_eq!(
        word(&b, 9).load(Ordering::Relaxed),
        0,
        "b's clean line stays stale until b evicts it"
    );
    assert_eq!(b.stale_lines(0, LEN), 1);
    b.evict(72, 1);
    assert_eq!(word(&b, 9).load(Ordering::Relaxed), 42);
    assert_eq!(b.stale_lines(0, LEN), 0);
}

#[test]
fn a_cross_host_read_modify_write_loses_an_update() {
    let dir = tempfile::tempdir().unwrap();
    let dev = device(dir.path(), "dev", LEN);
    let (a, b) = (
        host(dir.path(), "a", &dev, 0),
        host(dir.path(), "b", &dev, 0),
    );
    // Both "win" a fetch_add on their own cached copy of the counter.
    assert_eq!(word(&a, 0).fetch_add(1, Ordering::SeqCst), 0);
    assert_eq!(word(&b, 0).fetch_add(1, Ordering::SeqCst), 0);
    // And a neighbour in the same line that only a wrote.
    word(&a, 3).store(7, Ordering::Relaxed);
    a.write_back(0, 8);
    b.write_back(0, 8);
    assert_eq!(
        device_word(&dev, 0),
        1,
        "the last write-back wins: one increment lost"
    );
    assert_eq!(
        device_word(&dev, 3),
        0,
        "b wrote back its whole line, with its stale copy of a's word"
    );
}

#[test]
fn evicting_a_dirty_line_writes_it_back_first() {
    let dir = tempfile::tempdir().unwrap();
    let dev = device(dir.path(), "dev", LEN);
    let a = host(dir.path(), "a", &dev, 0);
    word(&a, 100).store(5, Ordering::Relaxed);
    a.evict(800, 8);
    assert_eq!(word(&a, 100).load(Ordering::Relaxed), 5);
    assert_eq!(device_word(&dev, 100), 5);
}

#[test]
fn processes_of_one_host_share_its_view_and_a_new_host_starts_cold() {
    let dir = tempfile::tempdir().unwrap();
    let dev = device(dir.path(), "dev", LEN);
    dev.write_all_at(&11u64.to_ne_bytes(), 16).unwrap();
    let a1 = host(dir.path(), "a", &dev, 0);
    assert!(a1.made_fresh());
    assert_eq!(
        word(&a1, 2).load(Ordering::Relaxed),
        11,
        "snapshot of the device"
    );
    // A second process of host a: another mapping of the same view.
    let a2 = host(dir.path(), "a", &dev, 0);
    assert!(!a2.made_fresh());
    assert_ne!(a1.view_base(), a2.view_base());
    word(&a1, 5).store(3, Ordering::Relaxed);
    assert_eq!(
        word(&a2, 5).fetch_add(1, Ordering::SeqCst),
        3,
        "coherent within a host"
    );
    assert_eq!(word(&a1, 5).load(Ordering::SeqCst), 4);
    assert_eq!(device_word(&dev, 5), 0);
}

#[test]
fn a_view_of_another_device_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let dev1 = device(dir.path(), "dev1", LEN);
    let a = host(dir.path(), "a", &dev1, 0);
    word(&a, 1).store(9, Ordering::Relaxed);
    drop(a);
    let dev2 = device(dir.path(), "dev2", LEN);
    let a = host(dir.path(), "a", &dev2, 0);
    assert!(a.made_fresh());
    assert_eq!(word(&a, 1).load(Ordering::Relaxed), 0);
}

#[test]
fn the_negative_control_switches_drop_their_half() {
    let dir = tempfile::tempdir().unwrap();
    let dev = device(dir.path(), "dev", LEN);
    let (a, b) = (
        host(dir.path(), "a", &dev, 0),
        host(dir.path(), "b", &dev, 0),
    );
    a.set_skip_write_back(true);
    word(&a, 0).store(1, Ordering::Relaxed);
    a.write_back(0, 64);
    assert_eq!(device_word(&dev, 0), 0);
    a.set_skip_write_back(false);
    a.write_back(0, 64);
    b.set_skip_invalidate(true);
    b.evict(0, 64);
    assert_eq!(word(&b, 0).load(Ordering::Relaxed), 0);
    b.set_skip_invalidate(false);
    b.evict(0, 64);
    assert_eq!(word(&b, 0).load(Ordering::Relaxed), 1);
}

#[test]
fn spontaneous_events_write_back_dirty_lines_and_refresh_stale_ones() {
    let dir = tempfile::tempdir().unwrap();
    let dev = device(dir.path(), "dev", LEN);
    // 16 pages sampled 100 times a second each, on average.
    let a = host(dir.path(), "a", &dev, 1600);
    let b = host(dir.path(), "b", &dev, 1600);
    word(&a, 300).store(77, Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(20);
    while word(&b, 300).load(Ordering::Relaxed) != 77 {
        assert!(
            Instant::now() < deadline,
            "a's dirty line never reached b: {a:?} {b:?}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(device_word(&dev, 300), 77);
    assert!(a.spontaneous_events() >= 1 && b.spontaneous_events() >= 1);
    assert_eq!(a.lines_written_back() + b.lines_refreshed(), 0);
}

#[test]
fn a_line_lock_held_by_a_dead_process_is_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let dev = device(dir.path(), "dev", LEN);
    let a = host(dir.path(), "a", &dev, 0);
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    // Line 0's lock is the first word of the lock file.
    let locks = File::options()
        .write(true)
        .open(dir.path().join("emu/lines.lock"))
        .unwrap();
    locks.write_all_at(&dead.to_ne_bytes(), 0).unwrap();
    word(&a, 0).store(1, Ordering::Relaxed);
    a.write_back(0, 8);
    assert_eq!(device_word(&dev, 0), 1);
}

#[test]
fn the_environment_names_a_host_completely_or_not_at_all() {
    let vars = |pairs: &'static [(&'static str, &'static str)]| {
        move |k: &str| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    };
    assert_eq!(EmulationConfig::from_vars(vars(&[])).unwrap(), None);
    assert!(matches!(
        EmulationConfig::from_vars(vars(&[("GISMO_EMULATED_HOST", "a")])),
        Err(EmulationError::Incomplete("GISMO_EMULATION_DIR"))
    ));
    assert!(matches!(
        EmulationConfig::from_vars(vars(&[
            ("GISMO_EMULATED_HOST", "a/b"),
            ("GISMO_EMULATION_DIR", "/tmp/x")
        ])),
        Err(EmulationError::BadValue { .. })
    ));
    assert!(matches!(
        EmulationConfig::from_vars(vars(&[
            ("GISMO_EMULATED_HOST", "a"),
            ("GISMO_EMULATION_DIR", "/tmp/x"),
            ("GISMO_EMULATION_RATE", "fast")
        ])),
        Err(EmulationError::BadValue { .. })
    ));
    let cfg = EmulationConfig::from_vars(vars(&[
        ("GISMO_EMULATED_HOST", "host-1"),
        ("GISMO_EMULATION_DIR", "/tmp/x"),
        ("GISMO_EMULATION_SEED", "7"),
        ("GISMO_EMULATION_RATE", "0"),
        ("GISMO_EMULATION_SKIP_WRITEBACK", "1"),
        ("GISMO_EMULATION_SKIP_INVALIDATE", "0"),
    ]))
    .unwrap()
    .unwrap();
    assert_eq!((cfg.host.as_str(), cfg.seed, cfg.rate), ("host-1", 7, 0));
    assert!(cfg.skip_write_back && !cfg.skip_invalidate);
}

#[test]
fn a_region_that_is_not_whole_lines_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let dev = device(dir.path(), "dev", LEN);
    let cfg = EmulationConfig::new("a", dir.path().join("emu"));
    assert!(matches!(
        HostView::open(&cfg, &dev, 0, 100),
        Err(EmulationError::BadRegion { .. })
    ));
}
