//! `mtsum run` end to end from an empty cache: the default presets are downloaded from a mock
//! hub on 127.0.0.1 (`HF_ENDPOINT`), which serves the tiny fixture models under the real repo
//! ids; the resolved commits reach every output; an offline rerun makes no request at all.

mod batch_support;
mod common;

use batch_support::{read_output, read_report, repo_path, samples};
use common::mock_hub::MockHub;
use common::mtsum_with_hub;

#[test]
fn run_downloads_the_default_models_then_works_offline() {
    let hub = MockHub::start();
    let translator_commit = hub.publish_dir(
        "Helsinki-NLP/opus-mt-ru-en",
        &repo_path("tests/fixtures/models/marian_tiny"),
    );
    let summarizer_commit = hub.publish_dir(
        "IlyaGusev/rut5_base_sum_gazeta",
        &repo_path("tests/fixtures/models/rut5_tiny"),
    );
    let home = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let run = |offline: bool| {
        let mut cmd = mtsum_with_hub(&hub.endpoint(), home.path());
        if offline {
            cmd.env("HF_HUB_OFFLINE", "1");
        }
        cmd.args([
            "run",
            "--device",
            "cpu",
            "--max-length",
            "12",
            "--force",
            "--out",
        ])
        .arg(out.path())
        .arg(samples())
        .assert()
    };

    run(false).code(0);
    assert!(!hub.downloads().is_empty(), "the models were downloaded");
    let report = read_report(out.path());
    assert_eq!(report["counts"]["processed"], 9);
    assert_eq!(
        report["models"]["translator"]["commit"],
        translator_commit.as_str()
    );
    assert_eq!(
        report["models"]["summarizer"]["commit"],
        summarizer_commit.as_str()
    );
    let first = report["releases"][0]["file"].as_str().unwrap();
    let output = read_output(out.path(), first);
    let translator = output.models.translator.expect("translator recorded");
    assert_eq!(translator.repo, "Helsinki-NLP/opus-mt-ru-en");
    assert_eq!(
        translator.commit.as_deref(),
        Some(translator_commit.as_str())
    );
    let cache = home.path().join("hub/models--Helsinki-NLP--opus-mt-ru-en");
    assert!(cache.join("snapshots").join(&translator_commit).is_dir());

    hub.clear_log();
    run(true).code(0);
    assert_eq!(hub.requests().len(), 0, "offline runs send no request");
    assert_eq!(read_report(out.path())["counts"]["processed"], 9);
}
