//! `gismo-server` as an operator runs it: a real process on a file region in a temporary
//! directory, used through `gismoctl`, stopped with SIGTERM.
//!
//! `gismoctl` is the workspace's sibling binary, next to `gismo-server` in the target directory;
//! `cargo test --workspace` (what `tools/test.sh` runs) builds it. Every wait has a watchdog;
//! no test asserts how fast anything is.

mod support;

use std::process::{Command, Stdio};

use support::{ctl, Server, SERVER};

#[test]
fn serves_a_region_until_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let region = format!("file:{}", dir.path().join("region").display());
    let mut server = Server::start(&[
        "--region",
        &region,
        "--size",
        "64MiB",
        "--format",
        "--log-level",
        "debug",
        "--stats-interval-ms",
        "100",
    ]);
    let ready = server.wait_for("ready");
    // Timestamped, levelled lines.
    assert!(ready.contains(" INFO "), "{ready}");
    assert!(
        ready.as_bytes()[4] == b'-' && ready.contains('T'),
        "{ready}"
    );

    let id = "ab".repeat(28);
    let put = ctl(&region, &["put", &id, "-"], b"hello from a test");
    assert!(put.status.success(), "{put:?}");
    let get = ctl(&region, &["get", &id], b"");
    assert!(get.status.success(), "{get:?}");
    assert_eq!(get.stdout, b"hello from a test");
    let stat = ctl(&region, &["stat", "--json"], b"");
    assert!(stat.status.success(), "{stat:?}");
    let stats = String::from_utf8_lossy(&stat.stdout).to_string();
    assert!(stats.contains("\"sealed\": 1"), "{stats}");
    // The periodic statistics (debug level) see the object.
    server.wait_for("sealed 1");

    server.signal(libc::SIGTERM);
    server.wait_for("stopping");
    let (code, stdout) = server.wait();
    assert_eq!(code, 0);
    assert!(
        stdout.contains(&format!("export GISMO_REGION={region}")),
        "{stdout}"
    );

    // A restart attaches to the same store: the object is still there.
    let mut again = Server::start(&["--region", &region]);
    again.wait_for("attached to the existing store");
    again.wait_for("ready");
    let get = ctl(&region, &["get", &id], b"");
    assert_eq!(get.stdout, b"hello from a test");
    again.signal(libc::SIGINT);
    assert_eq!(again.wait().0, 0);
}

#[test]
fn formats_with_the_table_sizes_asked_for() {
    let dir = tempfile::tempdir().expect("tempdir");
    let region = format!("file:{}", dir.path().join("region").display());
    let mut server = Server::start(&[
        "--region",
        &region,
        "--size",
        "64MiB",
        "--format",
        "--max-clients",
        "1024",
        "--refs-per-client",
        "512",
        "--dir-capacity",
        "4096",
    ]);
    server.wait_for("ready");
    let stat = ctl(&region, &["stat", "--json"], b"");
    assert!(stat.status.success(), "{stat:?}");
    let stats = String::from_utf8_lossy(&stat.stdout).to_string();
    assert!(stats.contains("\"max\": 1024"), "{stats}");
    assert!(stats.contains("\"refs_per_client\": 512"), "{stats}");
    assert!(stats.contains("\"dir_capacity\": 4096"), "{stats}");
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait().0, 0);
}

#[test]
fn refuses_an_unformatted_region_without_format() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("region");
    let region = format!("file:{}", path.display());
    let mut missing = Server::start(&["--region", &region]);
    missing.wait_for("ERROR");
    assert_eq!(missing.wait().0, 6);

    std::fs::File::create(&path)
        .and_then(|f| f.set_len(16 << 20))
        .expect("zero file");
    let mut zero = Server::start(&["--region", &region]);
    let line = zero.wait_for("ERROR");
    assert!(line.contains("--format"), "{line}");
    assert_eq!(zero.wait().0, 6);

    // --format formats it at its current size.
    let mut ok = Server::start(&["--region", &region, "--format"]);
    ok.wait_for("ready");
    ok.signal(libc::SIGTERM);
    assert_eq!(ok.wait().0, 0);
}

#[test]
fn rejects_bad_options() {
    for args in [
        &["--region", "daxx:/x"][..],
        &["--low-watermark", "0.9", "--high-watermark", "0.5"],
        &["--lease-ms", "0"],
        &["--force"],
        &["--log-level", "loud"],
    ] {
        let out = Command::new(SERVER)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run gismo-server");
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
    }
}
