//! The binary end to end with real (tiny) models: `run`, `translate --lines`, `summarize
//! --lines`, reruns. The models are folders named by MTSUM_TEST_TRANSLATOR and
//! MTSUM_TEST_SUMMARIZER (default: the committed fixtures tests/fixtures/models/marian_tiny
//! and tests/fixtures/models/rut5_tiny, random-weight models in the exact hub layout).

mod batch_support;

use std::path::PathBuf;

use assert_cmd::Command;
use batch_support::*;

/// The translator and summarizer folders.
fn models() -> (PathBuf, PathBuf) {
    let folder = |var: &str, default: &str| {
        std::env::var_os(var).map_or_else(|| repo_path(default), PathBuf::from)
    };
    let translator = folder("MTSUM_TEST_TRANSLATOR", "tests/fixtures/models/marian_tiny");
    let summarizer = folder("MTSUM_TEST_SUMMARIZER", "tests/fixtures/models/rut5_tiny");
    assert!(translator.is_dir(), "no model at {}", translator.display());
    assert!(summarizer.is_dir(), "no model at {}", summarizer.display());
    (translator, summarizer)
}

fn mtsum(models: &(PathBuf, PathBuf)) -> Command {
    let mut cmd = Command::cargo_bin("mtsum").unwrap();
    cmd.arg("--translator")
        .arg(&models.0)
        .arg("--summarizer")
        .arg(&models.1);
    cmd.args(["--device", "cpu", "--max-length", "24"]);
    cmd
}

#[test]
fn run_writes_every_sample_then_skips_them_on_a_rerun() {
    let models = models();
    let out = tempfile::tempdir().unwrap();
    mtsum(&models)
        .args(["run", "--out"])
        .arg(out.path())
        .arg(samples())
        .assert()
        .code(0);
    let report = read_report(out.path());
    assert_eq!(report["counts"]["processed"], 9);
    assert_eq!(
        report["models"]["translator"]["repo"],
        models.0.to_str().unwrap()
    );
    let digest = std::fs::read_to_string(out.path().join("digest.jsonl")).unwrap();
    assert_eq!(digest.lines().count(), 9);
    for entry in report["releases"].as_array().unwrap() {
        let output = read_output(out.path(), entry["file"].as_str().unwrap());
        let summary = output.summary.expect("a summary");
        assert!(
            !summary.ru.is_empty() && !summary.en.is_empty(),
            "{}",
            output.id
        );
        assert!(output
            .paragraphs
            .iter()
            .flat_map(|p| &p.sentences)
            .all(|s| !s.en.is_empty()));
    }

    mtsum(&models)
        .args(["run", "--out"])
        .arg(out.path())
        .arg(samples())
        .assert()
        .code(0);
    assert_eq!(read_report(out.path())["counts"]["skipped"], 9);
    mtsum(&models)
        .args(["run", "--force", "--stats", "--out"])
        .arg(out.path())
        .arg(samples().join("01-interpol-data-exchange.txt"))
        .assert()
        .code(0)
        .stderr(predicates::str::contains("\"tokens_per_second\""));
    assert_eq!(read_report(out.path())["counts"]["processed"], 1);
}

#[test]
fn translate_lines_keeps_one_line_per_input_line() {
    let models = models();
    let input = "Сотрудники полиции задержали подозреваемого.\n\nВстреча прошла в Москве.\n";
    let output = mtsum(&models)
        .args(["translate", "--lines"])
        .write_stdin(input)
        .assert()
        .code(0);
    let stdout = String::from_utf8(output.get_output().stdout.clone()).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout:?}");
    assert!(!lines[0].is_empty() && lines[1].is_empty() && !lines[2].is_empty());
}

#[test]
fn summarize_lines_gives_one_summary_line_per_document() {
    let models = models();
    let input = "Первый документ о задержании.\nВторой документ о встрече делегаций.\n";
    let output = mtsum(&models)
        .args(["summarize", "--lines", "--lang", "ru"])
        .write_stdin(input)
        .assert()
        .code(0);
    assert_eq!(
        String::from_utf8_lossy(&output.get_output().stdout)
            .lines()
            .count(),
        2
    );
}

