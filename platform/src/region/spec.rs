//! Naming a region: the [`RegionSpec`] string syntax, its parser and printer, and the detection
//! of a bare path's backend.
//!
//! Syntax (what `--region` accepts):
//!
//! | spec                      | backend                                                  |
//! |---------------------------|----------------------------------------------------------|
//! | `dax:/dev/dax0.0`         | device DAX (CXL memory, a NVDIMM namespace, QEMU's)       |
//! | `hugetlbfs:/mnt/huge/g`   | a file on a hugetlbfs mount                               |
//! | `file:/dev/shm/gismo`     | a regular file (tmpfs for speed)                          |
//! | `memfd:NAME`              | an anonymous memfd, shared by passing its descriptor      |
//! | `memfd-huge:NAME`         | the same, backed by huge pages                            |
//! | `fd:N`                    | descriptor `N` inherited from a parent                    |
//! | `/any/other/path`         | detected: see [`RegionSpec::detect`]                      |
//!
//! A word before the first `:` that looks like a scheme (letters, digits, `-`, no `/`) but is
//! not one of the above is rejected rather than taken as a relative path, so a typo such as
//! `daxx:/dev/dax0.0` fails loudly instead of creating a file named `daxx:`. Write `./a:b` or
//! `file:a:b` for such a path.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::hugetlbfs;
use super::RegionError;

/// Where a region lives.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RegionSpec {
    /// A device DAX character device, `/dev/daxX.Y`.
    DevDax(PathBuf),
    /// A file on a hugetlbfs mount.
    HugeTlbFs(PathBuf),
    /// A regular file (on tmpfs, or anywhere `mmap` works).
    File(PathBuf),
    /// An anonymous memory file; other processes reach it through an inherited descriptor.
    Memfd {
        /// The name shown in `/proc/<pid>/fd` (`/memfd:NAME`); need not be unique.
        name: String,
        /// Back it with huge pages (`MFD_HUGETLB`).
        huge_pages: bool,
    },
    /// A descriptor inherited from the parent process (see
    /// [`Region::inheritable_fd`](super::Region::inheritable_fd)).
    Fd(i32),
}

impl RegionSpec {
    /// The backend for a bare path: `/dev/dax*` or any character device is device DAX; a path
    /// on a hugetlbfs mount (by `statfs` magic, asked of the parent directory when the path does
    /// not exist yet) is hugetlbfs; anything else is a file.
    pub fn detect(path: &Path) -> RegionSpec {
        let is_char_device = std::fs::metadata(path)
            .map(|m| std::os::unix::fs::FileTypeExt::is_char_device(&m.file_type()))
            .unwrap_or(false);
        let magic = hugetlbfs::fs_magic_of_path_or_parent(path).ok();
        classify(path, is_char_device, magic)
    }

    /// The path this spec names, if it names one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            RegionSpec::DevDax(p) | RegionSpec::HugeTlbFs(p) | RegionSpec::File(p) => Some(p),
            RegionSpec::Memfd { .. } | RegionSpec::Fd(_) => None,
        }
    }
}

/// The pure part of [`RegionSpec::detect`]: the decision from the facts.
pub(super) fn classify(path: &Path, is_char_device: bool, fs_magic: Option<u32>) -> RegionSpec {
    let named_dax = path.starts_with("/dev")
        && path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("dax"));
    if is_char_device || named_dax {
        RegionSpec::DevDax(path.to_path_buf())
    } else if fs_magic == Some(hugetlbfs::HUGETLBFS_MAGIC) {
        RegionSpec::HugeTlbFs(path.to_path_buf())
    } else {
        RegionSpec::File(path.to_path_buf())
    }
}

/// Parses the schemes that need no look at the filesystem; `None` for a bare path.
pub(super) fn parse_scheme(s: &str) -> Option<Result<RegionSpec, RegionError>> {
    let invalid = |reason: &str| RegionError::InvalidSpec {
        spec: s.to_string(),
        reason: reason.to_string(),
    };
    let (scheme, rest) = s.split_once(':')?;
    let path = |rest: &str| -> Result<PathBuf, RegionError> {
        if rest.is_empty() {
            Err(invalid("empty path"))
        } else if rest.contains('\0') {
            Err(invalid("path contains a NUL byte"))
        } else {
            Ok(PathBuf::from(rest))
        }
    };
    let memfd = |huge_pages: bool| {
        if rest.contains('\0') {
            Err(invalid("memfd name contains a NUL byte"))
        } else if rest.is_empty() {
            Err(invalid("empty memfd name"))
        } else {
            Ok(RegionSpec::Memfd {
                name: rest.to_string(),
                huge_pages,
            })
        }
    };
    let parsed = match scheme {
        "dax" => path(rest).map(RegionSpec::DevDax),
        "hugetlbfs" => path(rest).map(RegionSpec::HugeTlbFs),
        "file" => path(rest).map(RegionSpec::File),
        "memfd" => memfd(false),
        "memfd-huge" => memfd(true),
        "fd" => match rest.parse::<i32>() {
            Ok(n) if n >= 0 => Ok(RegionSpec::Fd(n)),
            _ => Err(invalid("fd: needs a non-negative descriptor number")),
        },
        _ if looks_like_scheme(scheme) => Err(invalid("unknown scheme")),
        _ => return None,
    };
    Some(parsed)
}

/// Whether `word` (the text before a `:`) is shaped like a URL scheme rather than a path.
fn looks_like_scheme(word: &str) -> bool {
    !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl FromStr for RegionSpec {
    type Err = RegionError;

    /// Parses a spec; a bare path is classified by [`RegionSpec::detect`], which looks at the
    /// filesystem.
    ///
    /// # Errors
    /// [`RegionError::InvalidSpec`] for an empty string, an unknown scheme, an empty path or
    /// name, a NUL byte, or a bad descriptor number.
    fn from_str(s: &str) -> Result<RegionSpec, RegionError> {
        if s.is_empty() {
            return Err(RegionError::InvalidSpec {
                spec: String::new(),
                reason: "empty".to_string(),
            });
        }
        if let Some(parsed) = parse_scheme(s) {
            return parsed;
        }
        if s.contains('\0') {
            return Err(RegionError::InvalidSpec {
                spec: s.to_string(),
                reason: "path contains a NUL byte".to_string(),
            });
        }
        Ok(RegionSpec::detect(Path::new(s)))
    }
}

impl fmt::Display for RegionSpec {
    /// The canonical, explicit form, which [`FromStr`] parses back to the same spec (for paths
    /// that are valid UTF-8).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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
