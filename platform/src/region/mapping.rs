//! The mapping itself: one `MAP_SHARED`, read-write `mmap` of the backing object, and populating
//! it ahead of use.
//!
//! Mapping goes through `memmap2::MmapOptions::map_raw`, which is safe to call because a raw map
//! hands out only raw pointers: it never claims the bytes are stable, which they are not (other
//! processes and hosts write them). The kernel picks the address; hugetlbfs and device DAX align
//! it to their page size themselves.
//!
//! Prefaulting matters here: copying into freshly mapped pages runs at ~2 GB/s on the development
//! machine against ~20 GB/s into pages already faulted, so a store that serves large objects
//! populates its region once at start. [`SharedMapping::populate`] asks the kernel with
//! `MADV_POPULATE_WRITE` (Linux 5.14+), which faults every page writable and, unlike touching the
//! pages, *reports* a page that cannot be provided (`EFAULT`, `ENOMEM`) instead of raising
//! `SIGBUS`. Older kernels answer `EINVAL`; then [`SharedMapping::touch_pages`] writes one byte per
//! page.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};

use memmap2::{Advice, MmapOptions, MmapRaw};

use super::{devdax, hugepages, BackendKind, Backing, RegionError};

/// A shared, read-write mapping of a region's backing object. Built only by [`SharedMapping::new`],
/// so it is always writable; unmapped on drop.
#[derive(Debug)]
pub(super) struct SharedMapping(MmapRaw);

impl SharedMapping {
    /// Maps `len` bytes of `file` from `offset`, shared and read-write.
    pub fn new(file: &File, offset: u64, len: usize) -> io::Result<SharedMapping> {
        MmapOptions::new()
            .offset(offset)
            .len(len)
            .map_raw(file)
            .map(SharedMapping)
    }

    /// The first byte of the mapping.
    pub fn as_ptr(&self) -> *mut u8 {
        self.0.as_mut_ptr()
    }

    /// The mapping length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Populates every page, writable. `stride` is the backing page size.
    ///
    /// # Errors
    /// The kernel's answer to `MADV_POPULATE_WRITE` other than `EINVAL` (`EFAULT`: a page could
    /// not be provided and a touch would have raised `SIGBUS`; `ENOMEM`; `EHWPOISON`).
    pub fn populate(&self, stride: usize) -> io::Result<()> {
        loop {
            match self.0.advise(Advice::PopulateWrite) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    self.touch_pages(stride);
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Faults in every page by writing one byte every `stride` bytes.
    ///
    /// Other processes may be using the region, so each byte is written back with exactly the
    /// value it holds at that instant: a compare-exchange of the current value with itself,
    /// retried if another writer changes the byte in between. A concurrent update is therefore
    /// never lost (a plain store of a value read earlier could undo one). The exchange is a write,
    /// so the page is faulted writable. Unlike `MADV_POPULATE_WRITE`, a page that cannot be
    /// provided raises `SIGBUS` here; callers check huge page availability before mapping.
    pub fn touch_pages(&self, stride: usize) {
        let stride = stride.max(1);
        let base = self.as_ptr();
        let mut offset = 0;
        while offset < self.len() {
            // SAFETY: `offset < len`, and `base..base + len` is this live mapping, which is
            // writable (only `new` builds a `SharedMapping`, always read-write), so the pointer is
            // valid for a one-byte read and write for the duration of `&self`. `AtomicU8` has
            // alignment 1. Concurrent accesses to these bytes come from other processes or
            // through raw pointers; performing this one atomically keeps it free of data races.
            let byte = unsafe { AtomicU8::from_ptr(base.wrapping_add(offset)) };
            let mut current = byte.load(Ordering::Relaxed);
            // Relaxed: this orders nothing; it only has to be one atomic read-modify-write that
            // stores back the value it replaces.
            while let Err(seen) =
                byte.compare_exchange_weak(current, current, Ordering::Relaxed, Ordering::Relaxed)
            {
                current = seen;
            }
            offset += stride;
        }
    }
}

/// Translates an `mmap` failure into the error that names its cause.
pub(super) fn map_error(source: io::Error, backing: &Backing, sysfs_root: &Path) -> RegionError {
    let code = source.raw_os_error();
    if backing.kind == BackendKind::DevDax {
        let path = PathBuf::from(&backing.what);
        let device = backing.dax_device.as_deref().unwrap_or("the device");
        if code == Some(libc::EINVAL) {
            return RegionError::DaxAlignment {
                path,
                size: backing.len,
                align: backing.page_size,
            };
        }
        return devdax::device_error(source, &path, device, "mapping");
    }
    if let (Some(page_size), Some(libc::ENOMEM)) = (backing.huge_pool, code) {
        return hugepages::unavailable_error(
            sysfs_root,
            &backing.what,
            page_size,
            hugepages::pages_for(backing.len, page_size),
        );
    }
    match code {
        Some(libc::EACCES) | Some(libc::EPERM) => RegionError::PermissionDenied {
            path: PathBuf::from(&backing.what),
            op: "mapping",
        },
        _ => RegionError::io(
            format!(
                "mmap {} bytes at offset {} of {}",
                backing.len, backing.offset, backing.what
            ),
            source,
        ),
    }
}
