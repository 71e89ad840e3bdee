//! The region: one contiguous range of shared memory that every process of the store (and, on
//! CXL, every host) maps, each at its own address.
//!
//! # Backends
//!
//! | [`RegionSpec`]             | what it is                          | page size           |
//! |----------------------------|-------------------------------------|---------------------|
//! | `dax:/dev/daxX.Y`          | device DAX: CXL or persistent memory | the device `align`  |
//! | `hugetlbfs:/mnt/huge/g`    | a file on a hugetlbfs mount          | the mount's page size |
//! | `file:/dev/shm/gismo`      | a regular file (tmpfs)               | 4 KiB               |
//! | `memfd:N`, `memfd-huge:N`  | an anonymous memory file             | 4 KiB / huge        |
//! | `fd:N`                     | any of the above, inherited          | as the object's     |
//!
//! Each backend is a file in this folder (`devdax.rs`, `file.rs` for regular and hugetlbfs files,
//! `memfd.rs` for memfds and inherited descriptors); each turns a spec into a `Backing` — an
//! open descriptor plus the offset and length to map — and [`Region`] maps it. Supporting pieces:
//! `spec.rs` (the spec syntax and bare-path detection), `hugetlbfs.rs` (`statfs` facts),
//! `hugepages.rs` (the huge page pool), `mapping.rs` (the `mmap` and prefaulting).
//!
//! # The protocol with the kernel
//!
//! * Every mapping is `MAP_SHARED` and read-write: the region is the communication medium, and
//!   device DAX refuses private mappings anyway.
//! * `create` sizes the object, `open` takes the size that is there (`fstat` for files, sysfs
//!   `size` and `align` for device DAX) and never changes it.
//! * `RegionOptions::offset` maps the object from an offset (2 MiB shows a QEMU devdax
//!   namespace's data from the host side); it must be a multiple of the backing page size.
//!
//! # Never `SIGBUS`
//!
//! A shared mapping faults with `SIGBUS` when a touched page cannot be provided. The causes and
//! what this module does about each:
//!
//! * Too few huge pages: the pool (`/sys/kernel/mm/hugepages/hugepages-<size>kB/`) is checked
//!   before a hugetlbfs file or huge memfd is created or grown, and the kernel's own reservation at
//!   `mmap` time is reported as the same [`RegionError::HugePagesUnavailable`] if it fails.
//! * Prefaulting with `MADV_POPULATE_WRITE` reports an unavailable page as an error instead of a
//!   signal.
//! * Truncation by someone else: nothing here can prevent it. `open` never resizes; `create` does
//!   when the file exists with another size, so only the region's owner may call `create`.
//!
//! # Trust model
//!
//! Whoever can map the region can read and write every object in it, and every piece of
//! metadata: the store's integrity checks defend against bugs and corruption, not against a
//! malicious mapper. Access control is therefore the backing object's: files are created with
//! mode `0600` by default ([`RegionOptions::mode`], applied exactly, regardless of the umask), a
//! device DAX node's owner and mode are the administrator's, and a memfd is reachable only by
//! processes that were handed its descriptor. Widen the mode only to users who may see all data.
//!
//! # Addresses
//!
//! The region hands out raw pointers only ([`Region::as_ptr`], [`Region::range_ptr`]): its bytes
//! change under the process's feet, so no `&[u8]` of them would be honest. Typed, validated views
//! are [`crate::shm`]'s job.

mod devdax;
mod error;
mod file;
mod hugepages;
mod hugetlbfs;
mod mapping;
mod memfd;
mod spec;
#[cfg(test)]
mod tests;

use std::fmt;
use std::fs::{File, Metadata};
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;

pub use devdax::{DaxGeometry, DEFAULT_DAX_ALIGN};
pub use error::RegionError;
pub use hugepages::HugePagePool;
pub use hugetlbfs::HUGETLBFS_MAGIC;
pub use spec::RegionSpec;

use crate::emulation::{EmulationConfig, HostView};
use std::sync::Arc;

use mapping::SharedMapping;

/// Where sysfs is mounted.
const SYSFS_ROOT: &str = "/sys";

/// Which kind of object backs a region.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// A device DAX character device.
    DevDax,
    /// A file on hugetlbfs.
    HugeTlbFs,
    /// A regular file.
    File,
    /// A memfd (with or without huge pages).
    Memfd,
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendKind::DevDax => "devdax",
            BackendKind::HugeTlbFs => "hugetlbfs",
            BackendKind::File => "file",
            BackendKind::Memfd => "memfd",
        })
    }
}

