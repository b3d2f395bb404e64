//! `mtsum bench` runs the fixed batch and reports what it did (no timing is asserted: speed is
//! measured, never tested).

mod batch_support;

use assert_cmd::Command;
use batch_support::{json_lines, repo_path};
use predicates::prelude::*;

fn marian() -> String {
    let dir = repo_path("tests/fixtures/models/marian_tiny");
    dir.to_string_lossy().to_string()
}

#[test]
fn bench_generates_exactly_the_asked_tokens_in_both_modes() {
    let lines = json_lines(
        Command::cargo_bin("mtsum")
            .unwrap()
            .args(["bench", "--device", "cpu", "--translator", &marian()])
            .args([
                "--sentences",
                "5",
                "--new-tokens",
                "3",
                "--repeat",
                "1",
                "--json",
            ]),
    );
    assert_eq!(lines.len(), 2);
    for (line, beams) in lines.iter().zip([1, 4]) {
        assert_eq!(line["beams"], beams);
        assert_eq!(line["segments"], 5);
        assert_eq!(line["generated_tokens"], 15);
        assert!(line["tokens_per_s"].as_f64().unwrap() > 0.0);
        assert!(line["peak_rss_mib"].as_f64().unwrap() > 0.0);
    }
}

#[test]
fn ids_outside_the_vocabulary_are_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let ids = dir.path().join("ids.jsonl");
    std::fs::write(&ids, "[5, 6, 0]\n[99999, 0]\n").unwrap();
    Command::cargo_bin("mtsum")
        .unwrap()
        .args([
            "bench",
            "--device",
            "cpu",
            "--translator",
            &marian(),
            "--beams",
            "1",
        ])
        .arg("--ids-file")
        .arg(&ids)
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "token id 99999 is outside the vocabulary",
        ));
}

#[test]
fn bench_needs_a_translator() {
    Command::cargo_bin("mtsum")
        .unwrap()
        .args(["bench", "--device", "cpu"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--translator"));
}
