//! `gismoctl` as processes of different emulated non-coherent hosts (`GISMO_EMULATED_HOST`),
//! with no code of its own for it: each process maps its host's view of the region.

mod support;

use std::process::Command;

#[allow(unused_imports)]
use support::*;

/// `f`'s command run as a process of emulated host `host` (no spontaneous events).
fn on(f: &Fixture, host: &str, args: &[&str]) -> Output {
    let mut c: Command = f.command(args);
    c.env("GISMO_EMULATED_HOST", host)
        .env("GISMO_EMULATION_DIR", f.dir.path().join("emu"))
        .env("GISMO_EMULATION_RATE", "0");
    finish(c.spawn().expect("spawn gismoctl"), None)
}

/// v1 on two emulated hosts: a host reads its own objects (its processes share its cache), and
/// another host does not find them (the directory never left host a's cache) — the v1 protocol
/// is not correct on non-coherent memory, and the emulator shows it through the real CLI.
#[test]
fn processes_join_emulated_hosts_from_their_environment() {
    let f = Fixture::new();
    f.run(&["format", "--size", "16MiB", "--coherence", "flush"])
        .assert_ok();
    let data = payload(100_000, 7);
    let file = f.write_file("in", &data);
    on(&f, "host-a", &["put", &id(1), path_str(&file)]).assert_ok();
    assert_eq!(on(&f, "host-a", &["get", &id(1)]).assert_ok().stdout, data);
    on(&f, "host-b", &["get", &id(1)]).assert_one_line_failure(3);
    // The device itself never got the directory entry either.
    f.run(&["get", &id(1)]).assert_one_line_failure(3);
    assert!(f.dir.path().join("emu/host-a.view").exists());
    assert!(f.dir.path().join("emu/host-b.view").exists());
}

/// An emulated host is memory without coherence: a region formatted for Hardware coherence is
/// refused with a message naming the host and the fix; a half-named host is an error too.
#[test]
fn an_emulated_host_refuses_a_hardware_region_and_a_half_named_host() {
    let f = Fixture::formatted();
    let out = on(&f, "host-a", &["stat"]);
    assert_ne!(out.code, 0);
    out.assert_one_line_failure(out.code);
    assert!(
        out.stderr.contains("host-a") && out.stderr.contains("flush"),
        "{}",
        out.stderr
    );
    let mut c = f.command(&["stat"]);
    c.env("GISMO_EMULATED_HOST", "host-a");
    let out = finish(c.spawn().expect("spawn gismoctl"), None);
    assert_ne!(out.code, 0);
    out.assert_one_line_failure(out.code);
    assert!(out.stderr.contains("GISMO_EMULATION_DIR"), "{}", out.stderr);
}
