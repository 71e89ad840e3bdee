//! Unit tests of the region module: spec syntax, sysfs parsing against fake trees, file and
//! memfd regions, bounds checks, prefaulting. Tests that need a hugetlbfs mount or a child process
//! are in `platform/tests/region.rs`.

use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use proptest::prelude::*;

use super::spec::classify;
use super::*;

fn write_bytes(region: &Region, offset: usize, data: &[u8]) {
    let dst = region
        .range_ptr(offset, data.len(), 1)
        .expect("range in bounds");
    // SAFETY: `range_ptr` checked that `offset..offset + data.len()` is inside the live mapping;
    // the region is private to this test, so nothing else writes these bytes meanwhile.
    unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), dst.as_ptr(), data.len()) };
}

fn read_bytes(region: &Region, offset: usize, len: usize) -> Vec<u8> {
    let src = region.range_ptr(offset, len, 1).expect("range in bounds");
    let mut out = vec![0u8; len];
    // SAFETY: as in `write_bytes`: in bounds of the live mapping, no concurrent writer.
    unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), out.as_mut_ptr(), len) };
    out
}

fn spec(s: &str) -> RegionSpec {
    s.parse()
        .unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
}

// ---------------------------------------------------------------------------------------------
// Spec syntax

#[test]
fn parses_every_scheme() {
    assert_eq!(
        spec("dax:/dev/dax0.0"),
        RegionSpec::DevDax("/dev/dax0.0".into())
    );
    assert_eq!(
        spec("hugetlbfs:/mnt/huge/gismo"),
        RegionSpec::HugeTlbFs("/mnt/huge/gismo".into())
    );
    assert_eq!(
        spec("file:/dev/shm/gismo"),
        RegionSpec::File("/dev/shm/gismo".into())
    );
    assert_eq!(
        spec("memfd:store"),
        RegionSpec::Memfd {
            name: "store".into(),
            huge_pages: false
        }
    );
    assert_eq!(
        spec("memfd-huge:store"),
        RegionSpec::Memfd {
            name: "store".into(),
            huge_pages: true
        }
    );
    assert_eq!(spec("fd:7"), RegionSpec::Fd(7));
    // A colon after the scheme belongs to the path or name.
    assert_eq!(spec("file:a:b"), RegionSpec::File("a:b".into()));
    assert_eq!(
        spec("memfd:x:y"),
        RegionSpec::Memfd {
            name: "x:y".into(),
            huge_pages: false
        }
    );
}

#[test]
fn rejects_malformed_specs() {
    for bad in [
        "",
        "dax:",
        "file:",
        "hugetlbfs:",
        "memfd:",
        "memfd-huge:",
        "fd:",
        "fd:-1",
        "fd:x",
        "fd:99999999999",
        "daxx:/dev/dax0.0",
        "shm:gismo",
        "memfd:a\0b",
        "file:/tmp/a\0b",
        "/tmp/a\0b",
    ] {
        match bad.parse::<RegionSpec>() {
            Err(RegionError::InvalidSpec { spec, .. }) => assert_eq!(spec, bad),
            other => panic!("{bad:?} should be InvalidSpec, got {other:?}"),
        }
    }
    let message = "daxx:/dev/dax0.0"
        .parse::<RegionSpec>()
        .expect_err("unknown scheme")
        .to_string();
    assert!(message.contains("unknown scheme"), "{message}");
    assert!(message.contains("dax:PATH"), "{message}");
}

