//! Helpers shared by the store-core integration tests.

#![allow(dead_code)] // each test binary uses its own subset

use std::sync::Arc;

use gismo_core::store::Store;
use gismo_platform::region::{Region, RegionOptions, RegionSpec};

/// A freshly formatted store on an anonymous memfd of `size` bytes.
pub fn memfd_store(name: &str, size: u64) -> Arc<Store> {
    Store::format(memfd_region(name, size), &Default::default()).unwrap()
}

/// As [`memfd_store`], with a descriptor of the region a child process inherits (for
/// [`attach_inherited`] there, through `GISMO_TEST_FD`).
pub fn memfd_store_for_children(name: &str, size: u64) -> (i32, Arc<Store>) {
    let region = memfd_region(name, size);
    let fd = region.inheritable_fd().unwrap();
    (fd, Store::format(region, &Default::default()).unwrap())
}

/// An anonymous memfd region of `size` bytes (unformatted).
pub fn memfd_region(name: &str, size: u64) -> Region {
    Region::create(
        &RegionSpec::Memfd {
            name: name.into(),
            huge_pages: false,
        },
        size,
        &RegionOptions::default(),
    )
    .unwrap()
}

/// Attaches the region a parent test passed down as descriptor `GISMO_TEST_FD`.
pub fn attach_inherited() -> Arc<Store> {
    let fd: i32 = std::env::var("GISMO_TEST_FD").unwrap().parse().unwrap();
    Store::attach(Region::open(&RegionSpec::Fd(fd), &RegionOptions::default()).unwrap()).unwrap()
}

/// Waits until `child` is stopped (it reached a crash point armed with
/// `GISMO_CRASHPOINT_ACTION=stop`); fails if it exits first.
pub fn wait_stopped(child: &mut std::process::Child) {
    let pid = child.id();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("child {pid} exited before stopping: {status}");
        }
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().next());
        if matches!(state, Some("T" | "t")) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}
