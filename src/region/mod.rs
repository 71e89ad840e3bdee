//! STUB — being replaced by the full region module (device DAX, hugetlbfs, file, memfd).
//! The API below is the contract the rest of the crate uses.
use std::path::PathBuf;
use std::ptr::NonNull;

/// Where a region lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegionSpec {
    DevDax(PathBuf),
    HugeTlbFs(PathBuf),
    File(PathBuf),
    Memfd { name: String, huge_pages: bool },
    Fd(i32),
}

impl std::str::FromStr for RegionSpec {
    type Err = RegionError;
    fn from_str(s: &str) -> Result<Self, RegionError> {
        if let Some(n) = s.strip_prefix("memfd:") {
            return Ok(RegionSpec::Memfd {
                name: n.into(),
                huge_pages: false,
            });
        }
        if let Some(p) = s.strip_prefix("file:") {
            return Ok(RegionSpec::File(p.into()));
        }
        Ok(RegionSpec::File(s.into()))
    }
}

impl std::fmt::Display for RegionSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RegionSpec::DevDax(p) => write!(f, "dax:{}", p.display()),
            RegionSpec::HugeTlbFs(p) => write!(f, "hugetlbfs:{}", p.display()),
            RegionSpec::File(p) => write!(f, "file:{}", p.display()),
            RegionSpec::Memfd {
                name,
                huge_pages: false,
            } => write!(f, "memfd:{name}"),
            RegionSpec::Memfd {
                name,
                huge_pages: true,
            } => write!(f, "memfd-huge:{name}"),
            RegionSpec::Fd(n) => write!(f, "fd:{n}"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendKind {
    DevDax,
    HugeTlbFs,
    File,
    Memfd,
}

#[derive(Clone, Debug)]
pub struct RegionOptions {
    pub prefault: bool,
    pub mode: u32,
    pub offset: u64,
}

impl Default for RegionOptions {
    fn default() -> Self {
        RegionOptions {
            prefault: false,
            mode: 0o600,
            offset: 0,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegionError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("range {offset}+{len} (align {align}) is outside the region of {region_len} bytes")]
    OutOfBounds {
        offset: usize,
        len: usize,
        align: usize,
        region_len: usize,
    },
}

pub struct Region {
    map: memmap2::MmapRaw,
    kind: BackendKind,
    spec: RegionSpec,
    file: std::fs::File,
}

impl Region {
    pub fn create(
        spec: &RegionSpec,
        size: u64,
        _opts: &RegionOptions,
    ) -> Result<Self, RegionError> {
        let (file, kind) = match spec {
            RegionSpec::File(p) => (
                std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(p)?,
                BackendKind::File,
            ),
            RegionSpec::Memfd { name, .. } => {
                let c = std::ffi::CString::new(name.as_str()).unwrap_or_default();
                // SAFETY: `c` is a valid NUL-terminated string; the returned fd is checked.
                let fd = unsafe { libc::memfd_create(c.as_ptr(), libc::MFD_CLOEXEC) };
                if fd < 0 {
                    return Err(std::io::Error::last_os_error().into());
                }
                // SAFETY: `fd` is a fresh descriptor we own.
                (
                    unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) },
                    BackendKind::Memfd,
                )
            }
            _ => return Err(std::io::Error::other("stub").into()),
        };
        file.set_len(size)?;
        let map = memmap2::MmapOptions::new()
            .len(size as usize)
            .map_raw(&file)?;
        Ok(Region {
            map,
            kind,
            spec: spec.clone(),
            file,
        })
    }

    pub fn open(spec: &RegionSpec, _opts: &RegionOptions) -> Result<Self, RegionError> {
        let file = match spec {
            RegionSpec::File(p) => std::fs::OpenOptions::new().read(true).write(true).open(p)?,
            RegionSpec::Fd(n) => std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(format!("/proc/self/fd/{n}"))?,
            _ => return Err(std::io::Error::other("stub").into()),
        };
        let map = memmap2::MmapRaw::map_raw(&file)?;
        Ok(Region {
            map,
            kind: BackendKind::File,
            spec: spec.clone(),
            file,
        })
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }
    pub fn is_empty(&self) -> bool {
        self.map.len() == 0
    }
    pub fn kind(&self) -> BackendKind {
        self.kind
    }
    pub fn spec(&self) -> &RegionSpec {
        &self.spec
    }
    pub fn as_ptr(&self) -> *mut u8 {
        self.map.as_mut_ptr()
    }
    pub fn raw_fd(&self) -> Option<i32> {
        Some(std::os::fd::AsRawFd::as_raw_fd(&self.file))
    }
    pub fn prefault(&self) -> Result<(), RegionError> {
        Ok(())
    }
    pub fn range_ptr(
        &self,
        offset: usize,
        len: usize,
        align: usize,
    ) -> Result<NonNull<u8>, RegionError> {
        let oob = RegionError::OutOfBounds {
            offset,
            len,
            align,
            region_len: self.len(),
        };
        let end = offset.checked_add(len).ok_or_else(|| oob_clone(&oob))?;
        if end > self.len() || (align > 1 && offset % align != 0) {
            return Err(oob);
        }
        // SAFETY: offset <= len of the mapping, so the pointer stays inside (or one past) the mapping.
        NonNull::new(unsafe { self.as_ptr().add(offset) }).ok_or(oob)
    }
}

fn oob_clone(e: &RegionError) -> RegionError {
    match e {
        RegionError::OutOfBounds {
            offset,
            len,
            align,
            region_len,
        } => RegionError::OutOfBounds {
            offset: *offset,
            len: *len,
            align: *align,
            region_len: *region_len,
        },
        RegionError::Io(e) => RegionError::Io(std::io::Error::new(e.kind(), e.to_string())),
    }
}
