//! Device DAX: a character device (`/dev/daxX.Y`) whose `mmap` maps memory directly: CXL
//! memory, a persistent-memory namespace, or a QEMU `memory-backend-file` exposed as an NVDIMM.
//!
//! A device has no file size; its geometry lives in sysfs:
//!
//! * `/sys/bus/dax/devices/daxX.Y/size` — bytes of memory behind the device (required);
//! * `/sys/bus/dax/devices/daxX.Y/align` — the mapping granularity (4 KiB, 2 MiB or 1 GiB). Kernels
//!   before 5.10 lack it; then the region's `dax_region/align` is tried, then 2 MiB is assumed.
//!
//! The kernel refuses (`EINVAL`) mappings whose start, length or file offset are not multiples of
//! `align`, and refuses private mappings, so every mapping here is `MAP_SHARED` with length
//! rounded *down* to `align` and a checked offset.
//!
//! A device reconfigured as system RAM (`daxctl reconfigure-device --mode=system-ram`) is bound to
//! the `kmem` driver: its node disappears or answers `ENXIO`; that becomes
//! [`RegionError::DaxSystemRamMode`] with the command that undoes it.
//!
//! Everything that reads sysfs takes the sysfs root as a parameter so the parsing can be tested
//! against a fake tree; production passes [`super::SYSFS_ROOT`].

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::{describe_file_type, round_down, BackendKind, Backing, RegionError};

/// The alignment assumed when sysfs does not say (kernels before 5.10): the PMD size.
pub const DEFAULT_DAX_ALIGN: u64 = 2 << 20;

const NOT_FOUND_HINT: &str = " (no such device DAX: list devices with `daxctl list` or \
    `ls /dev/dax*`; create one with `ndctl create-namespace --mode=devdax` or \
    `daxctl create-device`)";

/// Size and alignment of a device DAX, from sysfs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DaxGeometry {
    /// The device name, `daxX.Y`.
    pub device: String,
    /// Bytes of memory behind the device.
    pub size: u64,
    /// Mapping granularity in bytes (a power of two).
    pub align: u64,
}

impl DaxGeometry {
    /// Reads the geometry of `device` (`daxX.Y`) under `sysfs_root`. `dev_number` (major, minor)
    /// lets a device be found through `/sys/dev/char/MAJ:MIN` when its node has another name.
    ///
    /// # Errors
    /// [`RegionError::DaxSizeUnavailable`] when no sysfs directory for the device exists, or its
    /// `size` is missing, unreadable, not a number or zero, or `align` is not a power of two.
    pub fn read(
        sysfs_root: &Path,
        device: &str,
        dev_number: Option<(u32, u32)>,
    ) -> Result<DaxGeometry, RegionError> {
        let candidates = sysfs_directories(sysfs_root, device, dev_number);
        let Some(dir) = candidates.iter().find(|d| d.is_dir()) else {
            return Err(RegionError::DaxSizeUnavailable {
                device: device.to_string(),
                sysfs: candidates
                    .into_iter()
                    .next()
                    .unwrap_or_else(|| sysfs_root.to_path_buf()),
                reason: "no sysfs directory for the device (is the device_dax driver bound?)"
                    .to_string(),
            });
        };
        let unavailable = |file: PathBuf, reason: String| RegionError::DaxSizeUnavailable {
            device: device.to_string(),
            sysfs: file,
            reason,
        };
        let size_file = dir.join("size");
        let size = read_number(&size_file).map_err(|e| unavailable(size_file.clone(), e))?;
        if size == 0 {
            return Err(unavailable(size_file, "the device has size 0".to_string()));
        }
        let align = match [dir.join("align"), dir.join("../dax_region/align")]
            .into_iter()
            .find(|f| f.is_file())
        {
            Some(file) => read_number(&file).map_err(|e| unavailable(file.clone(), e))?,
            None => DEFAULT_DAX_ALIGN,
        };
        if !align.is_power_of_two() {
            return Err(unavailable(
                dir.join("align"),
                format!("alignment {align} is not a power of two"),
            ));
        }
        Ok(DaxGeometry {
            device: device.to_string(),
            size,
            align,
        })
    }

    /// The length to map at `offset`: `requested` (or everything from `offset` when `None`)
    /// rounded down to the alignment.
    ///
    /// # Errors
    /// [`RegionError::MisalignedOffset`] if `offset` is not a multiple of `align`;
    /// [`RegionError::WrongSize`] if `offset` is past the end or `requested` exceeds what the
    /// device has from `offset` on; [`RegionError::DaxAlignment`] if the length rounds down to 0.
    pub fn map_len(
        &self,
        path: &Path,
        offset: u64,
        requested: Option<u64>,
    ) -> Result<u64, RegionError> {
        let what = || path.display().to_string();
        if offset % self.align != 0 {
            return Err(RegionError::MisalignedOffset {
                what: what(),
                offset,
                align: self.align,
            });
        }
        let available = match self.size.checked_sub(offset) {
            Some(n) if n > 0 => n,
            _ => {
                return Err(RegionError::WrongSize {
                    what: what(),
                    requested: requested.unwrap_or(0),
                    available: self.size,
                    reason: "the map offset is at or past the end of the device",
                })
            }
        };
        let wanted = match requested {
            Some(r) if r > available => {
                return Err(RegionError::WrongSize {
                    what: what(),
                    requested: r,
                    available,
                    reason: "the requested size exceeds the device (after the map offset)",
                })
            }
            Some(r) => r,
            None => available,
        };
        let len = round_down(wanted, self.align);
        if len == 0 {
            return Err(RegionError::DaxAlignment {
                path: path.to_path_buf(),
                size: wanted,
                align: self.align,
            });
        }
        Ok(len)
    }
}

