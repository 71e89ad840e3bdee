//! Moving 64-byte lines between a host's view, its clean copy and the device, and the per-line
//! locks that keep two transfers of one line apart. The only `unsafe` of the emulator.

use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

use crate::coherence::CACHE_LINE;

/// 8-byte words per line.
const WORDS: usize = CACHE_LINE / 8;

/// Number of line locks in `DIR/lines.lock` (a power of two).
pub const LOCKS: usize = 1 << 14;

/// Spins before a waiter checks whether the lock's holder still lives.
const SPINS_BEFORE_CHECK: u32 = 1 << 12;

/// The three mappings of one host, as raw bases of `len` bytes each.
pub struct Lines {
    device: *mut u8,
    view: *mut u8,
    clean: *mut u8,
    len: usize,
    locks: *mut u8,
}

// SAFETY: the bases point into shared mappings owned by the `HostView` that owns this `Lines`
// (they live as long as it does); every access goes through `AtomicU64`/`AtomicU32`, which is
// sound from any thread.
unsafe impl Send for Lines {}
// SAFETY: as for `Send`.
unsafe impl Sync for Lines {}

impl Lines {
    /// # Safety
    /// `device`, `view` and `clean` are 64-byte aligned and each maps `len` readable, writable
    /// bytes; `locks` is 4-byte aligned and maps `LOCKS * 4` bytes; all stay mapped for as long
    /// as the returned value lives. `len` is a multiple of 64.
    pub unsafe fn new(
        device: *mut u8,
        view: *mut u8,
        clean: *mut u8,
        len: usize,
        locks: *mut u8,
    ) -> Lines {
        debug_assert!(len % CACHE_LINE == 0);
        Lines {
            device,
            view,
            clean,
            len,
            locks,
        }
    }

    /// Number of lines.
    pub fn count(&self) -> usize {
        self.len / CACHE_LINE
    }

    /// Word `w` of line `line` in the mapping at `base`.
    fn word(&self, base: *mut u8, line: usize, w: usize) -> &AtomicU64 {
        assert!(
            line < self.count() && w < WORDS,
            "line {line} word {w} out of range"
        );
        // SAFETY: in range (checked above), so inside a `len`-byte mapping that lives as long as
        // `self` (`new`'s contract); 8-aligned because the base is 64-aligned; every access to
        // these bytes by the emulator and by the store is atomic.
        unsafe { AtomicU64::from_ptr(base.add(line * CACHE_LINE + w * 8).cast()) }
    }

    /// Whether the view's line differs from the clean copy (this host wrote it).
    pub fn is_dirty(&self, line: usize) -> bool {
        (0..WORDS).any(|w| {
            self.word(self.view, line, w).load(Ordering::Relaxed)
                != self.word(self.clean, line, w).load(Ordering::Relaxed)
        })
    }

    /// Whether the device's line differs from what this host last fetched or wrote back.
    pub fn is_stale(&self, line: usize) -> bool {
        (0..WORDS).any(|w| {
            self.word(self.device, line, w).load(Ordering::Relaxed)
                != self.word(self.clean, line, w).load(Ordering::Relaxed)
        })
    }

    /// Copies the line view → device, whole (also the words this host did not write: that is
    /// how a cross-host read-modify-write loses the other host's update). Call under the line's
    /// lock.
    pub fn write_back(&self, line: usize) {
        for w in 0..WORDS {
            let v = self.word(self.view, line, w).load(Ordering::Relaxed);
            self.word(self.device, line, w).store(v, Ordering::Relaxed);
            // What was copied, not what the view holds now: a store after the load above leaves
            // the word dirty.
            self.word(self.clean, line, w).store(v, Ordering::Relaxed);
        }
    }

    /// Refetches the line device → view. A word the host stored to since its clean copy is kept
    /// (compare-and-swap from the clean value), as a store after an eviction would be applied to
    /// the refetched line. Call under the line's lock, after writing the line back if dirty.
    pub fn refresh(&self, line: usize) {
        for w in 0..WORDS {
            let d = self.word(self.device, line, w).load(Ordering::Relaxed);
            let clean = self.word(self.clean, line, w);
            let c = clean.load(Ordering::Relaxed);
            if c == d {
                continue;
            }
            // Relaxed: the line lock and the fences of the caller order the transfer; the host's
            // own processes see the new value by the view's coherence.
            if self
                .word(self.view, line, w)
                .compare_exchange(c, d, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                clean.store(d, Ordering::Relaxed);
            }
        }
    }

    /// Fills a new view and clean copy with the device's bytes (a cold cache). Zero words are
    /// skipped: new files read as zero, and stay sparse.
    pub fn snapshot(&self) {
        for line in 0..self.count() {
            for w in 0..WORDS {
                let d = self.word(self.device, line, w).load(Ordering::Relaxed);
                if d != 0 {
                    self.word(self.view, line, w).store(d, Ordering::Relaxed);
                    self.word(self.clean, line, w).store(d, Ordering::Relaxed);
                }
            }
        }
    }

    /// Takes line `line`'s lock for `pid`; the guard gives it back.
    pub fn lock(&self, line: usize, pid: u32) -> LineGuard<'_> {
        let i = (line.wrapping_mul(0x9E37_79B9_7F4A_7C15_u64 as usize) >> 7) % LOCKS;
        // SAFETY: `i < LOCKS`, so inside the `LOCKS * 4`-byte, 4-aligned lock mapping that lives
        // as long as `self`; every access to it is atomic.
        let word = unsafe { AtomicU32::from_ptr(self.locks.add(i * 4).cast()) };
        let mut spins = 0u32;
        loop {
            // Acquire: pairs with the Release store of the previous holder's guard: its transfer
            // of the line happens before ours.
            match word.compare_exchange_weak(0, pid, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => break,
                Err(holder) => {
                    spins += 1;
                    if spins % SPINS_BEFORE_CHECK == 0 && holder != 0 && process_gone(holder) {
                        // Acquire: as above; the dead holder's transfer may be torn, as a
                        // line written back by a host that lost power can be.
                        if word
                            .compare_exchange(holder, pid, Ordering::Acquire, Ordering::Relaxed)
                            .is_ok()
                        {
                            break;
                        }
                    }
                    if spins % 64 == 0 {
                        std::thread::yield_now();
                    } else {
                        std::hint::spin_loop();
                    }
                }
            }
        }
        // SeqCst fence: a transfer behaves like a fenced flush instruction (`clwb`/`clflushopt`
        // between fences): the host's stores before the call are in the view before we copy.
        fence(Ordering::SeqCst);
        LineGuard { word }
    }
}

/// A held line lock.
pub struct LineGuard<'a> {
    word: &'a AtomicU32,
}

impl Drop for LineGuard<'_> {
    fn drop(&mut self) {
        // SeqCst fence: the transfer is complete before later loads and stores of the caller
        // (the `sfence`/`mfence` after a flush or an eviction).
        fence(Ordering::SeqCst);
        // Release: pairs with the Acquire CAS of the next holder.
        self.word.store(0, Ordering::Release);
    }
}

/// Whether no process `pid` exists (`ESRCH`); any other answer counts as alive.
fn process_gone(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: `kill` with signal 0 sends nothing; it only checks that the pid exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}