/// How to create or open a region.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegionOptions {
    /// Populate every page right after mapping (see [`Region::prefault`]). Copies into
    /// populated pages run about ten times faster than into fresh ones.
    pub prefault: bool,
    /// Permission bits of files `create` makes (default `0o600`: only the owner may map the
    /// region; see the trust model in the module docs).
    pub mode: u32,
    /// Map the object from this byte offset (a multiple of the backing page size); e.g. 2 MiB
    /// shows a QEMU devdax namespace's data from the host side.
    pub offset: u64,
    /// Leave a file or memfd region that `create` sizes sparse: no `posix_fallocate` of its
    /// blocks. Pages are then allocated at first touch, and a touch that the filesystem cannot
    /// back raises SIGBUS instead of a typed error at create time. For test and benchmark
    /// regions larger than memory (`gismo-bench scale`), never for a store in service.
    pub sparse: bool,
    /// Whether this process maps the region as an emulated non-coherent host
    /// ([`crate::emulation`]): by default as the environment says (`GISMO_EMULATED_HOST`).
    pub emulation: Emulation,
}

/// Which view of a region a process maps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Emulation {
    /// The emulated host named by the environment ([`EmulationConfig::from_env`]), or the
    /// region itself when none is named.
    #[default]
    FromEnvironment,
    /// The region itself, whatever the environment says.
    Off,
    /// This emulated host.
    Host(EmulationConfig),
}

impl Default for RegionOptions {
    fn default() -> Self {
        RegionOptions {
            prefault: false,
            mode: 0o600,
            offset: 0,
            sparse: false,
            emulation: Emulation::FromEnvironment,
        }
    }
}

/// An open descriptor and the part of it to map: what each backend produces.
struct Backing {
    file: File,
    kind: BackendKind,
    /// The object in messages: a path or a spec.
    what: String,
    path: Option<PathBuf>,
    offset: u64,
    len: u64,
    page_size: u64,
    /// The huge page size, when the pages come from the huge page pool.
    huge_pool: Option<u64>,
    /// The device name, for device DAX.
    dax_device: Option<String>,
    /// A file this `create` made, removed again if mapping fails.
    created: Option<PathBuf>,
}

/// A mapped region.
///
/// The mapping lives as long as the value; the backing descriptor stays open with it (see
/// [`Region::raw_fd`]). `Region` is `Send` and `Sync`: it owns no process-local state that
/// threads could disturb, and all access to the bytes is through raw pointers.
pub struct Region {
    map: SharedMapping,
    file: File,
    kind: BackendKind,
    spec: RegionSpec,
    path: Option<PathBuf>,
    what: String,
    offset: u64,
    page_size: usize,
    huge_pool: Option<u64>,
    /// The emulated host this process is, if any: `as_ptr` is then its view.
    emulated: Option<Arc<HostView>>,
}

impl fmt::Debug for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Region")
            .field("spec", &self.spec)
            .field("kind", &self.kind)
            .field("base", &self.as_ptr())
            .field("len", &self.len())
            .field("offset", &self.offset)
            .field("page_size", &self.page_size)
            .field("fd", &self.file.as_raw_fd())
            .field("emulated", &self.emulated)
            .finish()
    }
}

impl Region {
    /// Creates the region's backing object with `size` bytes (or reuses it) and maps it.
    ///
    /// * `File`: created with mode `opts.mode`, or the existing file is reused and resized to
    ///   `opts.offset + size`.
    /// * `HugeTlbFs`: as `File`, with `size` rounded up to the huge page size, after checking that
    ///   enough huge pages are free.
    /// * `Memfd`: a new memfd (`MFD_HUGETLB` with the same check when `huge_pages`).
    /// * `DevDax`: the device is opened and `size` rounded down to its alignment is mapped.
    /// * `Fd`: the inherited object is resized (a file) or sized (a device) as above.
    ///
    /// With `opts.prefault`, every page is populated before returning.
    ///
    /// # Errors
    /// [`RegionError::WrongSize`] for `size == 0` or more than a device has;
    /// [`RegionError::HugePagesUnavailable`]; [`RegionError::NotFound`] (missing directory or
    /// device), [`RegionError::PermissionDenied`], [`RegionError::WrongFileType`],
    /// [`RegionError::MisalignedOffset`], the DAX errors ([`RegionError::DaxSystemRamMode`],
    /// [`RegionError::DaxAlignment`], [`RegionError::DaxSizeUnavailable`]),
    /// [`RegionError::InvalidSpec`] for a bad memfd name, [`RegionError::BadDescriptor`],
    /// [`RegionError::Prefault`], and [`RegionError::Io`] for anything else.
    ///
    /// # Example
    /// ```
    /// use gismo_platform::region::{Region, RegionOptions, RegionSpec};
    /// let spec: RegionSpec = "memfd:example".parse()?;
    /// let region = Region::create(&spec, 1 << 20, &RegionOptions::default())?;
    /// assert_eq!(region.len(), 1 << 20);
    /// # Ok::<(), gismo_platform::region::RegionError>(())
    /// ```
    pub fn create(
        spec: &RegionSpec,
        size: u64,
        opts: &RegionOptions,
    ) -> Result<Region, RegionError> {
        Self::create_in(spec, size, opts, false, Path::new(SYSFS_ROOT))
    }

