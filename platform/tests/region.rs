//! Region tests that need the real machine: a child process that maps an inherited memfd, a
//! hugetlbfs mount and the huge page pool.
//!
//! The hugetlbfs tests use an existing hugetlbfs mount or, when running as root, mount one at
//! `/mnt/gismo-huge`, and raise `/proc/sys/vm/nr_hugepages` to at least 64 if fewer pages are
//! free (they never lower it). When that is not possible they print `skipped: <reason>` and
//! return.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use gismo_platform::region::{
    BackendKind, HugePagePool, Region, RegionError, RegionOptions, RegionSpec, HUGETLBFS_MAGIC,
};

const HUGE_PAGE: u64 = 2 << 20;

fn write_bytes(region: &Region, offset: usize, data: &[u8]) {
    let dst = region
        .range_ptr(offset, data.len(), 1)
        .expect("range in bounds");
    // SAFETY: `range_ptr` checked the range is inside the live mapping; the processes sharing it
    // in these tests write disjoint ranges, one after the other.
    unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), dst.as_ptr(), data.len()) };
}

fn read_bytes(region: &Region, offset: usize, len: usize) -> Vec<u8> {
    let src = region.range_ptr(offset, len, 1).expect("range in bounds");
    let mut out = vec![0u8; len];
    // SAFETY: as in `write_bytes`.
    unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), out.as_mut_ptr(), len) };
    out
}

// ---------------------------------------------------------------------------------------------
// A child process maps an inherited memfd

/// Set in the child's environment to the inherited descriptor number.
const CHILD_FD_ENV: &str = "GISMO_REGION_TEST_CHILD_FD";
const PARENT_BYTES: &[u8] = b"written by the parent";
const CHILD_BYTES: &[u8] = b"written by the child";
const CHILD_OFFSET: usize = 65536;

/// Runs `cmd` with a watchdog: kills it after `limit` (a hung child must not hang the suite).
fn run_with_watchdog(mut cmd: Command, limit: Duration) -> (std::process::ExitStatus, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the child");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the child did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status, reader.join().expect("reader thread"))
}

