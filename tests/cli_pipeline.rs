//! The batch shell through the library API, with a model stand-in (tests/batch_support/standin.rs;
//! the same paths with real tiny models are in cli_models.rs): every sample and hostile input,
//! outputs, digest, report, skips.

mod batch_support;

use batch_support::standin::{transliterate, Role, StandIn};
use batch_support::*;
use mtsum::io::BlockKind;
use mtsum::pipeline::batch::{BatchOptions, POOL_SEGMENTS};
use mtsum::pipeline::Pipeline;
use mtsum::progress::Silent;
use mtsum::Outcome;

const SAMPLE_FILES: [&str; 9] = [
    "01-interpol-data-exchange",
    "02-cybercrime-card-fraud",
    "03-road-safety-children",
    "04-migration-first-quarter",
    "05-crime-statistics-2023",
    "06-event-safe-city-forum",
    "2024-03-drug-lab",
    "2024-04-missing-child",
    "2024-05-border-seminar",
];

#[test]
fn every_sample_is_translated_summarized_and_written() {
    let out = tempfile::tempdir().unwrap();
    let (t, s) = (StandIn::translator(), StandIn::summarizer());
    let report = run_batch(&t, &s, &[samples()], out.path(), BatchOptions::default());
    assert_eq!(report.outcome(), Outcome::Done);
    assert_eq!((report.counts.total, report.counts.processed), (9, 9));
    let mut expected: Vec<String> = SAMPLE_FILES
        .iter()
        .flat_map(|f| [format!("{f}.json"), format!("{f}.md")])
        .chain(["digest.jsonl", "digest.md", "report.json"].map(String::from))
        .collect();
    expected.sort();
    assert_eq!(file_names(out.path()), expected);
    for file in SAMPLE_FILES {
        let output = read_output(out.path(), file);
        let summary = output.summary.as_ref().expect("a summary");
        assert!(!summary.ru.is_empty() && !summary.en.is_empty(), "{file}");
        assert_eq!(
            summary.en,
            transliterate(&summary.ru),
            "{file}: English summary"
        );
        for pair in output.paragraphs.iter().flat_map(|p| &p.sentences) {
            assert_eq!(pair.en, transliterate(&pair.ru), "{file}");
        }
        let translator = output.models.translator.as_ref().unwrap();
        assert_eq!(translator.repo, "standin/translit-ru-en");
    }
}

#[test]
fn the_report_says_where_the_time_went() {
    let out = tempfile::tempdir().unwrap();
    let (t, s) = (StandIn::translator(), StandIn::summarizer());
    let report = run_batch(&t, &s, &[samples()], out.path(), BatchOptions::default());
    let timings = &report.timings;
    let stages = timings
        .stages
        .expect("a run's report has its stage timings");
    // The model stages are the releases' shares of the calls: they add up to the generation time.
    let models = stages.translate_seconds + stages.summarize_seconds;
    assert!(
        (models - timings.generation_seconds).abs() < 1e-9,
        "{timings:?}"
    );
    assert!(
        stages.translate_seconds > 0.0 && stages.summarize_seconds > 0.0,
        "{stages:?}"
    );
    assert!(
        stages.segment_seconds > 0.0 && stages.write_seconds > 0.0,
        "{stages:?}"
    );
    let counted = models + stages.segment_seconds + stages.write_seconds;
    assert!(counted <= timings.total_seconds, "{timings:?}");
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("report.json")).unwrap())
            .unwrap();
    let keys = [
        "segment_seconds",
        "translate_seconds",
        "summarize_seconds",
        "write_seconds",
    ];
    for key in keys {
        assert!(written["timings"]["stages"][key].is_f64(), "{key}");
    }
}

