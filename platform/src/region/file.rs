//! File-backed regions: a regular file (tmpfs for speed, any filesystem that supports shared
//! mappings otherwise) or a file on hugetlbfs. Memfds and inherited descriptors end up here too
//! once they are open, since to the kernel they are files of one of those two kinds.
//!
//! Sizing rules:
//!
//! * `create` makes the file with `O_EXCL` and then `fchmod`s it to `RegionOptions::mode` (so the
//!   umask cannot widen or narrow it), or reuses an existing file; the file is then resized to
//!   `offset + size` if it has another length. Resizing a file that other processes have mapped
//!   makes their accesses past the new end fault with `SIGBUS`: only the region's owner creates.
//! * On hugetlbfs the size is rounded up to the huge page size (`statfs` `f_bsize`) and the
//!   huge page pool is checked before the file is created or grown (see [`super::hugepages`]).
//! * `open` maps the file from `offset` to its current end and never changes its size.
//! * The offset must be a multiple of the backing page size.

use std::fs::{File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::hugepages;
use super::hugetlbfs::{self, FsFacts};
use super::{
    describe_file_type, round_up, system_page_size, BackendKind, Backing, RegionError,
    RegionOptions,
};

/// What the spec demands of the filesystem.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Filesystem {
    /// Whatever it is (a `file:` spec; hugetlbfs is recognised and handled).
    Any,
    /// Must be hugetlbfs (a `hugetlbfs:` spec).
    HugeTlbFs,
}

/// Creates (or reuses and resizes) the file at `path` and sizes the mapping.
pub(super) fn create(
    path: &Path,
    filesystem: Filesystem,
    size: u64,
    opts: &RegionOptions,
    exclusive: bool,
    sysfs_root: &Path,
) -> Result<Backing, RegionError> {
    let fs = hugetlbfs::statfs_path_or_parent(path)
        .map_err(|e| RegionError::from_io(e, path, "inspecting the filesystem of"))?;
    require_filesystem(path, filesystem, fs)?;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.file_type().is_char_device() {
            return Err(RegionError::WrongFileType {
                path: path.to_path_buf(),
                expected: "a regular file (use dax:PATH for a device DAX)",
                found: describe_file_type(&meta),
            });
        }
    }
    let (file, created) = open_or_create(path, opts.mode, exclusive)?;
    let sized = sized_file(
        file,
        SizedFile {
            what: path.display().to_string(),
            path: Some(path.to_path_buf()),
            kind: BackendKind::File,
            created,
            reserve: !opts.sparse,
        },
        Some(size),
        opts.offset,
        sysfs_root,
    );
    match sized {
        Ok(mut backing) => {
            backing.created = created.then(|| path.to_path_buf());
            Ok(backing)
        }
        Err(e) => {
            if created {
                // Best effort: do not leave an empty file behind for a create that failed. We
                // made it with O_EXCL, so it is ours to remove.
                let _ = std::fs::remove_file(path);
            }
            Err(e)
        }
    }
}

/// Opens the existing file at `path` and maps it from `offset` to its end.
pub(super) fn open(
    path: &Path,
    filesystem: Filesystem,
    opts: &RegionOptions,
    sysfs_root: &Path,
) -> Result<Backing, RegionError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| RegionError::from_io(e, path, "opening"))?;
    let fs = hugetlbfs::statfs_file(&file)
        .map_err(|e| RegionError::from_io(e, path, "inspecting the filesystem of"))?;
    require_filesystem(path, filesystem, fs)?;
    sized_file(
        file,
        SizedFile {
            what: path.display().to_string(),
            path: Some(path.to_path_buf()),
            kind: BackendKind::File,
            created: false,
            reserve: true,
        },
        None,
        opts.offset,
        sysfs_root,
    )
}

fn require_filesystem(path: &Path, filesystem: Filesystem, fs: FsFacts) -> Result<(), RegionError> {
    if filesystem == Filesystem::HugeTlbFs && !fs.is_hugetlbfs() {
        return Err(RegionError::WrongFileType {
            path: path.to_path_buf(),
            expected: "a path on a hugetlbfs mount",
            found: format!("a path on a filesystem with magic {:#x}", fs.magic),
        });
    }
    Ok(())
}

/// `O_EXCL` create with exactly `mode`, else (unless `exclusive`) open the existing file.
/// Returns the file and whether this call created it.
fn open_or_create(path: &Path, mode: u32, exclusive: bool) -> Result<(File, bool), RegionError> {
    let created = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path);
    match created {
        Ok(file) => {
            if let Err(e) = file.set_permissions(Permissions::from_mode(mode)) {
                let _ = std::fs::remove_file(path);
                return Err(RegionError::from_io(e, path, "setting the mode of"));
            }
            Ok((file, true))
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && !exclusive => {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .map_err(|e| RegionError::from_io(e, path, "opening"))?;
            Ok((file, false))
        }
        Err(e) => Err(RegionError::from_io(e, path, "creating")),
    }
}

/// How an open file is described and classified.
pub(super) struct SizedFile {
    /// For messages: the path, or the spec.
    pub what: String,
    /// The path, if the region has one.
    pub path: Option<PathBuf>,
    /// `File` or `Memfd`; `File` becomes `HugeTlbFs` on a hugetlbfs mount.
    pub kind: BackendKind,
    /// Whether the file was just made (then its huge pages are certainly not allocated yet).
    pub created: bool,
    /// Whether a size given to [`sized_file`] is reserved (`posix_fallocate`); false only for
    /// a [`RegionOptions::sparse`](super::RegionOptions::sparse) region.
    pub reserve: bool,
}

