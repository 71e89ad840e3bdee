//! `gismo-server --plugin*` with real processes: hosting a plugin's runner (the C memstore test
//! plugin, and GISMO's own runner loaded from `libgismo.so`), serving the gismo plugin's region,
//! bad plugin input, fallback mode — and one consumer per host event ring: a second GISMO runner
//! with the same host identity is refused, naming GISMO_HOST, until the first one dies.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use support::{gismoctl, Server, SERVER};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn libgismo() -> PathBuf {
    let so = PathBuf::from(SERVER).with_file_name(format!(
        "{}gismo{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    ));
    assert!(
        so.exists(),
        "{} not built: run `cargo build` first (tools/test.sh does)",
        so.display()
    );
    so
}

fn memstore(dir: &Path) -> PathBuf {
    let out = dir.join("libmemstore.so");
    let status = Command::new("cc")
        .args([
            "-std=c11", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC", "-pthread",
        ])
        .arg("-I")
        .arg(workspace().join("include"))
        .arg(workspace().join("plugins/builtins/tests/plugins/memstore.c"))
        .arg("-o")
        .arg(&out)
        .status()
        .expect("run cc");
    assert!(status.success(), "cc memstore.c failed");
    out
}

/// Runs the server to completion (for the cases that exit at once) and returns its exit code
/// and log.
fn run_server(args: &[&str]) -> (i32, String) {
    let out = Command::new(SERVER)
        .args(args)
        .env_remove("GISMO_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run gismo-server");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `gismoctl` with `args` as host `host` (`GISMO_HOST`).
fn ctl_on(host: &str, args: &[&str]) -> std::process::Output {
    Command::new(gismoctl())
        .args(args)
        .env("GISMO_HOST", host)
        .stdin(Stdio::null())
        .output()
        .expect("run gismoctl")
}

fn format_region(dir: &Path) -> String {
    let region = format!("file:{}", dir.join("region").display());
    let out = Command::new(gismoctl())
        .args(["--region", &region, "format", "--size", "64MiB"])
        .output()
        .expect("run gismoctl");
    assert!(out.status.success(), "{out:?}");
    region
}

#[test]
fn hosts_a_loaded_plugins_runner_until_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let so = memstore(dir.path());
    let mut server = Server::start(&[
        "--plugin",
        "memstore",
        "--plugin-path",
        so.to_str().unwrap(),
        "--plugin-config",
        "store=s,capacity=4096",
    ]);
    let ready = server.wait_for("ready: hosting the runner of plugin memstore");
    assert!(ready.contains("4096 of 4096 bytes available"), "{ready}");
    server.signal(libc::SIGTERM);
    server.wait_for("stopping");
    let (code, _) = server.wait();
    assert_eq!(code, 0);
}

#[test]
fn the_gismo_plugin_makes_the_server_serve_its_region() {
    let dir = tempfile::tempdir().expect("tempdir");
    let region = format_region(dir.path());
    let config = format!("region={region}");
    let mut server = Server::start(&["--plugin", "gismo", "--plugin-config", &config]);
    server.wait_for(&format!("ready: serving {region}"));
    server.signal(libc::SIGTERM);
    let (code, _) = server.wait();
    assert_eq!(code, 0);
    // --region and the config's region must agree.
    let (code, log) = run_server(&[
        "--plugin",
        "gismo",
        "--plugin-config",
        &config,
        "--region",
        "file:/elsewhere",
    ]);
    assert_eq!(code, 2, "{log}");
    assert!(log.contains("disagree"), "{log}");
}

#[test]
fn bad_plugins_exit_with_one_log_line_and_their_code() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = dir.path().join("text.so");
    std::fs::write(&text, "not a library").unwrap();
    let text = text.to_str().unwrap();
    let missing = format!("region=file:{}/missing", dir.path().display());
    for (args, code, needle) in [
        (&["--plugin-path", "relative.so"][..], 2, "not absolute"),
        (
            &["--plugin-path", "/nonexistent/x.so"][..],
            7,
            "does not exist",
        ),
        (&["--plugin-path", text][..], 7, "cannot load"),
        (&["--plugin", "no-such-builtin"][..], 2, "unknown built-in"),
        (
            &["--plugin", "gismo", "--plugin-config", "a"][..],
            2,
            "no '='",
        ),
        (&["--plugin-config", "a=b"][..], 2, "needs --plugin"),
        (
            &["--plugin", "gismo", "--plugin-config", &missing][..],
            6,
            "missing",
        ),
    ] {
        let (got, log) = run_server(args);
        assert_eq!(got, code, "{args:?}: {log}");
        let errors: Vec<&str> = log.lines().filter(|l| l.contains(" ERROR ")).collect();
        assert_eq!(errors.len(), 1, "{args:?}: {log}");
        assert!(errors[0].contains(needle), "{args:?}: {log}");
        assert!(!log.contains("panicked"), "{log}");
    }
}