#[test]
fn samples_record_their_encodings_and_structure() {
    let out = tempfile::tempdir().unwrap();
    let (t, s) = (StandIn::translator(), StandIn::summarizer());
    run_batch(&t, &s, &[samples()], out.path(), BatchOptions::default());
    let encoding = |file: &str| {
        let o = read_output(out.path(), file);
        (
            o.source.encoding,
            o.source.encoding_method,
            o.source.encoding_confident,
        )
    };
    assert_eq!(
        encoding("01-interpol-data-exchange"),
        ("UTF-8".into(), "utf-8".into(), true)
    );
    assert_eq!(
        encoding("04-migration-first-quarter"),
        ("windows-1251".into(), "detected".into(), true)
    );
    assert_eq!(
        encoding("06-event-safe-city-forum"),
        ("KOI8-R".into(), "detected".into(), true)
    );

    let cyber = read_output(out.path(), "02-cybercrime-card-fraud");
    let markers: Vec<_> = cyber
        .paragraphs
        .iter()
        .filter_map(|p| p.marker.clone())
        .collect();
    assert_eq!(markers, ["1.", "2.", "3.", "4."]);
    let md = std::fs::read_to_string(out.path().join("02-cybercrime-card-fraud.md")).unwrap();
    assert!(md.contains("\n1. Sotrudniki banka nikogda"), "{md}");

    let html = std::fs::read_to_string(out.path().join("03-road-safety-children.json")).unwrap();
    for chrome in [
        "Служебный",
        "trackEvent",
        "Пресс-центр МВД",
        "Все права",
        "Новости",
    ] {
        assert!(
            !html.contains(chrome),
            "page chrome {chrome:?} leaked into the output"
        );
    }
    let road = read_output(out.path(), "03-road-safety-children");
    assert!(road
        .title
        .unwrap()
        .ru
        .starts_with("Госавтоинспекция напоминает"));
    assert!(road.paragraphs.iter().any(|p| p.kind == BlockKind::Heading));
    assert_eq!(
        road.paragraphs
            .iter()
            .filter(|p| p.kind == BlockKind::ListItem)
            .count(),
        3
    );

    let drug = read_output(out.path(), "2024-03-drug-lab");
    assert_eq!(drug.date.as_deref(), Some("2024-03-12"));
    assert_eq!(drug.extra["region"], "Московская область");
    assert_eq!(drug.extra["tags"][1], "лаборатория");
    assert_eq!(drug.source.line, Some(1));
}

#[test]
fn the_long_release_is_summarized_in_parts_not_truncated() {
    let out = tempfile::tempdir().unwrap();
    // A translator that takes 16 tokens makes the long sentences go in pieces.
    let t = StandIn::new(Role::Translator, 16);
    let s = StandIn::summarizer();
    run_batch(
        &t,
        &s,
        &[samples().join("05-crime-statistics-2023.txt")],
        out.path(),
        BatchOptions::default(),
    );
    let long = read_output(out.path(), "05-crime-statistics-2023");
    let summary = long.summary.unwrap();
    assert_eq!(summary.method, "chunked");
    assert!(summary.chunks >= 5, "{} parts", summary.chunks);
    // Every paragraph reached the summarizer: nothing was cut off.
    let seen = s.inputs_seen().join("\n");
    assert!(seen.contains("Подробные статистические сведения"));
    // Sentences longer than the translator's limit were split and rejoined, not dropped.
    let words_in: usize = long
        .paragraphs
        .iter()
        .flat_map(|p| &p.sentences)
        .map(|s| s.ru.split_whitespace().count())
        .sum();
    let words_out: usize = long
        .paragraphs
        .iter()
        .flat_map(|p| &p.sentences)
        .map(|s| s.en.split_whitespace().count())
        .sum();
    assert_eq!(words_in, words_out);
    // The stand-in refuses inputs over its limit, so these sentences went in pieces.
    let over_limit = long
        .paragraphs
        .iter()
        .flat_map(|p| &p.sentences)
        .filter(|s| s.ru.split_whitespace().count() >= 16)
        .count();
    assert!(over_limit > 10, "{over_limit} sentences over the limit");
}