/// Checks the type and offset of an open file and sizes it: to `offset + size` rounded up to the
/// backing page size when `size` is given (checking the huge page pool first), else maps from
/// `offset` to its current end.
pub(super) fn sized_file(
    file: File,
    described: SizedFile,
    size: Option<u64>,
    offset: u64,
    sysfs_root: &Path,
) -> Result<Backing, RegionError> {
    let SizedFile {
        what,
        path,
        kind,
        created,
        reserve,
    } = described;
    let io_context = |op: &str| format!("{op} {what}");
    let meta = file
        .metadata()
        .map_err(|e| RegionError::io(io_context("inspecting"), e))?;
    if !meta.file_type().is_file() {
        return Err(RegionError::WrongFileType {
            path: PathBuf::from(&what),
            expected: "a regular file",
            found: describe_file_type(&meta),
        });
    }
    let fs = hugetlbfs::statfs_file(&file)
        .map_err(|e| RegionError::io(io_context("inspecting the filesystem of"), e))?;
    let huge = fs.is_hugetlbfs();
    let page_size = if huge {
        fs.block_size
    } else {
        system_page_size() as u64
    };
    if offset % page_size != 0 {
        return Err(RegionError::MisalignedOffset {
            what,
            offset,
            align: page_size,
        });
    }
    let len = match size {
        Some(size) => {
            let too_large = |reason| RegionError::WrongSize {
                what: what.clone(),
                requested: size,
                available: u64::MAX - offset,
                reason,
            };
            if size == 0 {
                return Err(RegionError::WrongSize {
                    what,
                    requested: 0,
                    available: 0,
                    reason: "a region cannot be empty",
                });
            }
            let len = if huge {
                round_up(size, page_size).ok_or_else(|| too_large("the size overflows"))?
            } else {
                size
            };
            let total = offset
                .checked_add(len)
                .ok_or_else(|| too_large("offset + size overflows"))?;
            if huge && (created || meta.len() < total) {
                // Pages the file already holds (hugetlbfs counts them in st_blocks) need no new
                // allocation; a file that existed may have been populated by an earlier owner.
                let allocated = meta.blocks().saturating_mul(512) / page_size;
                let needed = hugepages::pages_for(len, page_size).saturating_sub(allocated);
                hugepages::ensure_available(sysfs_root, &what, page_size, needed)?;
            }
            if meta.len() != total {
                file.set_len(total).map_err(|e| {
                    RegionError::io(io_context(&format!("resizing to {total} bytes:")), e)
                })?;
            }
            if !huge && reserve {
                reserve_space(&file, total, &what)?;
            }
            len
        }
        None => match meta.len().checked_sub(offset) {
            Some(len) if len > 0 => len,
            _ => {
                return Err(RegionError::WrongSize {
                    what,
                    requested: 0,
                    available: meta.len(),
                    reason: "the file is empty, or the map offset is at or past its end",
                })
            }
        },
    };
    let kind = match kind {
        BackendKind::File if huge => BackendKind::HugeTlbFs,
        other => other,
    };
    Ok(Backing {
        file,
        kind,
        what,
        path,
        offset,
        len,
        page_size,
        huge_pool: huge.then_some(page_size),
        dax_device: None,
        created: None,
    })
}

/// Reserves the file's blocks now (`posix_fallocate`), so that a region larger than the free space
/// of its filesystem (a full `/dev/shm`, say) is refused at create time with a typed error instead
/// of killing a process with SIGBUS at first touch. Filesystems that cannot preallocate are left
/// as they are.
fn reserve_space(file: &File, total: u64, what: &str) -> Result<(), RegionError> {
    let Ok(len) = libc::off_t::try_from(total) else {
        return Ok(());
    };
    // SAFETY: `file` is an open descriptor we own for the duration of the call; posix_fallocate
    // only allocates blocks of that file.
    let rc = unsafe { libc::posix_fallocate(std::os::fd::AsRawFd::as_raw_fd(file), 0, len) };
    match rc {
        0 | libc::EOPNOTSUPP | libc::EINVAL => Ok(()),
        libc::ENOSPC => Err(RegionError::WrongSize {
            what: what.to_string(),
            requested: total,
            available: free_space(file).unwrap_or(0),
            reason: "not enough free space in the filesystem to back the region",
        }),
        other => Err(RegionError::io(
            format!("{what}: reserving {total} bytes:"),
            std::io::Error::from_raw_os_error(other),
        )),
    }
}

/// Free bytes in the filesystem holding `file`.
#[allow(clippy::unnecessary_cast)] // statvfs field types differ between platforms
fn free_space(file: &File) -> Option<u64> {
    let mut st: libc::statvfs = unsafe_zeroed_statvfs();
    // SAFETY: `st` is a valid, writable statvfs; the descriptor is open.
    let rc = unsafe { libc::fstatvfs(std::os::fd::AsRawFd::as_raw_fd(file), &mut st) };
    (rc == 0).then(|| st.f_bavail as u64 * st.f_frsize as u64)
}

fn unsafe_zeroed_statvfs() -> libc::statvfs {
    // SAFETY: statvfs is a plain C struct of integers; all-zero is a valid value.
    unsafe { std::mem::zeroed() }
}
