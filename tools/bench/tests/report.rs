//! The report generator end to end (a tiny run): it measures every store, writes the section
//! between its markers (replacing, not appending, on a second run, and leaving the rest of the
//! page alone), and draws both plots.

use std::process::Command;

fn report(page: &std::path::Path, plots: &std::path::Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_gismo-bench"))
        .args(["report", "--smoke", "--ray", "/nonexistent.json", "--out"])
        .arg(page)
        .arg("--plots")
        .arg(plots)
        .output()
        .expect("run gismo-bench");
    assert!(
        out.status.success(),
        "gismo-bench report failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_report_section_is_written_and_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("benchmarks.md");
    let plots = dir.path().join("bench");
    std::fs::write(
        &page,
        "# Benchmarks\n\nIntro.\n\n## Older section\n\nkept\n",
    )
    .unwrap();
    report(&page, &plots);
    let first = std::fs::read_to_string(&page).unwrap();
    assert_eq!(first.matches("<!-- BEGIN gismo-bench report").count(), 1);
    assert_eq!(first.matches("<!-- END gismo-bench report -->").count(), 1);
    for needle in [
        "### Goals",
        "| gismo-hardware |",
        "| gismo-flush |",
        "| plasma |",
        "### Physical limits",
        "### Cross-node read",
        "## Older section\n\nkept",
        "Intro.",
    ] {
        assert!(first.contains(needle), "missing {needle:?} in:\n{first}");
    }
    // GISMO copies nothing for a cross-node read; plasma copies the object.
    assert!(first.contains("| gismo-hardware | 64 KiB |"), "{first}");
    assert!(first.contains("| 0 B |") && first.contains("| 64 KiB |"));
    for svg in ["latency.svg", "bandwidth.svg"] {
        let s = std::fs::read_to_string(plots.join(svg)).unwrap();
        assert!(s.contains("<svg") && s.contains("gismo-hardware"), "{svg}");
    }
    report(&page, &plots);
    let second = std::fs::read_to_string(&page).unwrap();
    assert_eq!(second.matches("<!-- BEGIN gismo-bench report").count(), 1);
    assert!(second.contains("## Older section\n\nkept"));
}
