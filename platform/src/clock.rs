//! Clocks used in the region. Wall-clock milliseconds are comparable across hosts (to NTP
//! accuracy), which is what leases and LRU need; nothing depends on them for safety except the
//! lease, whose slack is documented in `docs/operations.md`.

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    (unix_ns() / 1_000_000) as u64
}

/// Nanoseconds since the Unix epoch.
pub fn unix_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// A cheap, coarse (~1–4 ms) wall clock for hot paths (LRU stamps).
pub fn coarse_unix_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_REALTIME_COARSE needs nothing else.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) };
    if rc != 0 {
        return unix_ms();
    }
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}
