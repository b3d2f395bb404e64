//! The built `mtsum` binary on everything that needs no model: help, flag validation, fatal
//! errors (exit 2), and every sample and hostile input through the readers (`run --dry-run`
//! reads and checks all inputs and writes report.json without loading a model).

mod batch_support;

use std::path::Path;

use assert_cmd::Command;
use batch_support::*;
use predicates::prelude::*;
use serde_json::Value;

fn mtsum() -> Command {
    Command::cargo_bin("mtsum").unwrap()
}

fn report_entry<'a>(report: &'a Value, source_suffix: &str) -> &'a Value {
    report["releases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["source"].as_str().unwrap().ends_with(source_suffix))
        .unwrap_or_else(|| panic!("no report entry for {source_suffix}: {report:#}"))
}

#[test]
fn every_subcommand_has_help_with_examples_and_there_is_a_version() {
    for sub in ["run", "translate", "summarize"] {
        mtsum()
            .args([sub, "--help"])
            .assert()
            .success()
            .stdout(predicate::str::contains("Examples:"))
            .stdout(predicate::str::contains("--encoding"));
    }
    mtsum()
        .arg("--help")
        .assert()
        .success()
        .stdout(predicate::str::contains("mtsum run"));
    mtsum()
        .arg("--version")
        .assert()
        .success()
        .stdout(predicate::str::contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn bad_flags_are_fatal() {
    mtsum()
        .args(["run", "samples"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--out"));
    let out = tempfile::tempdir().unwrap();
    let out = out.path().to_str().unwrap();
    mtsum()
        .args(["translate", "--lines", "--out", out])
        .assert()
        .code(2);
    mtsum().args(["summarize", "--lang", "fr"]).assert().code(2);
    mtsum()
        .args(["run", "--encoding", "klingon", "--out", out])
        .arg(samples())
        .assert()
        .code(2)
        .stderr(predicate::str::contains("unknown encoding `klingon`"));
}

#[test]
fn a_missing_input_is_fatal_and_named() {
    let out = tempfile::tempdir().unwrap();
    mtsum()
        .args(["run", "no/such/release.txt", "--out"])
        .arg(out.path())
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "no/such/release.txt: no such file",
        ));
    assert!(file_names(out.path()).is_empty());
}

/// A folder this process cannot write into: read-only for ordinary users; root writes
/// anywhere it has permissions for, so then /proc (which refuses everyone) stands in.
fn unwritable_folder(parent: &Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = parent.join("read-only");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555)).unwrap();
    if std::fs::write(dir.join("probe"), "x").is_ok() {
        return "/proc".into();
    }
    dir
}

#[test]
fn an_unwritable_output_folder_is_fatal_before_anything_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let read_only = unwritable_folder(tmp.path());
    for out in [read_only.clone(), read_only.join("sub")] {
        mtsum()
            .args(["run", "--dry-run", "--out"])
            .arg(&out)
            .arg(samples())
            .assert()
            .code(2)
            .stderr(predicate::str::contains("is not writable"));
    }
    let file = tmp.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    mtsum()
        .args(["run", "--out"])
        .arg(&file)
        .arg(samples())
        .assert()
        .code(2)
        .stderr(predicate::str::contains("is not writable"));
}

#[test]
fn a_model_that_cannot_be_found_is_fatal_and_named() {
    let out = tempfile::tempdir().unwrap();
    mtsum()
        .args(["run", "--translator", "/no/such/model", "--out"])
        .arg(out.path())
        .arg(samples())
        .assert()
        .code(2)
        .stderr(predicate::str::contains("/no/such/model"));
    assert!(!out.path().join("report.json").exists());
}

#[cfg(not(feature = "cuda"))]
#[test]
fn a_gpu_this_build_lacks_is_fatal_with_the_fix() {
    let out = tempfile::tempdir().unwrap();
    mtsum()
        .args(["run", "--device", "cuda", "--out"])
        .arg(out.path())
        .arg(samples())
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--features cuda"));
}

