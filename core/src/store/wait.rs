//! Waiting for a slot's state word to change without burning a core: a same-host futex on the low
//! half of the word (every host maps the region `MAP_SHARED`, so the kernel's futex keys on the
//! backing page and wakes waiters in other processes of this host), with a bounded timeout so a
//! change made by another host — which no futex can signal — is seen within one poll period.

use std::time::Duration;

use crate::sync::AtomicU64;

/// The longest a waiter sleeps before looking again (bounds cross-host wake-up latency).
pub const POLL_PERIOD: Duration = Duration::from_millis(1);

/// Sleeps until the low 32 bits of `word` differ from `expected_low`, a wake, or `timeout`.
#[cfg(all(target_os = "linux", not(loom)))]
pub fn wait_word(word: &AtomicU64, expected_low: u32, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as _,
    };
    // The low half of a little-endian u64 sits at the word's own address.
    let addr = word as *const AtomicU64 as *const u32;
    // SAFETY: `addr` points to 4 readable, aligned bytes of a live shared mapping for the duration
    // of the call; FUTEX_WAIT only reads them. A spurious return is harmless: callers re-check.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            addr,
            libc::FUTEX_WAIT,
            expected_low,
            &ts as *const libc::timespec,
        );
    }
}

/// Wakes every waiter on `word` on this host.
#[cfg(all(target_os = "linux", not(loom)))]
pub fn wake_word(word: &AtomicU64) {
    let addr = word as *const AtomicU64 as *const u32;
    // SAFETY: as in `wait_word`; FUTEX_WAKE does not access the memory.
    unsafe {
        libc::syscall(libc::SYS_futex, addr, libc::FUTEX_WAKE, i32::MAX);
    }
}

#[cfg(any(not(target_os = "linux"), loom))]
pub fn wait_word(_word: &AtomicU64, _expected_low: u32, timeout: Duration) {
    std::thread::sleep(timeout.min(POLL_PERIOD));
}

#[cfg(any(not(target_os = "linux"), loom))]
pub fn wake_word(_word: &AtomicU64) {}
