//! The embedded default region: a file in `/dev/shm`, sized for this machine.
//!
//! Size: the smallest of a quarter of `MemAvailable`, 80% of the space `/dev/shm` can still
//! provide (counting the existing file's own pages, which a reformat reuses) and 4 GiB; at least
//! 64 MiB; rounded down to a multiple of 2 MiB. A tmpfs file is sparse: pages are taken when
//! first written, so a size that the filesystem cannot back would fault later, not now. That is
//! why the size is kept well below what is free.

use std::path::Path;

use gismo_platform::region::RegionSpec;

/// Where the default region lives.
pub const DEFAULT_PATH: &str = "/dev/shm/gismo-default";
/// The most the default region takes.
pub const MAX_SIZE: u64 = 4 << 30;
/// The least the default region takes.
pub const MIN_SIZE: u64 = 64 << 20;
const GRANULE: u64 = 2 << 20;

pub fn spec() -> RegionSpec {
    RegionSpec::File(DEFAULT_PATH.into())
}

/// The facts the size is derived from, and the size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sizing {
    pub mem_available: Option<u64>,
    pub shm_free: Option<u64>,
    pub size: u64,
}

/// Measures this machine and chooses the default region's size.
pub fn sizing() -> Sizing {
    let mem_available = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| mem_available(&t));
    let dir = Path::new(DEFAULT_PATH).parent().unwrap_or(Path::new("/"));
    let existing = std::fs::metadata(DEFAULT_PATH)
        .map(|m| std::os::unix::fs::MetadataExt::blocks(&m) * 512)
        .unwrap_or(0);
    let shm_free = free_space(dir).map(|f| f + existing);
    Sizing {
        mem_available,
        shm_free,
        size: choose(mem_available, shm_free),
    }
}

/// The pure rule (see the module docs).
pub fn choose(mem_available: Option<u64>, shm_free: Option<u64>) -> u64 {
    let mut size = MAX_SIZE;
    if let Some(m) = mem_available {
        size = size.min(m / 4);
    }
    if let Some(f) = shm_free {
        size = size.min(f / 10 * 8);
    }
    (size / GRANULE * GRANULE).max(MIN_SIZE)
}

/// `MemAvailable` from the text of `/proc/meminfo`, in bytes.
pub fn mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let mut words = line.split_whitespace().skip(1);
    let n: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => n.checked_mul(1024),
        None => Some(n),
        Some(_) => None,
    }
}

/// Bytes an unprivileged user can still allocate on the filesystem holding `dir`.
fn free_space(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a NUL-terminated string that outlives the call; `st` points to writable
    // memory of the right type, which `statvfs` fills in completely when it returns 0.
    let rc = unsafe { libc::statvfs(path.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: `statvfs` returned 0, so it initialised `st`.
    let st = unsafe { st.assume_init() };
    // `fsblkcnt_t` and `c_ulong` are `u64` here but 32 bits wide on some targets.
    #[allow(clippy::useless_conversion)]
    u64::from(st.f_bavail).checked_mul(u64::from(st.f_frsize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_meminfo() {
        let t = "MemTotal:       24000000 kB\nMemFree:  1 kB\nMemAvailable:   16000000 kB\n";
        assert_eq!(mem_available(t), Some(16_000_000 * 1024));
        assert_eq!(mem_available("MemTotal: 5 kB\n"), None);
        assert_eq!(mem_available("MemAvailable: x kB\n"), None);
    }

    #[test]
    fn chooses_the_smallest_bound() {
        assert_eq!(choose(Some(64 << 30), Some(64 << 30)), MAX_SIZE);
        assert_eq!(choose(Some(8 << 30), None), 2 << 30);
        assert_eq!(choose(None, Some(1 << 30)), 818 << 20);
        assert_eq!(choose(Some(100 << 20), Some(100 << 20)), MIN_SIZE);
        assert_eq!(choose(None, None), MAX_SIZE);
    }
}
