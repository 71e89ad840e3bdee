//! Formatting is atomic to observers (issue 15 §3, core review M9): processes that open one fresh
//! region at the same moment through the plugin configuration (`open_store`) agree on one store:
//! exactly one formats it, the others wait until it is ready, and nobody reformats it under the
//! others' objects. Real processes (this test binary re-executed), released together.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;

use gismo::interface::GismoClient;
use gismo::region::{Region, RegionOptions, RegionSpec};
use gismo::store::{CreateInfo, ObjectId, Store};

const ROLE: &str = "GISMO_FORMAT_RACE_CHILD";

/// Child: waits for the go byte on stdin, opens the store (creating and formatting the region
/// if needed), creates one object, prints `UUID <uuid>`, and exits.
#[test]
fn child() {
    let Ok(n) = std::env::var(ROLE) else {
        return; // run as an ordinary test: nothing to do
    };
    let n: u64 = n.parse().expect("child number");
    let path = std::env::var("GISMO_FORMAT_RACE_PATH").expect("path");
    let mut go = [0u8; 1];
    std::io::stdin().read_exact(&mut go).expect("go");
    let params: BTreeMap<String, String> = [
        ("region".to_string(), format!("file:{path}")),
        ("size".to_string(), "64MiB".to_string()),
    ]
    .into();
    let client = GismoClient::from_config(&params).expect("open_store");
    let store = Arc::clone(client.store());
    let c = store.connect("racer").expect("connect");
    c.create(&ObjectId::from_u64(n + 1), 100, b"", &CreateInfo::default())
        .expect("create")
        .seal()
        .expect("seal");
    println!("UUID {}", store.superblock().uuid_string());
}

#[test]
fn processes_opening_a_fresh_region_together_format_it_once() {
    if std::env::var(ROLE).is_ok() {
        return;
    }
    const CHILDREN: u64 = 6;
    for round in 0..4 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(format!("race-{round}"));
        let mut children: Vec<_> = (0..CHILDREN)
            .map(|n| {
                Command::new(std::env::current_exe().unwrap())
                    .args(["--exact", "child", "--nocapture", "--test-threads=1"])
                    .env(ROLE, n.to_string())
                    .env("GISMO_FORMAT_RACE_PATH", &path)
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        // Release them all at once.
        for c in &mut children {
            c.stdin.take().unwrap().write_all(b"g").unwrap();
        }
        let mut uuids = Vec::new();
        for mut c in children {
            let mut out = String::new();
            c.stdout.take().unwrap().read_to_string(&mut out).unwrap();
            let uuid = out
                .lines()
                .find_map(|l| l.split_once("UUID ").map(|(_, u)| u.trim().to_string()));
            let status = c.wait().unwrap();
            assert!(status.success(), "round {round}: a child failed: {status}");
            uuids.push(uuid.expect("child printed its uuid"));
        }
        assert!(
            uuids.windows(2).all(|w| w[0] == w[1]),
            "round {round}: the region was formatted more than once: {uuids:?}"
        );
        // Nobody's object was wiped by a second format.
        let region = Region::open(&RegionSpec::File(path), &RegionOptions::default()).unwrap();
        let store = Store::attach(region).unwrap();
        for n in 0..CHILDREN {
            assert!(
                store.lookup_summary(&ObjectId::from_u64(n + 1)).is_some(),
                "round {round}: child {n}'s object is gone"
            );
        }
        assert_eq!(store.superblock().uuid_string(), uuids[0]);
    }
}
