//! `plugins/builtins/tests/plugins/raylet_harness.cpp`, a raylet stand-in using the C++ header,
//! dlopens `libgismo.so` from the three `RAY_object_store_plugin_*` variables in two processes: an
//! object one creates and seals is a get in the other, and the creating side's add_object callback
//! fires.

#[path = "support/plugin_paths.rs"]
mod plugin_paths;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use gismo_builtins::plugin_manager;

#[test]
fn two_harness_processes_exchange_an_object_through_gismo() {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("raylet_harness");
    let status = Command::new("c++")
        .args([
            "-std=c++17",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-pthread",
            "-I",
        ])
        .arg(plugin_paths::include_dir())
        .arg(plugin_paths::plugins_dir().join("raylet_harness.cpp"))
        .arg("-o")
        .arg(&exe)
        .arg("-ldl")
        .status()
        .expect("run c++");
    assert!(status.success(), "raylet_harness.cpp does not compile");

    // Create and format the region once, before either process attaches.
    let region = format!("file:{}", dir.path().join("region").display());
    let config: BTreeMap<String, String> = [
        ("region".to_string(), region.clone()),
        ("size".to_string(), "64MiB".to_string()),
    ]
    .into();
    let _keep = plugin_manager()
        .create_client("gismo", "", &config)
        .unwrap();

    let lib = plugin_paths::libgismo();
    // Two "nodes" on one machine: each needs its own host identity, because a host's runner is
    // the one consumer of that host's seal/delete events (see docs/ray-integration.md).
    let run = |args: &[&str]| {
        Command::new(&exe)
            .args(args)
            .env("GISMO_HOST", format!("harness-node-{}", args[0]))
            .env("RAY_object_store_plugin_name", "gismo")
            .env("RAY_object_store_plugin_path", &lib)
            .env("RAY_object_store_plugin_config", format!("region={region}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let id = "0a0b0c0d0e0f";
    let getter = run(&["get", id]);
    std::thread::sleep(Duration::from_millis(200));
    let putter = run(&["put", id, "zero-copy-hello"]);
    let wait = |c: std::process::Child, what: &str| {
        // Each side gives up by itself after 5 s (get timeout, add_object wait).
        let out = c.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{what}: {} / {}",
            text,
            String::from_utf8_lossy(&out.stderr)
        );
        text
    };
    assert_eq!(wait(putter, "put"), "added\n");
    assert_eq!(wait(getter, "get"), "got zero-copy-hello global=1\n");
}
