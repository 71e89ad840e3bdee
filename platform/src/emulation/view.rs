//! One process's handle on an emulated host: the view it loads and stores through, and the
//! write-backs and evictions that move lines between the view and the device.

use std::fs::File;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::{fmt, ptr};

use super::config::{EmulationConfig, EmulationError};
use super::files::{self, HostMaps};
use super::lines::Lines;
use super::sweeper;
use crate::coherence::CACHE_LINE;

/// An emulated host as one process sees it (module docs). Made by
/// [`Region::open`](crate::region::Region::open) when the environment names a host, or by
/// [`HostView::open`].
pub struct HostView {
    config: EmulationConfig,
    lines: Lines,
    /// Owns the mappings `lines` points into.
    _maps: HostMaps,
    view: *mut u8,
    len: usize,
    pid: u32,
    fresh: bool,
    skip_write_back: AtomicBool,
    skip_invalidate: AtomicBool,
    written_back: AtomicU64,
    refreshed: AtomicU64,
    spontaneous: AtomicU64,
}

// SAFETY: `view` points into a mapping owned by `_maps`, which lives as long as `self`; the view
// is only handed out as a raw address, and every access the emulator makes is atomic.
unsafe impl Send for HostView {}
// SAFETY: as for `Send`; the flags and counters are atomics.
unsafe impl Sync for HostView {}

impl HostView {
    /// Joins `cfg.host` for the device `len` bytes of `device` from `offset` map, making the
    /// host's files if needed (a cold cache: a snapshot of the device), and starts this
    /// process's spontaneous-event sweeper unless `cfg.rate` is 0.
    ///
    /// # Errors
    /// [`EmulationError::BadRegion`] if `len` is 0 or not a multiple of 64;
    /// [`EmulationError::Io`] if a file cannot be made, sized or mapped.
    pub fn open(
        cfg: &EmulationConfig,
        device: &File,
        offset: u64,
        len: usize,
    ) -> Result<Arc<HostView>, EmulationError> {
        if len == 0 || len % CACHE_LINE != 0 {
            return Err(EmulationError::BadRegion {
                len,
                reason: "an emulated region is a whole number of 64-byte lines",
            });
        }
        let maps = files::open(cfg, device, offset, len, |m| {
            Self::lines_of(m, len).snapshot()
        })?;
        let lines = Self::lines_of(&maps, len);
        let view = Arc::new(HostView {
            config: cfg.clone(),
            lines,
            view: maps.view.as_mut_ptr(),
            len,
            pid: std::process::id(),
            fresh: maps.fresh,
            _maps: maps,
            skip_write_back: AtomicBool::new(cfg.skip_write_back),
            skip_invalidate: AtomicBool::new(cfg.skip_invalidate),
            written_back: AtomicU64::new(0),
            refreshed: AtomicU64::new(0),
            spontaneous: AtomicU64::new(0),
        });
        if cfg.rate > 0 {
            sweeper::start(Arc::downgrade(&view), cfg.rate, cfg.seed);
        }
        Ok(view)
    }

    /// The line engine over `maps`. `files::open` maps the three region files `len` bytes long
    /// and page aligned, and the lock file `LOCKS * 4` bytes; every caller keeps `maps` alive for
    /// as long as the returned `Lines` (both end up in one `HostView`, or the `Lines` is dropped
    /// inside `files::open`'s snapshot call).
    fn lines_of(maps: &HostMaps, len: usize) -> Lines {
        // SAFETY: the mappings' sizes, alignment and lifetime are as the doc comment says.
        unsafe {
            Lines::new(
                maps.device.as_mut_ptr(),
                maps.view.as_mut_ptr(),
                maps.clean.as_mut_ptr(),
                len,
                maps.locks.as_mut_ptr(),
            )
        }
    }

    /// The host's name.
    pub fn host(&self) -> &str {
        &self.config.host
    }

    /// The configuration this host was joined with.
    pub fn config(&self) -> &EmulationConfig {
        &self.config
    }

    /// Where this process loads and stores the region: the host's view.
    pub fn view_base(&self) -> *mut u8 {
        self.view
    }

    /// The region's length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the region is empty (never: `open` refuses it).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether this process made the host's view (the host's first attach, a cold cache).
    pub fn made_fresh(&self) -> bool {
        self.fresh
    }

    /// The region offset of `ptr..ptr+len`, which must lie in the view.
    ///
    /// # Panics
    /// If it does not: the caller wrote around the emulation.
    pub fn offset_of(&self, ptr: *const u8, len: usize) -> usize {
        let offset = (ptr as usize).wrapping_sub(self.view as usize);
        assert!(
            offset <= self.len && len <= self.len - offset,
            "{len} bytes at {ptr:p} are outside emulated host {:?}'s view {:p}+{:#x}",
            self.config.host,
            self.view,
            self.len
        );
        offset
    }

    /// The lines overlapping `offset..offset+len`, clamped to the region.
    fn line_range(&self, offset: usize, len: usize) -> std::ops::Range<usize> {
        if len == 0 {
            return 0..0;
        }
        let end = offset.saturating_add(len).min(self.len);
        offset / CACHE_LINE..end.div_ceil(CACHE_LINE)
    }

