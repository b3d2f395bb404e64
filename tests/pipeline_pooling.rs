//! `mtsum run` pools the model calls of a group of releases (src/pipeline/pool.rs): one engine
//! call per phase for the whole group, the same files as release by release, and a release the
//! model fails on fails alone. With the stand-in (tests/batch_support/standin.rs), whose calls
//! are counted, and with the tiny fixture models, whose batches are real.

mod batch_support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use batch_support::standin::{Loop, StandIn};
use batch_support::*;
use candle_core::{DType, Device};
use mtsum::hub::ResolvedModel;
use mtsum::io::OutputDir;
use mtsum::loader::{self, Role};
use mtsum::pipeline::batch::{self, BatchOptions, Report, POOL_SEGMENTS};
use mtsum::pipeline::TextGenerator;
use mtsum::pipeline::{each_release, Pipeline};
use mtsum::progress::Silent;
use serde_json::Value;

/// Every release processed alone: a group closes as soon as it holds one segment.
const ALONE: usize = 1;

fn options(pool_segments: usize) -> BatchOptions {
    BatchOptions {
        pool_segments,
        ..BatchOptions::default()
    }
}

/// The samples and the hostile inputs (in `dir`): releases of every format, some unreadable.
fn inputs(dir: &Path) -> Vec<PathBuf> {
    hostile_inputs(dir);
    vec![samples(), dir.to_path_buf()]
}

/// Every file in `out` by name, with what depends on the clock taken out: the timings of
/// outputs and report, the report's times and rate, the digest's date line.
/// The same files with the same contents (clock fields left out), `what` naming the case.
fn assert_same_files(
    pooled: &BTreeMap<String, String>,
    alone: &BTreeMap<String, String>,
    what: &str,
) {
    assert_eq!(
        pooled.keys().collect::<Vec<_>>(),
        alone.keys().collect::<Vec<_>>()
    );
    for (name, text) in pooled {
        assert!(
            text == &alone[name],
            "{name} differs ({what}):\npooled: {text}\nalone:  {}",
            alone[name]
        );
    }
}

fn written_files(out: &Path) -> BTreeMap<String, String> {
    file_names(out)
        .into_iter()
        .map(|name| {
            let text = std::fs::read_to_string(out.join(&name)).unwrap();
            let text = match name.rsplit('.').next() {
                Some("json") => without_clock(&text),
                Some("jsonl") => text.lines().map(without_clock).collect(),
                _ if name == "digest.md" => text.lines().skip(1).collect(),
                _ => text,
            };
            (name, text)
        })
        .collect()
}

