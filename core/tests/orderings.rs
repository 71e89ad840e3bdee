//! Every atomic ordering stronger than `Relaxed` in the store core names the operation it pairs
//! with (STYLE.md §5): a comment containing "pairs with" on the same line or within the three
//! lines above it (a comment block that ends there counts as a whole). Lines of the same
//! expression above it — arguments of a split call (ending in `,` or `(`, as rustfmt splits a
//! `compare_exchange(cur, new, success, failure)`) and links of a method chain (starting with
//! `.`) — do not count towards the three, so one comment above a split call covers both of its
//! orderings.
//!
//! The test scans `core/src/**/*.rs` and fails listing `file:line` of every use without one.

use std::path::{Path, PathBuf};

const STRONG: [&str; 4] = [
    "Ordering::Acquire",
    "Ordering::Release",
    "Ordering::AcqRel",
    "Ordering::SeqCst",
];
const MARKER: &str = "pairs with";
const LINES_ABOVE: usize = 3;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// The code part of a line (before a `//` comment; good enough for this crate, which has no `//`
/// inside string literals on lines that name an ordering).
fn code(line: &str) -> &str {
    line.find("//").map_or(line, |i| &line[..i])
}

fn has_marker(line: &str) -> bool {
    line.to_ascii_lowercase().contains(MARKER)
}

/// A line holding only a `//` comment.
fn is_comment_line(line: &str) -> bool {
    line.trim_start().starts_with("//")
}

/// A line inside the same expression as the line below it: an argument of a call split over
/// several lines (ends in `,` or `(`) or a link of a method chain (starts with `.`).
fn is_argument_line(line: &str) -> bool {
    let c = code(line).trim();
    !c.is_empty() && (c.ends_with(',') || c.ends_with('(') || c.starts_with('.'))
}

/// 1-based line numbers in `text` of strong orderings without a "pairs with" comment.
fn unpaired(text: &str) -> Vec<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let mut missing = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if !STRONG.iter().any(|s| code(line).contains(s)) {
            continue;
        }
        if has_marker(line) {
            continue;
        }
        let mut counted = 0;
        let mut j = i;
        let mut found = false;
        while j > 0 && counted < LINES_ABOVE {
            j -= 1;
            let above = lines[j];
            if has_marker(above) {
                found = true;
                break;
            }
            if is_comment_line(above) {
                // A comment block ending here counts as a whole.
                found = lines[..j]
                    .iter()
                    .rev()
                    .take_while(|l| is_comment_line(l))
                    .any(|l| has_marker(l));
                break;
            }
            if !is_argument_line(above) {
                counted += 1;
            }
        }
        if !found {
            missing.push(i + 1);
        }
    }
    missing
}

#[test]
fn every_strong_ordering_names_its_pair() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    assert!(files.len() > 10, "found only {} source files", files.len());
    let mut report = Vec::new();
    let mut strong = 0;
    for path in &files {
        let text = std::fs::read_to_string(path).expect("read source file");
        strong += text
            .lines()
            .filter(|l| STRONG.iter().any(|s| code(l).contains(s)))
            .count();
        for n in unpaired(&text) {
            let rel = path.strip_prefix(root).unwrap_or(path);
            report.push(format!("core/{}:{n}", rel.display()));
        }
    }
    assert!(
        strong > 50,
        "found only {strong} strong orderings: is the scan broken?"
    );
    assert!(
        report.is_empty(),
        "{} of {strong} non-Relaxed orderings do not say what they pair with (\"{MARKER}\" on \
         the line or within {LINES_ABOVE} lines above):\n  {}",
        report.len(),
        report.join("\n  ")
    );
}

#[test]
fn the_scan_flags_a_missing_comment_and_accepts_a_present_one() {
    let without = "fn f(a: &A) {\n    let x = 1;\n    a.store(1, Ordering::Release);\n}\n";
    assert_eq!(unpaired(without), vec![3]);
    let far = "// Release: pairs with the Acquire in g.\nlet a = 1;\nlet b = 2;\nlet c = 3;\n\
               w.store(1, Ordering::Release);\n";
    assert_eq!(unpaired(far), vec![5]);
    let above = "// Release: pairs with the Acquire load in g.\nw.store(1, Ordering::Release);\n";
    assert!(unpaired(above).is_empty());
    let inline = "w.load(Ordering::Acquire) // Acquire: pairs with the Release in f.\n";
    assert!(unpaired(inline).is_empty());
    let split = "// AcqRel: pairs with the Acquire load in g.\nw.compare_exchange(\n    cur,\n    \
                 new,\n    Ordering::AcqRel,\n    Ordering::Acquire,\n)\n";
    assert!(unpaired(split).is_empty());
    let block = "// Release: pairs with the Acquire\n// load in g, which must see the\n// payload.\nw.store(1, Ordering::Release);\n";
    assert!(unpaired(block).is_empty());
    let other = "// Release: pairs with the Acquire in g.\nw.store(1, Ordering::Release);\n// unrelated\nv.store(1, Ordering::Release);\n";
    assert_eq!(unpaired(other), vec![4]);
    let relaxed = "w.store(1, Ordering::Relaxed);\n// Ordering::SeqCst in a comment\n";
    assert!(unpaired(relaxed).is_empty());
}
