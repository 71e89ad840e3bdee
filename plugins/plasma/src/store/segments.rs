//! The store's memory: one shared segment (a GISMO store formatted in a private region) and
//! file-backed fallback segments, one per object, for creates that do not fit.

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::format::FormatOptions;
use crate::interface::{Status, StatusCode};
use crate::region::{Region, RegionOptions, RegionSpec};
use gismo_core::store::Store;

use super::settings::PlasmaSettings;

/// The unique id of the main segment's descriptor (fallback segments count up from 2).
pub const MAIN_SEGMENT_ID: i64 = 1;

/// Makes the main segment: a region of `settings.memory` bytes in `plasma_directory` (a file
/// created and unlinked at once, as Ray's `plasma_allocator` does, so nothing is left behind
/// after a crash), hugetlbfs when `huge_pages`, or a memfd; formatted as a GISMO store whose
/// allocator (alone: [`Store::alloc_block`]) the plasma store uses.
///
/// # Errors
/// `IOError` naming the directory (missing, full, no huge pages, …).
pub fn main_segment(settings: &PlasmaSettings) -> Result<Arc<Store>, Status> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let io = |e: String| Status::new(StatusCode::IOError, format!("plasma segment: {e}"));
    let (spec, path) = if settings.plasma_directory == "memfd" {
        let spec = RegionSpec::Memfd {
            name: "plasma".into(),
            huge_pages: settings.huge_pages,
        };
        (spec, None)
    } else {
        let dir = Path::new(&settings.plasma_directory);
        let name = format!(
            "plasma-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let path = dir.join(name);
        let spec = if settings.huge_pages {
            RegionSpec::HugeTlbFs(path.clone())
        } else {
            RegionSpec::detect(&path)
        };
        (spec, Some(path))
    };
    let opts = format_options();
    let size = region_size(settings.memory, &opts).ok_or_else(|| {
        io(format!(
            "object_store_memory {} is too small",
            settings.memory
        ))
    })?;
    let region = Region::create_new(&spec, size, &RegionOptions::default());
    if let Some(path) = &path {
        // Unlinked at once: the mapping and the descriptor keep it alive, and clients get the
        // descriptor over the socket.
        let _ = std::fs::remove_file(path);
    }
    let region = region.map_err(|e| io(format!("{spec}: {e}")))?;
    Store::format(region, &opts).map_err(|e| io(e.to_string()))
}

/// The GISMO geometry for a plasma segment: the plasma store uses its heap only (raw blocks,
/// recorded in the plasma store's own object table), so every other table has the smallest size
/// the format allows — no client registers and no object enters the directory.
fn format_options() -> FormatOptions {
    FormatOptions {
        dir_capacity: Some(64),
        max_clients: 1,
        refs_per_client: 16,
        max_hosts: 1,
        node_capacity: 16,
        ring_capacity: 16,
        ..FormatOptions::default()
    }
}

/// The region size whose heap holds at least `memory` bytes (Ray's `object_store_memory` is
/// the bytes available to objects; the metadata comes on top).
fn region_size(memory: u64, opts: &FormatOptions) -> Option<u64> {
    let mut size = memory.max(1 << 20);
    for _ in 0..4 {
        let heap = crate::format::Layout::compute(size, opts)
            .ok()
            .map_or(0, |l| l.section(crate::format::SectionKind::Heap).len);
        if heap >= memory {
            return Some(size);
        }
        size += (memory - heap) + (64 << 10);
    }
    None
}

/// A file-backed fallback segment holding one object.
#[derive(Debug)]
pub struct FallbackSegment {
    pub file: OwnedFd,
    pub unique_id: i64,
    /// Bytes mapped by clients (the object rounded up to a page).
    pub size: u64,
}

impl FallbackSegment {
    /// Creates an unlinked file of `bytes` (rounded up to a page, at least one) in `dir`, its
    /// space reserved with `posix_fallocate` so a full disk is an error now, not a SIGBUS in a
    /// client later.
    ///
    /// # Errors
    /// `OutOfDisk` when the filesystem has no room; `IOError` for anything else.
    pub fn create(dir: &Path, bytes: u64, unique_id: i64) -> Result<FallbackSegment, Status> {
        let size = bytes.max(1).div_ceil(4096) * 4096;
        let file = tmpfile_in(dir).map_err(|e| {
            Status::new(
                StatusCode::IOError,
                format!("fallback file in {}: {e}", dir.display()),
            )
        })?;
        match nix::fcntl::posix_fallocate(&file, 0, size as i64) {
            Ok(()) => {}
            Err(nix::errno::Errno::ENOSPC) => {
                return Err(Status::new(
                    StatusCode::OutOfDisk,
                    format!(
                        "fallback allocation of {size} bytes: {} is full",
                        dir.display()
                    ),
                ))
            }
            Err(e) => {
                return Err(Status::new(
                    StatusCode::IOError,
                    format!("fallocate in {}: {e}", dir.display()),
                ))
            }
        }
        Ok(FallbackSegment {
            file: file.into(),
            unique_id,
            size,
        })
    }

    pub fn raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

/// An anonymous file in `dir` (`O_TMPFILE`, or create-and-unlink where that is unsupported).
fn tmpfile_in(dir: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE)
        .open(dir)
    {
        Ok(f) => Ok(f),
        Err(e)
            if e.raw_os_error() == Some(libc::EOPNOTSUPP)
                || e.raw_os_error() == Some(libc::EISDIR) =>
        {
            static SEQ: AtomicU64 = AtomicU64::new(0);
            let path: PathBuf = dir.join(format!(
                "plasma-fallback-{}-{}",
                std::process::id(),
                SEQ.fetch_add(1, Ordering::Relaxed)
            ));
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)?;
            std::fs::remove_file(&path)?;
            Ok(f)
        }
        Err(e) => Err(e),
    }
}
