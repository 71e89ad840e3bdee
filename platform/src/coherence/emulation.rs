//! Non-coherent multi-host emulation on one machine.
//!
//! # Why
//!
//! Processes (or VMs) on one machine share its caches, so a missing write back or invalidate can
//! never show up in a test there: the reader's load finds the writer's dirty line in the shared
//! cache hierarchy. famfs notes the same about VMs sharing a host file.
//!
//! # The model
//!
//! An [`EmulatedHost`] is one host's *cache*: a private, anonymous mapping as long as the shared
//! region, mirroring `shared_base..shared_base+len`. A [`Coherence`] made with
//! [`Coherence::emulated`] in `Flush` mode returns the private view from
//! [`payload_base`](Coherence::payload_base), so the store reads and writes payloads there. Then:
//!
//! | real hardware                         | emulation                                            |
//! |---------------------------------------|------------------------------------------------------|
//! | store into the cache                  | store into the private view                          |
//! | write back a line (`clwb`, NT stores) | copy the 64-byte line private → shared               |
//! | invalidate a line (`clflushopt`)      | copy the 64-byte line shared → private               |
//! | a cold cache at attach                | the private view starts as a snapshot of the region  |
//!
//! `memory_copy` writes the private view and then writes back exactly the lines it touched;
//! `flush` writes back the lines of its range; `invalidate` refreshes the lines of its range. A
//! reader on another emulated host therefore sees the new bytes only if the writer wrote them back
//! *and* the reader invalidated — and stale bytes otherwise. [`EmulatedHost::set_skip_flush`] and
//! [`EmulatedHost::set_skip_invalidate`] drop one half of the protocol on purpose, to show that
//! the tests would notice.
//!
//! Whole lines move, as on hardware: writing back a partial line also writes the bytes around it
//! that this host holds, which is why the allocator hands out 64-byte-aligned payloads (two hosts
//! writing different objects in one line would overwrite each other, emulated or not).
//!
//! Metadata (directory words, references, the allocator) is not emulated: it is accessed with
//! atomics in the shared region itself, which the coherence model assumes is coherent for them
//! (`docs/coherence.md`).
//!
//! In `Hardware` mode there is nothing to emulate — every host sees one memory — and
//! [`Coherence::emulated`] behaves like [`Coherence::new`]: payloads live in the region itself.
//!
//! # Aliasing
//!
//! Both views are touched through raw pointers with `ptr::copy` only; no reference to either is
//! ever formed. Emulated hosts living in one process as threads copy whole lines between views,
//! so a write back or refresh of a line that another thread is writing at the same moment is a
//! data race — the same one real hardware would turn into a torn line. The store never does that
//! for a payload (a payload is written only by its creator before the seal, read only after).

use std::fmt;
use std::io;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use super::cpu::CACHE_LINE;
use super::{Coherence, CoherenceMode};

/// One emulated host's private view (its "cache") of a shared range.
pub struct EmulatedHost {
    shared: *mut u8,
    private: *mut u8,
    len: usize,
    /// Owns the private view; never accessed except through `private`.
    _view: memmap2::MmapMut,
    skip_flush: AtomicBool,
    skip_invalidate: AtomicBool,
    lines_written_back: AtomicU64,
    lines_refreshed: AtomicU64,
}

// SAFETY: the raw pointers are the addresses of two mappings that live as long as `self` (the
// shared one by `new`'s contract); all access goes through `ptr::copy` of whole lines, which
// `EmulatedHost` performs identically from any thread.
unsafe impl Send for EmulatedHost {}
// SAFETY: as for `Send`; the flags and counters are atomics.
unsafe impl Sync for EmulatedHost {}

impl EmulatedHost {
    /// A host whose private view starts as a copy of `shared_base..shared_base+len`.
    ///
    /// # Safety
    /// `shared_base..shared_base+len` is mapped readable and writable, and stays mapped for as
    /// long as the returned host (and every [`Coherence`] holding it) lives.
    ///
    /// # Panics
    /// If `shared_base` is not 64-byte aligned (its lines would not be the hardware's), or if the
    /// private view cannot be mapped (out of memory, like a failed `Vec` allocation); see
    /// [`try_new`](Self::try_new).
    pub unsafe fn new(shared_base: *mut u8, len: usize) -> Arc<EmulatedHost> {
        // SAFETY: forwarded from this function's contract.
        match unsafe { EmulatedHost::try_new(shared_base, len) } {
            Ok(host) => host,
            Err(e) => panic!("cannot map a {len}-byte emulated host view: {e}"),
        }
    }

    /// As [`new`](Self::new), returning the mapping error instead of panicking.
    ///
    /// # Errors
    /// The `mmap` error of the private view.
    ///
    /// # Safety
    /// As [`new`](Self::new).
    ///
    /// # Panics
    /// If `shared_base` is not 64-byte aligned.
    pub unsafe fn try_new(shared_base: *mut u8, len: usize) -> io::Result<Arc<EmulatedHost>> {
        assert!(
            shared_base as usize % CACHE_LINE == 0,
            "emulated shared range must start on a cache line"
        );
        let mut view = memmap2::MmapMut::map_anon(len.max(1))?;
        let private = view.as_mut_ptr();
        // SAFETY: the caller guarantees the shared range is mapped readable; the fresh private
        // view is `len` bytes long and distinct from it.
        unsafe { ptr::copy_nonoverlapping(shared_base, private, len) };
        Ok(Arc::new(EmulatedHost {
            shared: shared_base,
            private,
            len,
            _view: view,
            skip_flush: AtomicBool::new(false),
            skip_invalidate: AtomicBool::new(false),
            lines_written_back: AtomicU64::new(0),
            lines_refreshed: AtomicU64::new(0),
        }))
    }