#[test]
fn hostile_inputs_fail_alone_and_good_releases_are_written() {
    let inputs = tempfile::tempdir().unwrap();
    hostile_inputs(inputs.path());
    let out = tempfile::tempdir().unwrap();
    let (t, s) = (StandIn::translator(), StandIn::summarizer());
    let report = run_batch(
        &t,
        &s,
        &[inputs.path().to_path_buf()],
        out.path(),
        BatchOptions::default(),
    );
    assert_eq!(report.outcome(), Outcome::SomeFailed);
    assert_eq!(
        (
            report.counts.total,
            report.counts.processed,
            report.counts.failed
        ),
        (11, 8, 3)
    );
    let failure = |needle: &str| {
        report
            .failures
            .iter()
            .find(|f| f.source.contains(needle))
            .unwrap_or_else(|| panic!("no failure for {needle}: {:#?}", report.failures))
    };
    assert!(failure("a-empty.txt").reason.contains("empty"));
    assert!(failure("b-image.png").reason.contains("binary"));
    let jsonl = failure("g-batch.jsonl:2");
    assert!(jsonl.reason.contains("line 2"), "{}", jsonl.reason);
    assert!(jsonl.hint.contains("\"id\""));

    let names = file_names(out.path());
    for written in HOSTILE_OUTPUTS {
        assert!(
            names.contains(&format!("{written}.md")),
            "{written}.md missing from {names:?}"
        );
        assert!(
            names.contains(&format!("{written}.json")),
            "{written}.json missing"
        );
    }
    assert_eq!(names.len(), 8 * 2 + 3, "{names:?}");
    assert!(!inputs.path().join("etc").exists() && !out.path().join("../etc").exists());
    assert_eq!(read_output(out.path(), "dup").title.unwrap().ru, "Первый");
    assert_eq!(read_output(out.path(), "dup-2").title.unwrap().ru, "Второй");
    assert_eq!(read_output(out.path(), "_CON").extra["channel"], "telegram");
    let enc = |f: &str| read_output(out.path(), f).source.encoding;
    assert_eq!(
        [enc("c-cp1251"), enc("d-koi8"), enc("e-utf16")],
        ["windows-1251", "KOI8-R", "UTF-16LE"]
    );
    let page = std::fs::read_to_string(out.path().join("f-page.json")).unwrap();
    for chrome in ["СКРИПТ", "ВСТАВКА", "Меню", "Подвал"] {
        assert!(!page.contains(chrome), "{chrome} leaked");
    }
    let on_disk = read_report(out.path());
    assert_eq!(on_disk["counts"]["failed"], 3);
    assert_eq!(on_disk["releases"].as_array().unwrap().len(), 11);
}

#[test]
fn a_release_the_model_fails_on_does_not_stop_the_batch() {
    let out = tempfile::tempdir().unwrap();
    let t = StandIn::translator().failing_on("Екатеринбурге");
    let s = StandIn::summarizer();
    let report = run_batch(&t, &s, &[samples()], out.path(), BatchOptions::default());
    assert_eq!(report.outcome(), Outcome::SomeFailed);
    assert_eq!((report.counts.processed, report.counts.failed), (8, 1));
    let failure = &report.failures[0];
    assert_eq!(failure.release, "2024-04-missing-child");
    assert!(
        failure.reason.contains("cannot handle"),
        "{}",
        failure.reason
    );
    assert!(!out.path().join("2024-04-missing-child.json").exists());
    assert!(out.path().join("2024-05-border-seminar.json").exists());
    let digest = std::fs::read_to_string(out.path().join("digest.jsonl")).unwrap();
    assert_eq!(digest.lines().count(), 8);
}

