//! What can go wrong when naming, creating, opening, mapping or addressing a region.
//!
//! Every variant names the object it is about (a path, a device, a spec) and the cause, so a
//! message printed by `gismo-server` or `gismoctl` tells an operator what to change without a
//! debugger. Operating-system errors that have an obvious meaning (`ENOENT`, `EACCES`, `EEXIST`,
//! `ENXIO` on a DAX device, `ENOMEM` on a huge-page mapping) become their own variants; the rest
//! keep the `io::Error` as [`RegionError::Io`]'s source together with what was being done.

use std::io;
use std::path::{Path, PathBuf};

/// Errors of the [`region`](super) layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegionError {
    /// A region spec string could not be parsed.
    #[error(
        "invalid region spec {spec:?}: {reason} (expected dax:PATH, hugetlbfs:PATH, file:PATH, \
         memfd:NAME, memfd-huge:NAME, fd:N or a bare path)"
    )]
    InvalidSpec {
        /// The spec as given.
        spec: String,
        /// Why it was rejected.
        reason: String,
    },

    /// The emulated host named by the environment (or the options) cannot be joined.
    #[error(transparent)]
    Emulation(#[from] crate::emulation::EmulationError),

    /// The path (or the device) does not exist.
    #[error("{}: no such file or device{hint}", path.display())]
    NotFound {
        /// What was looked up.
        path: PathBuf,
        /// Extra advice, empty or starting with a separator.
        hint: &'static str,
    },

    /// The caller may not open or map the object.
    #[error(
        "{}: permission denied while {op} (check the owner and mode; gismo creates regions \
         with mode 0600, so only the creating user can map them)",
        path.display()
    )]
    PermissionDenied {
        /// The object.
        path: PathBuf,
        /// What was attempted: "opening", "mapping", "creating", ...
        op: &'static str,
    },

    /// [`Region::create_new`](super::Region::create_new) found the file already there.
    #[error("{}: already exists", path.display())]
    AlreadyExists {
        /// The existing file.
        path: PathBuf,
    },

    /// The object is of the wrong kind for its spec (a directory, a file that is not on
    /// hugetlbfs, a regular file named as a DAX device, ...).
    #[error("{}: expected {expected}, found {found}", path.display())]
    WrongFileType {
        /// The object.
        path: PathBuf,
        /// What the spec needs.
        expected: &'static str,
        /// What is there.
        found: String,
    },

    /// The DAX device exists but is bound to the `kmem` driver (its memory was onlined as system
    /// RAM), so it cannot be opened or mapped as a device (`ENXIO`).
    #[error(
        "{}: device DAX {device} is in system-ram mode; reconfigure it with \
         `daxctl reconfigure-device --mode=devdax {device}`",
        path.display()
    )]
    DaxSystemRamMode {
        /// The device node.
        path: PathBuf,
        /// The device name, `daxX.Y`.
        device: String,
    },

    /// A DAX mapping's length or the device geometry does not fit the device alignment.
    #[error(
        "{}: size {size} is not a usable multiple of the device DAX alignment {align} \
         (see /sys/bus/dax/devices/<dev>/align)",
        path.display()
    )]
    DaxAlignment {
        /// The device node.
        path: PathBuf,
        /// The offending size.
        size: u64,
        /// The device alignment.
        align: u64,
    },

    /// The size of a DAX device could not be read from sysfs.
    #[error("cannot read the size of device DAX {device} from {}: {reason}", sysfs.display())]
    DaxSizeUnavailable {
        /// The device name, `daxX.Y`.
        device: String,
        /// The sysfs file (or directory) that was tried.
        sysfs: PathBuf,
        /// Why it failed.
        reason: String,
    },

    /// Too few free huge pages to back the region. Checked before mapping (and reported again if
    /// the kernel refuses the reservation), so the region never faults with `SIGBUS` at first
    /// touch.
    #[error(
        "{what}: needs {needed} huge pages of {page_size} bytes but only {free} are free; raise \
         /sys/kernel/mm/hugepages/hugepages-{}kB/nr_hugepages (or /proc/sys/vm/nr_hugepages)",
        page_size / 1024
    )]
    HugePagesUnavailable {
        /// The region (path or spec).
        what: String,
        /// Pages the region still needs.
        needed: u64,
        /// Pages that can still be reserved (free minus reserved, plus overcommit headroom).
        free: u64,
        /// The huge page size in bytes.
        page_size: u64,
    },

    /// The requested size cannot be provided (larger than a DAX device, an offset past the end,
    /// a zero-length region, larger than the address space).
    #[error("{what}: cannot map {requested} bytes: {available} bytes available{reason}")]
    WrongSize {
        /// The region (path or spec).
        what: String,
        /// Bytes asked for.
        requested: u64,
        /// Bytes there are.
        available: u64,
        /// Extra explanation, empty or starting with a separator.
        reason: &'static str,
    },

    /// `RegionOptions::offset` is not a multiple of the backing page size (4 KiB, the huge page
    /// size, or the DAX alignment).
    #[error("{what}: map offset {offset} is not a multiple of the backing page size {align}")]
    MisalignedOffset {
        /// The region (path or spec).
        what: String,
        /// The offset asked for.
        offset: u64,
        /// The required alignment.
        align: u64,
    },

    /// `fd:N` names a descriptor that is not open in this process.
    #[error(
        "fd:{fd} is not an open descriptor in this process (was it inherited with CLOEXEC \
         cleared, e.g. from Region::inheritable_fd?)"
    )]
    BadDescriptor {
        /// The descriptor number.
        fd: i32,
    },

    /// Populating the mapping failed (`MADV_POPULATE_WRITE` reported that a touch would raise
    /// `SIGBUS` or that memory ran out).
    #[error("{what}: prefaulting {len} bytes failed: {source}")]
    Prefault {
        /// The region (path or spec).
        what: String,
        /// The mapping length.
        len: usize,
        /// The kernel's answer.
        source: io::Error,
    },

    /// Any other operating-system error, with what was being done.
    #[error("{context}: {source}")]
    Io {
        /// The operation and its object, e.g. "mmap 4096 bytes of /dev/shm/gismo".
        context: String,
        /// The kernel's answer.
        source: io::Error,
    },

    /// A byte range is not inside the mapping, overflows, or is misaligned.
    #[error("range {offset}+{len} (align {align}) is outside the region of {region_len} bytes")]
    OutOfBounds {
        /// Start of the range.
        offset: usize,
        /// Length of the range.
        len: usize,
        /// Required alignment of the start.
        align: usize,
        /// Length of the mapping.
        region_len: usize,
    },
}

impl RegionError {
    /// Classifies an `io::Error` from an operation `op` on `path`: the errors with a meaning of
    /// their own get their variant, the rest become [`RegionError::Io`].
    pub(super) fn from_io(source: io::Error, path: &Path, op: &'static str) -> RegionError {
        if source.raw_os_error() == Some(libc::EISDIR) {
            return RegionError::WrongFileType {
                path: path.to_path_buf(),
                expected: "a file or a device",
                found: "a directory".to_string(),
            };
        }
        match source.kind() {
            io::ErrorKind::NotFound => RegionError::NotFound {
                path: path.to_path_buf(),
                hint: "",
            },
            io::ErrorKind::PermissionDenied => RegionError::PermissionDenied {
                path: path.to_path_buf(),
                op,
            },
            io::ErrorKind::AlreadyExists => RegionError::AlreadyExists {
                path: path.to_path_buf(),
            },
            _ => RegionError::Io {
                context: format!("{op} {}", path.display()),
                source,
            },
        }
    }

    /// An [`RegionError::Io`] with a context string.
    pub(super) fn io(context: impl Into<String>, source: io::Error) -> RegionError {
        RegionError::Io {
            context: context.into(),
            source,
        }
    }
}
