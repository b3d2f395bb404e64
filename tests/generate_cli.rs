//! `mtsum generate` end to end: text in, transformers' ids out (tokenizer + engine), one output
//! line per input line, empty lines kept, clear errors for over-long inputs.

mod batch_support;

use std::path::PathBuf;

use assert_cmd::Command;
use batch_support::{json_lines, model_references, repo_path, stdout_of};
use predicates::prelude::*;
use serde_json::Value;

fn model_dir(reference: &Value) -> String {
    let dir = repo_path(reference["model"]["dir"].as_str().unwrap());
    dir.to_string_lossy().to_string()
}

fn mtsum() -> Command {
    let mut cmd = Command::cargo_bin("mtsum").unwrap();
    cmd.args(["--device", "cpu"]);
    cmd
}

fn case<'a>(reference: &'a Value, name: &str) -> &'a Value {
    let cases = reference["generate"].as_array().unwrap();
    cases.iter().find(|c| c["name"] == name).unwrap()
}

/// The non-empty reference texts and their expected ids (no decoder start token) for `case`.
fn texts_and_ids(reference: &Value, name: &str) -> (Vec<String>, Vec<Value>) {
    let texts = reference["texts"].as_array().unwrap();
    let ids = case(reference, name)["ids"].as_array().unwrap();
    texts
        .iter()
        .zip(ids)
        .filter(|(t, _)| !t.as_str().unwrap().is_empty())
        .map(|(t, ids)| {
            let ids = ids.as_array().unwrap()[1..].to_vec();
            (t.as_str().unwrap().to_string(), Value::Array(ids))
        })
        .unzip()
}

/// Whether our tokenizer gives each text the source ids transformers gave it. They differ by
/// design only for a T5 folder with `spiece.model` alone, on characters outside the vocabulary:
/// we follow the sentencepiece library (byte pieces), transformers 5 converts the model without
/// byte fallback (`<unk>`); see tests/tokenize_fixtures.rs. Any other difference fails here.
fn same_source_ids(reference: &Value, texts: &[String]) -> Vec<bool> {
    let dir = model_dir(reference);
    let ours = json_lines(
        mtsum()
            .args(["tokenize", "--model", &dir])
            .write_stdin(texts.join("\n") + "\n"),
    );
    let spiece_only = !PathBuf::from(&dir).join("tokenizer.json").exists()
        && PathBuf::from(&dir).join("spiece.model").exists();
    let all_texts = reference["texts"].as_array().unwrap();
    texts
        .iter()
        .zip(ours)
        .map(|(text, ours)| {
            let index = all_texts.iter().position(|t| t == text.as_str()).unwrap();
            let theirs: Vec<Value> = reference["input_ids"][index]
                .as_array()
                .unwrap()
                .iter()
                .zip(reference["attention_mask"][index].as_array().unwrap())
                .filter(|(_, m)| m.as_u64() == Some(1))
                .map(|(id, _)| id.clone())
                .collect();
            let alike = ours == Value::Array(theirs);
            assert!(
                alike || spiece_only,
                "{dir}: {text:?} tokenized differently from transformers"
            );
            alike
        })
        .collect()
}

#[test]
fn ids_from_text_match_transformers_for_every_model() {
    let mut wrong = Vec::new();
    for reference in model_references::<Value>() {
        for (name, flags) in [
            ("default", vec![]),
            ("beam2", vec!["--beams", "2", "--max-length", "30"]),
        ] {
            let (texts, want) = texts_and_ids(&reference, name);
            let got = json_lines(
                mtsum()
                    .args(["generate", "--ids", "--model", &model_dir(&reference)])
                    .args(&flags)
                    .write_stdin(texts.join("\n") + "\n"),
            );
            let tokenized_alike = same_source_ids(&reference, &texts);
            for (((text, got), want), alike) in
                texts.iter().zip(&got).zip(&want).zip(tokenized_alike)
            {
                if alike && got != want {
                    let model = &reference["model"]["name"];
                    wrong.push(format!(
                        "{model} / {name} / {text:?}:\n  got  {got}\n  want {want}"
                    ));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} outputs differ:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

#[test]
fn flags_reach_the_engine() {
    let reference = &model_references::<Value>()[0];
    let (texts, want) = texts_and_ids(reference, "beam4_lp2_early");
    mtsum()
        .args(["generate", "--ids", "--model", &model_dir(reference)])
        .args([
            "--beams",
            "4",
            "--max-length",
            "30",
            "--length-penalty",
            "2.0",
            "--early-stopping",
        ])
        .write_stdin(texts.join("\n"))
        .assert()
        .success()
        .stdout(want.iter().map(|v| format!("{v}\n")).collect::<String>());
}

#[test]
fn one_output_line_per_input_line_with_empty_lines_kept() {
    let reference = &model_references::<Value>()[0];
    let (texts, _) = texts_and_ids(reference, "default");
    let input = format!("{}\n\n{}\n   \n", texts[0], texts[1]);
    let stdout = stdout_of(
        mtsum()
            .args(["generate", "--model", &model_dir(reference)])
            .write_stdin(input),
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{stdout:?}");
    assert_eq!((lines[1], lines[3]), ("", ""));
}

#[test]
fn input_files_are_read_in_order() {
    let reference = &model_references::<Value>()[0];
    let (texts, want) = texts_and_ids(reference, "default");
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.txt"), dir.path().join("b.txt"));
    std::fs::write(&a, format!("{}\n", texts[1])).unwrap();
    std::fs::write(&b, format!("{}\n{}\n", texts[0], texts[2])).unwrap();
    mtsum()
        .args(["generate", "--ids", "--model", &model_dir(reference)])
        .arg(&a)
        .arg(&b)
        .assert()
        .success()
        .stdout(format!("{}\n{}\n{}\n", want[1], want[0], want[2]));
}

#[test]
fn an_input_over_the_position_limit_is_a_clear_error() {
    let reference = model_references::<Value>()
        .into_iter()
        .find(|r| r["model"]["model_type"] != "t5" && r["model"]["model_type"] != "mt5")
        .expect("a fixture with learned or sinusoidal positions");
    let config: Value = serde_json::from_str(
        &std::fs::read_to_string(PathBuf::from(model_dir(&reference)).join("config.json")).unwrap(),
    )
    .unwrap();
    let limit = config["max_position_embeddings"].as_u64().unwrap() as usize;
    let long = vec!["Полиция предупреждает граждан"; limit].join(" ");
    mtsum()
        .args(["generate", "--model", &model_dir(&reference)])
        .write_stdin(format!("Короткая строка.\n{long}\n"))
        .assert()
        .code(2)
        .stderr(predicate::str::contains("input 2 has"))
        .stderr(predicate::str::contains(format!("at most {limit}")));
}

#[test]
fn help_shows_examples_and_flags() {
    Command::cargo_bin("mtsum")
        .unwrap()
        .args(["generate", "--help"])
        .assert()
        .success()
        .stdout(predicate::str::contains("Examples:"))
        .stdout(predicate::str::contains("--no-repeat-ngram-size"))
        .stdout(predicate::str::contains("--ids"));
}

#[test]
fn a_missing_model_is_an_error_not_a_panic() {
    mtsum()
        .args(["generate", "--model", "/nonexistent/model/dir"])
        .write_stdin("Привет\n")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("nonexistent"));
}
