//! `mtsum models inspect` on the committed tiny models (tests/fixtures/models), on folders
//! broken in one way each, and on a hub model cached through the mock hub.

mod common;

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use common::mock_hub::MockHub;
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/models")
        .join(name)
}

fn mtsum() -> Command {
    let mut cmd = Command::cargo_bin("mtsum").unwrap();
    // No hub is needed for a folder; make sure none is reached by mistake.
    cmd.env("HF_HUB_OFFLINE", "1").args(["--device", "cpu"]);
    cmd
}

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs `models inspect --format json ARGS`; returns the exit code, the reports and stderr.
fn inspect_json(cmd: &mut Command, args: &[&str]) -> (i32, Vec<Value>, String) {
    let out = cmd
        .args(["models", "inspect", "--format", "json"])
        .args(args)
        .output()
        .unwrap();
    let reports: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", stdout(&out), stderr(&out)));
    (
        out.status.code().unwrap(),
        reports.as_array().expect("an array of reports").clone(),
        stderr(&out),
    )
}

fn one_report(args: &[&str]) -> (i32, Value, String) {
    let (code, mut reports, err) = inspect_json(&mut mtsum(), args);
    assert_eq!(reports.len(), 1, "{reports:?}");
    (code, reports.remove(0), err)
}

/// The `generation` entry of one setting: (value, origin).
fn setting(report: &Value, name: &str) -> (Value, String) {
    let entry = (report["generation"].as_array().unwrap().iter())
        .find(|s| s["setting"] == name)
        .unwrap_or_else(|| panic!("no {name} in {report}"));
    (
        entry["value"].clone(),
        entry["origin"].as_str().unwrap().to_string(),
    )
}