#[test]
fn detects_bare_paths() {
    assert_eq!(
        spec("/dev/dax9.9"),
        RegionSpec::DevDax("/dev/dax9.9".into())
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("region");
    assert_eq!(
        spec(file.to_str().expect("utf-8")),
        RegionSpec::File(file.clone())
    );
    // A colon inside a path component is a path, not a scheme.
    assert_eq!(spec("./a:b"), RegionSpec::File("./a:b".into()));
    assert_eq!(spec("relative"), RegionSpec::File("relative".into()));
    // /dev/null is a character device, hence (for detection) device DAX; opening it as one
    // fails with a clear error rather than mapping /dev/null.
    assert_eq!(spec("/dev/null"), RegionSpec::DevDax("/dev/null".into()));
}

#[test]
fn classifies_by_filesystem_magic() {
    let p = Path::new("/mnt/huge/gismo");
    assert_eq!(
        classify(p, false, Some(HUGETLBFS_MAGIC)),
        RegionSpec::HugeTlbFs(p.into())
    );
    // tmpfs magic
    assert_eq!(
        classify(p, false, Some(0x0102_1994)),
        RegionSpec::File(p.into())
    );
    assert_eq!(classify(p, false, None), RegionSpec::File(p.into()));
    assert_eq!(
        classify(p, true, Some(HUGETLBFS_MAGIC)),
        RegionSpec::DevDax(p.into())
    );
    assert_eq!(
        classify(Path::new("/dev/dax1.0"), false, None),
        RegionSpec::DevDax("/dev/dax1.0".into())
    );
}

#[test]
fn spec_path_and_kind_display() {
    assert_eq!(
        spec("dax:/dev/dax0.0").path(),
        Some(Path::new("/dev/dax0.0"))
    );
    assert_eq!(spec("memfd:x").path(), None);
    assert_eq!(spec("fd:3").path(), None);
    assert_eq!(BackendKind::DevDax.to_string(), "devdax");
    assert_eq!(BackendKind::HugeTlbFs.to_string(), "hugetlbfs");
    assert_eq!(BackendKind::File.to_string(), "file");
    assert_eq!(BackendKind::Memfd.to_string(), "memfd");
}

fn explicit_spec() -> impl Strategy<Value = RegionSpec> {
    let path = "[a-zA-Z0-9_./:+ -]{1,40}".prop_map(PathBuf::from);
    let name = "[^\u{0}]{1,40}";
    prop_oneof![
        path.clone().prop_map(RegionSpec::DevDax),
        path.clone().prop_map(RegionSpec::HugeTlbFs),
        path.prop_map(RegionSpec::File),
        (name, any::<bool>()).prop_map(|(name, huge_pages)| RegionSpec::Memfd { name, huge_pages }),
        (0..=i32::MAX).prop_map(RegionSpec::Fd),
    ]
}

proptest! {
    #[test]
    fn display_round_trips(s in explicit_spec()) {
        let text = s.to_string();
        let parsed: RegionSpec = text.parse::<RegionSpec>().map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(parsed, s);
    }

    #[test]
    fn parsing_any_string_is_total_and_stable(text in "\\PC{0,40}") {
        // Never panics; whatever parses prints back to a spec that parses to itself.
        if let Ok(parsed) = text.parse::<RegionSpec>() {
            let again: RegionSpec = parsed
                .to_string()
                .parse::<RegionSpec>()
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(again, parsed);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Device DAX: sysfs parsing and sizing against fake trees

fn fake_dax(root: &Path, device: &str, size: Option<&str>, align: Option<&str>) -> PathBuf {
    let dir = root.join("bus/dax/devices").join(device);
    std::fs::create_dir_all(&dir).expect("mkdir");
    if let Some(size) = size {
        std::fs::write(dir.join("size"), size).expect("write size");
    }
    if let Some(align) = align {
        std::fs::write(dir.join("align"), align).expect("write align");
    }
    dir
}

#[test]
fn reads_dax_geometry() {
    let root = tempfile::tempdir().expect("tempdir");
    fake_dax(
        root.path(),
        "dax0.0",
        Some("4294967296\n"),
        Some("2097152\n"),
    );
    let g = DaxGeometry::read(root.path(), "dax0.0", None).expect("geometry");
    assert_eq!(
        g,
        DaxGeometry {
            device: "dax0.0".into(),
            size: 4 << 30,
            align: 2 << 20
        }
    );

    fake_dax(
        root.path(),
        "dax1.0",
        Some("0x40000000"),
        Some("1073741824"),
    );
    let g = DaxGeometry::read(root.path(), "dax1.0", None).expect("hex size");
    assert_eq!((g.size, g.align), (1 << 30, 1 << 30));
}

#[test]
fn dax_align_defaults_to_2mib_and_falls_back_to_the_region() {
    let root = tempfile::tempdir().expect("tempdir");
    fake_dax(root.path(), "dax0.0", Some("8388608"), None);
    let g = DaxGeometry::read(root.path(), "dax0.0", None).expect("geometry");
    assert_eq!(g.align, DEFAULT_DAX_ALIGN);

    // Old layout: the alignment is the region's, one level up, reached through the bus link.
    let real = root.path().join("devices/platform/dax1/dax1.0");
    std::fs::create_dir_all(&real).expect("mkdir");
    std::fs::write(real.join("size"), "8388608").expect("size");
    std::fs::create_dir_all(root.path().join("devices/platform/dax1/dax_region")).expect("mkdir");
    std::fs::write(
        root.path().join("devices/platform/dax1/dax_region/align"),
        "4096",
    )
    .expect("align");
    std::fs::create_dir_all(root.path().join("bus/dax/devices")).expect("mkdir");
    std::os::unix::fs::symlink(&real, root.path().join("bus/dax/devices/dax1.0")).expect("link");
    let g = DaxGeometry::read(root.path(), "dax1.0", None).expect("geometry");
    assert_eq!((g.size, g.align), (8 << 20, 4096));
}

#[test]
fn dax_geometry_errors_name_the_sysfs_file() {
    let root = tempfile::tempdir().expect("tempdir");
    match DaxGeometry::read(root.path(), "dax3.0", Some((252, 3))) {
        Err(RegionError::DaxSizeUnavailable { device, sysfs, .. }) => {
            assert_eq!(device, "dax3.0");
            assert!(
                sysfs.ends_with("bus/dax/devices/dax3.0"),
                "{}",
                sysfs.display()
            );
        }
        other => panic!("expected DaxSizeUnavailable, got {other:?}"),
    }
    fake_dax(root.path(), "dax0.0", None, Some("2097152"));
    let err = DaxGeometry::read(root.path(), "dax0.0", None).expect_err("no size");
    assert!(
        matches!(err, RegionError::DaxSizeUnavailable { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("dax0.0/size"), "{err}");

    fake_dax(root.path(), "dax1.0", Some("lots"), None);
    let err = DaxGeometry::read(root.path(), "dax1.0", None).expect_err("bad size");
    assert!(err.to_string().contains("not a number"), "{err}");

    fake_dax(root.path(), "dax2.0", Some("0"), None);
    assert!(matches!(
        DaxGeometry::read(root.path(), "dax2.0", None),
        Err(RegionError::DaxSizeUnavailable { .. })
    ));

    fake_dax(root.path(), "dax4.0", Some("8388608"), Some("3000"));
    let err = DaxGeometry::read(root.path(), "dax4.0", None).expect_err("bad align");
    assert!(err.to_string().contains("power of two"), "{err}");
}

#[test]
fn dax_geometry_found_by_device_number() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("dev/char/252:7");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("size"), "16777216").expect("size");
    std::fs::write(dir.join("align"), "2097152").expect("align");
    let g = DaxGeometry::read(root.path(), "cxl-region", Some((252, 7))).expect("geometry");
    assert_eq!(g.size, 16 << 20);
}

#[test]
fn dax_map_len_rounds_down_and_checks() {
    let g = DaxGeometry {
        device: "dax0.0".into(),
        size: 64 << 20,
        align: 2 << 20,
    };
    let p = Path::new("/dev/dax0.0");
    assert_eq!(g.map_len(p, 0, None).expect("whole"), 64 << 20);
    assert_eq!(g.map_len(p, 2 << 20, None).expect("from 2 MiB"), 62 << 20);
    assert_eq!(g.map_len(p, 0, Some(5 << 20)).expect("5 MiB"), 4 << 20);
    assert_eq!(g.map_len(p, 0, Some(64 << 20)).expect("all"), 64 << 20);
    assert!(matches!(
        g.map_len(p, 0, Some((64 << 20) + 1)),
        Err(RegionError::WrongSize { requested, available, .. })
            if requested == (64 << 20) + 1 && available == 64 << 20
    ));
    assert!(matches!(
        g.map_len(p, 2 << 20, Some(64 << 20)),
        Err(RegionError::WrongSize { .. })
    ));
    assert!(matches!(
        g.map_len(p, 4096, None),
        Err(RegionError::MisalignedOffset { offset: 4096, align, .. }) if align == 2 << 20
    ));
    assert!(matches!(
        g.map_len(p, 64 << 20, None),
        Err(RegionError::WrongSize { .. })
    ));
    assert!(matches!(
        g.map_len(p, u64::MAX - (2 << 20) + 1, None),
        Err(RegionError::WrongSize { .. })
    ));
    let err = g
        .map_len(p, 0, Some(4096))
        .expect_err("below the alignment");
    assert!(
        matches!(err, RegionError::DaxAlignment { size: 4096, align, .. } if align == 2 << 20),
        "{err:?}"
    );
}

#[test]
fn missing_dax_device_is_a_clear_not_found() {
    let opts = RegionOptions::default();
    for result in [
        Region::open(&spec("dax:/dev/dax9.9"), &opts),
        Region::create(&spec("/dev/dax9.9"), 1 << 21, &opts),
    ] {
        let err = result.expect_err("no such device");
        assert!(matches!(err, RegionError::NotFound { .. }), "{err:?}");
        let message = err.to_string();
        assert!(message.contains("/dev/dax9.9"), "{message}");
        assert!(message.contains("daxctl list"), "{message}");
    }
    assert!(!Path::new("/dev/dax9.9").exists(), "nothing was created");
}

#[test]
fn dax_in_system_ram_mode_says_how_to_fix_it() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = fake_dax(root.path(), "dax9.9", Some("8388608"), Some("2097152"));
    let driver = root.path().join("bus/dax/drivers/kmem");
    std::fs::create_dir_all(&driver).expect("mkdir");
    std::os::unix::fs::symlink(&driver, dir.join("driver")).expect("link");
    let err = Region::open_in(
        &spec("dax:/dev/dax9.9"),
        &RegionOptions::default(),
        root.path(),
    )
    .expect_err("system-ram");
    assert!(
        matches!(err, RegionError::DaxSystemRamMode { .. }),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("daxctl reconfigure-device --mode=devdax dax9.9"),
        "{err}"
    );
}

#[test]
fn dax_spec_on_a_non_device_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("not-a-device");
    std::fs::write(&path, [0u8; 4096]).expect("write");
    let err = Region::open(&RegionSpec::DevDax(path.clone()), &RegionOptions::default())
        .expect_err("regular file");
    assert!(matches!(err, RegionError::WrongFileType { .. }), "{err:?}");
    // /dev/null is a character device, but not a DAX one: its sysfs entry has no size.
    let err =
        Region::open(&spec("dax:/dev/null"), &RegionOptions::default()).expect_err("/dev/null");
    assert!(
        matches!(err, RegionError::DaxSizeUnavailable { .. }),
        "{err:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Huge page pool accounting against fake trees

fn fake_pool(root: &Path, counters: &[(&str, &str)]) {
    let dir = HugePagePool::directory(root, 2 << 20);
    std::fs::create_dir_all(&dir).expect("mkdir");
    for (name, value) in counters {
        std::fs::write(dir.join(name), value).expect("write");
    }
}

#[test]
fn reads_the_huge_page_pool() {
    let root = tempfile::tempdir().expect("tempdir");
    assert!(HugePagePool::directory(root.path(), 2 << 20).ends_with("hugepages-2048kB"));
    fake_pool(
        root.path(),
        &[("free_hugepages", "10\n"), ("resv_hugepages", "4\n")],
    );
    let pool = HugePagePool::read(root.path(), 2 << 20).expect("pool");
    assert_eq!(pool.available(), 6);
    pool.check("x", 6).expect("six fit");
    match pool.check("hugetlbfs:/mnt/huge/x", 7) {
        Err(RegionError::HugePagesUnavailable {
            what,
            needed,
            free,
            page_size,
        }) => {
            assert_eq!((needed, free, page_size), (7, 6, 2 << 20));
            assert_eq!(what, "hugetlbfs:/mnt/huge/x");
        }
        other => panic!("expected HugePagesUnavailable, got {other:?}"),
    }
    let message = pool.check("x", 7).expect_err("short").to_string();
    assert!(
        message.contains("hugepages-2048kB/nr_hugepages"),
        "{message}"
    );

    fake_pool(
        root.path(),
        &[("nr_overcommit_hugepages", "5"), ("surplus_hugepages", "2")],
    );
    let pool = HugePagePool::read(root.path(), 2 << 20).expect("pool");
    assert_eq!(pool.available(), 9);
}

#[test]
fn unreadable_pool_defers_to_the_kernel() {
    let root = tempfile::tempdir().expect("tempdir");
    assert!(HugePagePool::read(root.path(), 2 << 20).is_err());
    hugepages::ensure_available(root.path(), "x", 2 << 20, 1_000_000).expect("deferred");
    fake_pool(
        root.path(),
        &[("free_hugepages", "x"), ("resv_hugepages", "0")],
    );
    assert!(HugePagePool::read(root.path(), 2 << 20).is_err());
    fake_pool(
        root.path(),
        &[("free_hugepages", "1"), ("resv_hugepages", "0")],
    );
    assert!(hugepages::ensure_available(root.path(), "x", 2 << 20, 2).is_err());
    hugepages::ensure_available(root.path(), "x", 2 << 20, 0).expect("nothing needed");
}

// ---------------------------------------------------------------------------------------------
// File regions

#[test]
fn file_create_then_open_shares_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("region");
    let s = RegionSpec::File(path.clone());
    let created = Region::create(&s, 10_000, &RegionOptions::default()).expect("create");
    assert_eq!(created.len(), 10_000);
    assert!(!created.is_empty());
    assert_eq!(created.kind(), BackendKind::File);
    assert_eq!(created.path(), Some(path.as_path()));
    assert_eq!(created.spec(), &s);
    assert_eq!(created.page_size(), system_page_size());
    assert_eq!(created.as_ptr() as usize % created.page_size(), 0);
    write_bytes(&created, 9_990, b"0123456789");

    let opened = Region::open(&s, &RegionOptions::default()).expect("open");
    assert_eq!(opened.len(), 10_000);
    assert_ne!(opened.as_ptr(), created.as_ptr());
    assert_eq!(read_bytes(&opened, 9_990, 10), b"0123456789");
    write_bytes(&opened, 0, b"back");
    assert_eq!(read_bytes(&created, 0, 4), b"back");
    assert!(format!("{created:?}").contains("File"));
}

#[test]
fn file_mode_is_exact_and_private_by_default() {
    let dir = tempfile::tempdir().expect("tempdir");
    let private = dir.path().join("private");
    Region::create(
        &RegionSpec::File(private.clone()),
        4096,
        &RegionOptions::default(),
    )
    .expect("create");
    let mode = std::fs::metadata(&private)
        .expect("stat")
        .permissions()
        .mode()
        & 0o7777;
    assert_eq!(mode, 0o600);

    let shared = dir.path().join("group");
    let opts = RegionOptions {
        mode: 0o660,
        ..RegionOptions::default()
    };
    Region::create(&RegionSpec::File(shared.clone()), 4096, &opts).expect("create");
    let mode = std::fs::metadata(&shared)
        .expect("stat")
        .permissions()
        .mode()
        & 0o7777;
    assert_eq!(mode, 0o660, "the umask does not narrow the requested mode");
}

#[test]
fn file_create_reuses_and_resizes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("region");
    let s = RegionSpec::File(path.clone());
    let opts = RegionOptions::default();
    let first = Region::create(&s, 8192, &opts).expect("create");
    write_bytes(&first, 0, b"kept");
    drop(first);
    let second = Region::create(&s, 16384, &opts).expect("reuse");
    assert_eq!(second.len(), 16384);
    assert_eq!(read_bytes(&second, 0, 4), b"kept");
    assert_eq!(std::fs::metadata(&path).expect("stat").len(), 16384);

    let err = Region::create_new(&s, 4096, &opts).expect_err("exists");
    assert!(matches!(err, RegionError::AlreadyExists { .. }), "{err:?}");
    assert!(err.to_string().contains(path.to_str().expect("utf-8")));
    assert_eq!(
        std::fs::metadata(&path).expect("stat").len(),
        16384,
        "untouched"
    );
}

#[test]
fn file_offset_maps_from_the_offset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("region");
    let s = RegionSpec::File(path.clone());
    let page = system_page_size();
    let at_page = RegionOptions {
        offset: page as u64,
        ..RegionOptions::default()
    };
    let region = Region::create(&s, 8192, &at_page).expect("create");
    assert_eq!(region.len(), 8192);
    assert_eq!(region.offset(), page as u64);
    assert_eq!(
        std::fs::metadata(&path).expect("stat").len(),
        page as u64 + 8192
    );
    write_bytes(&region, 0, b"at offset");
    let whole = Region::open(&s, &RegionOptions::default()).expect("open");
    assert_eq!(read_bytes(&whole, page, 9), b"at offset");

    let odd = RegionOptions {
        offset: 100,
        ..RegionOptions::default()
    };
    let err = Region::open(&s, &odd).expect_err("misaligned");
    assert!(
        matches!(err, RegionError::MisalignedOffset { offset: 100, .. }),
        "{err:?}"
    );
    let past = RegionOptions {
        offset: 1 << 30,
        ..RegionOptions::default()
    };
    let err = Region::open(&s, &past).expect_err("past the end");
    assert!(matches!(err, RegionError::WrongSize { .. }), "{err:?}");
}

#[test]
fn missing_paths_are_not_found_with_the_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("no-such-region");
    let err = Region::open(
        &RegionSpec::File(missing.clone()),
        &RegionOptions::default(),
    )
    .expect_err("missing");
    assert!(matches!(err, RegionError::NotFound { .. }), "{err:?}");
    assert!(
        err.to_string().contains(missing.to_str().expect("utf-8")),
        "{err}"
    );

    let in_missing_dir = dir.path().join("no-such-dir/region");
    let err = Region::create(
        &RegionSpec::File(in_missing_dir.clone()),
        4096,
        &RegionOptions::default(),
    )
    .expect_err("missing directory");
    assert!(matches!(err, RegionError::NotFound { .. }), "{err:?}");
    assert!(err.to_string().contains("no-such-dir"), "{err}");
}