#[test]
fn fallback_mode_logs_one_warning_naming_the_cause() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = format!("region=file:{}/missing", dir.path().display());
    for (args, cause) in [
        (
            &[
                "--plugin-path",
                "/nonexistent/x.so",
                "--plugin-mode",
                "fallback",
            ][..],
            "does not exist",
        ),
        (
            &[
                "--plugin",
                "gismo",
                "--plugin-config",
                &missing,
                "--plugin-mode",
                "fallback",
            ][..],
            "no such file",
        ),
    ] {
        let log = run_briefly(args);
        let warnings: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("falling back to plasma"))
            .collect();
        assert_eq!(warnings.len(), 1, "{args:?}: {log}");
        assert!(warnings[0].contains(" WARN "), "{log}");
        assert!(warnings[0].contains(cause), "{log}");
        assert!(!log.contains("panicked"), "{log}");
    }
}

/// Runs the server until it exits, or for a few seconds and then SIGTERM (whether plasma
/// itself comes up with an empty config is plasma's business); returns its log.
fn run_briefly(args: &[&str]) -> String {
    let mut child = Command::new(SERVER)
        .args(args)
        .env_remove("GISMO_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn gismo-server");
    let start = std::time::Instant::now();
    while child.try_wait().expect("try_wait").is_none() {
        if start.elapsed() > std::time::Duration::from_secs(10) {
            // SAFETY: `kill` only sends a signal; the child is not reaped yet, so its pid
            // still names it.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("wait for gismo-server");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_second_gismo_runner_with_the_same_host_identity_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let region = format_region(dir.path());
    let config = format!("region={region}");
    let so = libgismo();
    // A server hosting GISMO's runner (loaded under another name, so it is hosted rather than
    // served) consumes host "node-a"'s event ring.
    let mut host = Server::start_on_host(
        &[
            "--plugin",
            "gismo-runner",
            "--plugin-path",
            so.to_str().unwrap(),
            "--plugin-config",
            &config,
        ],
        Some("node-a"),
    );
    host.wait_for("ready: hosting the runner");
    let second = |h: &str| {
        ctl_on(
            h,
            &[
                "--plugin",
                "gismo",
                "--plugin-config",
                &config,
                "stat",
                "--start-runner",
            ],
        )
    };
    // Same host identity: refused, naming GISMO_HOST; exit 7 (the runner cannot start).
    let refused = second("node-a");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(7), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("GISMO_HOST"), "{stderr}");
    assert!(stderr.contains("node-a"), "{stderr}");
    // Another identity has its own ring.
    let other = second("node-b");
    assert!(other.status.success(), "{other:?}");
    // Once the first consumer is dead (kill -9: no clean release), its claim is taken over.
    host.signal(libc::SIGKILL);
    let _ = host.wait();
    let after = second("node-a");
    assert!(after.status.success(), "{after:?}");
}

#[test]
fn a_hosted_plasma_store_serves_gismoctl_processes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("plasma.sock");
    let config = format!("store_socket_name={}", socket.display());
    let mut server = Server::start(&["--plugin", "plasma", "--plugin-config", &config]);
    server.wait_for("ready: hosting the runner of plugin plasma");
    let p = ["--plugin", "plasma", "--plugin-config", &config];
    let ctl = |args: &[&str], stdin: &[u8]| {
        let mut child = Command::new(gismoctl())
            .args(p)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn gismoctl");
        {
            use std::io::Write;
            let mut pipe = child.stdin.take().expect("stdin");
            pipe.write_all(stdin).expect("feed gismoctl");
        }
        child.wait_with_output().expect("gismoctl output")
    };
    let id = "7e".repeat(28);
    let put = ctl(&["put", &id, "-"], b"kept by the hosted store");
    assert!(put.status.success(), "{put:?}");
    // Another process reads it back: the store lives in the server, not in gismoctl.
    let get = ctl(&["get", &id], b"");
    assert!(get.status.success(), "{get:?}");
    assert_eq!(get.stdout, b"kept by the hosted store");
    let ls = ctl(&["ls"], b"");
    assert_eq!(ls.status.code(), Some(8), "{ls:?}");
    let bench = ctl(
        &[
            "bench",
            "--ops",
            "transfer",
            "--sizes",
            "4KiB",
            "--seconds",
            "0.2",
            "--json",
        ],
        b"",
    );
    assert!(bench.status.success(), "{bench:?}");
    let report: serde_json::Value = serde_json::from_slice(&bench.stdout).expect("json");
    assert!(report["runs"][0]["ops"].as_u64() > Some(0), "{report}");
    server.signal(libc::SIGTERM);
    server.wait_for("stopping");
    let (code, _) = server.wait();
    assert_eq!(code, 0);
}
