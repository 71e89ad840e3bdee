//! The physical limits, measured in the same run as the stores: plain copy, non-temporal copy
//! and copy + cache-line write-back bandwidth (the ways a payload can reach memory), and an
//! empty round trip between two processes' threads over a Unix socket (the floor of any
//! store that answers through a socket).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use gismo_platform::coherence::{Coherence, CoherenceMode, CopyStrategy, NtStores};

use crate::stats::{Samples, Summary};

/// A way of copying a payload, for the bandwidth limits.
pub struct Copier {
    pub name: &'static str,
    coherence: Coherence,
}

impl Copier {
    /// Plain `memcpy` (what a coherent store's put cannot beat).
    pub fn plain() -> Copier {
        Copier {
            name: "plain copy",
            coherence: Coherence::new(CoherenceMode::Hardware),
        }
    }

    /// Non-temporal stores at every size (the fastest way past the caches).
    pub fn non_temporal() -> Option<Copier> {
        let mut s = CopyStrategy::detect();
        if s.nt == NtStores::None {
            return None;
        }
        s.nt_threshold = 0;
        Some(Copier {
            name: "non-temporal copy",
            coherence: Coherence::with_strategy(CoherenceMode::Flush, s),
        })
    }

    /// Plain copy, then every line written back (`clwb`/`clflushopt`) and a fence.
    pub fn copy_and_flush() -> Copier {
        let mut s = CopyStrategy::detect();
        s.nt = NtStores::None;
        s.nt_threshold = usize::MAX;
        Copier {
            name: "copy + flush",
            coherence: Coherence::with_strategy(CoherenceMode::Flush, s),
        }
    }

    /// Every copier this CPU supports: plain, non-temporal (when there are NT stores), and
    /// copy + flush.
    pub fn all() -> Vec<Copier> {
        [
            Some(Copier::plain()),
            Copier::non_temporal(),
            Some(Copier::copy_and_flush()),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    /// Copies `src` into `dst` as this copier does.
    pub fn copy(&self, dst: &mut [u8], src: &[u8]) {
        assert!(dst.len() >= src.len());
        // SAFETY: both slices are valid for `src.len()` bytes and distinct (`&mut` and `&`).
        unsafe {
            self.coherence
                .memory_copy(dst.as_mut_ptr(), src.as_ptr(), src.len())
        }
    }
}

/// Time of copying `n` bytes, `iters` times, into a destination that is not in the cache (the
/// destination cycles through a buffer several times larger than the last-level cache).
pub fn copy_bandwidth(
    copier: &Copier,
    src: &[u8],
    pool: &mut [u8],
    n: usize,
    budget: Duration,
) -> Summary {
    let slots = (pool.len() / n).max(1);
    let mut samples = Samples::default();
    let start = Instant::now();
    let mut i = 0;
    while samples.0.len() < 3 || (start.elapsed() < budget && samples.0.len() < 100_000) {
        let off = (i % slots) * n;
        let t = Instant::now();
        copier.copy(&mut pool[off..off + n], &src[..n]);
        samples.push(t.elapsed());
        i += 1;
    }
    samples.summary(n as u64)
}

/// An empty request and reply between two threads over a Unix socket pair.
pub fn socket_round_trip(budget: Duration) -> Summary {
    let (mut a, mut b) = UnixStream::pair().expect("socketpair");
    let echo = std::thread::spawn(move || {
        let mut byte = [0u8; 1];
        while b.read_exact(&mut byte).is_ok() {
            if b.write_all(&byte).is_err() {
                break;
            }
        }
    });
    let mut samples = Samples::default();
    let start = Instant::now();
    let mut byte = [7u8; 1];
    while start.elapsed() < budget {
        let t = Instant::now();
        a.write_all(&byte).expect("write");
        a.read_exact(&mut byte).expect("read");
        samples.push(t.elapsed());
    }
    drop(a);
    let _ = echo.join();
    samples.summary(0)
}