    /// As [`Region::create`], but a file-backed region must not exist yet (`O_EXCL`): a second
    /// store started on the same path fails instead of resizing the first one's region.
    /// Memfds are always new; devices and inherited descriptors behave as in `create`.
    ///
    /// # Errors
    /// [`RegionError::AlreadyExists`] if the file exists; otherwise as [`Region::create`].
    pub fn create_new(
        spec: &RegionSpec,
        size: u64,
        opts: &RegionOptions,
    ) -> Result<Region, RegionError> {
        Self::create_in(spec, size, opts, true, Path::new(SYSFS_ROOT))
    }

    /// Opens and maps an existing region: a file from `opts.offset` to its end, a device DAX from
    /// `opts.offset` to its end rounded down to its alignment, an inherited descriptor as the
    /// object it refers to. Never changes the object's size.
    ///
    /// # Errors
    /// [`RegionError::NotFound`] (with the path), [`RegionError::PermissionDenied`],
    /// [`RegionError::WrongFileType`], [`RegionError::WrongSize`] for an empty object or an offset
    /// past its end, [`RegionError::MisalignedOffset`], the DAX errors,
    /// [`RegionError::HugePagesUnavailable`] when the kernel cannot reserve the pages,
    /// [`RegionError::BadDescriptor`] for `fd:N` not open here, [`RegionError::InvalidSpec`] for a
    /// `memfd:` spec (a memfd has no name to open by: pass its descriptor as `fd:N`),
    /// [`RegionError::Prefault`], [`RegionError::Io`].
    pub fn open(spec: &RegionSpec, opts: &RegionOptions) -> Result<Region, RegionError> {
        Self::open_in(spec, opts, Path::new(SYSFS_ROOT))
    }

    /// `create` with sysfs at `sysfs_root` (tests point it at a fake tree).
    fn create_in(
        spec: &RegionSpec,
        size: u64,
        opts: &RegionOptions,
        exclusive: bool,
        sysfs_root: &Path,
    ) -> Result<Region, RegionError> {
        let backing = match spec {
            RegionSpec::DevDax(path) => devdax::open(path, sysfs_root, opts.offset, Some(size))?,
            RegionSpec::HugeTlbFs(path) => file::create(
                path,
                file::Filesystem::HugeTlbFs,
                size,
                opts,
                exclusive,
                sysfs_root,
            )?,
            RegionSpec::File(path) => file::create(
                path,
                file::Filesystem::Any,
                size,
                opts,
                exclusive,
                sysfs_root,
            )?,
            RegionSpec::Memfd { name, huge_pages } => {
                memfd::create(name, *huge_pages, size, opts, sysfs_root)?
            }
            RegionSpec::Fd(fd) => memfd::open_fd(*fd, Some(size), opts, sysfs_root)?,
        };
        let created = backing.created.clone();
        let region = Self::map(spec, backing, opts, sysfs_root);
        if region.is_err() {
            if let Some(path) = created {
                // Best effort: a failed create leaves no file behind. We made it with O_EXCL.
                let _ = std::fs::remove_file(path);
            }
        }
        region
    }

    /// `open` with sysfs at `sysfs_root`.
    fn open_in(
        spec: &RegionSpec,
        opts: &RegionOptions,
        sysfs_root: &Path,
    ) -> Result<Region, RegionError> {
        let backing = match spec {
            RegionSpec::DevDax(path) => devdax::open(path, sysfs_root, opts.offset, None)?,
            RegionSpec::HugeTlbFs(path) => {
                file::open(path, file::Filesystem::HugeTlbFs, opts, sysfs_root)?
            }
            RegionSpec::File(path) => file::open(path, file::Filesystem::Any, opts, sysfs_root)?,
            RegionSpec::Memfd { .. } => {
                return Err(RegionError::InvalidSpec {
                    spec: spec.to_string(),
                    reason: "a memfd has no name to open by; pass its descriptor as fd:N \
                             (see Region::inheritable_fd)"
                        .to_string(),
                })
            }
            RegionSpec::Fd(fd) => memfd::open_fd(*fd, None, opts, sysfs_root)?,
        };
        Self::map(spec, backing, opts, sysfs_root)
    }