#[test]
fn empty_and_odd_files_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let empty = dir.path().join("empty");
    std::fs::write(&empty, b"").expect("write");
    let err = Region::open(&RegionSpec::File(empty), &RegionOptions::default()).expect_err("empty");
    assert!(matches!(err, RegionError::WrongSize { .. }), "{err:?}");

    let fresh = dir.path().join("fresh");
    let err = Region::create(
        &RegionSpec::File(fresh.clone()),
        0,
        &RegionOptions::default(),
    )
    .expect_err("size 0");
    assert!(
        matches!(err, RegionError::WrongSize { requested: 0, .. }),
        "{err:?}"
    );
    assert!(!fresh.exists(), "a failed create leaves no file behind");

    let err = Region::open(
        &RegionSpec::File(dir.path().to_path_buf()),
        &RegionOptions::default(),
    )
    .expect_err("directory");
    assert!(matches!(err, RegionError::WrongFileType { .. }), "{err:?}");
    let err = Region::create(
        &RegionSpec::File(dir.path().to_path_buf()),
        4096,
        &RegionOptions::default(),
    )
    .expect_err("directory");
    assert!(matches!(err, RegionError::WrongFileType { .. }), "{err:?}");

    let err = Region::create(
        &RegionSpec::HugeTlbFs(dir.path().join("not-huge")),
        4096,
        &RegionOptions::default(),
    )
    .expect_err("not hugetlbfs");
    assert!(matches!(err, RegionError::WrongFileType { .. }), "{err:?}");
    assert!(err.to_string().contains("hugetlbfs"), "{err}");
}

