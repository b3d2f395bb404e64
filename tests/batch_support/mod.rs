//! Shared helpers of the integration tests.
#![allow(dead_code)]

pub mod assets;
pub mod parity;
pub mod standin;

use std::path::{Path, PathBuf};

use mtsum::io::read::{self, ReadOptions};
use mtsum::io::{OutputDir, ReadItem, ReleaseOutput};
use mtsum::pipeline::batch::{self, BatchOptions, Report};
use mtsum::pipeline::{Pipeline, PipelineOptions};
use mtsum::progress::Silent;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use standin::StandIn;

/// Every variable `mtsum run --shard auto` reads (and HF_HUB_OFFLINE), for tests to clear so
/// that their own environment (a CI runner may be a GitLab parallel job) cannot leak in.
pub const SCHEDULER_VARS: [&str; 9] = [
    "JOB_COMPLETION_INDEX",
    "MTSUM_SHARDS",
    "SLURM_ARRAY_TASK_ID",
    "SLURM_ARRAY_TASK_MIN",
    "SLURM_ARRAY_TASK_COUNT",
    "SLURM_ARRAY_TASK_STEP",
    "CI_NODE_INDEX",
    "CI_NODE_TOTAL",
    "HF_HUB_OFFLINE",
];

pub fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// A JSON file of the repo, parsed; a missing or broken file fails the test, named.
pub fn read_json<T: DeserializeOwned>(rel: &str) -> T {
    let path = repo_path(rel);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// What transformers gave for every fixture model (tests/fixtures/reference/models/*.json, made
/// by tests/fixtures/make_fixtures.py), in file-name order. There must be some: a parity test
/// over no model would prove nothing.
pub fn model_references<T: DeserializeOwned>() -> Vec<T> {
    let dir = "tests/fixtures/reference/models";
    let names: Vec<String> = file_names(&repo_path(dir))
        .into_iter()
        .filter(|name| name.ends_with(".json"))
        .collect();
    assert!(!names.is_empty(), "no model references in {dir}");
    names
        .iter()
        .map(|name| read_json(&format!("{dir}/{name}")))
        .collect()
}

/// transformers' outputs for the fixture model `name` (tests/fixtures/models/<name>).
pub fn model_reference(name: &str) -> Value {
    read_json(&format!("tests/fixtures/reference/models/{name}.json"))
}

/// transformers' and sentencepiece's ids and decoded texts for the tokenizer fixtures.
pub fn tokenizer_reference() -> Value {
    read_json("tests/fixtures/reference/tokenizers.json")
}

pub fn samples() -> PathBuf {
    repo_path("samples")
}

/// Reads inputs as `mtsum run` does.
pub fn read_items(paths: &[PathBuf]) -> Vec<ReadItem> {
    let inputs = read::expand(paths).expect("inputs exist");
    read::read_all(&inputs, ReadOptions::default())
}

/// The options of `mtsum run` (translation + summaries).
pub fn run_options(side_by_side: bool) -> PipelineOptions {
    PipelineOptions {
        translate_body: true,
        summarize: true,
        output_settings: json!({ "side_by_side": side_by_side }),
        ..PipelineOptions::default()
    }
}

/// Runs the batch of `mtsum run` over `paths` into `out` with the given stand-ins.
pub fn run_batch(
    translator: &StandIn,
    summarizer: &StandIn,
    paths: &[PathBuf],
    out: &Path,
    batch_options: BatchOptions,
) -> Report {
    let pipeline = Pipeline::new(
        Some(translator),
        Some(summarizer),
        run_options(batch_options.side_by_side),
    )
    .expect("both models given");
    let out = OutputDir::create(out).expect("output folder");
    batch::run(&pipeline, read_items(paths), &out, &batch_options, &Silent).expect("batch runs")
}

pub fn read_output(out: &Path, file: &str) -> ReleaseOutput {
    let bytes = std::fs::read(out.join(format!("{file}.json"))).expect("json output exists");
    serde_json::from_slice(&bytes).expect("json output parses")
}

pub fn read_report(out: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(out.join("report.json")).expect("report exists"))
        .expect("report parses")
}

/// The names of the files in `dir`, sorted.
pub fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("folder exists")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Compares one field over all reference rows (each with its `text`) and reports every
/// mismatching row, not just the first.
pub fn check_rows<T: PartialEq + std::fmt::Debug>(
    rows: &[Value],
    what: &str,
    expected: impl Fn(&Value) -> T,
    actual: impl Fn(&str, &Value) -> T,
) {
    let mut failures = Vec::new();
    for row in rows {
        let text = row["text"].as_str().unwrap();
        let (want, got) = (expected(row), actual(text, row));
        if want != got {
            failures.push(format!("{text:?}\n  want {want:?}\n  got  {got:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{what}: {} of {} rows differ:\n{}",
        failures.len(),
        rows.len(),
        failures
            .iter()
            .take(8)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// The output names (file stems) of the releases in [`hostile_inputs`] that can be read: every
/// one but the empty file, the PNG and the broken JSONL line.
pub const HOSTILE_OUTPUTS: [&str; 8] = [
    "c-cp1251",
    "d-koi8",
    "e-utf16",
    "f-page",
    "_.._etc_passwd",
    "dup",
    "dup-2",
    "_CON",
];

/// The stdout of `cmd`, which must succeed (its stderr is the failure message otherwise).
pub fn stdout_of(cmd: &mut assert_cmd::Command) -> String {
    let output = cmd.output().expect("the command runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

/// The stdout of `cmd`, which must succeed, one JSON value a line.
pub fn json_lines(cmd: &mut assert_cmd::Command) -> Vec<Value> {
    stdout_of(cmd)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}")))
        .collect()
}

/// A folder of hostile inputs: empty file, PNG bytes, Windows-1251, KOI8-R, UTF-16, HTML with
/// scripts, JSONL with a malformed middle line, path-traversal and duplicate ids.
pub fn hostile_inputs(dir: &Path) {
    let ru = "Сотрудники полиции задержали подозреваемого в краже. Похищенное имущество возвращено владельцу.";
    let write = |name: &str, bytes: &[u8]| std::fs::write(dir.join(name), bytes).unwrap();
    write("a-empty.txt", b"");
    write(
        "b-image.png",
        b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x10\0\0\0\x10\x08\x06\0\0\0\x1f\xf3\xffa",
    );
    write("c-cp1251.txt", &encoding_rs::WINDOWS_1251.encode(ru).0);
    write("d-koi8.txt", &encoding_rs::KOI8_R.encode(ru).0);
    let mut utf16 = vec![0xFF, 0xFE];
    utf16.extend(ru.encode_utf16().flat_map(u16::to_le_bytes));
    write("e-utf16.txt", &utf16);
    write(
        "f-page.html",
        format!(
            "<html><head><script>var secret = 'СКРИПТ';</script><style>p {{}}</style></head>\
             <body><nav>Меню сайта</nav><h1>Заголовок страницы</h1><p>{ru}</p>\
             <script>document.write('ВСТАВКА')</script><footer>Подвал сайта</footer></body></html>"
        )
        .as_bytes(),
    );
    let jsonl = [
        json!({"id": "../../etc/passwd", "text": ru}).to_string(),
        "{\"id\": \"broken\", \"text\": ".to_string(),
        json!({"id": "dup", "text": ru, "title": "Первый"}).to_string(),
        json!({"id": "dup", "text": "Другой текст о происшествии.", "title": "Второй"}).to_string(),
        json!({"id": "CON", "text": ru, "channel": "telegram"}).to_string(),
    ]
    .join("\n");
    write("g-batch.jsonl", jsonl.as_bytes());
}
