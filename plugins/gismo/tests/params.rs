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