    /// Writes back the lines overlapping `offset..offset+len` (`clwb` + `sfence`): afterwards the
    /// device holds this host's version of every one of them, whole.
    pub fn write_back(&self, offset: usize, len: usize) {
        if self.skip_write_back.load(Ordering::Relaxed) {
            return;
        }
        for line in self.line_range(offset, len) {
            let _g = self.lines.lock(line, self.pid);
            self.lines.write_back(line);
        }
        let n = self.line_range(offset, len).len() as u64;
        self.written_back.fetch_add(n, Ordering::Relaxed);
    }

    /// Writes back only the dirty lines of `offset..offset+len` (`wbinvd`-like, for formatting
    /// and tests).
    pub fn write_back_dirty(&self, offset: usize, len: usize) {
        if self.skip_write_back.load(Ordering::Relaxed) {
            return;
        }
        for line in self.line_range(offset, len) {
            if self.lines.is_dirty(line) {
                let _g = self.lines.lock(line, self.pid);
                self.lines.write_back(line);
                self.written_back.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Evicts the lines overlapping `offset..offset+len` (`mfence` + `clflushopt` + `mfence`): a
    /// dirty line is written back first, then each is refetched, so the next loads read the
    /// device.
    pub fn evict(&self, offset: usize, len: usize) {
        if self.skip_invalidate.load(Ordering::Relaxed) {
            return;
        }
        for line in self.line_range(offset, len) {
            let _g = self.lines.lock(line, self.pid);
            if self.lines.is_dirty(line) {
                self.lines.write_back(line);
                self.written_back.fetch_add(1, Ordering::Relaxed);
            }
            self.lines.refresh(line);
        }
        let n = self.line_range(offset, len).len() as u64;
        self.refreshed.fetch_add(n, Ordering::Relaxed);
    }

    /// Copies `len` bytes from `src` into the view at `dst`, then writes back the lines touched
    /// (what `memory_copy` does on a non-coherent host).
    ///
    /// # Safety
    /// `src..src+len` is readable and does not overlap `dst..dst+len`; no other thread or process
    /// accesses `dst..dst+len` meanwhile (a payload being created).
    ///
    /// # Panics
    /// If `dst..dst+len` is outside the view.
    pub unsafe fn memory_copy(&self, dst: *mut u8, src: *const u8, len: usize) {
        let offset = self.offset_of(dst, len);
        // SAFETY: `dst..dst+len` is inside the view (checked above), which is writable and lives
        // as long as `self`; the caller guarantees `src`, the disjointness and exclusive use.
        unsafe { ptr::copy_nonoverlapping(src, dst, len) };
        self.write_back(offset, len);
    }

    /// Dirty lines in `offset..offset+len` (for tests and statistics).
    pub fn dirty_lines(&self, offset: usize, len: usize) -> usize {
        self.line_range(offset, len)
            .filter(|&l| self.lines.is_dirty(l))
            .count()
    }

    /// Lines in `offset..offset+len` whose device copy changed since this host last fetched or
    /// wrote them back (for tests and statistics).
    pub fn stale_lines(&self, offset: usize, len: usize) -> usize {
        self.line_range(offset, len)
            .filter(|&l| self.lines.is_stale(l))
            .count()
    }

    /// Negative control: explicit write-backs do nothing while set.
    pub fn set_skip_write_back(&self, skip: bool) {
        self.skip_write_back.store(skip, Ordering::Relaxed);
    }

    /// Negative control: explicit evictions do nothing while set.
    pub fn set_skip_invalidate(&self, skip: bool) {
        self.skip_invalidate.store(skip, Ordering::Relaxed);
    }

    /// Lines written back by this process's explicit calls.
    pub fn lines_written_back(&self) -> u64 {
        self.written_back.load(Ordering::Relaxed)
    }

    /// Lines evicted by this process's explicit calls.
    pub fn lines_refreshed(&self) -> u64 {
        self.refreshed.load(Ordering::Relaxed)
    }

    /// Spontaneous write-backs and refreshes this process's sweeper made.
    pub fn spontaneous_events(&self) -> u64 {
        self.spontaneous.load(Ordering::Relaxed)
    }

    /// One spontaneous event on `line`: a dirty line is written back when `coin` says so, a
    /// stale clean line refetched when `coin` says so. Returns whether something moved.
    pub(super) fn spontaneous(&self, line: usize, mut coin: impl FnMut() -> bool) -> bool {
        if line >= self.lines.count() {
            return false;
        }
        // Unlocked pre-checks: most lines are neither dirty nor stale.
        let dirty = self.lines.is_dirty(line);
        if !dirty && !self.lines.is_stale(line) {
            return false;
        }
        if !coin() {
            return false;
        }
        let _g = self.lines.lock(line, self.pid);
        if self.lines.is_dirty(line) {
            self.lines.write_back(line);
        } else {
            self.lines.refresh(line);
        }
        self.spontaneous.fetch_add(1, Ordering::Relaxed);
        true
    }
}

impl fmt::Debug for HostView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostView")
            .field("host", &self.config.host)
            .field("dir", &self.config.dir)
            .field("view", &self.view)
            .field("len", &self.len)
            .field("rate", &self.config.rate)
            .field(
                "skip_write_back",
                &self.skip_write_back.load(Ordering::Relaxed),
            )
            .field(
                "skip_invalidate",
                &self.skip_invalidate.load(Ordering::Relaxed),
            )
            .finish()
    }
}
