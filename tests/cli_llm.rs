//! `--summarizer <GGUF LLM>` through the binary: errors that stop a run before any release
//! (exit 2, naming the file and what to do), and a run end to end with a tiny random GGUF
//! (tests/fixtures/models/*.gguf): both summaries present and marked, in the digest, the
//! LLM's backend, file, quantization and prompt version in the JSON and the report.

mod batch_support;

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use batch_support::*;

fn marian() -> PathBuf {
    repo_path("tests/fixtures/models/marian_tiny")
}

fn mtsum_with(summarizer: &Path) -> Command {
    let mut cmd = Command::cargo_bin("mtsum").unwrap();
    cmd.arg("--translator")
        .arg(marian())
        .arg("--summarizer")
        .arg(summarizer)
        .args(["--device", "cpu", "--offline"]);
    cmd
}

fn run_fails_with(summarizer: &Path, expected: &[&str]) {
    let out = tempfile::tempdir().unwrap();
    let assert = mtsum_with(summarizer)
        .args(["run", "--out"])
        .arg(out.path())
        .arg(samples())
        .assert()
        .code(2);
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
    for part in expected {
        assert!(stderr.contains(part), "missing {part:?} in: {stderr}");
    }
    assert!(
        !out.path().join("report.json").exists(),
        "a model that cannot load stops the run before any release"
    );
}

#[test]
fn a_missing_gguf_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("qwen-q4_k_m.gguf");
    run_fails_with(&missing, &["qwen-q4_k_m.gguf", "no such GGUF file"]);
}

#[test]
fn a_file_that_is_not_gguf_is_named_with_what_it_starts_with() {
    let config = marian().join("config.json");
    run_fails_with(
        &config,
        &["config.json", "is not a GGUF file", "starts with \"{"],
    );
}

/// A GGUF (version 3) header with `general.architecture` and no tensors: enough for the
/// engine to read the family, not to run anything.
fn header_only_gguf(architecture: &str) -> Vec<u8> {
    fn string(out: &mut Vec<u8>, text: &str) {
        out.extend((text.len() as u64).to_le_bytes());
        out.extend(text.as_bytes());
    }
    let mut out = b"GGUF".to_vec();
    out.extend(3u32.to_le_bytes());
    out.extend(0u64.to_le_bytes());
    out.extend(1u64.to_le_bytes());
    string(&mut out, "general.architecture");
    out.extend(8u32.to_le_bytes());
    string(&mut out, architecture);
    out
}

#[test]
fn a_family_candle_transformers_lacks_is_named_with_the_supported_ones() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mamba-q4_k_m.gguf");
    std::fs::write(&path, header_only_gguf("mamba")).unwrap();
    run_fails_with(
        &path,
        &["mamba-q4_k_m.gguf", "\"mamba\" is not supported", "qwen2"],
    );
}

#[test]
fn a_corrupt_gguf_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut-short.gguf");
    // A valid start, then the header breaks off inside a key.
    let mut bytes = header_only_gguf("qwen2");
    bytes.truncate(30);
    std::fs::write(&path, bytes).unwrap();
    run_fails_with(&path, &["cut-short.gguf", "corrupt"]);
}

#[test]
fn sampling_flags_need_an_llm_summarizer() {
    let out = tempfile::tempdir().unwrap();
    mtsum_with(&repo_path("tests/fixtures/models/rut5_tiny"))
        .args(["run", "--temperature", "0.7", "--out"])
        .arg(out.path())
        .arg(samples())
        .assert()
        .code(2)
        .stderr(predicates::str::contains("--temperature"))
        .stderr(predicates::str::contains("GGUF"));
}

/// The engine's tiny random-weight Qwen2 GGUF (real metadata and chat template) with a
/// 4096-token context (tests/fixtures/make_llmsum.py), room for whole summary prompts.
fn tiny_llm() -> PathBuf {
    repo_path("tests/fixtures/gguf/tiny-qwen2-ctx4k.gguf")
}

