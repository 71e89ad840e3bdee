//! Spontaneous events: a thread per process that samples random pages of the region and writes
//! back dirty lines or refetches stale clean ones there, as a cache's replacement policy and
//! prefetcher would at moments no program chooses.

use std::sync::Weak;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::view::HostView;
use crate::coherence::CACHE_LINE;

/// Sampled page size.
const PAGE: usize = 4096;

/// Time between two rounds of samples.
const TICK: Duration = Duration::from_millis(1);

/// Starts the sweeper of `view`: `rate` pages a second, randomness from `seed`, the host's name
/// and this process's pid. It stops when the last handle on the view is dropped.
pub fn start(view: Weak<HostView>, rate: u64, seed: u64) {
    let Some(v) = view.upgrade() else { return };
    let host_hash = v.host().bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x1000_0000_01b3)
    });
    let pages = v.len().div_ceil(PAGE);
    drop(v);
    let mut rng = SmallRng::seed_from_u64(seed ^ host_hash ^ u64::from(std::process::id()) << 32);
    let spawned = std::thread::Builder::new()
        .name("gismo-emu-sweep".into())
        .spawn(move || {
            // Pages owed, in thousandths (the rate is per second, a tick is a millisecond).
            let mut owed = 0u64;
            loop {
                std::thread::sleep(TICK);
                let Some(view) = view.upgrade() else { return };
                owed += rate;
                while owed >= 1000 {
                    owed -= 1000;
                    let first = rng.gen_range(0..pages) * (PAGE / CACHE_LINE);
                    for line in first..first + PAGE / CACHE_LINE {
                        view.spontaneous(line, || rng.gen_bool(0.5));
                    }
                }
            }
        });
    // A process that cannot start a thread runs without spontaneous events: the explicit
    // write-backs and evictions still emulate the protocol.
    drop(spawned);
}