fn path_arg(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A copy of a fixture, to break in one way.
fn copy_fixture(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixture(name)).unwrap().flatten() {
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    dir
}

fn edit_json(path: &Path, edit: impl FnOnce(&mut Value)) {
    let mut value: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    edit(&mut value);
    std::fs::write(path, value.to_string()).unwrap();
}

#[test]
fn marian_text_report_names_every_part() {
    let out = mtsum()
        .args(["models", "inspect"])
        .arg(fixture("marian_tiny"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    for expected in [
        "commit      -\n",
        "family      marian (MarianMTModel)\n",
        "weights     model.safetensors (safetensors, ",
        "tokenizer   Marian SentencePiece pair (source.spm + target.spm + vocab.json)\n",
        "role        generate\n",
        "max input   64 tokens (config.json max_position_embeddings)\n",
        "loaded      on cpu in f32\n",
        "status      ok: mtsum can run this model\n",
    ] {
        assert!(text.contains(expected), "{expected:?} not in\n{text}");
    }
    let line = |name: &str| {
        (text.lines())
            .find(|l| l.trim_start().starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    // marian_tiny's generation_config.json: num_beams 4, max_length 64, bad_words_ids [[870]].
    assert_eq!(line("num_beams"), "num_beams 4 generation_config.json");
    assert_eq!(
        line("max_new_tokens"),
        "max_new_tokens 63 generation_config.json"
    );
    assert_eq!(
        line("bad_words_ids"),
        "bad_words_ids [[870]] generation_config.json"
    );
    assert_eq!(
        line("length_penalty"),
        "length_penalty 1.0 transformers default"
    );
}

#[test]
fn flags_show_as_flag_origins() {
    let (code, report, err) = one_report(&[
        "--beams",
        "2",
        "--max-length",
        "7",
        path_arg(&fixture("marian_tiny")),
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(setting(&report, "num_beams"), (2.into(), "flag".into()));
    assert_eq!(
        setting(&report, "max_new_tokens"),
        (7.into(), "flag".into())
    );
    assert_eq!(
        setting(&report, "min_new_tokens"),
        (0.into(), "transformers_default".into())
    );

    // The summarizer's --summary-length sets both bounds, over task_specific_params.
    let (code, report, err) = one_report(&[
        "--role",
        "summarizer",
        "--summary-length",
        "short",
        path_arg(&fixture("bart_legacy")),
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        setting(&report, "min_new_tokens"),
        (8.into(), "flag".into())
    );
    assert_eq!(
        setting(&report, "max_new_tokens"),
        (60.into(), "flag".into())
    );
    assert_eq!(
        setting(&report, "length_penalty"),
        (1.5.into(), "task_specific_params".into())
    );
}

#[test]
fn t5_without_generation_config_reads_config_json() {
    let dir = fixture("rut5_tiny");
    assert!(!dir.join("generation_config.json").exists());
    let (code, report, err) = one_report(&[path_arg(&dir)]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(report["model_type"], "t5");
    assert_eq!(report["architectures"][0], "T5ForConditionalGeneration");
    assert_eq!(report["commit"], Value::Null);
    assert_eq!(report["revision"], Value::Null);
    assert_eq!(report["weights"]["format"], "safetensors");
    let size = std::fs::metadata(dir.join("model.safetensors"))
        .unwrap()
        .len();
    assert_eq!(report["weights"]["bytes"], size);
    assert_eq!(report["tokenizer"]["kind"], "tokenizer_json");
    assert_eq!(setting(&report, "num_beams").1, "config_json");
    assert_eq!(
        setting(&report, "decoder_start_token_id"),
        (2.into(), "config_json".into())
    );
    // T5 has no position limit: mtsum's own cap applies.
    assert_eq!(report["max_input_tokens_origin"], "mtsum_default");
    assert_eq!(report["runnable"], true);
    assert_eq!(report["problems"], serde_json::json!([]));
    assert_eq!(report["loaded"]["dtype"], "f32");
}

#[test]
fn bart_legacy_as_summarizer_takes_task_specific_params_below_the_flags() {
    let dir = fixture("bart_legacy");
    // As `mtsum generate` runs it: config.json's own generation keys (max_length 40).
    let (code, report, err) = one_report(&[path_arg(&dir)]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(report["role"], "generate");
    assert_eq!(report["tokenizer"]["kind"], "byte_level_bpe");
    assert_eq!(report["prefix"], Value::Null);
    assert_eq!(
        setting(&report, "max_new_tokens"),
        (39.into(), "config_json".into())
    );
    // force_bos_token_to_be_generated: true forces bos_token_id 0.
    assert_eq!(
        setting(&report, "forced_bos_token_id"),
        (0.into(), "config_json".into())
    );

    let (code, report, err) = one_report(&["--role", "summarizer", "--beams", "2", path_arg(&dir)]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(report["role"], "summarizer");
    assert_eq!(report["prefix"], " ");
    assert_eq!(setting(&report, "num_beams"), (2.into(), "flag".into()));
    assert_eq!(
        setting(&report, "max_new_tokens"),
        (29.into(), "task_specific_params".into())
    );
    assert_eq!(
        setting(&report, "no_repeat_ngram_size"),
        (2.into(), "task_specific_params".into())
    );
    assert_eq!(
        setting(&report, "eos_token_ids"),
        (serde_json::json!([2]), "config_json".into())
    );
}

#[test]
fn weight_formats_are_told_apart() {
    for (name, format) in [
        ("marian_deep_bin", "zip_bin"),
        ("marian_deep_legacy", "legacy_bin"),
        ("t5_tiny_legacy", "legacy_bin"),
        ("bart_tiny_sharded", "sharded_safetensors"),
    ] {
        let (code, report, err) = one_report(&[path_arg(&fixture(name))]);
        assert_eq!(code, 0, "{name}: {err}");
        assert_eq!(report["weights"]["format"], format, "{name}");
    }
    let (_, report, _) = one_report(&[path_arg(&fixture("bart_tiny_sharded"))]);
    assert_eq!(report["weights"]["files"].as_array().unwrap().len(), 2);
    let out = mtsum()
        .args(["models", "inspect", "--no-load"])
        .arg(fixture("marian_deep_legacy"))
        .output()
        .unwrap();
    assert!(
        stdout(&out).contains("weights     pytorch_model.bin (legacy .bin, "),
        "{}",
        stdout(&out)
    );
}

#[test]
fn a_folder_without_weights_cannot_run() {
    let dir = copy_fixture("marian_tiny");
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    let (code, report, err) = one_report(&[path_arg(dir.path())]);
    assert_eq!(code, 2);
    assert_eq!(report["runnable"], false);
    assert_eq!(report["weights"], Value::Null);
    // What could be read is still reported.
    assert_eq!(report["tokenizer"]["kind"], "marian_spm_pair");
    assert_eq!(setting(&report, "num_beams").0, 4);
    assert!(
        err.contains("cannot run") && err.contains("no weights found"),
        "{err}"
    );
    assert!(
        report["problems"][0]
            .as_str()
            .unwrap()
            .contains("no weights found"),
        "{report}"
    );
}

#[test]
fn an_unsupported_model_type_cannot_run() {
    let dir = copy_fixture("marian_tiny");
    edit_json(&dir.path().join("config.json"), |c| {
        c["model_type"] = "llama".into()
    });
    let out = mtsum()
        .args(["models", "inspect"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stdout(&out).contains("family      llama (MarianMTModel)"),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains("status      cannot run"),
        "{}",
        stdout(&out)
    );
    assert!(
        stderr(&out).contains("model_type `llama` is not supported"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn bad_config_values_are_named_with_their_file() {
    // A generation setting of the wrong type: found without loading anything.
    let dir = copy_fixture("marian_tiny");
    edit_json(&dir.path().join("generation_config.json"), |g| {
        g["num_beams"] = "four".into()
    });
    let (code, _, err) = one_report(&["--no-load", path_arg(dir.path())]);
    assert_eq!(code, 2);
    assert!(
        err.contains("generation_config.json") && err.contains("num_beams"),
        "{err}"
    );

    // A model setting the loader refuses: found by loading (and missed with --no-load).
    let dir = copy_fixture("bart_legacy");
    edit_json(&dir.path().join("config.json"), |c| {
        c["activation_function"] = "gelu_fancy".into()
    });
    let (code, report, err) = one_report(&[path_arg(dir.path())]);
    assert_eq!(code, 2);
    assert!(
        err.contains("config.json") && err.contains("activation_function"),
        "{err}"
    );
    assert_eq!(report["loaded"], Value::Null);
    let (code, report, _) = one_report(&["--no-load", path_arg(dir.path())]);
    assert_eq!(code, 0);
    assert_eq!(report["loaded"], Value::Null);
}

#[test]
fn a_damaged_tokenizer_cannot_run() {
    let dir = copy_fixture("marian_tiny");
    std::fs::write(dir.path().join("source.spm"), b"not a sentencepiece model").unwrap();
    let (code, report, err) = one_report(&[path_arg(dir.path())]);
    assert_eq!(code, 2);
    assert!(err.contains("source.spm"), "{err}");
    // The kind is told by the files; building it is what fails.
    assert_eq!(report["tokenizer"]["kind"], "marian_spm_pair");

    let dir = copy_fixture("bart_legacy");
    std::fs::remove_file(dir.path().join("merges.txt")).unwrap();
    let (code, report, err) = one_report(&[path_arg(dir.path())]);
    assert_eq!(code, 2);
    assert!(err.contains("no tokenizer files"), "{err}");
    assert_eq!(report["tokenizer"], Value::Null);
}

#[test]
fn without_a_model_the_run_s_translator_and_summarizer_are_inspected() {
    let mut cmd = mtsum();
    cmd.arg("--translator")
        .arg(fixture("marian_tiny"))
        .arg("--summarizer")
        .arg(fixture("bart_legacy"));
    let (code, reports, err) = inspect_json(&mut cmd, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(reports.len(), 2);
    assert_eq!(reports[0]["role"], "translator");
    assert_eq!(reports[1]["role"], "summarizer");
    assert_eq!(
        setting(&reports[1], "max_new_tokens").1,
        "task_specific_params"
    );
}

/// A hub model through the mock hub: inspecting online fetches no weights; once fetched, the
/// cached model is inspected offline with its commit.
#[test]
fn a_cached_hub_model_offline_shows_its_commit() {
    let hub = MockHub::start();
    let commit = hub.publish_dir("org/tiny-marian", &fixture("marian_tiny"));
    let home = tempfile::tempdir().unwrap();
    let hub_cmd = || {
        let mut cmd = common::mtsum_with_hub(&hub.endpoint(), home.path());
        cmd.args(["--device", "cpu"]);
        cmd
    };

    // Online, nothing cached: config and tokenizer only; the report says the weights are missing.
    let (code, reports, err) = inspect_json(&mut hub_cmd(), &["org/tiny-marian"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("not in the cache") && err.contains("mtsum models fetch org/tiny-marian"),
        "{err}"
    );
    assert_eq!(reports[0]["tokenizer"]["kind"], "marian_spm_pair");
    let fetched: Vec<String> = hub.downloads().into_iter().map(|d| d.path).collect();
    assert!(
        fetched.iter().any(|p| p.ends_with("/source.spm")),
        "{fetched:?}"
    );
    assert!(
        !fetched.iter().any(|p| p.ends_with(".safetensors")),
        "{fetched:?}"
    );

    // --fetch downloads what a run needs.
    let (code, _, err) = inspect_json(&mut hub_cmd(), &["--fetch", "org/tiny-marian"]);
    assert_eq!(code, 0, "{err}");

    hub.clear_log();
    let (code, reports, err) = inspect_json(&mut hub_cmd(), &["--offline", "org/tiny-marian"]);
    assert_eq!(code, 0, "{err}");
    assert!(hub.requests().is_empty(), "{:?}", hub.requests());
    let report = &reports[0];
    assert_eq!(report["repo"], "org/tiny-marian");
    assert_eq!(report["revision"], "main");
    assert_eq!(report["commit"], commit.as_str());
    assert_eq!(report["weights"]["format"], "safetensors");
    assert!(
        report["dir"].as_str().unwrap().ends_with(&commit),
        "{report}"
    );

    let out = hub_cmd()
        .args(["--offline", "models", "inspect", "org/tiny-marian"])
        .output()
        .unwrap();
    assert!(
        stdout(&out).contains(&format!("commit      {commit}\n")),
        "{}",
        stdout(&out)
    );
}

/// What inspect reads from the config files alone is what a loaded runner resolves, for every
/// fixture in both roles, with and without flags: the report cannot drift from the run.
#[test]
fn the_report_matches_the_loaded_runner() {
    use mtsum::generate::GenerationOverrides;
    use mtsum::inspect::{inspect, InspectRole, Request};
    use mtsum::loader::{load, Role};

    let device = candle_core::Device::Cpu;
    let flags = GenerationOverrides {
        num_beams: Some(3),
        min_new_tokens: Some(2),
        ..GenerationOverrides::default()
    };
    for (name, preset) in [
        ("marian_tiny", None),
        ("marian_tiny", Some("opus-mt-ru-en")),
        ("rut5_tiny", None),
        // The preset's input limit and settings over the repo's (as for the real rut5).
        ("rut5_tiny", Some("rut5-base-sum-gazeta")),
        ("bart_legacy", None),
        ("bart_legacy", Some("distilbart-cnn-12-6")),
        ("bart_tiny", None),
        ("mbart_tiny", None),
        ("mt5_tiny", None),
        ("marian_deep_legacy", None),
    ] {
        let resolved = mtsum::hub::ResolvedModel {
            dir: fixture(name),
            repo: name.into(),
            revision: None,
            commit: None,
            preset: preset.map(|p| mtsum::hub::preset(p).unwrap().unwrap()),
        };
        for (role, runner_role) in [
            (InspectRole::Generate, Role::Generate),
            (InspectRole::Summarizer, Role::Summarizer),
        ] {
            let runner = load(
                &resolved,
                &device,
                candle_core::DType::F32,
                None,
                runner_role,
                &mtsum::progress::Silent,
            )
            .unwrap();
            for overrides in [GenerationOverrides::default(), flags.clone()] {
                let report = inspect(&Request {
                    spec: name,
                    resolved: &resolved,
                    role,
                    overrides: &overrides,
                    load: None,
                });
                assert!(report.runnable, "{name}: {:?}", report.problems);
                assert_eq!(
                    report.generation,
                    runner.setting_origins(&overrides).unwrap(),
                    "{name} as {role:?}"
                );
                assert_eq!(
                    report.max_input_tokens,
                    Some(runner.max_input_tokens()),
                    "{name}"
                );
                assert_eq!(report.prefix.as_deref(), runner.prefix(), "{name}");
            }
        }
    }
}

/// A model that cannot be resolved (offline, not cached) is reported like any other that
/// cannot run, and the others are still inspected.
#[test]
fn an_uncached_model_offline_is_one_failed_report_among_others() {
    let home = tempfile::tempdir().unwrap();
    let mut cmd = common::mtsum_with_hub(&MockHub::unreachable_endpoint(), home.path());
    cmd.args(["--device", "cpu", "--offline"]);
    let (code, reports, err) = inspect_json(
        &mut cmd,
        &[path_arg(&fixture("marian_tiny")), "org/not-cached"],
    );
    assert_eq!(code, 2);
    assert_eq!(reports.len(), 2);
    assert_eq!(reports[0]["runnable"], true);
    assert_eq!(reports[1]["runnable"], false);
    assert_eq!(reports[1]["dir"], Value::Null);
    assert!(
        err.contains("org/not-cached cannot run")
            && err.contains("mtsum models fetch org/not-cached"),
        "{err}"
    );
    assert!(!err.contains("marian_tiny cannot run"), "{err}");
}
