//! The files of an emulated host in the emulation directory: `HOST.view` (its cache),
//! `HOST.clean` (what it last fetched or wrote back), `HOST.meta` (which device they mirror),
//! and `lines.lock` (the line locks, shared by every host of the directory).

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use memmap2::{MmapOptions, MmapRaw};

use super::config::{EmulationConfig, EmulationError};
use super::lines::LOCKS;

/// The mappings of one host's files and of the device.
pub struct HostMaps {
    pub device: MmapRaw,
    pub view: MmapRaw,
    pub clean: MmapRaw,
    pub locks: MmapRaw,
    /// Whether the view was made now (a cold cache) rather than found.
    pub fresh: bool,
}

/// Maps the device (`len` bytes of `device` from `offset`) and `cfg.host`'s files, making them
/// when they are missing or mirror another device. A new view and clean copy are filled by
/// `snapshot(&maps)` while the host's files are locked, so a second process of the host never
/// maps a half-made view.
pub fn open(
    cfg: &EmulationConfig,
    device: &File,
    offset: u64,
    len: usize,
    snapshot: impl FnOnce(&HostMaps),
) -> Result<HostMaps, EmulationError> {
    let io = |what: &'static str, path: &Path| {
        let host = cfg.host.clone();
        let path = path.display().to_string();
        move |source| EmulationError::Io {
            host,
            what,
            path,
            source,
        }
    };
    let dir = &cfg.dir;
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io("creating the emulation directory", dir))?;
    let map = |file: &File, offset: u64, len: usize| {
        MmapOptions::new().offset(offset).len(len).map_raw(file)
    };
    let device_map = map(device, offset, len).map_err(io("mapping the device", dir))?;

    let locks_path = dir.join("lines.lock");
    let locks_file = open_rw(&locks_path).map_err(io("opening", &locks_path))?;
    let locks_len = (LOCKS * 4) as u64;
    let have = locks_file
        .metadata()
        .map_err(io("reading", &locks_path))?
        .len();
    if have < locks_len {
        // Growing to the same length from several processes at once is harmless.
        locks_file
            .set_len(locks_len)
            .map_err(io("sizing", &locks_path))?;
    }
    let locks = map(&locks_file, 0, LOCKS * 4).map_err(io("mapping", &locks_path))?;

    let host_path = |ext: &str| dir.join(format!("{}.{ext}", cfg.host));
    let (meta_path, view_path, clean_path) =
        (host_path("meta"), host_path("view"), host_path("clean"));
    let mut meta = open_rw(&meta_path).map_err(io("opening", &meta_path))?;
    // Held until `meta` is closed at return: one process of the host makes its files at a time.
    meta.lock().map_err(io("locking", &meta_path))?;
    let st = device.metadata().map_err(io("reading", dir))?;
    let identity = format!(
        "dev={} ino={} rdev={} offset={offset} len={len}\n",
        st.dev(),
        st.ino(),
        st.rdev()
    );
    let mut recorded = String::new();
    meta.read_to_string(&mut recorded)
        .map_err(io("reading", &meta_path))?;
    let sized = |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.len() == len as u64);
    if recorded == identity && sized(&view_path) && sized(&clean_path) {
        let view_file = open_rw(&view_path).map_err(io("opening", &view_path))?;
        let clean_file = open_rw(&clean_path).map_err(io("opening", &clean_path))?;
        return Ok(HostMaps {
            device: device_map,
            view: map(&view_file, 0, len).map_err(io("mapping", &view_path))?,
            clean: map(&clean_file, 0, len).map_err(io("mapping", &clean_path))?,
            locks,
            fresh: false,
        });
    }
    // New files beside the old ones, renamed into place when filled: a process still mapping
    // the old view (of another device) is not disturbed.
    let fresh_file = |p: &PathBuf| -> Result<(File, PathBuf), EmulationError> {
        let tmp = p.with_extension(format!(
            "{}.new",
            p.extension().unwrap_or_default().to_string_lossy()
        ));
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io("creating", &tmp))?;
        f.set_len(len as u64).map_err(io("sizing", &tmp))?;
        Ok((f, tmp))
    };
    let (view_file, view_tmp) = fresh_file(&view_path)?;
    let (clean_file, clean_tmp) = fresh_file(&clean_path)?;
    let maps = HostMaps {
        device: device_map,
        view: map(&view_file, 0, len).map_err(io("mapping", &view_tmp))?,
        clean: map(&clean_file, 0, len).map_err(io("mapping", &clean_tmp))?,
        locks,
        fresh: true,
    };
    snapshot(&maps);
    std::fs::rename(&view_tmp, &view_path).map_err(io("renaming", &view_tmp))?;
    std::fs::rename(&clean_tmp, &clean_path).map_err(io("renaming", &clean_tmp))?;
    meta.set_len(0).map_err(io("writing", &meta_path))?;
    meta.seek(SeekFrom::Start(0))
        .and_then(|_| meta.write_all(identity.as_bytes()))
        .map_err(io("writing", &meta_path))?;
    Ok(maps)
}

fn open_rw(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
}