fn without_clock(json: &str) -> String {
    fn strip(value: &mut Value) {
        match value {
            Value::Object(map) => {
                for key in ["timings", "started_at", "finished_at", "tokens_per_second"] {
                    map.remove(key);
                }
                map.values_mut().for_each(strip);
            }
            Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut value: Value = serde_json::from_str(json).unwrap();
    strip(&mut value);
    value.to_string() + "\n"
}

fn calls(generator: &StandIn) -> usize {
    generator.calls.load(Ordering::SeqCst)
}

#[test]
fn pooled_groups_write_the_same_files_as_release_by_release() {
    let modes = [
        (Loop::Never, Loop::Never),
        // Every translation and summary retried with stricter settings: the retries pool too.
        (Loop::UnlessStrict, Loop::UnlessStrict),
        // Retries that do not help: marked translations, lead-sentence summaries.
        (Loop::Always, Loop::Always),
    ];
    let dir = tempfile::tempdir().unwrap();
    let paths = inputs(dir.path());
    for (translation, summary) in modes {
        let files = |pool_segments| {
            let out = tempfile::tempdir().unwrap();
            let t = StandIn::translator().looping(translation);
            let s = StandIn::summarizer().looping(summary);
            let report = run_batch(&t, &s, &paths, out.path(), options(pool_segments));
            assert_eq!(report.counts.processed, 9 + HOSTILE_OUTPUTS.len());
            (written_files(out.path()), calls(&t) + calls(&s))
        };
        let (pooled, pooled_calls) = files(batch::POOL_SEGMENTS);
        let (alone, alone_calls) = files(ALONE);
        assert_same_files(&pooled, &alone, &format!("{translation:?}, {summary:?}"));
        assert!(
            pooled_calls * 4 < alone_calls,
            "{pooled_calls} model calls pooled, {alone_calls} release by release"
        );
    }
}

#[test]
fn each_phase_is_one_model_call_for_the_whole_group() {
    let out = tempfile::tempdir().unwrap();
    let t = StandIn::translator().looping(Loop::UnlessStrict);
    let s = StandIn::summarizer();
    let report = run_batch(&t, &s, &[samples()], out.path(), BatchOptions::default());
    assert_eq!(report.counts.processed, 9);
    // The translator: the bodies, their stricter retries, the summaries, their retries.
    assert_eq!(calls(&t), 4);
    // The summarizer: every release (the long one in parts), then the long one's parts'
    // summaries, alone, which the others' summary translations wait for.
    assert_eq!(calls(&s), 2);
    // Groups of a release or so make a call per phase per release.
    let out = tempfile::tempdir().unwrap();
    let t = StandIn::translator().looping(Loop::UnlessStrict);
    run_batch(&t, &s, &[samples()], out.path(), options(ALONE));
    assert!(calls(&t) >= 4 * 8, "{} translator calls", calls(&t));
}

#[test]
fn groups_fill_up_to_the_segment_budget_in_input_order() {
    let out = tempfile::tempdir().unwrap();
    let (t, s) = (StandIn::translator(), StandIn::summarizer());
    let report = run_batch(&t, &s, &[samples()], out.path(), options(40));
    assert_eq!(report.counts.processed, 9);
    let groups = calls(&s);
    assert!(
        (2..9).contains(&groups),
        "9 releases in groups of about 40 segments made {groups} summarizer calls"
    );
    let in_order = report_sources(&report);

    // A rerun skips seven releases (recorded at once) around two that form a group (recorded
    // when it is done): the report and the digest still follow the input order.
    let redo = ["01-interpol-data-exchange", "2024-04-missing-child"];
    for name in redo {
        std::fs::remove_file(out.path().join(format!("{name}.json"))).unwrap();
    }
    let report = run_batch(&t, &s, &[samples()], out.path(), BatchOptions::default());
    assert_eq!((report.counts.processed, report.counts.skipped), (2, 7));
    assert_eq!(report_sources(&report), in_order);
    let digest = std::fs::read_to_string(out.path().join("digest.jsonl")).unwrap();
    let ids: Vec<String> = digest
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["id"].to_string())
        .collect();
    let report_ids: Vec<String> = report
        .releases
        .iter()
        .map(|r| Value::from(r.id.clone()).to_string())
        .collect();
    assert_eq!(ids, report_ids);
}

/// The sources of the report's entries, which must be in input order (sorted paths here).
fn report_sources(report: &Report) -> Vec<String> {
    let sources: Vec<String> = report.releases.iter().map(|r| r.source.clone()).collect();
    let mut sorted = sources.clone();
    sorted.sort();
    assert_eq!(sources, sorted, "the report keeps the input order");
    sources
}

/// The files of the releases other than `failed`, after a run whose `t` or `s` fails on it.
fn files_around_a_failure(t: &StandIn, s: &StandIn, failed: &str) -> BTreeMap<String, String> {
    let out = tempfile::tempdir().unwrap();
    let report = run_batch(t, s, &[samples()], out.path(), BatchOptions::default());
    assert_eq!((report.counts.processed, report.counts.failed), (8, 1));
    assert_eq!(report.failures.len(), 1);
    let failure = &report.failures[0];
    assert_eq!(failure.release, failed);
    assert!(
        failure.reason.contains("cannot handle"),
        "{}",
        failure.reason
    );
    let entry = report
        .releases
        .iter()
        .find(|r| r.status == batch::Status::Failed);
    assert_eq!(entry.unwrap().id.as_deref(), Some(failed));
    assert!(!out.path().join(format!("{failed}.json")).exists());
    let mut files = written_files(out.path());
    files.retain(|name, _| !name.starts_with("digest") && name != "report.json");
    files
}

#[test]
fn a_release_the_model_fails_on_fails_alone_and_its_group_is_written() {
    let out = tempfile::tempdir().unwrap();
    let (t, s) = (StandIn::translator(), StandIn::summarizer());
    run_batch(&t, &s, &[samples()], out.path(), BatchOptions::default());
    let mut clean = written_files(out.path());
    clean.retain(|name, _| !name.starts_with("2024-04-missing-child."));
    clean.retain(|name, _| !name.starts_with("digest") && name != "report.json");

    // The translator fails on the body of one release of the jsonl file: the pooled call of
    // the bodies fails, and each release's call runs again alone.
    let t = StandIn::translator().failing_on("Екатеринбурге");
    let s = StandIn::summarizer();
    let files = files_around_a_failure(&t, &s, "2024-04-missing-child");
    assert_eq!(files, clean);

    // The same release fails later, in the pooled summarizer call.
    let t = StandIn::translator();
    let s = StandIn::summarizer().failing_on("Екатеринбурге");
    let files = files_around_a_failure(&t, &s, "2024-04-missing-child");
    assert_eq!(files, clean);
}

fn tiny_model(name: &str) -> impl TextGenerator {
    let resolved = ResolvedModel {
        dir: repo_path("tests/fixtures/models").join(name),
        repo: name.to_string(),
        revision: None,
        commit: None,
        preset: None,
    };
    loader::load(
        &resolved,
        &Device::Cpu,
        DType::F32,
        None,
        Role::Generate,
        &Silent,
    )
    .unwrap()
}

fn run_models(pipeline: &Pipeline, paths: &[PathBuf], out: &Path, pool_segments: usize) -> Report {
    let dir = OutputDir::create(out).unwrap();
    let items = read_items(paths);
    batch::run(pipeline, items, &dir, &options(pool_segments), &Silent).unwrap()
}

#[test]
fn tiny_models_write_the_same_files_pooled_and_release_by_release() {
    let (translator, summarizer) = (tiny_model("marian_tiny"), tiny_model("rut5_tiny"));
    let pipeline = Pipeline::new(Some(&translator), Some(&summarizer), run_options(true)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let paths = inputs(dir.path());
    let (pooled, alone) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let report = run_models(&pipeline, &paths, pooled.path(), batch::POOL_SEGMENTS);
    assert_eq!(report.counts.processed, 9 + HOSTILE_OUTPUTS.len());
    run_models(&pipeline, &paths, alone.path(), ALONE);
    let (pooled, alone) = (written_files(pooled.path()), written_files(alone.path()));
    assert_same_files(&pooled, &alone, "tiny models");
}

/// The stdout forms of `translate` and `summarize` pool their releases too, emit in input
/// order, and emit the same outputs as `mtsum run` writes.
#[test]
fn stdout_outputs_are_pooled_and_in_input_order() {
    let (t, s) = (StandIn::translator(), StandIn::summarizer());
    let pipeline = Pipeline::new(Some(&t), Some(&s), run_options(false)).unwrap();
    let items = read_items(&[samples()]);
    let ids: Vec<String> = items
        .iter()
        .map(|item| item.as_ref().unwrap().id.clone())
        .collect();
    let mut emitted = Vec::new();
    let outcome = each_release(&pipeline, items, &Silent, |o| {
        emitted.push(o.clone());
        true
    });
    assert!(matches!(outcome, mtsum::Outcome::Done));
    assert_eq!(
        emitted.iter().map(|o| o.id.clone()).collect::<Vec<_>>(),
        ids
    );
    let stdout_calls = (calls(&t), calls(&s));
    let out = tempfile::tempdir().unwrap();
    let (t, s) = (StandIn::translator(), StandIn::summarizer());
    let report = run_batch(&t, &s, &[samples()], out.path(), BatchOptions::default());
    // As many model calls as `mtsum run` makes for the whole group: a couple per model.
    assert_eq!(stdout_calls, (calls(&t), calls(&s)));
    assert!(stdout_calls.0 + stdout_calls.1 <= 4, "{stdout_calls:?}");
    for output in &emitted {
        let entry = (report.releases.iter())
            .find(|e| e.id.as_deref() == Some(output.id.as_str()))
            .unwrap();
        let written = read_output(out.path(), entry.file.as_deref().unwrap());
        let json = |o: &mtsum::io::ReleaseOutput| {
            serde_json::to_value((&o.title, &o.summary, &o.paragraphs)).unwrap()
        };
        assert_eq!(json(&written), json(output), "{}", output.id);
    }
}

/// `summarize --lines`: the documents' model calls are pooled, and each document gets the
/// summary it gets alone.
#[test]
fn documents_summarized_together_get_their_own_summaries() {
    let text = std::fs::read_to_string(samples().join("07-regional-news.jsonl")).unwrap();
    let documents: Vec<String> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert!(documents.len() >= 2);
    let (t, s) = (StandIn::translator(), StandIn::summarizer());
    let pipeline = Pipeline::new(Some(&t), Some(&s), run_options(false)).unwrap();
    let mut together = Vec::new();
    pipeline.summarize_lines(&documents, POOL_SEGMENTS, &Silent, |summary, _| {
        together.push(summary.unwrap().expect("no blank document"));
        true
    });
    assert_eq!(calls(&s), 1);
    assert_eq!(together.len(), documents.len());
    let mut tokens = Default::default();
    for (document, summary) in documents.iter().zip(together) {
        let alone = pipeline.summarize(document, &Silent, &mut tokens).unwrap();
        assert_eq!(summary, alone);
    }
}
