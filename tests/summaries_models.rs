//! Summaries with the tiny fixture models through the binary: every sample gets both
//! summaries, the long one is summarized in parts, the length options change lengths, and the
//! digest of samples/ is checked in full against a golden file.
//!
//! Regenerate the golden files after an intended change with
//! `MTSUM_BLESS=1 cargo test --test summaries_models`, and review the diff.

mod batch_support;

use std::path::Path;

use assert_cmd::Command;
use batch_support::{read_output, read_report, repo_path, samples};

const TRANSLATOR: &str = "tests/fixtures/models/marian_tiny";
const SUMMARIZER: &str = "tests/fixtures/models/rut5_tiny";

fn mtsum() -> Command {
    let mut cmd = Command::cargo_bin("mtsum").unwrap();
    cmd.arg("--translator")
        .arg(repo_path(TRANSLATOR))
        .arg("--summarizer")
        .arg(repo_path(SUMMARIZER))
        .args(["--device", "cpu"]);
    cmd
}

fn run_samples(out: &Path) {
    mtsum()
        .args(["run", "--quiet", "--out"])
        .arg(out)
        .arg(samples())
        .assert()
        .code(0);
}

/// The digest with its run date replaced, so the file compares across days.
fn undated_digest(out: &Path) -> String {
    let digest = std::fs::read_to_string(out.join("digest.md")).unwrap();
    let mut lines = digest.lines();
    let header = lines.next().unwrap_or_default();
    assert!(header.starts_with("# Digest, "), "{header}");
    std::iter::once("# Digest, <date>")
        .chain(lines)
        .map(|l| format!("{l}\n"))
        .collect()
}

fn check_golden(name: &str, actual: &str) {
    let path = repo_path("tests/golden").join(name);
    if std::env::var_os("MTSUM_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (MTSUM_BLESS=1 writes it)", path.display()));
    assert!(
        expected == actual,
        "{} differs from this run's output:\n{actual}",
        path.display()
    );
}

#[test]
fn samples_get_both_summaries_and_the_digest_matches_its_golden_file() {
    let out = tempfile::tempdir().unwrap();
    run_samples(out.path());
    let report = read_report(out.path());
    for entry in report["releases"].as_array().unwrap() {
        let output = read_output(out.path(), entry["file"].as_str().unwrap());
        let summary = output.summary.expect("every release has a summary");
        assert!(
            !summary.ru.is_empty() && !summary.en.is_empty(),
            "{}",
            output.id
        );
        let long = output.id == "05-crime-statistics-2023";
        assert_eq!(
            summary.method == "chunked",
            long,
            "{}: {}",
            output.id,
            summary.method
        );
        assert_eq!(summary.chunks > 1, long, "{}", output.id);
    }
    check_golden("digest.md", &undated_digest(out.path()));
    let jsonl = std::fs::read_to_string(out.path().join("digest.jsonl")).unwrap();
    check_golden("digest.jsonl", &jsonl);
}

fn summary_chars(length: &str) -> usize {
    let documents = std::fs::read_to_string(repo_path("tests/fixtures/corpus/ru.txt")).unwrap();
    let input: String = documents
        .lines()
        .take(6)
        .map(|l| format!("{l}\n"))
        .collect();
    let output = mtsum()
        .args([
            "summarize",
            "--lines",
            "--lang",
            "ru",
            "--summary-length",
            length,
        ])
        .write_stdin(input)
        .assert()
        .code(0)
        .get_output()
        .stdout
        .clone();
    let text = String::from_utf8(output).unwrap();
    assert_eq!(text.lines().count(), 6);
    text.chars().count()
}

#[test]
fn summary_length_options_change_the_lengths() {
    let (short, medium, long) = (
        summary_chars("short"),
        summary_chars("medium"),
        summary_chars("long"),
    );
    assert!(short < medium && medium < long, "{short} {medium} {long}");
}