#[test]
fn memfd_region_is_shared_with_a_child_process() {
    let spec: RegionSpec = "memfd:gismo-child-test".parse().expect("spec");
    let region = Region::create(&spec, 1 << 20, &RegionOptions::default()).expect("memfd");
    write_bytes(&region, 0, PARENT_BYTES);

    let inheritable = region.inheritable_owned_fd().expect("inheritable fd");
    let mut cmd = Command::new(std::env::current_exe().expect("test binary"));
    cmd.args([
        "--exact",
        "child_process_entry",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_FD_ENV, inheritable.as_raw_fd().to_string());
    let (status, output) = run_with_watchdog(cmd, Duration::from_secs(120));
    drop(inheritable);
    assert!(
        status.success(),
        "child failed: {status}; output:\n{output}"
    );

    // libtest prints "test child_process_entry ... " on the line the child's output starts.
    let child_base = output
        .split_whitespace()
        .find_map(|w| w.strip_prefix("child-base="))
        .unwrap_or_else(|| panic!("the child did not report its mapping; output:\n{output}"));
    assert!(
        output.split_whitespace().any(|w| w == "child-kind=memfd"),
        "the child did not see a memfd; output:\n{output}"
    );
    assert_eq!(
        read_bytes(&region, CHILD_OFFSET, CHILD_BYTES.len()),
        CHILD_BYTES
    );
    let parent_base = format!("{:p}", region.as_ptr());
    println!(
        "parent mapped the region at {parent_base}, the child at {child_base} ({})",
        if parent_base == child_base {
            "same address"
        } else {
            "different addresses"
        }
    );
}

/// The child half of `memfd_region_is_shared_with_a_child_process`; a no-op in a normal run.
#[test]
fn child_process_entry() {
    let Ok(fd) = std::env::var(CHILD_FD_ENV) else {
        println!("skipped: runs only as the child of memfd_region_is_shared_with_a_child_process");
        return;
    };
    let spec: RegionSpec = format!("fd:{fd}").parse().expect("fd spec");
    let opts = RegionOptions {
        prefault: true,
        ..RegionOptions::default()
    };
    let region = Region::open(&spec, &opts).expect("open the inherited descriptor");
    assert_eq!(region.len(), 1 << 20);
    assert_eq!(read_bytes(&region, 0, PARENT_BYTES.len()), PARENT_BYTES);
    write_bytes(&region, CHILD_OFFSET, CHILD_BYTES);
    println!("child-base={:p}", region.as_ptr());
    println!("child-kind={}", region.kind());
}

#[test]
fn a_descriptor_not_inherited_is_a_clear_error_in_the_child() {
    // CLOEXEC descriptors (the region's own) do not survive exec: the child gets BadDescriptor,
    // which is what `raw_fd` vs `inheritable_fd` is about. Checked in-process: a number that is
    // not open here behaves as a non-inherited one would in a child.
    let err =
        Region::open(&RegionSpec::Fd(999_999), &RegionOptions::default()).expect_err("not open");
    assert!(
        matches!(err, RegionError::BadDescriptor { fd: 999_999 }),
        "{err:?}"
    );
    assert!(err.to_string().contains("inheritable_fd"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// hugetlbfs and the huge page pool

const MOUNT_POINT: &str = "/mnt/gismo-huge";

/// A hugetlbfs mount with the default (2 MiB) page size: an existing one, or one mounted here.
fn hugetlbfs_mount() -> Result<PathBuf, String> {
    static MOUNT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    MOUNT
        .get_or_init(|| {
            let mounts = std::fs::read_to_string("/proc/mounts")
                .map_err(|e| format!("cannot read /proc/mounts: {e}"))?;
            let existing = mounts.lines().find_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                (fields.len() > 3
                    && fields[2] == "hugetlbfs"
                    && fields[3].split(',').any(|o| o == "pagesize=2M"))
                .then(|| PathBuf::from(fields[1]))
            });
            if let Some(path) = existing {
                return Ok(path);
            }
            std::fs::create_dir_all(MOUNT_POINT)
                .map_err(|e| format!("cannot create {MOUNT_POINT}: {e}"))?;
            let status = Command::new("mount")
                .args(["-t", "hugetlbfs", "-o", "pagesize=2M", "none", MOUNT_POINT])
                .status()
                .map_err(|e| format!("cannot run mount: {e}"))?;
            if !status.success() {
                return Err(format!(
                    "`mount -t hugetlbfs none {MOUNT_POINT}` failed ({status}); not root?"
                ));
            }
            Ok(PathBuf::from(MOUNT_POINT))
        })
        .clone()
}

/// Makes sure at least `pages` 2 MiB huge pages can be reserved, raising the pool to at least
/// 64 pages if needed (never lowering it).
fn ensure_huge_pages(pages: u64) -> Result<(), String> {
    static RAISE: Mutex<()> = Mutex::new(());
    let _guard = RAISE.lock().unwrap_or_else(|p| p.into_inner());
    let available = || {
        HugePagePool::read(Path::new("/sys"), HUGE_PAGE)
            .map(|p| p.available())
            .map_err(|e| format!("cannot read the 2 MiB huge page pool: {e}"))
    };
    if available()? >= pages {
        return Ok(());
    }
    let nr_path = "/proc/sys/vm/nr_hugepages";
    let current: u64 = std::fs::read_to_string(nr_path)
        .map_err(|e| format!("cannot read {nr_path}: {e}"))?
        .trim()
        .parse()
        .map_err(|e| format!("{nr_path}: {e}"))?;
    let wanted = (current + pages).max(64);
    std::fs::write(nr_path, wanted.to_string())
        .map_err(|e| format!("cannot raise {nr_path} to {wanted}: {e}"))?;
    let now = available()?;
    if now < pages {
        return Err(format!(
            "only {now} huge pages available after raising {nr_path} to {wanted}"
        ));
    }
    Ok(())
}

/// A unique file name on the hugetlbfs mount; removed on drop.
struct HugeFile(PathBuf);

impl HugeFile {
    fn new(mount: &Path, name: &str) -> HugeFile {
        HugeFile(mount.join(format!("gismo-test-{}-{name}", std::process::id())))
    }
}

impl Drop for HugeFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

macro_rules! require {
    ($setup:expr) => {
        match $setup {
            Ok(value) => value,
            Err(reason) => {
                println!("skipped: {reason}");
                return;
            }
        }
    };
}

#[test]
fn hugetlbfs_paths_are_detected_by_magic() {
    let mount = require!(hugetlbfs_mount());
    let file = HugeFile::new(&mount, "detect");
    let text = file.0.to_str().expect("utf-8 path");
    // Not there yet: the parent directory's filesystem decides.
    assert_eq!(
        text.parse::<RegionSpec>().expect("spec"),
        RegionSpec::HugeTlbFs(file.0.clone())
    );
    std::fs::File::create(&file.0).expect("create");
    assert_eq!(
        text.parse::<RegionSpec>().expect("spec"),
        RegionSpec::HugeTlbFs(file.0.clone())
    );
    assert_eq!(HUGETLBFS_MAGIC, 0x9584_58f6);
    let tmp = tempfile::tempdir().expect("tempdir");
    assert_eq!(
        RegionSpec::detect(&tmp.path().join("x")),
        RegionSpec::File(tmp.path().join("x"))
    );
}

#[test]
fn hugetlbfs_region_rounds_up_and_is_shared() {
    let mount = require!(hugetlbfs_mount());
    require!(ensure_huge_pages(4));
    let file = HugeFile::new(&mount, "region");
    let spec: RegionSpec = file.0.to_str().expect("utf-8").parse().expect("spec");
    assert!(matches!(spec, RegionSpec::HugeTlbFs(_)));
    let opts = RegionOptions {
        prefault: true,
        ..RegionOptions::default()
    };
    let region = Region::create(&spec, 3 << 20, &opts).expect("hugetlbfs region");
    assert_eq!(region.kind(), BackendKind::HugeTlbFs);
    assert_eq!(region.len(), 4 << 20, "3 MiB rounds up to two 2 MiB pages");
    assert_eq!(region.page_size(), HUGE_PAGE as usize);
    assert_eq!(region.as_ptr() as usize % HUGE_PAGE as usize, 0);
    assert_eq!(region.path(), Some(file.0.as_path()));
    write_bytes(&region, (4 << 20) - 5, b"huge!");

    let opened = Region::open(&spec, &RegionOptions::default()).expect("open");
    assert_eq!(opened.len(), 4 << 20);
    assert_eq!(read_bytes(&opened, (4 << 20) - 5, 5), b"huge!");
    // The pages are allocated now, so reusing the file needs no new ones.
    let again = Region::create(&spec, 4 << 20, &RegionOptions::default()).expect("reuse");
    assert_eq!(again.len(), 4 << 20);

    let misaligned = RegionOptions {
        offset: 4096,
        ..RegionOptions::default()
    };
    let err = Region::open(&spec, &misaligned).expect_err("offset inside a huge page");
    assert!(
        matches!(err, RegionError::MisalignedOffset { align, .. } if align == HUGE_PAGE),
        "{err:?}"
    );
}

#[test]
fn memfd_huge_region_uses_huge_pages() {
    require!(ensure_huge_pages(2));
    let spec: RegionSpec = "memfd-huge:gismo-test".parse().expect("spec");
    let opts = RegionOptions {
        prefault: true,
        ..RegionOptions::default()
    };
    let region = match Region::create(&spec, 1 << 20, &opts) {
        Err(RegionError::Io { context, source }) if context.contains("memfd_create") => {
            println!("skipped: the kernel refuses MFD_HUGETLB: {source}");
            return;
        }
        other => other.expect("huge memfd"),
    };
    assert_eq!(region.kind(), BackendKind::Memfd);
    assert_eq!(region.len(), HUGE_PAGE as usize);
    assert_eq!(region.page_size(), HUGE_PAGE as usize);
    write_bytes(&region, 0, b"huge memfd");
    let again = Region::open(
        &RegionSpec::Fd(region.raw_fd().expect("fd")),
        &RegionOptions::default(),
    )
    .expect("reopen by descriptor");
    assert_eq!(again.kind(), BackendKind::Memfd);
    assert_eq!(again.page_size(), HUGE_PAGE as usize);
    assert_eq!(read_bytes(&again, 0, 10), b"huge memfd");
}

/// More pages than the pool can give: the available count now plus a margin no parallel test
/// can close.
fn too_many_pages() -> u64 {
    let available = HugePagePool::read(Path::new("/sys"), HUGE_PAGE)
        .map(|p| p.available())
        .unwrap_or(0);
    available + 100_000
}

fn assert_huge_pages_unavailable(result: Result<Region, RegionError>, pages: u64) {
    match result {
        Err(RegionError::HugePagesUnavailable {
            needed,
            free,
            page_size,
            ..
        }) => {
            assert_eq!(page_size, HUGE_PAGE);
            assert!(needed >= pages, "needed {needed}, asked for {pages}");
            assert!(free < needed, "free {free} < needed {needed}");
        }
        Err(other) => panic!("expected HugePagesUnavailable, got {other:?}"),
        Ok(region) => panic!("mapped {} bytes that cannot be backed", region.len()),
    }
}

#[test]
fn too_few_huge_pages_is_a_typed_error_for_a_huge_memfd() {
    if HugePagePool::read(Path::new("/sys"), HUGE_PAGE).is_err() {
        println!("skipped: no 2 MiB huge page pool in sysfs");
        return;
    }
    let pages = too_many_pages();
    let spec: RegionSpec = "memfd-huge:too-big".parse().expect("spec");
    let result = Region::create(&spec, pages * HUGE_PAGE, &RegionOptions::default());
    if let Err(RegionError::Io { context, source }) = &result {
        if context.contains("memfd_create") {
            println!("skipped: the kernel refuses MFD_HUGETLB: {source}");
            return;
        }
    }
    assert_huge_pages_unavailable(result, pages);
}

#[test]
fn too_few_huge_pages_is_a_typed_error_for_hugetlbfs() {
    let mount = require!(hugetlbfs_mount());
    let pages = too_many_pages();

    // create: refused by the pool check before the file is even sized, and not left behind.
    let file = HugeFile::new(&mount, "too-big");
    let spec = RegionSpec::HugeTlbFs(file.0.clone());
    let result = Region::create(&spec, pages * HUGE_PAGE, &RegionOptions::default());
    assert_huge_pages_unavailable(result, pages);
    assert!(!file.0.exists(), "a failed create leaves no file behind");
    let message = Region::create(&spec, pages * HUGE_PAGE, &RegionOptions::default())
        .expect_err("too big")
        .to_string();
    assert!(message.contains("nr_hugepages"), "{message}");

    // open of a file someone else sized: the kernel's reservation at mmap time fails, and that
    // is the same typed error, not a SIGBUS at first touch.
    let sized = HugeFile::new(&mount, "sized-elsewhere");
    let f = std::fs::File::create(&sized.0).expect("create");
    f.set_len(pages * HUGE_PAGE)
        .expect("size (allocates nothing)");
    let result = Region::open(
        &RegionSpec::HugeTlbFs(sized.0.clone()),
        &RegionOptions::default(),
    );
    assert_huge_pages_unavailable(result, pages);
}

/// A file region larger than its filesystem's free space is refused at create time with a typed
/// error (space is reserved with `posix_fallocate`), never a SIGBUS at first touch.
#[test]
fn a_region_larger_than_the_free_space_is_refused_at_create() {
    let dir = std::env::temp_dir().join(format!("gismo-small-tmpfs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mounted = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=8m",
            "gismo-small",
            dir.to_str().unwrap(),
        ])
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        println!("skipped: cannot mount a small tmpfs here (needs root)");
        let _ = std::fs::remove_dir(&dir);
        return;
    }
    let spec = RegionSpec::File(dir.join("region"));
    let err = Region::create(&spec, 64 << 20, &RegionOptions::default()).unwrap_err();
    let fits = Region::create(
        &RegionSpec::File(dir.join("small")),
        4 << 20,
        &RegionOptions::default(),
    )
    .map(drop);
    // Lazily if busy (a child that another test of this binary forks meanwhile inherits our
    // mapping and keeps the tmpfs busy until it exits).
    if !Command::new("umount")
        .arg(&dir)
        .status()
        .is_ok_and(|s| s.success())
    {
        let _ = Command::new("umount").arg("-l").arg(&dir).status();
    }
    let _ = std::fs::remove_dir(&dir);
    assert!(matches!(err, RegionError::WrongSize { .. }), "{err}");
    assert!(err.to_string().contains("free space"), "{err}");
    assert!(
        fits.is_ok(),
        "a region that fits is created: {:?}",
        fits.err()
    );
}

/// A file region is reserved at create (its blocks allocated: a full filesystem is a typed error,
/// not a later SIGBUS); a `sparse` one is not, so a region far larger than the filesystem's free
/// space can be created and used where it is touched.
#[test]
fn file_regions_are_reserved_unless_sparse() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let reserved = dir.path().join("reserved");
    let sparse = dir.path().join("sparse");
    let r = Region::create(
        &RegionSpec::File(reserved.clone()),
        8 << 20,
        &RegionOptions::default(),
    )
    .unwrap();
    let blocks = std::fs::metadata(&reserved).unwrap().blocks() * 512;
    // Filesystems that cannot preallocate are left as they are (tmpfs and ext4 can).
    println!("reserved region: {blocks} bytes allocated of {}", r.len());
    let huge = 4u64 << 40; // 4 TiB: more than any filesystem here has free (ext4 files reach 16)
    let s = Region::create(
        &RegionSpec::File(sparse.clone()),
        huge,
        &RegionOptions {
            sparse: true,
            ..RegionOptions::default()
        },
    )
    .unwrap();
    assert_eq!(s.len() as u64, huge);
    write_bytes(&s, 1 << 40, b"touched");
    let used = std::fs::metadata(&sparse).unwrap().blocks() * 512;
    assert!(used <= 1 << 20, "a sparse region allocated {used} bytes");
    drop(s);
    let refused = Region::create(
        &RegionSpec::File(dir.path().join("refused")),
        huge,
        &RegionOptions::default(),
    );
    assert!(
        refused.is_err(),
        "a 4 TiB region was reserved on a filesystem that cannot hold it"
    );
}
