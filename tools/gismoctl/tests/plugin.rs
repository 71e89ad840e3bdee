//! `gismoctl --plugin*`: the verbs through an object store plugin — the built-in `gismo`,
//! `libgismo.so` loaded by path, and the C test plugin `plugins/builtins/tests/plugins/memstore.c` — and every bad
//! plugin input failing with one line and its documented exit code. Real processes throughout.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use support::{id, Fixture, Output, GISMOCTL};

/// The workspace root (`plugins/builtins/tests/plugins/`, `include/`).
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `libgismo.so` next to the gismoctl binary (the cdylib cargo builds with the workspace).
fn libgismo() -> PathBuf {
    let so = PathBuf::from(GISMOCTL).with_file_name(format!(
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

/// Compiles `plugins/builtins/tests/plugins/<source>` with `defines` into `dir`.
fn compile_c(source: &str, defines: &[&str], dir: &Path) -> PathBuf {
    let out = dir.join(format!(
        "lib{}{}.so",
        source.trim_end_matches(".c"),
        defines.join("_")
    ));
    let mut cmd = Command::new("cc");
    cmd.args([
        "-std=c11", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC", "-pthread",
    ])
    .arg("-I")
    .arg(workspace().join("include"));
    for d in defines {
        cmd.arg(format!("-D{d}"));
    }
    let status = cmd
        .arg(
            workspace()
                .join("plugins/builtins/tests/plugins")
                .join(source),
        )
        .arg("-o")
        .arg(&out)
        .status()
        .expect("run cc");
    assert!(status.success(), "cc {source} {defines:?} failed");
    out
}

fn with_plugin<'a>(plugin: &'a [&'a str], args: &'a [&'a str]) -> Vec<&'a str> {
    plugin.iter().chain(args).copied().collect()
}

#[test]
fn the_builtin_gismo_plugin_shares_the_region_with_direct_access() {
    let f = Fixture::formatted();
    let config = format!("region={}", f.region);
    let p = ["--plugin", "gismo", "--plugin-config", &config];
    let input = f.write_file("in", b"through the plugin");
    let put = f.run(&with_plugin(&p, &["put", &id(1), input.to_str().unwrap()]));
    put.assert_ok();
    // Direct access sees what the plugin put, and the other way round.
    let got = f.run(&["get", &id(1)]).assert_ok().stdout.clone();
    assert_eq!(got, b"through the plugin");
    f.run_with_stdin(
        &["put", &id(2), "-", "--metadata", "md"],
        b"direct".to_vec(),
    )
    .assert_ok();
    let got = f.run(&with_plugin(&p, &["get", &id(2)]));
    assert_eq!(got.assert_ok().stdout, b"direct");
    let md = f.run(&with_plugin(&p, &["get", &id(2), "--metadata"]));
    assert_eq!(md.assert_ok().stdout, b"md");
    // ls goes through the plugin's region; --region alone names it for the gismo plugin.
    let rows = f
        .run(&["--plugin", "gismo", "ls", "--json"])
        .assert_ok()
        .json();
    assert_eq!(rows.as_array().map(Vec::len), Some(2), "{rows}");
    // stat: the client's usage string and the runner's figures, with and without Start.
    for extra in [&[][..], &["--start-runner"][..]] {
        let args: Vec<&str> = ["stat", "--json"].iter().chain(extra).copied().collect();
        let stat = f.run(&with_plugin(&p, &args)).assert_ok().json();
        assert_eq!(stat["plugin"], "gismo");
        assert_eq!(stat["is_global"], true);
        assert!(stat["memory_usage"]
            .as_str()
            .unwrap()
            .contains("GISMO region"));
        let r = &stat["runner"];
        let total = r["total_memory_size"].as_i64().unwrap();
        assert!(total > 0, "{stat}");
        assert!(r["available_memory"].as_i64().unwrap() < total, "{stat}");
        assert_eq!(stat["runner_started"], !extra.is_empty());
    }
    // rm through the plugin; a second rm and a get are "not found" (exit 3).
    f.run(&with_plugin(&p, &["rm", &id(1)])).assert_ok();
    f.run(&with_plugin(&p, &["rm", &id(1)]))
        .assert_one_line_failure(3);
    f.run(&with_plugin(&p, &["get", &id(1)]))
        .assert_one_line_failure(3);
    // An existing id is exit 4 through the plugin too.
    f.run(&with_plugin(&p, &["put", &id(2), input.to_str().unwrap()]))
        .assert_one_line_failure(4);
    // Every client detached.
    assert_eq!(f.run(&["clients", "--json"]).json(), Value::Array(vec![]));
}

#[test]
fn the_raylet_variables_select_the_plugin_when_no_flag_is_given() {
    let f = Fixture::formatted();
    let input = f.write_file("in", b"from the environment");
    let mut c = f.command(&["put", &id(3), input.to_str().unwrap()]);
    c.env("RAY_object_store_plugin_name", "gismo")
        .env("RAY_object_store_plugin_path", libgismo())
        .env(
            "RAY_object_store_plugin_config",
            format!("region={}", f.region),
        );
    let out = support::finish(c.spawn().expect("spawn"), None);
    out.assert_ok();
    assert_eq!(
        f.run(&["get", &id(3)]).assert_ok().stdout,
        b"from the environment"
    );
}

#[test]
fn libgismo_loaded_by_path_and_the_c_memstore_plugin() {
    let f = Fixture::formatted();
    let so = libgismo();
    let config = format!("region={}", f.region);
    let p = [
        "--plugin",
        "gismo",
        "--plugin-path",
        so.to_str().unwrap(),
        "--plugin-config",
        &config,
    ];
    let input = f.write_file("in", &[7u8; 100_000]);
    f.run(&with_plugin(&p, &["put", &id(4), input.to_str().unwrap()]))
        .assert_ok();
    assert_eq!(
        f.run(&["get", &id(4)]).assert_ok().stdout,
        vec![7u8; 100_000]
    );
    let stat = f
        .run(&with_plugin(&p, &["stat", "--json"]))
        .assert_ok()
        .json();
    assert_eq!(stat["is_global"], true, "{stat}");

    let mem = compile_c("memstore.c", &[], f.dir.path());
    let m = [
        "--plugin",
        "memstore",
        "--plugin-path",
        mem.to_str().unwrap(),
        "--plugin-config",
        "store=s,capacity=1000000",
    ];
    // The store lives in the process: a put works, and the next process starts empty.
    f.run(&with_plugin(&m, &["put", &id(5), input.to_str().unwrap()]))
        .assert_ok();
    f.run(&with_plugin(&m, &["get", &id(5)]))
        .assert_one_line_failure(3);
    let stat = f.run(&with_plugin(&m, &["stat", "--start-runner", "--json"]));
    let stat = stat.assert_ok().json();
    assert_eq!(stat["is_global"], false);
    assert_eq!(stat["runner"]["total_memory_size"], 1_000_000, "{stat}");
    // ls needs the gismo plugin: exit 8, naming the plugin.
    let ls = f.run(&with_plugin(&m, &["ls"]));
    ls.assert_one_line_failure(8);
    assert!(
        ls.stderr.contains("not supported by plugin memstore"),
        "{ls:?}"
    );
    // format, clients and fsck keep working on --region.
    f.run(&with_plugin(&m, &["fsck"])).assert_ok();
}

/// Runs `gismoctl` with plugin flags `args` (and a region that is never touched).
fn bad(f: &Fixture, plugin: &[&str], code: i32) -> Output {
    let out = f.run(&with_plugin(plugin, &["put", &id(9), "/dev/null"]));
    out.assert_one_line_failure(code);
    out
}

#[test]
fn every_bad_plugin_input_fails_with_one_line_and_its_exit_code() {
    let f = Fixture::formatted();
    let text = f.write_file("not-a-library.so", b"plain text");
    let no_symbols = compile_c("bad_plugin.c", &["NO_SYMBOLS"], f.dir.path());
    let bad_version = compile_c("bad_plugin.c", &["BAD_VERSION"], f.dir.path());
    let cases: Vec<(Vec<String>, i32, &str)> = vec![
        (
            vec!["--plugin-path".into(), "relative.so".into()],
            2,
            "not absolute",
        ),
        (
            vec!["--plugin-path".into(), "/nonexistent/x.so".into()],
            7,
            "does not exist",
        ),
        (
            vec!["--plugin-path".into(), text.display().to_string()],
            7,
            "cannot load",
        ),
        (
            vec!["--plugin-path".into(), no_symbols.display().to_string()],
            7,
            "no symbol",
        ),
        (
            vec!["--plugin-path".into(), bad_version.display().to_string()],
            7,
            "ABI version",
        ),
        (
            vec!["--plugin".into(), "no-such-builtin".into()],
            2,
            "unknown built-in",
        ),
        (
            vec![
                "--plugin".into(),
                "gismo".into(),
                "--plugin-config".into(),
                "region".into(),
            ],
            2,
            "no '='",
        ),
        (
            vec![
                "--plugin".into(),
                "gismo".into(),
                "--plugin-config".into(),
                "bogus=1".into(),
            ],
            2,
            "unknown key \"bogus\"",
        ),
        (
            vec![
                "--plugin".into(),
                "gismo".into(),
                "--plugin-config".into(),
                format!("region=file:{}/missing", f.dir.path().display()),
            ],
            7,
            "missing",
        ),
        (
            vec!["--plugin-config".into(), "a=b".into()],
            2,
            "needs --plugin",
        ),
        (
            vec!["--plugin-mode".into(), "sometimes".into()],
            2,
            "sometimes",
        ),
    ];
    for (flags, code, needle) in &cases {
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let out = bad(&f, &flags, *code);
        assert!(out.stderr.contains(needle), "{flags:?}: {out:?}");
    }
    // format, clients and fsck work on the region: plugin settings, even bad ones, do not
    // concern them.
    f.run(&["--plugin-config", "a", "fsck"]).assert_ok();
    f.run(&["--plugin-path", "relative.so", "clients"])
        .assert_ok();
}

#[test]
fn fallback_mode_warns_once_naming_the_cause_and_tries_plasma() {
    let f = Fixture::formatted();
    let out = f.run(&[
        "--plugin-path",
        "/nonexistent/x.so",
        "--plugin-mode",
        "fallback",
        "stat",
    ]);
    let warnings: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("falling back to plasma"))
        .collect();
    assert_eq!(warnings.len(), 1, "{out:?}");
    assert!(warnings[0].contains("does not exist"), "{out:?}");
    // Whether plasma itself starts (with an empty config) is plasma's business: either way no
    // panic, and a failure is the one documented line with exit 7.
    assert!(!out.stderr.contains("panicked"), "{out:?}");
    assert!(out.code == 0 || out.code == 7, "{out:?}");
    // Strict (the default) fails with the cause and no fallback.
    let strict = f.run(&["--plugin-path", "/nonexistent/x.so", "stat"]);
    strict.assert_one_line_failure(7);
    assert!(!strict.stderr.contains("plasma"), "{strict:?}");
}