#[test]
fn mapping_a_read_only_descriptor_is_permission_denied() {
    // Tests run as root, which bypasses file modes on open; a descriptor opened read-only cannot
    // be mapped shared and writable by anyone, so the mmap path is what is checked here.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("read-only");
    std::fs::write(&path, [0u8; 4096]).expect("write");
    let read_only = std::fs::File::open(&path).expect("open");
    let fd = read_only.as_raw_fd();
    let err = Region::open(&RegionSpec::Fd(fd), &RegionOptions::default())
        .expect_err("read-only descriptor");
    assert!(
        matches!(err, RegionError::PermissionDenied { op: "mapping", .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains(&format!("fd:{fd}")), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Memfds and descriptors

#[test]
fn memfd_create_and_reopen_by_descriptor() {
    let s = spec("memfd:gismo-unit");
    let region = Region::create(&s, 1 << 20, &RegionOptions::default()).expect("memfd");
    assert_eq!(region.kind(), BackendKind::Memfd);
    assert_eq!(region.len(), 1 << 20);
    assert_eq!(region.path(), None);
    write_bytes(&region, 12345, b"memfd");

    let fd = region.raw_fd().expect("fd");
    let again = Region::open(&RegionSpec::Fd(fd), &RegionOptions::default()).expect("fd:N");
    assert_eq!(again.kind(), BackendKind::Memfd);
    assert_eq!(again.len(), 1 << 20);
    assert_eq!(again.spec(), &RegionSpec::Fd(fd));
    assert_ne!(again.raw_fd(), Some(fd), "the region owns a duplicate");
    assert_eq!(read_bytes(&again, 12345, 5), b"memfd");
    drop(again);
    // The original descriptor is still usable after the duplicate's region is gone.
    let third = Region::open(&RegionSpec::Fd(fd), &RegionOptions::default()).expect("fd again");
    assert_eq!(read_bytes(&third, 12345, 5), b"memfd");

    let err = Region::open(&s, &RegionOptions::default()).expect_err("memfd has no name");
    assert!(matches!(err, RegionError::InvalidSpec { .. }), "{err:?}");
}

#[test]
fn create_on_a_descriptor_resizes_it() {
    let region =
        Region::create(&spec("memfd:resize"), 4096, &RegionOptions::default()).expect("memfd");
    let fd = region.raw_fd().expect("fd");
    let bigger =
        Region::create(&RegionSpec::Fd(fd), 65536, &RegionOptions::default()).expect("resize");
    assert_eq!(bigger.len(), 65536);
    assert_eq!(bigger.kind(), BackendKind::Memfd);
}

#[test]
fn bad_descriptors_and_names_are_typed_errors() {
    let err =
        Region::open(&RegionSpec::Fd(1_000_000), &RegionOptions::default()).expect_err("not open");
    assert!(
        matches!(err, RegionError::BadDescriptor { fd: 1_000_000 }),
        "{err:?}"
    );

    let nul = RegionSpec::Memfd {
        name: "a\0b".into(),
        huge_pages: false,
    };
    let err = Region::create(&nul, 4096, &RegionOptions::default()).expect_err("NUL");
    assert!(matches!(err, RegionError::InvalidSpec { .. }), "{err:?}");

    let long = RegionSpec::Memfd {
        name: "x".repeat(300),
        huge_pages: false,
    };
    let err = Region::create(&long, 4096, &RegionOptions::default()).expect_err("too long");
    assert!(matches!(err, RegionError::InvalidSpec { .. }), "{err:?}");

    // A descriptor that is neither a file nor a device.
    let (socket, _peer) = std::os::unix::net::UnixStream::pair().expect("socketpair");
    let err = Region::open(
        &RegionSpec::Fd(socket.as_raw_fd()),
        &RegionOptions::default(),
    )
    .expect_err("a socket");
    assert!(matches!(err, RegionError::WrongFileType { .. }), "{err:?}");
}

fn fd_flags(fd: i32) -> u32 {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).expect("fdinfo");
    let flags = info
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .expect("flags line");
    u32::from_str_radix(flags.trim(), 8).expect("octal flags")
}

#[test]
fn inheritable_fd_clears_cloexec() {
    let region =
        Region::create(&spec("memfd:inherit"), 4096, &RegionOptions::default()).expect("memfd");
    let own = region.raw_fd().expect("fd");
    assert_ne!(
        fd_flags(own) & libc::O_CLOEXEC as u32,
        0,
        "the region's own fd is CLOEXEC"
    );
    let inheritable = region.inheritable_owned_fd().expect("dup");
    assert_eq!(
        fd_flags(inheritable.as_raw_fd()) & libc::O_CLOEXEC as u32,
        0
    );
    let child_view = Region::open(
        &RegionSpec::Fd(inheritable.as_raw_fd()),
        &RegionOptions::default(),
    )
    .expect("open the inheritable fd");
    write_bytes(&child_view, 0, b"x");
    assert_eq!(read_bytes(&region, 0, 1), b"x");

    let raw = region.inheritable_fd().expect("raw dup");
    assert_eq!(fd_flags(raw) & libc::O_CLOEXEC as u32, 0);
    // SAFETY: `raw` was just returned to us as an owned descriptor; we close it exactly once.
    drop(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) });
}

// ---------------------------------------------------------------------------------------------
// Bounds

#[test]
fn region_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Region>();
    assert_send_sync::<RegionError>();
}

