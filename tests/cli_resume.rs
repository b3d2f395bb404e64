//! Kill a batch midway, then rerun it: no partial files, and the rerun does only what was
//! missing. The batch runs in a child process (this test binary re-run with `CHILD_ENV`)
//! that is killed with SIGKILL, so nothing in it gets to clean up; this file has its own main()
//! for that reason. The child uses the model stand-in, slowed down, so the kill lands midway
//! at any machine speed (cli_models.rs kills the real binary with the tiny models).

mod batch_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use batch_support::standin::StandIn;
use batch_support::*;
use mtsum::pipeline::batch::BatchOptions;

const CHILD_ENV: &str = "MTSUM_RESUME_TEST_CHILD_OUT";
const RELEASES: usize = 9;

fn main() {
    if let Ok(out) = std::env::var(CHILD_ENV) {
        slow_batch(Path::new(&out));
        return;
    }
    kill_midway_then_rerun();
    println!("test kill_midway_then_rerun ... ok");
}

/// The child: the whole sample batch with a model that takes a while per call, in groups of a
/// release or two (the samples together are fewer segments than one default group, and a
/// group's releases are written together), so the kill lands between groups.
fn slow_batch(out: &Path) {
    let mut translator = StandIn::translator();
    let mut summarizer = StandIn::summarizer();
    translator.delay = Duration::from_millis(150);
    summarizer.delay = Duration::from_millis(150);
    let options = BatchOptions {
        pool_segments: 20,
        ..BatchOptions::default()
    };
    run_batch(&translator, &summarizer, &[samples()], out, options);
}

fn kill_midway_then_rerun() {
    let out = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(CHILD_ENV, out.path())
        .stdout(Stdio::null())
        .spawn()
        .expect("the child batch starts");
    let deadline = Instant::now() + Duration::from_secs(120);
    while complete_outputs(out.path()).len() < 3 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the child ended before it was killed"
        );
        assert!(Instant::now() < deadline, "the child wrote nothing in time");
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();

    let done_before = complete_outputs(out.path());
    assert!(
        done_before.len() < RELEASES,
        "killed midway, not at the end"
    );
    assert!(!out.path().join("report.json").exists());
    assert_no_partial_files(out.path());

    let (translator, summarizer) = (StandIn::translator(), StandIn::summarizer());
    let report = run_batch(
        &translator,
        &summarizer,
        &[samples()],
        out.path(),
        BatchOptions::default(),
    );
    assert_eq!(report.counts.failed, 0);
    assert_eq!(report.counts.skipped, done_before.len());
    assert_eq!(report.counts.processed, RELEASES - done_before.len());
    let first_done = read_output(out.path(), &done_before[0]);
    let a_sentence = &first_done.paragraphs[0].sentences[0].ru;
    assert!(
        !translator.inputs_seen().contains(a_sentence),
        "the rerun translated a release that was already done"
    );
    assert_eq!(complete_outputs(out.path()).len(), RELEASES);
    assert_no_partial_files(out.path());
    assert!(
        file_names(out.path()).iter().all(|n| !n.starts_with('.')),
        "temporary files remain"
    );
}

/// Stems whose JSON output parses (the JSON is written last).
fn complete_outputs(dir: &Path) -> Vec<String> {
    let mut stems: Vec<String> = file_names(dir)
        .into_iter()
        .filter_map(|n| n.strip_suffix(".json").map(str::to_string))
        .filter(|stem| stem != "report")
        .filter(|stem| {
            std::fs::read(dir.join(format!("{stem}.json")))
                .is_ok_and(|b| serde_json::from_slice::<mtsum::io::ReleaseOutput>(&b).is_ok())
        })
        .collect();
    stems.sort();
    stems
}

/// Every visible output is whole: JSON parses; Markdown ends with its source line.
fn assert_no_partial_files(dir: &Path) {
    for name in file_names(dir).into_iter().filter(|n| !n.starts_with('.')) {
        let path: PathBuf = dir.join(&name);
        let bytes = std::fs::read(&path).unwrap();
        if name.ends_with(".json") {
            serde_json::from_slice::<serde_json::Value>(&bytes)
                .unwrap_or_else(|e| panic!("{name} is partial: {e}"));
        } else if name.ends_with(".md") && name != "digest.md" {
            let text = String::from_utf8(bytes).unwrap();
            assert!(
                text.trim_end()
                    .lines()
                    .last()
                    .unwrap()
                    .starts_with("Source: `"),
                "{name} is partial"
            );
        }
    }
}
