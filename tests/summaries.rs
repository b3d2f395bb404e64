//! Summaries through the library API with the tests' stand-in models: the guards and their
//! fall-backs, extracts, summaries from the English side, sentence caps and the digest's order.
//! What needs a real model (the length options) is in tests/summaries_models.rs.

mod batch_support;

use std::path::PathBuf;

use batch_support::standin::{transliterate, Loop, StandIn};
use batch_support::{read_items, read_output, read_report, run_options};
use mtsum::io::OutputDir;
use mtsum::pipeline::batch::{self, BatchOptions, DigestOrder};
use mtsum::pipeline::{Pipeline, PipelineOptions, SummaryOptions};
use mtsum::progress::Silent;
use mtsum::summary::SummarySide;

const RELEASE: &str = "\
Сотрудники полиции задержали группу мошенников в Казани.
Злоумышленники похищали деньги с банковских карт пенсионеров.
Погода в этот день была солнечной.
Мошенники похищали деньги с банковских карт, звоня от имени банка.
Возбуждено уголовное дело о мошенничестве с банковскими картами.
";

fn options(summaries: SummaryOptions) -> PipelineOptions {
    PipelineOptions {
        summaries,
        ..run_options(false)
    }
}

fn release_file(dir: &std::path::Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn summarize(pipeline: &Pipeline, document: &str) -> mtsum::io::SummaryOut {
    let mut tokens = Default::default();
    pipeline.summarize(document, &Silent, &mut tokens).unwrap()
}

#[test]
fn a_looping_summary_is_retried_then_replaced_by_the_lead_sentences() {
    let translator = StandIn::translator();
    let summarizer = StandIn::summarizer().looping(Loop::Always);
    let pipeline = Pipeline::new(
        Some(&translator),
        Some(&summarizer),
        options(SummaryOptions {
            max_sentences: Some(2),
            ..SummaryOptions::default()
        }),
    )
    .unwrap();
    let summary = summarize(&pipeline, RELEASE);
    assert_eq!(summary.method, "lead-fallback");
    assert_eq!(
        summary.ru,
        "Сотрудники полиции задержали группу мошенников в Казани. \
         Злоумышленники похищали деньги с банковских карт пенсионеров."
    );
    assert_eq!(summary.en, transliterate(&summary.ru));
    assert_eq!(summary.notes.len(), 2, "{:?}", summary.notes);
    assert!(summary.notes[0].contains("repeated"), "{:?}", summary.notes);
    assert!(summary.notes[1].contains("lead sentences"));
    assert_eq!(
        summarizer.calls.load(std::sync::atomic::Ordering::SeqCst),
        2
    );
}

#[test]
fn a_loop_cured_by_stricter_settings_keeps_the_retry() {
    let translator = StandIn::translator();
    let summarizer = StandIn::summarizer().looping(Loop::UnlessStrict);
    let pipeline = Pipeline::new(Some(&translator), Some(&summarizer), run_options(false)).unwrap();
    let summary = summarize(&pipeline, RELEASE);
    assert_eq!(summary.method, "abstractive");
    assert!(summary.ru.starts_with("Сотрудники полиции задержали"));
    assert_eq!(summary.notes.len(), 1);
    assert!(summary.notes[0].contains("retried with stricter settings"));
}

#[test]
fn looping_translations_are_marked_in_the_json_and_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let input = release_file(dir.path(), "loop.txt", RELEASE);
    let translator = StandIn::translator().looping(Loop::Always);
    let summarizer = StandIn::summarizer();
    let pipeline = Pipeline::new(Some(&translator), Some(&summarizer), run_options(false)).unwrap();
    let out_dir = dir.path().join("out");
    let out = OutputDir::create(&out_dir).unwrap();
    let report = batch::run(
        &pipeline,
        read_items(&[input]),
        &out,
        &BatchOptions::default(),
        &Silent,
    )
    .unwrap();
    assert_eq!(report.counts.processed, 1);
    let output = read_output(&out_dir, "loop");
    let marked: Vec<_> = output
        .paragraphs
        .iter()
        .flat_map(|p| &p.sentences)
        .filter(|s| s.guard.is_some())
        .collect();
    assert!(!marked.is_empty());
    assert!(marked[0]
        .guard
        .as_deref()
        .unwrap()
        .contains("even with stricter settings"));
    let warnings = &read_report(&out_dir)["releases"][0]["warnings"];
    assert!(
        warnings.as_array().is_some_and(|w| w
            .iter()
            .any(|w| w.as_str().unwrap().contains("translation of"))),
        "{warnings}"
    );
}