#[test]
fn run_with_a_gguf_summarizer_writes_both_summaries_marked_and_traced() {
    let out = tempfile::tempdir().unwrap();
    mtsum_with(&tiny_llm())
        .args([
            "--max-length",
            "12",
            "run",
            "--summary-sentences",
            "2",
            "--out",
        ])
        .arg(out.path())
        .arg(samples())
        .assert()
        .code(0);
    let report = read_report(out.path());
    assert_eq!(report["counts"]["processed"], 9);
    let llm = &report["models"]["summarizer"]["llm"];
    assert_eq!(llm["backend"], "candle-transformers quantized_qwen2");
    assert_eq!(llm["gguf_file"], "tiny-qwen2-ctx4k.gguf");
    assert_eq!(llm["commit"], "local");
    assert_eq!(llm["prompt_template_version"], "summary-prompt-v1");
    assert!(llm["quantization"].as_str().is_some_and(|q| !q.is_empty()));
    assert_eq!(report["settings"]["summarizer"]["decoding"], "greedy");
    let digest = std::fs::read_to_string(out.path().join("digest.jsonl")).unwrap();
    assert_eq!(digest.lines().count(), 9);
    for (entry, line) in report["releases"]
        .as_array()
        .unwrap()
        .iter()
        .zip(digest.lines())
    {
        let output = read_output(out.path(), entry["file"].as_str().unwrap());
        let summary = output.summary.expect("a summary");
        assert!(
            !summary.ru.is_empty() && !summary.en.is_empty(),
            "{}",
            output.id
        );
        // Random weights write no Russian: the language check rejects it twice and the
        // lead sentences stand in, marked as such.
        let languages = summary.languages.expect("the LLM's per-language methods");
        assert_eq!(languages.ru, "lead-fallback", "{}", output.id);
        assert_eq!(summary.method, "lead-fallback", "{}", output.id);
        assert!(
            summary
                .notes
                .iter()
                .any(|n| n.starts_with("Russian summary rejected")),
            "{:?}",
            summary.notes
        );
        let listed: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(listed["summary"]["ru"], summary.ru.as_str());
        assert_eq!(listed["summary"]["en"], summary.en.as_str());
    }
}

/// `mtsum models inspect` on a GGUF file: what it is and how it would run (text and JSON),
/// and an unsupported family reported as such with exit 2.
#[test]
fn models_inspect_describes_a_gguf_llm() {
    let gguf = repo_path("tests/fixtures/gguf/tiny-qwen2.gguf");
    let assert = Command::cargo_bin("mtsum")
        .unwrap()
        .args(["models", "inspect", "--device", "cpu", "--offline"])
        .arg(&gguf)
        .assert()
        .success();
    let text = String::from_utf8_lossy(&assert.get_output().stdout).into_owned();
    for part in [
        "family      qwen2",
        "candle-transformers quantized_qwen2",
        "GGUF metadata (tokenizer.ggml.model = gpt2)",
        "chat template in the file",
        "summary-prompt-v1",
        "loaded      on cpu",
        "status      runs",
    ] {
        assert!(text.contains(part), "missing {part:?} in:\n{text}");
    }

    let assert = Command::cargo_bin("mtsum")
        .unwrap()
        .args([
            "models",
            "inspect",
            "--no-load",
            "--format",
            "json",
            "--offline",
        ])
        .arg(&gguf)
        .assert()
        .success();
    let reports: serde_json::Value = serde_json::from_slice(&assert.get_output().stdout).unwrap();
    let report = &reports[0];
    assert_eq!(report["architecture"], "qwen2");
    assert_eq!(report["role"], "summarizer");
    assert_eq!(report["chat_template"], true);
    assert!(report["quantization"].is_string(), "{report}");
    assert!(
        report["loaded"].is_null(),
        "--no-load loads nothing: {report}"
    );
    assert_eq!(report["runnable"], true);

    let falcon = repo_path("tests/fixtures/gguf/unsupported-falcon.gguf");
    let assert = Command::cargo_bin("mtsum")
        .unwrap()
        .args(["models", "inspect", "--device", "cpu", "--offline"])
        .arg(&falcon)
        .assert()
        .code(2);
    let out = assert.get_output();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("family      falcon"), "{stdout}");
    assert!(stdout.contains("cannot run"), "{stdout}");
    assert!(stderr.contains("unsupported-falcon.gguf"), "{stderr}");
}
