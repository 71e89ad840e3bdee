//! Filesystem facts from `statfs(2)`: is a path (or an open file) on hugetlbfs, and with which
//! huge page size.
//!
//! A hugetlbfs mount reports `f_type == HUGETLBFS_MAGIC` and its huge page size as `f_bsize`
//! (`mount -t hugetlbfs -o pagesize=1G ...` gives 1 GiB). Files there, and memfds created with
//! `MFD_HUGETLB` (which live on the kernel's internal hugetlbfs mount), can only be sized in whole
//! huge pages, and their pages come from the pool in
//! `/sys/kernel/mm/hugepages/hugepages-<size>kB/` (see [`super::hugepages`]).

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// `f_type` of a hugetlbfs mount (`linux/magic.h`).
pub const HUGETLBFS_MAGIC: u32 = 0x9584_58f6;

/// What `statfs` says about the filesystem holding a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct FsFacts {
    /// The filesystem magic, truncated to 32 bits (all magics fit).
    pub magic: u32,
    /// The filesystem block size: the huge page size on hugetlbfs.
    pub block_size: u64,
}

impl FsFacts {
    /// Whether the filesystem is hugetlbfs.
    pub fn is_hugetlbfs(&self) -> bool {
        self.magic == HUGETLBFS_MAGIC
    }

    fn from_statfs(st: &libc::statfs) -> FsFacts {
        // `f_type` is a signed word on some targets; the magics are 32-bit patterns.
        #[allow(clippy::unnecessary_cast)]
        let magic = st.f_type as u64 as u32;
        #[allow(clippy::unnecessary_cast)]
        let block_size = st.f_bsize as u64;
        FsFacts { magic, block_size }
    }
}

/// `statfs(2)` of `path`.
pub(super) fn statfs_path(path: &Path) -> io::Result<FsFacts> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
    let mut st = MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: `c_path` is a NUL-terminated string that outlives the call; `st` is writable
    // storage of the right type, which the kernel fills completely on success.
    let rc = unsafe { libc::statfs(c_path.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `statfs` returned 0, so it initialised `st`.
    let st = unsafe { st.assume_init() };
    Ok(FsFacts::from_statfs(&st))
}

/// `fstatfs(2)` of an open file.
pub(super) fn statfs_file(file: &File) -> io::Result<FsFacts> {
    let mut st = MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: the descriptor is owned by `file`, open for the duration of the call; `st` is
    // writable storage of the right type, which the kernel fills completely on success.
    let rc = unsafe { libc::fstatfs(file.as_raw_fd(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fstatfs` returned 0, so it initialised `st`.
    let st = unsafe { st.assume_init() };
    Ok(FsFacts::from_statfs(&st))
}

/// The filesystem facts of `path`, or of its parent directory when `path` does not exist yet
/// (the file a `create` is about to make will live there).
pub(super) fn statfs_path_or_parent(path: &Path) -> io::Result<FsFacts> {
    match statfs_path(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let parent = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            statfs_path(parent)
        }
        other => other,
    }
}

/// The filesystem magic of `path` or its parent (see [`statfs_path_or_parent`]).
pub(super) fn fs_magic_of_path_or_parent(path: &Path) -> io::Result<u32> {
    statfs_path_or_parent(path).map(|f| f.magic)
}