#[test]
fn hostile_inputs_fail_alone_and_the_good_ones_are_written() {
    let models = models();
    let inputs = tempfile::tempdir().unwrap();
    hostile_inputs(inputs.path());
    let out = tempfile::tempdir().unwrap();
    mtsum(&models)
        .args(["run", "--out"])
        .arg(out.path())
        .arg(inputs.path())
        .assert()
        .code(1);
    let report = read_report(out.path());
    assert_eq!(report["counts"]["failed"], 3);
    assert_eq!(report["counts"]["processed"], 8);
    for file in HOSTILE_OUTPUTS {
        let output = read_output(out.path(), file);
        assert!(!output.paragraphs.is_empty(), "{file}");
    }
    let failure = &report["failures"].as_array().unwrap()[2];
    assert!(
        failure["reason"].as_str().unwrap().contains("line 2"),
        "{failure}"
    );
}

#[test]
fn a_killed_run_leaves_whole_files_and_the_rerun_does_the_rest() {
    let models = models();
    // Enough releases that the run is still going when it is killed.
    let inputs = tempfile::tempdir().unwrap();
    let release = std::fs::read(samples().join("01-interpol-data-exchange.txt")).unwrap();
    for i in 0..40 {
        std::fs::write(inputs.path().join(format!("copy-{i:02}.txt")), &release).unwrap();
    }
    let out = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("mtsum"))
        .args(mtsum(&models).get_args())
        .args(["run", "--quiet", "--out"])
        .arg(out.path())
        .arg(inputs.path())
        .spawn()
        .unwrap();
    let written = |dir: &std::path::Path| {
        file_names(dir)
            .iter()
            .filter(|n| n.starts_with("copy-") && n.ends_with(".json"))
            .count()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    while written(out.path()) < 2 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it was killed"
        );
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let done = written(out.path());
    assert!(done < 40, "killed midway");
    for name in file_names(out.path())
        .iter()
        .filter(|n| n.ends_with(".json"))
    {
        let bytes = std::fs::read(out.path().join(name)).unwrap();
        serde_json::from_slice::<serde_json::Value>(&bytes)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    mtsum(&models)
        .args(["run", "--out"])
        .arg(out.path())
        .arg(inputs.path())
        .assert()
        .code(0);
    let report = read_report(out.path());
    assert_eq!(report["counts"]["skipped"].as_u64(), Some(done as u64));
    assert_eq!(
        report["counts"]["processed"].as_u64(),
        Some(40 - done as u64)
    );
    assert!(file_names(out.path()).iter().all(|n| !n.starts_with('.')));
}

/// A sentence of about 1,000 tokens against a model with 64 positions: it is translated in
/// pieces (never truncated, never refused), marked as split in the JSON, and comes back as one
/// sentence of one line.
#[test]
fn a_thousand_token_sentence_is_translated_in_pieces() {
    let models = models();
    let clause =
        "сотрудники полиции задержали подозреваемого в краже, который скрывался от следствия";
    let sentence = format!("{}.", vec![clause; 40].join(", и "));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("long.txt"), &sentence).unwrap();
    let out = dir.path().join("out");
    mtsum(&models)
        .args(["run", "--no-summary", "--out"])
        .arg(&out)
        .arg(dir.path().join("long.txt"))
        .assert()
        .code(0);
    let output = read_output(&out, "long");
    let pairs: Vec<_> = output
        .paragraphs
        .iter()
        .flat_map(|p| &p.sentences)
        .collect();
    assert_eq!(pairs.len(), 1, "one sentence in, one sentence out");
    assert_eq!(pairs[0].ru, sentence);
    assert!(pairs[0].pieces.unwrap_or(1) >= 16, "{:?}", pairs[0].pieces);
    assert!(!pairs[0].en.is_empty());
    let lines = mtsum(&models)
        .args(["translate", "--lines"])
        .write_stdin(format!("{sentence}\n"))
        .assert()
        .code(0);
    assert_eq!(
        String::from_utf8_lossy(&lines.get_output().stdout)
            .lines()
            .count(),
        1
    );
}
