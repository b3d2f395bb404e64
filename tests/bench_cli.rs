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
        .stderr(predicate::str::contains(
            "--translator MODEL or --summarizer MODEL",
        ));
}

#[test]
fn the_summarizer_is_timed_on_inputs_of_the_asked_lengths_with_its_own_beams() {
    let dir = tempfile::tempdir().unwrap();
    let ids = dir.path().join("ids.jsonl");
    let t5 = repo_path("tests/fixtures/models/rut5_tiny");
    let lines = json_lines(
        Command::cargo_bin("mtsum")
            .unwrap()
            .args(["bench", "--device", "cpu", "--summarizer"])
            .arg(&t5)
            .args(["--source-tokens", "40-60", "--sentences", "3"])
            .args(["--new-tokens", "4", "--repeat", "1", "--json", "--ids-out"])
            .arg(&ids),
    );
    // One mode: the summarizer's own generation config (rut5: 5 beams).
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["model"], "summarizer");
    assert_eq!(lines[0]["beams"], 5);
    assert_eq!(lines[0]["segments"], 3);
    assert_eq!(lines[0]["source_tokens"], 50.0);
    assert_eq!(lines[0]["generated_tokens"], 12);
    let written: Vec<serde_json::Value> = std::fs::read_to_string(&ids)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(written.len(), 3);
    for row in &written {
        assert_eq!(row["beams"], 5);
        assert_eq!(row["ids"].as_array().unwrap().len(), 4);
    }
}

#[test]
fn source_tokens_cut_translator_inputs_to_that_length() {
    let lines = json_lines(
        Command::cargo_bin("mtsum")
            .unwrap()
            .args(["bench", "--device", "cpu", "--translator", &marian()])
            .args(["--source-tokens", "7", "--sentences", "4", "--beams", "1"])
            .args(["--new-tokens", "2", "--repeat", "1", "--json"]),
    );
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["model"], "translator");
    assert_eq!(lines[0]["source_tokens"], 7.0);
}

#[test]
fn bench_times_one_model_at_a_time() {
    let t5 = repo_path("tests/fixtures/models/rut5_tiny");
    Command::cargo_bin("mtsum")
        .unwrap()
        .args([
            "bench",
            "--device",
            "cpu",
            "--translator",
            &marian(),
            "--summarizer",
        ])
        .arg(&t5)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("not both"));
}

#[test]
fn a_bad_source_length_is_a_usage_error() {
    Command::cargo_bin("mtsum")
        .unwrap()
        .args(["bench", "--device", "cpu", "--translator", &marian()])
        .args(["--source-tokens", "60-40"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("N <= M"));
}
