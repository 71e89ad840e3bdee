//! The per-process heartbeat thread: keeps every registered client of this process alive in the
//! region's client table without ever taking a client's lock.
//!
//! A client is judged dead by lease when its entry's `heartbeat_ms` has not changed for the lease
//! on the observer's monotonic clock (`reaper.rs`). Bumping it from the client's own calls is not
//! enough: a client may hold buffers and make no call for minutes, or sit in a long waiting get
//! while another thread of the same process (the plugin's client mutex, Python's) waits behind
//! it. So [`Store::connect`](crate::store::Store::connect) registers `(store, index, word)` here,
//! and one thread per process bumps the heartbeat of every registration every
//! [`HEARTBEAT_PERIOD`], reading only the entry word: an entry whose word is no longer the
//! registered one (the client was fenced, disconnected, or the entry reused) is dropped from the
//! registry and never touched again.
//!
//! A stopped process (SIGSTOP, a VM pause) stops this thread too, which is what the lease is for.
//! The bump itself races one way only: between our check of the word and our store, the entry may
//! be reaped and claimed by a new client, whose heartbeat we then bump once. That delays the
//! judgment of the new client by at most one period; it never makes anyone look dead.

use crate::sync::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::store::handle::Store;

/// How often the heartbeat thread bumps every registered client. Leases must be well above it
/// (the default lease is 5 s).
pub const HEARTBEAT_PERIOD: Duration = Duration::from_millis(100);

struct Beat {
    store: Weak<Store>,
    index: usize,
    word: u64,
}

struct Registry {
    beats: Vec<Beat>,
    /// The process that runs the thread (a forked child has the registry but no thread).
    thread_pid: u32,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    beats: Vec::new(),
    thread_pid: 0,
});

fn registry() -> std::sync::MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(|p| p.into_inner())
}

/// Starts heartbeating client `index` of `store`, registered with entry word `word`.
pub(crate) fn register(store: &Arc<Store>, index: usize, word: u64) {
    let mut r = registry();
    r.beats.retain(|b| b.store.strong_count() > 0);
    r.beats.push(Beat {
        store: Arc::downgrade(store),
        index,
        word,
    });
    let pid = std::process::id();
    if r.thread_pid != pid {
        let spawned = std::thread::Builder::new()
            .name("gismo-heartbeat".into())
            .spawn(run);
        // Without a thread (no resources), calls still heartbeat through `check_alive`.
        if spawned.is_ok() {
            r.thread_pid = pid;
        }
    }
}

/// Stops heartbeating client `index` registered with `word` (disconnect).
pub(crate) fn unregister(store: &Store, index: usize, word: u64) {
    registry()
        .beats
        .retain(|b| !(b.index == index && b.word == word && std::ptr::eq(b.store.as_ptr(), store)));
}

/// Bumps one entry's heartbeat so that it differs from what any observer saw last. Wall-clock ms
/// where the clock moves forward (informational: `gismoctl clients` shows its age), but always a
/// new value: only the change is judged.
pub(crate) fn bump(hb: &crate::sync::AtomicU64) {
    let prev = hb.load(Ordering::Relaxed);
    hb.store(
        crate::clock::unix_ms().max(prev.wrapping_add(1)),
        Ordering::Relaxed,
    );
}

fn run() {
    loop {
        std::thread::sleep(HEARTBEAT_PERIOD);
        let beats: Vec<(Arc<Store>, usize, u64)> = {
            let r = registry();
            r.beats
                .iter()
                .filter_map(|b| b.store.upgrade().map(|s| (s, b.index, b.word)))
                .collect()
        };
        let mut gone = Vec::new();
        for (store, index, word) in &beats {
            let e = store.client_entry(*index);
            // Relaxed: only equality matters; a stale read delays our notice of a fence by one
            // period at most.
            if e.word.load(Ordering::Relaxed) != *word {
                gone.push((Arc::as_ptr(store), *index, *word));
                continue;
            }
            bump(&e.heartbeat_ms);
        }
        if !gone.is_empty() {
            registry().beats.retain(|b| {
                !gone.iter().any(|&(s, i, w)| {
                    b.index == i && b.word == w && std::ptr::eq(b.store.as_ptr(), s)
                })
            });
        }
        drop(beats);
    }
}