#[test]
fn reruns_skip_what_is_up_to_date_and_redo_what_changed() {
    let inputs = tempfile::tempdir().unwrap();
    for f in [
        "01-interpol-data-exchange.txt",
        "02-cybercrime-card-fraud.md",
        "07-regional-news.jsonl",
    ] {
        std::fs::copy(samples().join(f), inputs.path().join(f)).unwrap();
    }
    let paths = [inputs.path().to_path_buf()];
    let out = tempfile::tempdir().unwrap();
    let first = run_batch(
        &StandIn::translator(),
        &StandIn::summarizer(),
        &paths,
        out.path(),
        BatchOptions::default(),
    );
    assert_eq!(first.counts.processed, 5);

    let (t, s) = (StandIn::translator(), StandIn::summarizer());
    let again = run_batch(&t, &s, &paths, out.path(), BatchOptions::default());
    assert_eq!((again.counts.processed, again.counts.skipped), (0, 5));
    assert_eq!(
        t.inputs_seen().len() + s.inputs_seen().len(),
        0,
        "no model call for skipped releases"
    );
    let digest = std::fs::read_to_string(out.path().join("digest.jsonl")).unwrap();
    assert_eq!(
        digest.lines().count(),
        5,
        "skipped releases stay in the digest"
    );

    let edited = inputs.path().join("01-interpol-data-exchange.txt");
    let text = std::fs::read_to_string(&edited).unwrap();
    std::fs::write(
        &edited,
        text.replace("112 разыскиваемых", "113 разыскиваемых"),
    )
    .unwrap();
    let changed = run_batch(
        &StandIn::translator(),
        &StandIn::summarizer(),
        &paths,
        out.path(),
        BatchOptions::default(),
    );
    assert_eq!((changed.counts.processed, changed.counts.skipped), (1, 4));
    assert_eq!(
        changed.releases[0].status,
        mtsum::pipeline::batch::Status::Processed
    );

    let side = BatchOptions {
        side_by_side: true,
        ..BatchOptions::default()
    };
    let settings_changed = run_batch(
        &StandIn::translator(),
        &StandIn::summarizer(),
        &paths,
        out.path(),
        side,
    );
    assert_eq!(
        settings_changed.counts.processed, 5,
        "other settings redo everything"
    );

    let forced = BatchOptions {
        side_by_side: true,
        force: true,
        ..BatchOptions::default()
    };
    let forced = run_batch(
        &StandIn::translator(),
        &StandIn::summarizer(),
        &paths,
        out.path(),
        forced,
    );
    assert_eq!(forced.counts.processed, 5);
}

#[test]
fn markdown_has_titles_summaries_translation_and_optional_table() {
    let out = tempfile::tempdir().unwrap();
    let path = [samples().join("01-interpol-data-exchange.txt")];
    let side = BatchOptions {
        side_by_side: true,
        ..BatchOptions::default()
    };
    run_batch(
        &StandIn::translator(),
        &StandIn::summarizer(),
        &path,
        out.path(),
        side,
    );
    let md = std::fs::read_to_string(out.path().join("01-interpol-data-exchange.md")).unwrap();
    let title_ru = "МВД России и Интерпол расширят обмен сведениями о лицах, находящихся в международном розыске";
    assert!(
        md.starts_with(&format!("# {}\n\n*{title_ru}*\n", transliterate(title_ru))),
        "{md}"
    );
    let order: Vec<usize> = [
        "## Summary",
        "## Краткое содержание",
        "## Translation",
        "## Side by side",
        "| Русский | English |",
    ]
    .iter()
    .map(|h| md.find(h).unwrap_or_else(|| panic!("{h} missing")))
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
    assert!(md.contains("| В мероприятии") || md.contains("| Сегодня в г. Лионе, Франция,"));
    let digest = std::fs::read_to_string(out.path().join("digest.md")).unwrap();
    assert!(
        digest.contains("1 releases")
            && digest.contains("[Full text](01-interpol-data-exchange.md)")
    );
}