#[test]
fn extractive_summaries_need_no_summarizer_and_align_both_languages() {
    let translator = StandIn::translator();
    let pipeline = Pipeline::new(
        Some(&translator),
        None,
        options(SummaryOptions {
            extractive: true,
            max_sentences: Some(2),
            ..SummaryOptions::default()
        }),
    )
    .unwrap();
    let summary = summarize(&pipeline, RELEASE);
    assert_eq!(summary.method, "extractive");
    assert!(summary.ru.starts_with("Сотрудники полиции задержали"));
    assert!(
        !summary.ru.contains("Погода"),
        "the off-topic sentence is not key"
    );
    assert_eq!(summary.en, transliterate(&summary.ru));
    assert_eq!(mtsum::text::sentences(&summary.ru).len(), 2);
}

#[test]
fn summaries_from_the_english_side_take_the_covering_russian_extract() {
    let translator = StandIn::translator();
    // The stand-in summarizer keeps the lead line of what it reads: here the translation.
    let summarizer = StandIn::summarizer();
    let pipeline = Pipeline::new(
        Some(&translator),
        Some(&summarizer),
        options(SummaryOptions {
            side: SummarySide::En,
            ..SummaryOptions::default()
        }),
    )
    .unwrap();
    let summary = summarize(&pipeline, RELEASE);
    assert_eq!(summary.method, "abstractive-from-en");
    assert_eq!(
        summary.en,
        "Sotrudniki policzii zaderzhali gruppu moshennikov v Kazani."
    );
    assert_eq!(
        summary.ru,
        "Сотрудники полиции задержали группу мошенников в Казани."
    );
    let read = summarizer.inputs_seen();
    assert!(
        read.iter().all(|input| !input.contains('С')),
        "the summarizer read English: {read:?}"
    );
}

#[test]
fn summary_sentences_cap_both_languages() {
    let translator = StandIn::translator();
    let summarizer = StandIn::summarizer();
    let mut capped = run_options(false);
    capped.summaries.max_sentences = Some(1);
    let pipeline = Pipeline::new(Some(&translator), Some(&summarizer), capped).unwrap();
    let two_sentences = "Полиция задержала мошенников. Они похищали деньги.\nВторой абзац.";
    let summary = summarize(&pipeline, two_sentences);
    assert_eq!(summary.ru, "Полиция задержала мошенников.");
    assert_eq!(summary.en, transliterate("Полиция задержала мошенников."));
}

#[test]
fn the_digest_can_follow_the_releases_dates() {
    let dir = tempfile::tempdir().unwrap();
    let jsonl = [
        r#"{"id": "late", "date": "2024-05-02", "text": "Поздний выпуск новостей полиции."}"#,
        r#"{"id": "undated", "text": "Выпуск без даты."}"#,
        r#"{"id": "early", "date": "2023-11-20", "text": "Ранний выпуск новостей полиции."}"#,
    ]
    .join("\n");
    let input = release_file(dir.path(), "news.jsonl", &jsonl);
    let translator = StandIn::translator();
    let summarizer = StandIn::summarizer();
    let pipeline = Pipeline::new(Some(&translator), Some(&summarizer), run_options(false)).unwrap();
    let order = |digest_order| {
        let out_dir = dir.path().join(format!("{digest_order:?}"));
        let out = OutputDir::create(&out_dir).unwrap();
        let options = BatchOptions {
            digest_order,
            ..BatchOptions::default()
        };
        batch::run(
            &pipeline,
            read_items(std::slice::from_ref(&input)),
            &out,
            &options,
            &Silent,
        )
        .unwrap();
        let digest = std::fs::read_to_string(out_dir.join("digest.jsonl")).unwrap();
        digest
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["id"].to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    assert_eq!(order(DigestOrder::Input), r#""late","undated","early""#);
    assert_eq!(order(DigestOrder::Date), r#""early","late","undated""#);
}
