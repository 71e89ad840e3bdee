//! `include/gismo_plugin.h` and `include/gismo_plugin.hpp` compile warning-free with the system
//! compilers (`cc -Wall -Wextra -Werror`, `c++ -Wall -Wextra -Werror -std=c++17`), and the
//! programs built from them run.

#[path = "support/plugin_paths.rs"]
mod plugin_paths;

use std::process::Command;

fn compile_and_run(compiler: &str, std: &str, source: &str) {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("check");
    let status = Command::new(compiler)
        .args(["-Wall", "-Wextra", "-Werror", std])
        .arg("-I")
        .arg(plugin_paths::include_dir())
        .arg(plugin_paths::plugins_dir().join(source))
        .arg("-o")
        .arg(&exe)
        .status()
        .expect("run the compiler");
    assert!(status.success(), "{compiler} {source} failed");
    let status = Command::new(&exe).status().unwrap();
    assert!(status.success(), "{source} ran and failed: {status}");
}

#[test]
fn c_header_compiles_warning_free() {
    compile_and_run("cc", "-std=c11", "headers_check.c");
}

#[test]
fn cpp_header_compiles_warning_free() {
    compile_and_run("c++", "-std=c++17", "headers_check.cpp");
}
