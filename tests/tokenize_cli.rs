//! `mtsum tokenize` on fixture folders: ids per line (source and --target), --decode, a folder
//! holding only config.json + tokenizer files, and errors that name the input line.

mod batch_support;

use assert_cmd::Command;
use batch_support::{repo_path, tokenizer_reference};
use predicates::prelude::*;
use predicates::str::contains;
use serde_json::Value;

/// Reference rows whose text and decoded text fit on one line.
fn one_line_rows(section: &Value, decoded: &str) -> Vec<Value> {
    let single = |v: &Value| !v.as_str().unwrap().contains(['\n', '\r']);
    section["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| single(&r["text"]) && single(&r[decoded]))
        .cloned()
        .collect()
}

fn mtsum() -> Command {
    Command::cargo_bin("mtsum").unwrap()
}

/// Runs `mtsum tokenize --model DIR [flags]` with `input` on stdin; stdout lines.
fn tokenize(dir: &str, flags: &[&str], input: String) -> Vec<String> {
    let output = mtsum()
        .args(["tokenize", "--model", dir])
        .args(flags)
        .write_stdin(input)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    String::from_utf8(output)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

fn column(rows: &[Value], key: &str) -> Vec<String> {
    rows.iter()
        .map(|r| match &r[key] {
            Value::String(s) => s.clone(),
            other => serde_json::to_string(other).unwrap(),
        })
        .collect()
}

#[test]
fn prints_source_and_target_ids_and_decodes_them() {
    let reference = tokenizer_reference();
    let rows = one_line_rows(&reference["marian"], "decode_target");
    assert!(rows.len() > 300);
    let dir = repo_path("tests/fixtures/tokenizers/marian");
    let dir = dir.to_str().unwrap();
    let texts = column(&rows, "text").join("\n") + "\n";
    assert_eq!(
        tokenize(dir, &[], texts.clone()),
        column(&rows, "source_ids")
    );
    assert_eq!(
        tokenize(dir, &["--target"], texts),
        column(&rows, "target_ids")
    );
    let ids = column(&rows, "target_ids").join("\n");
    assert_eq!(
        tokenize(dir, &["--decode"], ids),
        column(&rows, "decode_target")
    );
}

#[test]
fn reads_input_files_and_works_with_only_config_and_tokenizer_files() {
    let reference = tokenizer_reference();
    let rows = one_line_rows(&reference["t5"], "hf_json_decode");
    let model = tempfile::tempdir().unwrap();
    let fixture = repo_path("tests/fixtures/tokenizers/t5_json");
    for name in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(fixture.join(name), model.path().join(name)).unwrap();
    }
    std::fs::write(model.path().join("config.json"), r#"{"model_type": "t5"}"#).unwrap();
    let input = model.path().join("lines.txt");
    std::fs::write(&input, column(&rows, "text").join("\n")).unwrap();
    let output = mtsum()
        .args(["tokenize", "--model"])
        .arg(model.path())
        .arg(&input)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let lines: Vec<String> = String::from_utf8(output)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(lines, column(&rows, "hf_json_ids"));
}

#[test]
fn a_bad_id_line_is_named_by_file_and_line_and_the_others_go_on() {
    let dir = repo_path("tests/fixtures/tokenizers/t5_spiece");
    let out = mtsum()
        .args(["tokenize", "--decode", "--model"])
        .arg(&dir)
        .write_stdin("[1, 2]\nnot ids\n[1]\n")
        .assert()
        .code(1)
        .stderr(contains("<stdin>:2: expected a JSON array of token ids"))
        .get_output()
        .stdout
        .clone();
    // One output line per input line: the bad one is left empty.
    let lines: Vec<&str> = std::str::from_utf8(&out).unwrap().lines().collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(lines[1], "");
}

#[test]
fn a_folder_without_tokenizer_files_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    mtsum()
        .args(["tokenize", "--model"])
        .arg(dir.path())
        .write_stdin("текст\n")
        .assert()
        .code(2)
        .stderr(contains("no tokenizer files"));
}

#[test]
fn inputs_are_read_as_segment_and_generate_read_them() {
    // "-" is stdin, a byte-order mark is no text, and a file not in UTF-8 is named with a way out.
    let dir = tempfile::tempdir().unwrap();
    let (plain, bom, cp1251) = (
        dir.path().join("plain.txt"),
        dir.path().join("bom.txt"),
        dir.path().join("cp1251.txt"),
    );
    std::fs::write(&plain, "Полиция\n").unwrap();
    std::fs::write(&bom, "\u{feff}Полиция\n").unwrap();
    std::fs::write(&cp1251, b"\xcf\xee\xeb\xe8\xf6\xe8\xff\n").unwrap();
    let model = repo_path("tests/fixtures/tokenizers/marian");
    let ids = |input: &std::path::Path| {
        let output = mtsum()
            .args(["tokenize", "--model"])
            .arg(&model)
            .arg(input)
            .arg("-")
            .write_stdin("Полиция\n")
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    let plain_ids = ids(&plain);
    assert_eq!(plain_ids.lines().count(), 2, "{plain_ids}");
    assert_eq!(ids(&bom), plain_ids);
    mtsum()
        .args(["tokenize", "--model"])
        .arg(&model)
        .arg(&cp1251)
        .assert()
        .code(2)
        .stderr(contains("cp1251.txt: not UTF-8").and(contains("iconv")));
}

/// A closed stdout (`mtsum tokenize ... | head -1`) ends the command quietly with exit 0: no
/// error, no panic.
#[test]
fn a_closed_stdout_ends_the_command_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("lines.txt");
    std::fs::write(&input, "Первая строка пресс-релиза.\n".repeat(20_000)).unwrap();
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("mtsum"))
        .args(["tokenize", "--model"])
        .arg(repo_path("tests/fixtures/models/marian_tiny"))
        .arg(&input)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Read one line, then close the pipe, as `head -1` does.
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut first).unwrap();
    assert!(first.starts_with('['), "{first}");
    drop(stdout);
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{:?}: {stderr}", output.status);
    assert!(stderr.is_empty(), "{stderr}");
}
