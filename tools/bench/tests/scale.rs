//! `gismo-bench scale` end to end on a small region: the harness builds its full, fragmented
//! heap, reaps a really killed holder process (checking that the reap gave everything back), and
//! prints one row per measured operation. Timing goals are the benchmark's, not asserted here.

use std::process::Command;

#[test]
fn the_scale_benchmark_runs_and_checks_what_it_measures() {
    let out = Command::new(env!("CARGO_BIN_EXE_gismo-bench"))
        .args(["scale", "--quick", "--region-gib", "1", "--objects", "3000"])
        .output()
        .expect("run gismo-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "gismo-bench scale failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    for row in [
        "| idle maintenance tick (leader) |",
        "| disconnect holding 10 references |",
        "| reap step with one dead client |",
        "| 1 MiB put, fragmented heap |",
        "| 1 MiB plain copy (warm) |",
    ] {
        assert!(stdout.contains(row), "missing {row:?} in:\n{stdout}");
    }
    assert!(stdout.contains("3100 live objects"), "{stdout}");
}
