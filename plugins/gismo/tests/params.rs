//! The GISMO plugin's parameters: bad values of the config (`open_store`) and of the runner's
//! `start` are `Invalid` errors naming the key and the value.

use std::collections::BTreeMap;
use std::sync::Arc;

use gismo::{open_store, GismoRunner};
use gismo_core::store::Store;
use gismo_platform::region::{Region, RegionOptions, RegionSpec};
use gismo_plugin::interface::{ObjectStoreRunner, RunnerCallbacks, StatusCode};

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn bad_config_values_are_invalid_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let region = format!("file:{}", dir.path().join("r").display());
    for (key, value) in [("size", "lots"), ("coherence", "sometimes"), ("region", "")] {
        let mut params = map(&[("region", &region), ("size", "16MiB")]);
        params.insert(key.to_string(), value.to_string());
        let e = open_store(&params).err().expect("refused");
        assert_eq!(e.code, StatusCode::Invalid, "{key}={value}: {e:?}");
        assert!(
            e.message.contains(&format!("{key}={value:?}")),
            "{key}={value}: {}",
            e.message
        );
    }
    assert!(!dir.path().join("r").exists(), "nothing was created");
}

#[test]
fn table_sizes_are_configurable_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let region = format!("file:{}", dir.path().join("r").display());
    let store = open_store(&map(&[
        ("region", &region),
        ("size", "32MiB"),
        ("max_clients", "2000"),
        ("refs_per_client", "256"),
        ("dir_capacity", "4096"),
    ]))
    .unwrap();
    let s = store.stats();
    assert_eq!(
        (s.max_clients, s.refs_per_client, s.dir_capacity),
        (2000, 256, 4096)
    );
    drop(store);
    for (key, value) in [
        ("max_clients", "0"),
        ("max_clients", "70000"),
        ("refs_per_client", "8"),
        ("dir_capacity", "lots"),
    ] {
        let other = format!("file:{}", dir.path().join("bad").display());
        let params = map(&[("region", &other), ("size", "16MiB"), (key, value)]);
        let e = open_store(&params).err().expect("refused");
        assert_eq!(e.code, StatusCode::Invalid, "{key}={value}: {e:?}");
        assert!(e.message.contains(key), "{key}={value}: {}", e.message);
    }
}

#[test]
fn a_region_formatted_from_a_config_fits_a_ray_node() {
    let dir = tempfile::tempdir().unwrap();
    // Large enough: a Ray node's worth of clients, 2048 references each.
    let region = format!("file:{}", dir.path().join("big").display());
    let s = open_store(&map(&[("region", &region), ("size", "256MiB")]))
        .unwrap()
        .stats();
    assert_eq!(s.max_clients, u64::from(gismo::RAY_NODE_CLIENTS));
    assert!(s.max_clients >= 1024 && s.refs_per_client == 2048);
    // A small region gets fewer, so that the tables take at most an eighth of it.
    assert_eq!(
        gismo::default_max_clients(16 << 20, 2048),
        gismo::MIN_DEFAULT_CLIENTS
    );
    let mid = gismo::default_max_clients(64 << 20, 2048);
    assert!(mid > gismo::MIN_DEFAULT_CLIENTS && mid < gismo::RAY_NODE_CLIENTS);
    assert!(u64::from(mid) * (128 + 2048 * 8) <= (64 << 20) / 8);
    assert_eq!(
        gismo::default_max_clients(1 << 40, 2048),
        gismo::RAY_NODE_CLIENTS
    );
}

fn runner() -> GismoRunner {
    let region = Region::create(
        &RegionSpec::Memfd {
            name: "gismo-params".into(),
            huge_pages: false,
        },
        16 << 20,
        &RegionOptions::default(),
    )
    .unwrap();
    let store: Arc<Store> = Store::format(region, &Default::default()).unwrap();
    GismoRunner::with_store(store)
}

#[test]
fn bad_runner_values_are_invalid_and_named() {
    for (key, value) in [
        ("object_spilling_threshold", "1.5"),
        ("embedded_server", "maybe"),
        ("lease_ms", "0"),
        ("lease_ms", "soon"),
        ("high_watermark", "-0.1"),
        ("low_watermark", "x"),
    ] {
        let r = runner();
        let e = r
            .start(&map(&[(key, value)]), RunnerCallbacks::none())
            .expect_err("refused");
        assert_eq!(e.code, StatusCode::Invalid, "{key}={value}: {e:?}");
        assert!(
            e.message.contains(&format!("{key}={value:?}")),
            "{key}={value}: {}",
            e.message
        );
    }
    // Each value is fine alone, but the low watermark must not exceed the high one.
    let e = runner()
        .start(
            &map(&[("high_watermark", "0.5"), ("low_watermark", "0.6")]),
            RunnerCallbacks::none(),
        )
        .expect_err("refused");
    assert_eq!(e.code, StatusCode::Invalid);
    assert!(e.message.contains("low_watermark=\"0.6\""), "{}", e.message);
}

#[test]
fn good_runner_values_start() {
    let r = runner();
    r.start(
        &map(&[
            ("object_spilling_threshold", "0.5"),
            ("embedded_server", "0"),
            ("lease_ms", "200"),
            ("high_watermark", "0.95"),
            ("low_watermark", "0.9"),
        ]),
        RunnerCallbacks::none(),
    )
    .unwrap();
    r.stop();
}
