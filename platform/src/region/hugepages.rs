//! The huge page pool: how many huge pages of a size can still be had, read from
//! `/sys/kernel/mm/hugepages/hugepages-<size>kB/`.
//!
//! Why check at all: a huge page region whose pages cannot be allocated faults with `SIGBUS` when
//! first touched, which kills the store (or worse, a Ray worker) with no message. The kernel does
//! reserve a shared hugetlbfs mapping's pages at `mmap` time and refuses with `ENOMEM` when it
//! cannot, and gismo turns that into [`RegionError::HugePagesUnavailable`] too; checking the pool
//! *before* creating or growing anything gives the same typed error without side effects (no
//! half-sized file left behind) and with the numbers the operator needs.
//!
//! Pages that can still be reserved: `free_hugepages - resv_hugepages` (free pages already promised
//! to existing mappings are not available), plus the overcommit headroom
//! `nr_overcommit_hugepages - surplus_hugepages` that the kernel may allocate on demand.

use std::io;
use std::path::{Path, PathBuf};

use super::RegionError;

/// The counters of one huge page size's pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HugePagePool {
    /// The huge page size in bytes.
    pub page_size: u64,
    /// `free_hugepages`: allocated to the pool and not in use (includes reserved ones).
    pub free: u64,
    /// `resv_hugepages`: free pages promised to existing mappings.
    pub reserved: u64,
    /// `nr_overcommit_hugepages`: how many surplus pages the kernel may add on demand.
    pub overcommit: u64,
    /// `surplus_hugepages`: surplus pages currently allocated.
    pub surplus: u64,
}

impl HugePagePool {
    /// The sysfs directory of the pool for `page_size` under `sysfs_root` (normally `/sys`).
    pub fn directory(sysfs_root: &Path, page_size: u64) -> PathBuf {
        sysfs_root
            .join("kernel/mm/hugepages")
            .join(format!("hugepages-{}kB", page_size / 1024))
    }

    /// Reads the pool of `page_size`-byte pages under `sysfs_root`.
    ///
    /// # Errors
    /// The `io::Error` of the first counter that is missing or unreadable; a counter that is not
    /// a number is `InvalidData`.
    pub fn read(sysfs_root: &Path, page_size: u64) -> io::Result<HugePagePool> {
        let dir = Self::directory(sysfs_root, page_size);
        let counter = |name: &str| -> io::Result<u64> {
            let text = std::fs::read_to_string(dir.join(name))?;
            text.trim().parse::<u64>().map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}/{name}: {e}", dir.display()),
                )
            })
        };
        Ok(HugePagePool {
            page_size,
            free: counter("free_hugepages")?,
            reserved: counter("resv_hugepages")?,
            // Older kernels and some containers lack these two; no overcommit then.
            overcommit: counter("nr_overcommit_hugepages").unwrap_or(0),
            surplus: counter("surplus_hugepages").unwrap_or(0),
        })
    }

    /// Pages a new mapping can still reserve.
    pub fn available(&self) -> u64 {
        self.free.saturating_sub(self.reserved) + self.overcommit.saturating_sub(self.surplus)
    }

    /// Whether `needed` more pages can be had.
    ///
    /// # Errors
    /// [`RegionError::HugePagesUnavailable`] when they cannot.
    pub fn check(&self, what: &str, needed: u64) -> Result<(), RegionError> {
        let free = self.available();
        if needed > free {
            return Err(RegionError::HugePagesUnavailable {
                what: what.to_string(),
                needed,
                free,
                page_size: self.page_size,
            });
        }
        Ok(())
    }
}

/// How many `page_size` pages cover `bytes`.
pub(super) fn pages_for(bytes: u64, page_size: u64) -> u64 {
    bytes.div_ceil(page_size.max(1))
}

/// Checks that `needed` pages of `page_size` can be had, reading the pool under `sysfs_root`.
/// When the pool's counters cannot be read (no sysfs in a container), the check is left to the
/// kernel's reservation at `mmap` time, whose `ENOMEM` is reported as the same error.
pub(super) fn ensure_available(
    sysfs_root: &Path,
    what: &str,
    page_size: u64,
    needed: u64,
) -> Result<(), RegionError> {
    if needed == 0 {
        return Ok(());
    }
    match HugePagePool::read(sysfs_root, page_size) {
        Ok(pool) => pool.check(what, needed),
        Err(_) => Ok(()),
    }
}

/// The error for a huge page mapping the kernel refused (`ENOMEM` from `mmap`, `EFAULT` or
/// `ENOMEM` from `MADV_POPULATE_WRITE`), with the pool's numbers if they can be read.
pub(super) fn unavailable_error(
    sysfs_root: &Path,
    what: &str,
    page_size: u64,
    needed: u64,
) -> RegionError {
    let free = HugePagePool::read(sysfs_root, page_size)
        .map(|p| p.available())
        .unwrap_or(0);
    RegionError::HugePagesUnavailable {
        what: what.to_string(),
        needed,
        free,
        page_size,
    }
}
