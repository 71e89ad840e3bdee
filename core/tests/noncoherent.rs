// Negative controls of the non-coherent emulator (`gismo_platform::emulation`, issue 16): the
// v1 protocol, run by two emulated hosts of the whole region, must be *caught*. v1 keeps the
// directory, the allocator and the client table as words any host updates with atomics, which
// is correct only where those atomics are coherent across hosts; on the emulator, as on shared
// CXL memory without back-invalidation, each host's updates stay in its own cache (its view)
// until a line is written back, and a write-back carries the whole line, stale words included.
// An emulator that let v1 pass would prove nothing about a protocol meant for such memory.
//
// The children are the multi-host suite's scripted processes (`support/multihost/`), each
// joining its emulated host from the environment (`GISMO_EMULATED_HOST`, `GISMO_EMULATION_DIR`)
// with no code of its own for it; the parent maps the device itself and observes what reached
// memory.

#[path = "support/multihost/harness.rs"]
#[allow(dead_code)] // shared with multihost.rs, which uses all of it
mod harness;
#[path = "support/multihost/payload.rs"]
#[allow(dead_code)] // shared with multihost.rs, which uses all of it
mod payload;
#[macro_use]
#[path = "support/multihost/child.rs"]
#[allow(dead_code)] // shared with multihost.rs, which uses all of it
mod child;
#[path = "support/multihost/script.rs"]
#[allow(dead_code)] // shared with multihost.rs, which uses all of it
mod script;
#[path = "support/multihost/workloads.rs"]
#[allow(dead_code)] // shared with multihost.rs, which uses all of it
mod workloads;

use std::collections::HashMap;
use std::time::Duration;

use gismo_core::format::FormatOptions;
use gismo_core::store::ObjectId;

use harness::{ChildProc, Fixture, ROLE_ENV};
use payload::Header;

/// The child half of every test: a no-op unless this binary was started as a child.
#[test]
fn child_process() {
    if let Ok(role) = std::env::var(ROLE_ENV) {
        child::run(&role);
    }
}

fn quit(mut c: ChildProc) {
    c.call("quit", "bye");
    c.finish();
}

/// Without spontaneous events (rate 0) the outcome is determined: neither host's metadata ever
/// leaves its cache. Host b's allocator hands out the block host a's object occupies (both start
/// from the same snapshot of the device), b never finds a's object, and the device shows neither
/// — each a failure a correct cross-host protocol must not have.
#[test]
fn v1_on_two_emulated_hosts_is_caught_without_spontaneous_events() {
    let mut fx = Fixture::noncoherent("v1-still", 16 << 20, &FormatOptions::default(), 0);
    let mut a = fx.spawn("script", "host-a", &[]);
    let mut b = fx.spawn("script", "host-b", &[]);
    let on_a = a.call("create 1 4096", "created");
    let on_b = b.call("create 2 4096", "created");
    assert_eq!(
        on_a.num("offset"),
        on_b.num("offset"),
        "caught: two hosts' objects in one block (a lost allocator update)"
    );
    b.send("get 1 200 0");
    b.expect("getting");
    let got = b.next_report();
    assert_ne!(
        got.kind, "got",
        "caught: host b never finds host a's sealed object ({})",
        got.line
    );
    let observer = fx.store.connect("observer").expect("connect");
    for n in [1, 2] {
        assert!(
            !observer.contains(&ObjectId::from_u64(n)).expect("contains"),
            "caught: object {n} never reached the device's directory"
        );
    }
    drop(observer);
    quit(a);
    quit(b);
}

/// With spontaneous write-backs and refreshes the hosts' caches do leak into each other, at
/// moments nobody chose: lines written back whole carry stale words over the other host's
/// updates. After both hosts created their objects, the device must hold every one of them with
/// its own bytes; under v1 some are missing or read another object's bytes.
#[test]
fn v1_on_two_emulated_hosts_is_caught_with_spontaneous_events() {
    // 4096 pages; 40000 pages a second: each page sampled about ten times a second per process.
    let mut fx = Fixture::noncoherent("v1-spont", 16 << 20, &FormatOptions::default(), 40_000);
    let mut a = fx.spawn("script", "host-a", &[]);
    let mut b = fx.spawn("script", "host-b", &[]);
    let size = 64 << 10;
    let mut created = HashMap::new();
    for i in 0..20u64 {
        for (c, n) in [(&mut a, 100 + i), (&mut b, 200 + i)] {
            let r = c.call_any(&format!("create {n} {size}"));
            if r.kind == "created" {
                created.insert(n, r.num("offset"));
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Let the sweepers move lines for a while.
    std::thread::sleep(Duration::from_millis(500));
    let observer = fx.store.connect("observer").expect("connect");
    let mut intact = 0;
    for &n in created.keys() {
        let id = ObjectId::from_u64(n);
        if let Ok(Some(obj)) = observer.get(&id, Some(Duration::ZERO)) {
            let header = Header::new(&id, size, payload::deterministic_seed(&id, size));
            if obj.metadata() == &header.encode()[..]
                && payload::checksum(obj.data()) == header.checksum
            {
                intact += 1;
            }
        }
    }
    drop(observer);
    println!(
        "v1 on 2 emulated hosts: {} of 40 creates reported success, {intact} intact on the device",
        created.len()
    );
    assert!(
        intact < 40,
        "the emulator caught nothing: all 40 objects of two v1 hosts reached the device intact"
    );
    quit(a);
    quit(b);
}
