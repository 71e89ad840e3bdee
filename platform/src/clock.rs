//! Clocks. Wall-clock milliseconds in the region are informational (LRU stamps, heartbeat ages
//! shown by `gismoctl`): no lease compares two hosts' clocks. Leases are judged by "changed since
//! I last looked" on the observer's own [`monotonic_ms`] (`reaper.rs`, `leader.rs`).

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

/// Milliseconds of this process's monotonic clock (since its first call): for leases judged on
/// the observer's own clock. Never comparable across processes.
pub fn monotonic_ms() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
}

/// Milliseconds of the host's boot-time clock (`CLOCK_BOOTTIME`: one clock for every process of
/// the host, counting time suspended too). For values one process of a host hands to another
/// (the host ticker's handover, `xhost::ticker`); never comparable across hosts.
pub fn host_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_BOOTTIME needs nothing else.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    if rc != 0 {
        // Linux has had CLOCK_BOOTTIME since 2.6.39; CLOCK_MONOTONIC is host-wide too.
        // SAFETY: as above.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    }
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}
