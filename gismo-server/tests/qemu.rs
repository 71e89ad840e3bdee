// Two QEMU guests share one host file as an NVDIMM (`/dev/dax0.0`) and run GISMO on it: A formats
// the region and puts objects, B (its own gismo-server, its own kernel) reads them and puts its
// own, a client is killed mid-put, and the host then reads every object from the same file.
// `tools/qemu/run.sh` does all of it (see docs/qemu.md); this test runs it under a watchdog and
// fails, loudly, when it fails — including when QEMU cannot run at all.
//
// It needs release builds of gismoctl and gismo-server next to this test binary's profile
// directory (or in `GISMO_QEMU_BIN_DIR`):
//
//   cargo build --release -p gismoctl -p gismo-server
//   cargo test --release -p gismo-server --test qemu -- --ignored --nocapture
//
// Ignored by default: it boots two guests under TCG (half a minute to a minute on two cores) and
// installs Debian packages (qemu-system-x86, busybox-static, ndctl, daxctl, cpio, kmod) when they
// are missing; `tools/test.sh` runs it as its own step.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// The whole scenario, guest builds included, must end within this; then it is killed.
const WATCHDOG: Duration = Duration::from_secs(600);

/// Where gismoctl and gismo-server are: `GISMO_QEMU_BIN_DIR`, or the profile directory this test
/// binary was built into (`target/release` for `target/release/deps/qemu-*`).
fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("GISMO_QEMU_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("the test binary's own path");
    exe.parent()
        .and_then(Path::parent)
        .expect("the test binary lives in <target>/<profile>/deps")
        .to_path_buf()
}

#[test]
#[ignore = "boots two QEMU guests (tens of seconds, installs packages); run by tools/test.sh"]
fn two_guests_share_a_devdax_region() {
    let bins = bin_dir();
    for name in ["gismoctl", "gismo-server"] {
        assert!(
            bins.join(name).is_file(),
            "{} not found: build it first (cargo build --release -p gismoctl -p gismo-server) \
             or point GISMO_QEMU_BIN_DIR at the directory holding it",
            bins.join(name).display()
        );
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let script = root.join("tools/qemu/run.sh");
    // `timeout` sends SIGTERM first: run.sh traps it and kills its QEMUs; our own deadline below
    // is the second line of defence.
    let mut child = Command::new("timeout")
        .arg("--kill-after=20")
        .arg(WATCHDOG.as_secs().to_string())
        .arg("bash")
        .arg(&script)
        .arg("--bin-dir")
        .arg(&bins)
        .stdin(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", script.display()));
    let start = Instant::now();
    let status = loop {
        match child.try_wait().expect("waiting for run.sh") {
            Some(status) => break status,
            None if start.elapsed() > WATCHDOG + Duration::from_secs(60) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("tools/qemu/run.sh still running after {WATCHDOG:?}: killed");
            }
            None => thread::sleep(Duration::from_millis(200)),
        }
    };
    println!("tools/qemu/run.sh: {status} after {:.1?}", start.elapsed());
    assert!(
        status.success(),
        "tools/qemu/run.sh failed ({status}; 124 = watchdog): QEMU could not run the two-guest \
         scenario. The guests' serial logs are in tools/qemu/build/logs/"
    );
}