#[test]
fn translate_lines_gives_one_line_per_input_line() {
    let t = StandIn::translator();
    let pipeline = Pipeline::new(Some(&t), None, run_options(false).without_summary()).unwrap();
    let lines: Vec<String> = [
        "Первая строка.",
        "",
        "  ",
        "Вторая\u{2028}строка.",
        &"слово ".repeat(100),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut out = Vec::new();
    pipeline.translate_lines(&lines, POOL_SEGMENTS, &Silent, |line, _| {
        out.push(line.unwrap());
        true
    });
    assert_eq!(out.len(), lines.len());
    assert_eq!(out[0], "Pervaya stroka.");
    assert_eq!((out[1].as_str(), out[2].as_str()), ("", ""));
    assert!(!out[3].contains(['\n', '\u{2028}']));
    assert_eq!(
        out[4].split_whitespace().count(),
        100,
        "a long line is split, translated and rejoined"
    );
    // Blank lines cost nothing; 100 words against a 40-token limit go in four halves-of-halves.
    assert_eq!(t.inputs_seen().len(), 2 + 4);
}

/// `--lines` modes report per line and go on: a line the model fails on gets its error, the
/// others their outputs, in input order; a pooled call that fails is run again call by call.
#[test]
fn a_failing_line_fails_alone_in_the_lines_modes() {
    let mut t = StandIn::translator();
    t.fail_on = Some("bad".into());
    let pipeline = Pipeline::new(Some(&t), None, run_options(false).without_summary()).unwrap();
    let lines: Vec<String> = ["Первая строка.", "Строка bad.", "", "Третья строка."]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut out = Vec::new();
    pipeline.translate_lines(&lines, POOL_SEGMENTS, &Silent, |line, _| {
        out.push(line.map_err(|e| e.to_string()));
        true
    });
    assert_eq!(out.len(), lines.len());
    assert_eq!(out[0].as_deref(), Ok("Pervaya stroka."));
    assert!(
        out[1].as_ref().is_err_and(|e| e.contains("cannot handle")),
        "{:?}",
        out[1]
    );
    assert_eq!(out[2].as_deref(), Ok(""));
    assert_eq!(out[3].as_deref(), Ok("Tretya stroka."));

    let s = {
        let mut s = StandIn::summarizer();
        s.fail_on = Some("bad".into());
        s
    };
    let t = StandIn::translator();
    let pipeline = Pipeline::new(Some(&t), Some(&s), run_options(false)).unwrap();
    let mut summaries = Vec::new();
    pipeline.summarize_lines(&lines, POOL_SEGMENTS, &Silent, |summary, _| {
        summaries.push(summary.map(|s| s.map(|s| s.ru)));
        true
    });
    assert_eq!(summaries.len(), lines.len());
    assert!(matches!(&summaries[0], Ok(Some(ru)) if !ru.is_empty()));
    assert!(summaries[1].is_err());
    assert!(
        matches!(summaries[2], Ok(None)),
        "a blank line has no summary"
    );
    assert!(matches!(&summaries[3], Ok(Some(ru)) if !ru.is_empty()));
}

/// `emit` returning false (stdout closed) starts no more lines.
#[test]
fn the_lines_modes_stop_when_nobody_reads() {
    let t = StandIn::translator();
    let pipeline = Pipeline::new(Some(&t), None, run_options(false).without_summary()).unwrap();
    let lines: Vec<String> = (0..10).map(|i| format!("Строка {i}.")).collect();
    let mut emitted = 0;
    // Groups of one line: the pool hands over each line as soon as it waits.
    pipeline.translate_lines(&lines, 1, &Silent, |_, _| {
        emitted += 1;
        emitted < 3
    });
    assert_eq!(emitted, 3);
    assert!(t.inputs_seen().len() < lines.len(), "{:?}", t.inputs_seen());
}

trait WithoutSummary {
    fn without_summary(self) -> Self;
}
impl WithoutSummary for mtsum::pipeline::PipelineOptions {
    fn without_summary(mut self) -> Self {
        self.summarize = false;
        self
    }
}