    /// Maps a backing object and prefaults it if asked.
    fn map(
        spec: &RegionSpec,
        backing: Backing,
        opts: &RegionOptions,
        sysfs_root: &Path,
    ) -> Result<Region, RegionError> {
        let len = usize::try_from(backing.len)
            .ok()
            .filter(|&len| isize::try_from(len).is_ok())
            .ok_or_else(|| RegionError::WrongSize {
                what: backing.what.clone(),
                requested: backing.len,
                available: isize::MAX as u64,
                reason: "larger than the address space",
            })?;
        let map = SharedMapping::new(&backing.file, backing.offset, len)
            .map_err(|e| mapping::map_error(e, &backing, sysfs_root))?;
        let emulation = match &opts.emulation {
            Emulation::FromEnvironment => EmulationConfig::from_env()?,
            Emulation::Off => None,
            Emulation::Host(cfg) => Some(cfg.clone()),
        };
        let emulated = match emulation {
            Some(cfg) => Some(HostView::open(&cfg, &backing.file, backing.offset, len)?),
            None => None,
        };
        let region = Region {
            map,
            file: backing.file,
            kind: backing.kind,
            spec: spec.clone(),
            path: backing.path,
            what: backing.what,
            offset: backing.offset,
            // The page size is at most the mapping length, which fits in usize.
            page_size: usize::try_from(backing.page_size).unwrap_or(usize::MAX),
            huge_pool: backing.huge_pool,
            emulated,
        };
        if opts.prefault {
            region.prefault()?;
        }
        Ok(region)
    }

    /// Length of the mapping in bytes.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the mapping is empty (never, for a region that was created or opened: empty
    /// regions are refused).
    pub fn is_empty(&self) -> bool {
        self.map.len() == 0
    }

    /// The kind of object backing the region.
    pub fn kind(&self) -> BackendKind {
        self.kind
    }

    /// The spec the region was created or opened with.
    pub fn spec(&self) -> &RegionSpec {
        &self.spec
    }

    /// The path of the backing file or device (`None` for memfds and inherited descriptors).
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The byte offset of the backing object at which the mapping starts.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The backing page size: 4 KiB, the huge page size, or the device DAX alignment. The
    /// mapping's base address is aligned to it.
    pub fn page_size(&self) -> usize {
        self.page_size
    }

    /// Base address of the mapping. Obtaining it is safe; dereferencing it is up to the caller,
    /// who must remember that other processes write these bytes concurrently (use atomics, or
    /// the store protocol of `gismo-core`) and that the pointer dies with the `Region`.
    ///
    /// For an emulated host ([`Region::emulated_host`]) this is the host's view, not the device.
    pub fn as_ptr(&self) -> *mut u8 {
        match &self.emulated {
            Some(host) => host.view_base(),
            None => self.map.as_ptr(),
        }
    }

    /// The emulated non-coherent host this process maps the region as, if any
    /// ([`crate::emulation`]).
    pub fn emulated_host(&self) -> Option<&Arc<HostView>> {
        self.emulated.as_ref()
    }

    /// The backing descriptor, owned by the region (to send with `SCM_RIGHTS`, or to `fstat`).
    /// It has `CLOEXEC` set; for a child process use [`Region::inheritable_fd`].
    pub fn raw_fd(&self) -> Option<i32> {
        Some(self.file.as_raw_fd())
    }

    /// A new descriptor for the backing object with `CLOEXEC` cleared, for a child process
    /// spawned with `fork`/`exec` (e.g. `std::process::Command`), which then opens the region as
    /// `RegionSpec::Fd(n)` (`fd:N`). The caller owns it and should close it once the child is
    /// spawned; every process spawned meanwhile, by any thread, inherits it too.
    ///
    /// # Errors
    /// [`RegionError::Io`] if the descriptor cannot be duplicated (e.g. `EMFILE`).
    pub fn inheritable_fd(&self) -> Result<i32, RegionError> {
        self.inheritable_owned_fd().map(IntoRawFd::into_raw_fd)
    }

