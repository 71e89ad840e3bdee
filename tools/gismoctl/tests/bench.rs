//! `gismoctl bench`: real worker processes, directly on a region and through plugins. The
//! checks are about structure and sanity (every run measured something, percentiles ordered,
//! nothing left behind), never about speed.

mod support;

use std::path::PathBuf;

use serde_json::Value;
use support::{Fixture, GISMOCTL};

/// Checks `report` has exactly the runs `expected` (op, size, processes), each sane.
#[track_caller]
fn check_runs(report: &Value, expected: &[(&str, u64, u64)]) {
    let runs = report["runs"].as_array().expect("runs is an array");
    assert_eq!(runs.len(), expected.len(), "{report:#}");
    for (run, (op, size, procs)) in runs.iter().zip(expected) {
        assert_eq!(run["op"], *op, "{run}");
        assert_eq!(run["size"], *size, "{run}");
        assert_eq!(run["processes"], *procs, "{run}");
        assert!(run["ops"].as_u64() > Some(0), "{run}");
        assert!(run["seconds"].as_f64() > Some(0.0), "{run}");
        assert!(run["ops_per_s"].as_f64() > Some(0.0), "{run}");
        let gb = run["gb_per_s"].as_f64().expect("gb_per_s");
        if matches!(*op, "put" | "transfer" | "throughput") {
            assert!(gb > 0.0, "{run}");
        }
        let l = &run["latency_us"];
        let (mean, p50, p99, p999) = (
            l["mean"].as_f64().expect("mean"),
            l["p50"].as_f64().expect("p50"),
            l["p99"].as_f64().expect("p99"),
            l["p99_9"].as_f64().expect("p99_9"),
        );
        assert!(mean > 0.0, "{run}");
        assert!(p50 <= p99 && p99 <= p999, "{run}");
    }
}

#[test]
fn bench_runs_every_measurement_in_worker_processes() {
    let f = Fixture::formatted();
    let report = f
        .run(&[
            "bench",
            "--seconds",
            "0.2",
            "--sizes",
            "1KiB,64KiB",
            "--processes",
            "1,2",
            "--size",
            "8KiB",
            "--json",
        ])
        .assert_ok()
        .json();
    assert_eq!(report["target"], format!("region {}", f.region));
    check_runs(
        &report,
        &[
            ("get", 1024, 1),
            ("get", 65536, 1),
            ("put", 1024, 1),
            ("put", 65536, 1),
            ("wait", 8, 2),
            ("transfer", 1024, 2),
            ("transfer", 65536, 2),
            ("throughput", 8192, 1),
            ("throughput", 8192, 2),
        ],
    );
    // The workers left nothing behind.
    assert!(f.ls().is_empty());
    assert_eq!(f.run(&["clients", "--json"]).json(), Value::Array(vec![]));
    let text = f
        .run(&[
            "bench",
            "--ops",
            "get",
            "--sizes",
            "100",
            "--seconds",
            "0.1",
        ])
        .assert_ok()
        .stdout_text();
    assert!(text.contains("P99.9"), "{text}");
    // The worker subcommand is not advertised.
    let help = f.run(&["--help"]).assert_ok().stdout_text();
    assert!(!help.contains("bench-worker"), "{help}");
}

#[test]
fn bench_runs_through_plugins() {
    let f = Fixture::formatted();
    let config = format!("region={}", f.region);
    let report = f
        .run(&[
            "--plugin",
            "gismo",
            "--plugin-config",
            &config,
            "bench",
            "--ops",
            "wait,transfer",
            "--sizes",
            "4KiB",
            "--seconds",
            "0.2",
            "--json",
        ])
        .assert_ok()
        .json();
    assert_eq!(report["target"], "plugin gismo");
    check_runs(&report, &[("wait", 8, 2), ("transfer", 4096, 2)]);
    assert!(f.ls().is_empty());

    let so = PathBuf::from(GISMOCTL).with_file_name("libgismo.so");
    assert!(
        so.exists(),
        "{} not built: run `cargo build` first",
        so.display()
    );
    let report = f
        .run(&[
            "--plugin",
            "gismo",
            "--plugin-path",
            so.to_str().unwrap(),
            "--plugin-config",
            &config,
            "bench",
            "--ops",
            "get,throughput",
            "--sizes",
            "1KiB",
            "--processes",
            "2",
            "--seconds",
            "0.2",
            "--json",
        ])
        .assert_ok()
        .json();
    check_runs(&report, &[("get", 1024, 1), ("throughput", 65536, 2)]);
    assert!(f.ls().is_empty());
    assert_eq!(f.run(&["clients", "--json"]).json(), Value::Array(vec![]));
}

#[test]
fn bench_fails_with_one_line_on_bad_input() {
    let f = Fixture::new();
    f.run(&["bench", "--seconds", "0.1"])
        .assert_one_line_failure(6);
    let formatted = Fixture::formatted();
    for args in [
        &["bench", "--processes", "0"][..],
        &["bench", "--seconds", "0"],
        &["bench", "--sizes", "0"],
        &["bench", "--ops", "juggle"],
    ] {
        formatted.run(args).assert_one_line_failure(2);
    }
    // A worker's failure is the run's, with its exit code: an object larger than the store.
    let full = formatted.run(&[
        "bench",
        "--ops",
        "put",
        "--sizes",
        "100MiB",
        "--seconds",
        "0.1",
    ]);
    full.assert_one_line_failure(5);
    assert!(full.stderr.contains("bench worker failed"), "{full:?}");
    // A plugin that cannot be made fails once, in the parent.
    formatted
        .run(&[
            "--plugin-path",
            "/nonexistent/x.so",
            "bench",
            "--seconds",
            "0.1",
        ])
        .assert_one_line_failure(7);
}