    /// Start of the mirrored shared range.
    pub fn shared_base(&self) -> *mut u8 {
        self.shared
    }

    /// Start of this host's private view.
    pub fn private_base(&self) -> *mut u8 {
        self.private
    }

    /// Length of both ranges.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the ranges are empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// When set, write backs do nothing: the host "forgets" to flush.
    pub fn set_skip_flush(&self, skip: bool) {
        self.skip_flush.store(skip, Ordering::Relaxed);
    }

    /// When set, invalidates do nothing: the host keeps reading its stale "cache".
    pub fn set_skip_invalidate(&self, skip: bool) {
        self.skip_invalidate.store(skip, Ordering::Relaxed);
    }

    /// Lines copied private → shared so far.
    pub fn lines_written_back(&self) -> u64 {
        self.lines_written_back.load(Ordering::Relaxed)
    }

    /// Lines copied shared → private so far.
    pub fn lines_refreshed(&self) -> u64 {
        self.lines_refreshed.load(Ordering::Relaxed)
    }

    /// Offset of `ptr..ptr+len` in the private view.
    ///
    /// # Panics
    /// If the range is not inside the private view: the caller wrote around the emulation.
    fn private_offset(&self, ptr: *const u8, len: usize) -> usize {
        let offset = (ptr as usize).wrapping_sub(self.private as usize);
        assert!(
            offset <= self.len && len <= self.len - offset,
            "{len} bytes at {ptr:p} are outside the emulated view {:p}+{:#x}",
            self.private,
            self.len
        );
        offset
    }

    /// The whole lines (as an offset range, clamped to the view) overlapping `offset..offset+len`.
    fn lines(&self, offset: usize, len: usize) -> (usize, usize) {
        let start = offset - offset % CACHE_LINE;
        let end = (offset + len).next_multiple_of(CACHE_LINE).min(self.len);
        (start, end)
    }

    /// Copies the lines overlapping `ptr..ptr+len` (in the private view) to the shared range.
    ///
    /// # Panics
    /// If the range is not inside the private view.
    pub fn write_back(&self, ptr: *const u8, len: usize) {
        let offset = self.private_offset(ptr, len);
        if len == 0 || self.skip_flush.load(Ordering::Relaxed) {
            return;
        }
        let (start, end) = self.lines(offset, len);
        // SAFETY: `start..end` lies within both `len`-byte mappings (clamped by `lines`), which
        // live as long as `self`; they are distinct mappings, so the copy does not overlap.
        unsafe {
            ptr::copy_nonoverlapping(self.private.add(start), self.shared.add(start), end - start)
        };
        self.lines_written_back
            .fetch_add(((end - start) / CACHE_LINE) as u64, Ordering::Relaxed);
    }

    /// Copies the lines overlapping `ptr..ptr+len` (in the private view) from the shared range.
    ///
    /// # Panics
    /// If the range is not inside the private view.
    pub fn refresh(&self, ptr: *const u8, len: usize) {
        let offset = self.private_offset(ptr, len);
        if len == 0 || self.skip_invalidate.load(Ordering::Relaxed) {
            return;
        }
        let (start, end) = self.lines(offset, len);
        // SAFETY: as in `write_back`, in the other direction.
        unsafe {
            ptr::copy_nonoverlapping(self.shared.add(start), self.private.add(start), end - start)
        };
        self.lines_refreshed
            .fetch_add(((end - start) / CACHE_LINE) as u64, Ordering::Relaxed);
    }

    /// Writes the private view and then writes back the touched lines.
    ///
    /// # Safety
    /// `src..src+len` is readable and does not overlap `dst..dst+len`.
    ///
    /// # Panics
    /// If `dst..dst+len` is not inside the private view.
    pub unsafe fn memory_copy(&self, dst: *mut u8, src: *const u8, len: usize) {
        self.private_offset(dst, len);
        // SAFETY: `dst..dst+len` is inside the private view (checked above), which is writable
        // and lives as long as `self`; the caller guarantees `src` and the disjointness.
        unsafe { ptr::copy_nonoverlapping(src, dst, len) };
        self.write_back(dst, len);
    }
}

impl fmt::Debug for EmulatedHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmulatedHost")
            .field("shared", &self.shared)
            .field("private", &self.private)
            .field("len", &self.len)
            .field("skip_flush", &self.skip_flush.load(Ordering::Relaxed))
            .field(
                "skip_invalidate",
                &self.skip_invalidate.load(Ordering::Relaxed),
            )
            .finish()
    }
}

impl Coherence {
    /// A coherence for one emulated host. In `Flush` mode payloads live in `host`'s private view
    /// and `memory_copy` / `flush` / `invalidate` move lines between it and the shared range; in
    /// `Hardware` mode this is [`Coherence::new`] (one memory, nothing to emulate).
    pub fn emulated(mode: CoherenceMode, host: Arc<EmulatedHost>) -> Coherence {
        let mut coherence = Coherence::new(mode);
        if mode == CoherenceMode::Flush {
            coherence.emulated = Some(host);
        }
        coherence
    }

    /// The emulated host, if this coherence emulates one.
    pub fn emulated_host(&self) -> Option<&Arc<EmulatedHost>> {
        self.emulated.as_ref()
    }
}

/// The private-view address of `region_base` for `host`.
///
/// # Panics
/// If `region_base` is not the host's shared base: the store attached a region the host does not
/// mirror.
pub(super) fn private_base(host: &EmulatedHost, region_base: *mut u8) -> *mut u8 {
    assert!(
        region_base == host.shared,
        "emulated host mirrors {:p}, not the region at {region_base:p}",
        host.shared
    );
    host.private
}