#[test]
fn range_ptr_checks_bounds_alignment_and_overflow() {
    let region =
        Region::create(&spec("memfd:bounds"), 8192, &RegionOptions::default()).expect("memfd");
    let base = region.as_ptr() as usize;
    let ptr = region.range_ptr(64, 128, 64).expect("inside");
    assert_eq!(ptr.as_ptr() as usize, base + 64);
    region.range_ptr(8192 - 8, 8, 8).expect("touches the end");
    region
        .range_ptr(8192, 0, 1)
        .expect("empty range at the end");
    region.range_ptr(0, 8192, 4096).expect("everything");

    let oob = |offset: usize, len: usize, align: usize| match region.range_ptr(offset, len, align) {
        Err(RegionError::OutOfBounds {
            offset: o,
            len: l,
            align: a,
            region_len,
        }) => assert_eq!((o, l, a, region_len), (offset, len, align, 8192)),
        other => panic!("{offset}+{len} align {align}: expected OutOfBounds, got {other:?}"),
    };
    oob(8192 - 7, 8, 1); // past the end
    oob(8193, 0, 1); // starts past the end
    oob(usize::MAX, 2, 1); // offset + len overflows
    oob(1, usize::MAX, 1); // len overflows
    oob(4, 8, 8); // misaligned offset
    oob(0, 8, 0); // zero alignment
    oob(4096, 8, 1 << 40); // address not aligned to a huge alignment
    let message = region
        .range_ptr(8190, 8, 1)
        .expect_err("past end")
        .to_string();
    assert!(message.contains("8190+8"), "{message}");
}