    /// As [`Region::inheritable_fd`], as an [`OwnedFd`] that closes itself when dropped (drop it
    /// after spawning the child).
    ///
    /// # Errors
    /// As [`Region::inheritable_fd`].
    pub fn inheritable_owned_fd(&self) -> Result<OwnedFd, RegionError> {
        memfd::inheritable_dup(&self.file)
    }

    /// Populates every page of the mapping now, writable, so later copies do not pay page
    /// faults. Uses `MADV_POPULATE_WRITE` (which reports unavailable pages as errors), falling
    /// back on kernels before 5.14 to writing one byte per page with an atomic exchange that
    /// stores back exactly the value it finds, so concurrent users of the region lose nothing.
    ///
    /// # Errors
    /// [`RegionError::HugePagesUnavailable`] if a huge page could not be provided;
    /// [`RegionError::Prefault`] for other failures (`EFAULT`: the object is shorter than the
    /// mapping, e.g. truncated by someone; `ENOMEM`; `EHWPOISON`).
    pub fn prefault(&self) -> Result<(), RegionError> {
        self.map.populate(self.page_size).map_err(|source| {
            let code = source.raw_os_error();
            match self.huge_pool {
                Some(page_size) if code == Some(libc::EFAULT) || code == Some(libc::ENOMEM) => {
                    hugepages::unavailable_error(
                        Path::new(SYSFS_ROOT),
                        &self.what,
                        page_size,
                        hugepages::pages_for(self.len() as u64, page_size),
                    )
                }
                _ => RegionError::Prefault {
                    what: self.what.clone(),
                    len: self.len(),
                    source,
                },
            }
        })
    }

    /// A pointer to `len` bytes at `offset`, after checking that `offset..offset + len` lies
    /// inside the mapping (without overflow) and that both `offset` and the resulting address
    /// are multiples of `align`. `len == 0` at `offset == len()` is allowed (one past the end).
    ///
    /// # Errors
    /// [`RegionError::OutOfBounds`] if `offset + len` overflows or exceeds [`Region::len`], if
    /// `align` is 0, or if `offset` or the address is not a multiple of `align`.
    ///
    /// # Example
    /// ```
    /// use gismo_platform::region::{Region, RegionError, RegionOptions, RegionSpec};
    /// let region = Region::create(&"memfd:doc".parse()?, 4096, &RegionOptions::default())?;
    /// assert!(region.range_ptr(64, 8, 8).is_ok());
    /// assert!(matches!(region.range_ptr(4090, 8, 1), Err(RegionError::OutOfBounds { .. })));
    /// assert!(matches!(region.range_ptr(usize::MAX, 2, 1), Err(RegionError::OutOfBounds { .. })));
    /// # Ok::<(), RegionError>(())
    /// ```
    pub fn range_ptr(
        &self,
        offset: usize,
        len: usize,
        align: usize,
    ) -> Result<NonNull<u8>, RegionError> {
        let out_of_bounds = || RegionError::OutOfBounds {
            offset,
            len,
            align,
            region_len: self.len(),
        };
        let end = offset.checked_add(len).ok_or_else(out_of_bounds)?;
        if align == 0 || end > self.len() || offset % align != 0 {
            return Err(out_of_bounds());
        }
        // In bounds (offset <= len of the mapping), so no unsafe `add` is needed to stay honest.
        let ptr = self.as_ptr().wrapping_add(offset);
        if (ptr as usize) % align != 0 {
            return Err(out_of_bounds());
        }
        NonNull::new(ptr).ok_or_else(out_of_bounds)
    }
}

/// A short description of a file's type for messages.
fn describe_file_type(meta: &Metadata) -> String {
    let t = meta.file_type();
    let name = if t.is_dir() {
        "a directory"
    } else if t.is_file() {
        "a regular file"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device (use a devdax namespace instead)"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else {
        "a special file"
    };
    name.to_string()
}

/// `value` rounded up to a multiple of `align` (> 0); `None` on overflow.
fn round_up(value: u64, align: u64) -> Option<u64> {
    value.checked_next_multiple_of(align)
}

/// `value` rounded down to a multiple of `align` (> 0).
fn round_down(value: u64, align: u64) -> u64 {
    value - value % align
}

/// The base page size.
fn system_page_size() -> usize {
    // SAFETY: `sysconf` reads a configuration value; it has no preconditions and touches no
    // memory of ours.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size)
        .ok()
        .filter(|&s| s > 0)
        .unwrap_or(4096)
}
