//! Anonymous memory files (`memfd_create(2)`) and the descriptors that carry a region from one
//! process to another.
//!
//! A memfd has no path: other processes reach it only through its descriptor, either inherited
//! across `fork`/`exec` (see [`inheritable_dup`] and `RegionSpec::Fd`) or sent over a Unix socket
//! with `SCM_RIGHTS` (see `Region::raw_fd`). That makes it the tightest-scoped backend: exactly
//! the processes that were handed the descriptor can map the region. `memfd-huge:` adds
//! `MFD_HUGETLB`, which puts the file on the kernel's internal hugetlbfs mount with the default
//! huge page size, with the same pool check as hugetlbfs files.
//!
//! Opening `fd:N` duplicates `N` (`F_DUPFD_CLOEXEC`) rather than taking it over, so the inherited
//! descriptor stays valid for whoever else in the process uses it, and the region owns a
//! descriptor of its own that it closes on drop. The duplicate shares the open file description,
//! so the parent's access mode applies (a read-only descriptor cannot be mapped writable).

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use super::file::{sized_file, SizedFile};
use super::{describe_file_type, devdax, BackendKind, Backing, RegionError, RegionOptions};

/// The lowest descriptor number a duplicate may get: keeps 0, 1, 2 free for stdio.
const FIRST_NON_STDIO_FD: libc::c_int = 3;

/// Creates a memfd of `size` bytes (rounded up to the huge page size when `huge_pages`).
pub(super) fn create(
    name: &str,
    huge_pages: bool,
    size: u64,
    opts: &RegionOptions,
    sysfs_root: &Path,
) -> Result<Backing, RegionError> {
    let spec_text = super::RegionSpec::Memfd {
        name: name.to_string(),
        huge_pages,
    }
    .to_string();
    let c_name = CString::new(name).map_err(|_| RegionError::InvalidSpec {
        spec: spec_text.clone(),
        reason: "memfd name contains a NUL byte".to_string(),
    })?;
    let mut flags = libc::MFD_CLOEXEC;
    if huge_pages {
        flags |= libc::MFD_HUGETLB;
    }
    // SAFETY: `c_name` is a NUL-terminated string that outlives the call; the flags are valid
    // `memfd_create` flags. The call has no other memory effects.
    let fd = unsafe { libc::memfd_create(c_name.as_ptr(), flags) };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::EINVAL) if name.len() > 249 => RegionError::InvalidSpec {
                spec: spec_text,
                reason: "memfd name longer than 249 bytes".to_string(),
            },
            _ => RegionError::io(format!("memfd_create for {spec_text}"), e),
        });
    }
    // SAFETY: `memfd_create` succeeded, so `fd` is a fresh descriptor that nothing else owns.
    let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let mut backing = sized_file(
        file,
        SizedFile {
            what: spec_text,
            path: None,
            kind: BackendKind::Memfd,
            created: true,
            reserve: !opts.sparse,
        },
        Some(size),
        opts.offset,
        sysfs_root,
    )?;
    backing.kind = BackendKind::Memfd;
    Ok(backing)
}

/// Duplicates descriptor `fd` (inherited or otherwise open in this process) with `CLOEXEC` set.
fn dup_cloexec(fd: i32) -> Result<File, RegionError> {
    // SAFETY: `fcntl(F_DUPFD_CLOEXEC)` takes plain integers and touches no memory; on a number
    // that is not an open descriptor it fails with EBADF, which is handled below. It does not
    // modify or close `fd`, so whoever owns `fd` is unaffected.
    let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, FIRST_NON_STDIO_FD) };
    if dup < 0 {
        let e = io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::EBADF) => RegionError::BadDescriptor { fd },
            _ => RegionError::io(format!("duplicating fd:{fd}"), e),
        });
    }
    // SAFETY: `fcntl` succeeded, so `dup` is a fresh descriptor that nothing else owns.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(dup) }))
}

/// Opens inherited descriptor `fd`: a memfd, a file (hugetlbfs or not) or a device DAX.
/// `size`, when given, resizes a file to it (a `create` on `fd:N`); a device is sized as by
/// `dax:` creation.
pub(super) fn open_fd(
    fd: i32,
    size: Option<u64>,
    opts: &RegionOptions,
    sysfs_root: &Path,
) -> Result<Backing, RegionError> {
    let file = dup_cloexec(fd)?;
    let what = format!("fd:{fd}");
    let meta = file
        .metadata()
        .map_err(|e| RegionError::io(format!("inspecting {what}"), e))?;
    let mut backing = if meta.file_type().is_char_device() {
        devdax::from_device(file, Path::new(&what), None, sysfs_root, opts.offset, size)?
    } else if meta.file_type().is_file() {
        let kind = if is_memfd(fd) {
            BackendKind::Memfd
        } else {
            BackendKind::File
        };
        sized_file(
            file,
            SizedFile {
                what,
                path: None,
                kind,
                created: false,
                reserve: !opts.sparse,
            },
            size,
            opts.offset,
            sysfs_root,
        )?
    } else {
        return Err(RegionError::WrongFileType {
            path: what.into(),
            expected: "a memfd, a regular file or a device DAX",
            found: describe_file_type(&meta),
        });
    };
    backing.path = None;
    Ok(backing)
}

/// Whether descriptor `fd` is a memfd (`/proc/self/fd/N` reads `/memfd:NAME (deleted)`).
fn is_memfd(fd: i32) -> bool {
    std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .map(|target| target.as_os_str().to_string_lossy().starts_with("/memfd:"))
        .unwrap_or(false)
}

/// A duplicate of `file`'s descriptor with `CLOEXEC` cleared, so a child started with
/// `fork`/`exec` (`std::process::Command`) inherits it under the same number.
pub(super) fn inheritable_dup(file: &File) -> Result<OwnedFd, RegionError> {
    let owned = file
        .try_clone()
        .map_err(|e| RegionError::io("duplicating the region descriptor", e))?;
    let owned = OwnedFd::from(owned);
    // SAFETY: `F_SETFD` on a descriptor we own (`owned`, open for the call) changes only its
    // close-on-exec flag; no memory is touched.
    let rc = unsafe { libc::fcntl(owned.as_raw_fd(), libc::F_SETFD, 0) };
    if rc < 0 {
        return Err(RegionError::io(
            "clearing close-on-exec on the region descriptor",
            io::Error::last_os_error(),
        ));
    }
    Ok(owned)
}