#[test]
fn dry_run_reads_every_sample() {
    let out = tempfile::tempdir().unwrap();
    let assert = mtsum()
        .args(["run", "--dry-run", "--out"])
        .arg(out.path())
        .arg(samples())
        .assert()
        .code(0);
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
    for line in [
        "ok       04-migration-first-quarter (text, windows-1251 (detected)",
        "ok       06-event-safe-city-forum (text, KOI8-R (detected)",
        "ok       03-road-safety-children (html, UTF-8",
        "ok       2024-05-border-seminar (jsonl",
    ] {
        assert!(stderr.contains(line), "{line:?} not in\n{stderr}");
    }
    let report = read_report(out.path());
    assert_eq!(report["counts"]["total"], 9);
    assert_eq!(report["counts"]["failed"], 0);
    assert!(report["releases"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["status"] == "checked"));
    assert_eq!(file_names(out.path()), ["report.json"]);
}

#[test]
fn hostile_inputs_are_reported_one_by_one() {
    let inputs = tempfile::tempdir().unwrap();
    hostile_inputs(inputs.path());
    let out = tempfile::tempdir().unwrap();
    mtsum()
        .args(["run", "--dry-run", "--out"])
        .arg(out.path())
        .arg(inputs.path())
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "g-batch.jsonl:2: line 2: invalid JSON",
        ));
    let report = read_report(out.path());
    assert_eq!(
        (
            report["counts"]["total"].as_u64(),
            report["counts"]["failed"].as_u64()
        ),
        (Some(11), Some(3))
    );
    for (source, reason) in [
        ("a-empty.txt", "empty"),
        ("b-image.png", "binary"),
        ("g-batch.jsonl:2", "line 2"),
    ] {
        let entry = report_entry(&report, source);
        assert_eq!(entry["status"], "failed");
        let failure = report["failures"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["source"] == entry["source"])
            .unwrap();
        assert!(
            failure["reason"].as_str().unwrap().contains(reason),
            "{failure}"
        );
        assert!(!failure["hint"].as_str().unwrap().is_empty());
    }
    for (source, file) in [
        ("c-cp1251.txt", "c-cp1251"),
        ("d-koi8.txt", "d-koi8"),
        ("e-utf16.txt", "e-utf16"),
        ("f-page.html", "f-page"),
        ("g-batch.jsonl:1", "_.._etc_passwd"),
        ("g-batch.jsonl:3", "dup"),
        ("g-batch.jsonl:4", "dup-2"),
        ("g-batch.jsonl:5", "_CON"),
    ] {
        let entry = report_entry(&report, source);
        assert_eq!(
            (entry["status"].as_str(), entry["file"].as_str()),
            (Some("checked"), Some(file))
        );
    }
}

#[test]
fn stdin_is_read_when_no_input_is_named() {
    let out = tempfile::tempdir().unwrap();
    mtsum()
        .args(["run", "--dry-run", "--out"])
        .arg(out.path())
        .write_stdin("Заголовок\n\nТекст релиза из стандартного ввода.")
        .assert()
        .code(0);
    let report = read_report(out.path());
    let entry = &report["releases"][0];
    assert_eq!(
        (entry["id"].as_str(), entry["source"].as_str()),
        (Some("stdin"), Some("-"))
    );
}

#[test]
fn encoding_override_and_quiet() {
    let inputs = tempfile::tempdir().unwrap();
    let text =
        "Сотрудники полиции задержали подозреваемого в краже велосипеда во дворе жилого дома.";
    let path = inputs.path().join("koi.txt");
    std::fs::write(&path, &*encoding_rs::KOI8_R.encode(text).0).unwrap();
    let out = tempfile::tempdir().unwrap();
    mtsum()
        .args(["run", "--dry-run", "--encoding", "koi8-r", "--out"])
        .arg(out.path())
        .arg(&path)
        .assert()
        .code(0)
        .stderr(predicate::str::contains("KOI8-R (override)"));
    mtsum()
        .args(["run", "--dry-run", "--quiet", "--out"])
        .arg(out.path())
        .arg(&path)
        .assert()
        .code(0)
        .stderr(predicate::str::is_empty());
}

#[test]
fn an_unsure_encoding_guess_is_a_report_warning() {
    let inputs = tempfile::tempdir().unwrap();
    let path = inputs.path().join("short.txt");
    std::fs::write(&path, &*encoding_rs::WINDOWS_1251.encode("Привет, мир.").0).unwrap();
    let out = tempfile::tempdir().unwrap();
    mtsum()
        .args(["run", "--dry-run", "--out"])
        .arg(out.path())
        .arg(&path)
        .assert()
        .code(0)
        .stderr(predicate::str::contains("not sure"));
    let report = read_report(out.path());
    let warning = report["releases"][0]["warnings"][0].as_str().unwrap();
    assert!(warning.contains("without confidence"), "{warning}");
}