// ---------------------------------------------------------------------------------------------
// Prefaulting

/// Resident kilobytes of the mapping starting at `base`, from `/proc/self/smaps`.
fn resident_kib(base: *mut u8) -> u64 {
    let smaps = std::fs::read_to_string("/proc/self/smaps").expect("smaps");
    let header = format!("{:x}-", base as usize);
    let mut lines = smaps.lines().skip_while(|l| !l.starts_with(&header));
    lines.next().expect("mapping in smaps");
    // The entry's first Rss line (it comes a few lines after the header).
    lines
        .find_map(|l| l.strip_prefix("Rss:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("Rss line")
}

#[test]
fn prefault_populates_every_page() {
    let size = 8 << 20;
    let region =
        Region::create(&spec("memfd:prefault"), size, &RegionOptions::default()).expect("memfd");
    assert_eq!(
        resident_kib(region.as_ptr()),
        0,
        "fresh mapping has no pages"
    );
    region.prefault().expect("prefault");
    assert_eq!(resident_kib(region.as_ptr()), size / 1024);

    let opts = RegionOptions {
        prefault: true,
        ..RegionOptions::default()
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let file = Region::create(&RegionSpec::File(dir.path().join("r")), size, &opts)
        .expect("file with prefault");
    assert_eq!(resident_kib(file.as_ptr()), size / 1024);
    let reopened = Region::open(&RegionSpec::File(dir.path().join("r")), &opts).expect("open");
    assert_eq!(resident_kib(reopened.as_ptr()), size / 1024);
}

#[test]
fn touching_pages_preserves_contents() {
    let size = 1 << 20;
    let region = Region::create(&spec("memfd:touch"), size as u64, &RegionOptions::default())
        .expect("memfd");
    let pattern: Vec<u8> = (0..size).map(|i| (i * 7 + 3) as u8).collect();
    write_bytes(&region, 0, &pattern);
    // Drop the pages from this mapping so the touch has to fault them in again.
    // (The memfd keeps the data; only this process's page table entries go.)
    let fresh = Region::open(
        &RegionSpec::Fd(region.raw_fd().expect("fd")),
        &RegionOptions::default(),
    )
    .expect("second mapping");
    assert_eq!(resident_kib(fresh.as_ptr()), 0);
    fresh.map.touch_pages(fresh.page_size());
    assert_eq!(resident_kib(fresh.as_ptr()), (size / 1024) as u64);
    assert_eq!(read_bytes(&fresh, 0, size), pattern);
}
