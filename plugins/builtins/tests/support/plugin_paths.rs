//! Where the test plugins are: `libgismo.so` as cargo built it, and C plugins compiled from
//! `plugins/builtins/tests/plugins/` with the system `cc`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// `target/<profile>/libgismo.so`: the test binary is `target/<profile>/deps/<name>-<hash>`, and
/// cargo builds the cdylib next to `deps/` because the lib's crate-type includes it.
pub fn libgismo() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary under target/<profile>/deps");
    let so = profile_dir.join(format!(
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

/// `plugins/builtins/tests/plugins/`.
pub fn plugins_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/plugins")
}

/// The workspace's `include/`.
pub fn include_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../include")
}

/// Compiles `plugins/builtins/tests/plugins/<source>` into a shared library in `out_dir` with
/// `defines` (`NAME` or `NAME=VALUE`), warnings as errors.
pub fn compile_c(source: &str, defines: &[&str], out_dir: &Path) -> PathBuf {
    let stem = source.trim_end_matches(".c");
    let tag = defines.join("_").replace(['=', '/'], "_");
    let out = out_dir.join(format!("lib{stem}{tag}.so"));
    let mut cmd = Command::new("cc");
    cmd.args([
        "-std=c11", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC", "-pthread", "-O1",
    ])
    .arg("-I")
    .arg(include_dir());
    for d in defines {
        cmd.arg(format!("-D{d}"));
    }
    cmd.arg(plugins_dir().join(source)).arg("-o").arg(&out);
    let status = cmd.status().expect("run cc");
    assert!(status.success(), "cc {source} {defines:?} failed");
    out
}