/// Where a device's attributes may be, most specific first.
fn sysfs_directories(
    sysfs_root: &Path,
    device: &str,
    dev_number: Option<(u32, u32)>,
) -> Vec<PathBuf> {
    let mut dirs = vec![sysfs_root.join("bus/dax/devices").join(device)];
    if let Some((major, minor)) = dev_number {
        dirs.push(sysfs_root.join(format!("dev/char/{major}:{minor}")));
    }
    dirs.push(sysfs_root.join("class/dax").join(device));
    dirs
}

/// Reads a decimal (or `0x` hexadecimal) number from a sysfs attribute.
fn read_number(file: &Path) -> Result<u64, String> {
    let text = std::fs::read_to_string(file).map_err(|e| e.to_string())?;
    let text = text.trim();
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse::<u64>(),
    };
    parsed.map_err(|e| format!("{text:?} is not a number: {e}"))
}

/// Whether sysfs shows `device` bound to the `kmem` driver (system-ram mode).
pub(super) fn is_system_ram_mode(sysfs_root: &Path, device: &str) -> bool {
    std::fs::read_link(
        sysfs_root
            .join("bus/dax/devices")
            .join(device)
            .join("driver"),
    )
    .ok()
    .and_then(|target| target.file_name().map(|n| n == "kmem"))
    .unwrap_or(false)
}

/// The device name (`daxX.Y`) for a node path, following symlinks when it can.
fn device_name(path: &Path) -> String {
    let resolved = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    resolved
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The device name of character device `major:minor`, from its sysfs link.
fn device_name_by_number(sysfs_root: &Path, major: u32, minor: u32) -> Option<String> {
    let target = std::fs::read_link(sysfs_root.join(format!("dev/char/{major}:{minor}"))).ok()?;
    target.file_name().map(|n| n.to_string_lossy().into_owned())
}

/// Translates an error from opening or mapping `path` (device `device`).
pub(super) fn device_error(
    source: io::Error,
    path: &Path,
    device: &str,
    op: &'static str,
) -> RegionError {
    if source.raw_os_error() == Some(libc::ENXIO) {
        return RegionError::DaxSystemRamMode {
            path: path.to_path_buf(),
            device: device.to_string(),
        };
    }
    RegionError::from_io(source, path, op)
}

/// Opens device DAX `path` and sizes the mapping (`requested` bytes, or the whole device from
/// `offset` when `None`).
pub(super) fn open(
    path: &Path,
    sysfs_root: &Path,
    offset: u64,
    requested: Option<u64>,
) -> Result<Backing, RegionError> {
    let device = device_name(path);
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(if is_system_ram_mode(sysfs_root, &device) {
                RegionError::DaxSystemRamMode {
                    path: path.to_path_buf(),
                    device,
                }
            } else {
                RegionError::NotFound {
                    path: path.to_path_buf(),
                    hint: NOT_FOUND_HINT,
                }
            });
        }
        Err(e) => return Err(RegionError::from_io(e, path, "inspecting")),
    };
    if !meta.file_type().is_char_device() {
        return Err(RegionError::WrongFileType {
            path: path.to_path_buf(),
            expected: "a device DAX character device",
            found: describe_file_type(&meta),
        });
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| device_error(e, path, &device, "opening"))?;
    from_device(file, path, Some(device), sysfs_root, offset, requested)
}

/// Sizes the mapping of an already open device DAX (`path` names it in messages; `device` is
/// its name when known, else it is found through `/sys/dev/char`).
pub(super) fn from_device(
    file: File,
    path: &Path,
    device: Option<String>,
    sysfs_root: &Path,
    offset: u64,
    requested: Option<u64>,
) -> Result<Backing, RegionError> {
    let meta = file
        .metadata()
        .map_err(|e| RegionError::from_io(e, path, "inspecting"))?;
    let rdev = meta.rdev();
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    let device = device
        .or_else(|| device_name_by_number(sysfs_root, major, minor))
        .unwrap_or_else(|| format!("char device {major}:{minor}"));
    let geometry = DaxGeometry::read(sysfs_root, &device, Some((major, minor)))?;
    let len = geometry.map_len(path, offset, requested)?;
    Ok(Backing {
        file,
        kind: BackendKind::DevDax,
        what: path.display().to_string(),
        path: Some(path.to_path_buf()),
        offset,
        len,
        page_size: geometry.align,
        huge_pool: None,
        dax_device: Some(device),
        created: None,
    })
}
