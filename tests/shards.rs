//! Sharded runs (`run --shard K/N`) and `mtsum merge`: a batch run as 3 shards and merged
//! equals the unsharded run, the shards are disjoint and cover the batch, a rerun of a shard
//! skips what it finished, `--shard auto` picks the shard the explicit flag picks, and merge
//! refuses what is not one complete run. The batches run through the library with the model
//! stand-in (tests/batch_support/standin.rs); merge and `--shard auto` run through the binary
//! (neither loads a model: the auto checks use `--dry-run`). tests/examples.rs runs the
//! repository's CI, Kubernetes and Slurm examples with the tiny real models.

mod batch_support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use batch_support::standin::StandIn;
use batch_support::*;
use mtsum::pipeline::batch::{BatchOptions, Report};
use mtsum::pipeline::shard::Shard;
use serde_json::{json, Value};

/// The samples plus a JSONL of releases with duplicate ids (`dup`, `dup-2`, `DUP-3` are named
/// in input order, before any shard picks its part) and a number of small ones.
fn batch_inputs(dir: &Path) -> Vec<PathBuf> {
    let ru = |i: usize| {
        format!(
            "Сотрудники полиции задержали подозреваемого номер {i}. Похищенное имущество \
             возвращено владельцу."
        )
    };
    let mut lines: Vec<String> = (0..10)
        .map(|i| {
            json!({"id": format!("n{i}"), "text": ru(i), "date": format!("2024-01-{:02}", 20 - i)})
                .to_string()
        })
        .collect();
    for (n, id) in ["dup", "dup", "DUP"].iter().enumerate() {
        lines.push(json!({"id": id, "text": ru(100 + n)}).to_string());
    }
    std::fs::write(dir.join("more.jsonl"), lines.join("\n")).unwrap();
    vec![samples(), dir.join("more.jsonl")]
}

fn shard(k: usize, n: usize) -> Option<Shard> {
    Some(Shard::new(k, n).unwrap())
}

fn run(inputs: &[PathBuf], out: &Path, shard: Option<Shard>) -> Report {
    let options = BatchOptions {
        shard,
        ..BatchOptions::default()
    };
    run_batch(
        &StandIn::translator(),
        &StandIn::summarizer(),
        inputs,
        out,
        options,
    )
}

fn mtsum() -> Command {
    let mut cmd = Command::cargo_bin("mtsum").unwrap();
    for var in SCHEDULER_VARS {
        cmd.env_remove(var);
    }
    cmd
}

/// `mtsum merge DIRS --out OUT`: exit code and stderr.
fn merge(dirs: &[&Path], out: &Path) -> (i32, String) {
    let output = mtsum()
        .arg("merge")
        .args(dirs)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output.status.code().unwrap(), stderr)
}

fn json_file(path: &Path) -> Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A report without what differs between runs of the same batch: times and the shards.
fn comparable_report(mut report: Value) -> Value {
    let map = report.as_object_mut().unwrap();
    for key in ["started_at", "finished_at", "timings", "merged_from"] {
        map.remove(key);
    }
    map["throughput"]
        .as_object_mut()
        .unwrap()
        .remove("tokens_per_second");
    report
}

/// The merged folder holds what the unsharded one does: the same files, each release's JSON
/// equal as data apart from its timings, Markdown pages and digest.jsonl equal, and the report
/// equal apart from times (and the shards it lists).
fn assert_same_outputs(unsharded: &Path, merged: &Path) {
    let names = file_names(unsharded);
    assert_eq!(file_names(merged), names);
    for name in &names {
        let (a, b) = (unsharded.join(name), merged.join(name));
        if name == "report.json" {
            let (want, got) = (json_file(&a), json_file(&b));
            assert!(got["merged_from"].as_array().is_some_and(|s| s.len() == 3));
            assert_eq!(
                comparable_report(got),
                comparable_report(want),
                "report.json"
            );
        } else if name == "digest.jsonl" {
            let lines = |p: &Path| -> Vec<Value> {
                let text = std::fs::read_to_string(p).unwrap();
                text.lines()
                    .map(|l| serde_json::from_str(l).unwrap())
                    .collect()
            };
            assert_eq!(lines(&b), lines(&a), "digest.jsonl");
        } else if name == "digest.md" {
            // The first line is the date the run started.
            let body = |p: &Path| {
                std::fs::read_to_string(p)
                    .unwrap()
                    .lines()
                    .skip(1)
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            assert_eq!(body(&b), body(&a), "digest.md");
        } else if name.ends_with(".json") {
            let (mut want, mut got) = (json_file(&a), json_file(&b));
            want.as_object_mut().unwrap().remove("timings");
            got.as_object_mut().unwrap().remove("timings");
            assert_eq!(got, want, "{name}");
        } else {
            assert_eq!(
                std::fs::read(&b).unwrap(),
                std::fs::read(&a).unwrap(),
                "{name}"
            );
        }
    }
}

/// The names the report of shard `k` of `n` in `dir` says it owned.
fn owned(dir: &Path, k: usize, n: usize) -> Vec<String> {
    let report = json_file(&dir.join(format!("report.shard-{k}-of-{n}.json")));
    assert_eq!(report["shard"], format!("{k}/{n}"));
    serde_json::from_value(report["owned"].clone()).unwrap()
}

#[test]
fn three_shards_merged_equal_the_unsharded_run() {
    let tmp = tempfile::tempdir().unwrap();
    let inputs = batch_inputs(tmp.path());
    let whole = tmp.path().join("whole");
    let report = run(&inputs, &whole, None);
    assert_eq!((report.counts.total, report.counts.processed), (22, 22));
    let release = json_file(&whole.join("dup-2.json"));
    assert_eq!(
        release["position"], 20,
        "the second `dup` is input 20 of the batch"
    );

    let dirs: Vec<PathBuf> = (1..=3).map(|k| tmp.path().join(format!("s{k}"))).collect();
    for (k, dir) in dirs.iter().enumerate() {
        let report = run(&inputs, dir, shard(k + 1, 3));
        assert_eq!(report.counts.failed, 0);
        assert!(report.counts.total > 0, "shard {} got no release", k + 1);
        let info = report.sharding.as_ref().unwrap();
        assert_eq!(
            (info.shard.as_str(), info.batch_size),
            (format!("{}/3", k + 1).as_str(), 22)
        );
        assert!(!dir.join("report.json").exists());
        assert!(dir
            .join(format!("digest.shard-{}-of-3.jsonl", k + 1))
            .is_file());
    }

    // Disjoint and covering: every input of the batch is owned by exactly one shard, and each
    // shard's folder holds its own releases only.
    let all: Vec<String> = report
        .releases
        .iter()
        .map(|e| e.file.clone().unwrap())
        .collect();
    let owned_all: Vec<Vec<String>> = dirs
        .iter()
        .enumerate()
        .map(|(k, d)| owned(d, k + 1, 3))
        .collect();
    for (k, names) in owned_all.iter().enumerate() {
        let mut files: Vec<String> = names
            .iter()
            .flat_map(|n| [format!("{n}.json"), format!("{n}.md")])
            .chain(["json", "jsonl", "md"].map(|ext| {
                let stem = if ext == "json" { "report" } else { "digest" };
                format!("{stem}.shard-{}-of-3.{ext}", k + 1)
            }))
            .collect();
        files.sort();
        assert_eq!(file_names(&dirs[k]), files, "shard {}", k + 1);
    }
    let covered: BTreeSet<String> = owned_all.concat().into_iter().collect();
    assert_eq!(covered, all.iter().cloned().collect::<BTreeSet<_>>());
    assert_eq!(owned_all.concat().len(), all.len(), "the shards overlap");

    let merged = tmp.path().join("merged");
    let dir_refs: Vec<&Path> = dirs.iter().map(PathBuf::as_path).collect();
    let (code, stderr) = merge(&dir_refs, &merged);
    assert_eq!(code, 0, "{stderr}");
    assert_same_outputs(&whole, &merged);
}

/// Owners are picked per name, in a separate folder from the others (by the documented hash,
/// see `shard`), so the same names in another input order give the same split.
#[test]
fn the_split_does_not_depend_on_input_order() {
    let tmp = tempfile::tempdir().unwrap();
    let inputs = batch_inputs(tmp.path());
    let reversed: Vec<PathBuf> = inputs.iter().rev().cloned().collect();
    for (k, order) in [(1, &inputs), (1, &reversed)] {
        let out = tmp.path().join(format!("o{}", order[0] == inputs[0]));
        mtsum()
            .args([
                "run",
                "--dry-run",
                "--quiet",
                "--shard",
                &format!("{k}/3"),
                "--out",
            ])
            .arg(&out)
            .args(order.iter())
            .assert()
            .code(0);
    }
    let set = |dir: &str| -> BTreeSet<String> {
        owned(&tmp.path().join(dir), 1, 3)
            .into_iter()
            .filter(|n| !n.to_lowercase().starts_with("dup"))
            .collect()
    };
    assert!(!set("otrue").is_empty());
    assert_eq!(set("otrue"), set("ofalse"));
}

#[test]
fn a_rerun_of_a_shard_skips_its_finished_releases() {
    let tmp = tempfile::tempdir().unwrap();
    let inputs = batch_inputs(tmp.path());
    let out = tmp.path().join("out");
    let first = run(&inputs, &out, shard(2, 3));
    assert!(first.counts.processed > 0);
    let translator = StandIn::translator();
    let again = run_batch(
        &translator,
        &StandIn::summarizer(),
        &inputs,
        &out,
        BatchOptions {
            shard: shard(2, 3),
            ..BatchOptions::default()
        },
    );
    assert_eq!(again.counts.skipped, first.counts.processed);
    assert_eq!(again.counts.processed, 0);
    assert!(translator.inputs_seen().is_empty(), "the rerun translated");
    assert_eq!(again.sharding, first.sharding);
}

/// Shards sharing one folder write their own report and digest; merge reads them all from it,
/// in place.
#[test]
fn shards_share_one_folder_and_merge_in_place() {
    let tmp = tempfile::tempdir().unwrap();
    let inputs = batch_inputs(tmp.path());
    let whole = tmp.path().join("whole");
    run(&inputs, &whole, None);
    let shared = tmp.path().join("shared");
    for k in [3, 1, 2] {
        run(&inputs, &shared, shard(k, 3));
    }
    for k in 1..=3 {
        for name in ["report.shard-{k}-of-3.json", "digest.shard-{k}-of-3.md"] {
            let name = name.replace("{k}", &k.to_string());
            assert!(shared.join(&name).is_file(), "{name}");
        }
    }
    assert!(!shared.join("report.json").exists());
    let (code, stderr) = merge(&[&shared], &shared);
    assert_eq!(code, 0, "{stderr}");
    for k in 1..=3 {
        for ext in ["json", "jsonl", "md"] {
            let stem = if ext == "json" { "report" } else { "digest" };
            std::fs::remove_file(shared.join(format!("{stem}.shard-{k}-of-3.{ext}"))).unwrap();
        }
    }
    assert_same_outputs(&whole, &shared);
}

#[test]
fn shard_auto_picks_the_shard_the_explicit_flag_picks() {
    let tmp = tempfile::tempdir().unwrap();
    let inputs = batch_inputs(tmp.path());
    let dry_run = |name: &str, shard: &str, env: &[(&str, &str)]| {
        let out = tmp.path().join(name);
        let mut cmd = mtsum();
        cmd.args(["run", "--dry-run", "--quiet", "--shard", shard, "--out"])
            .arg(&out)
            .args(&inputs)
            .envs(env.iter().copied());
        let output = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        (output.status.code().unwrap(), stderr, out)
    };
    let (code, _, explicit) = dry_run(
        "explicit",
        "2/3",
        &[("JOB_COMPLETION_INDEX", "0"), ("MTSUM_SHARDS", "5")],
    );
    assert_eq!(code, 0);
    let kubernetes = [("JOB_COMPLETION_INDEX", "1"), ("MTSUM_SHARDS", "3")];
    let slurm = [
        ("SLURM_ARRAY_TASK_ID", "11"),
        ("SLURM_ARRAY_TASK_MIN", "10"),
        ("SLURM_ARRAY_TASK_COUNT", "3"),
    ];
    let want = json_file(&explicit.join("report.shard-2-of-3.json"));
    assert!(!want["owned"].as_array().unwrap().is_empty());
    for (name, env) in [("k8s", &kubernetes[..]), ("slurm", &slurm[..])] {
        let (code, stderr, out) = dry_run(name, "auto", env);
        assert_eq!(code, 0, "{name}: {stderr}");
        let got = json_file(&out.join("report.shard-2-of-3.json"));
        assert_eq!(got["shard"], "2/3", "{name}");
        assert_eq!(got["owned"], want["owned"], "{name}");
        assert_eq!(
            got["batch_fingerprint"], want["batch_fingerprint"],
            "{name}"
        );
    }
    let (code, stderr, _) = dry_run("bad", "auto", &[("JOB_COMPLETION_INDEX", "1")]);
    assert_eq!(code, 2);
    assert!(stderr.contains("MTSUM_SHARDS is not"), "{stderr}");
    let (code, stderr, _) = dry_run("bad2", "auto", &slurm[..2]);
    assert_eq!(code, 2);
    assert!(stderr.contains("SLURM_ARRAY_TASK_COUNT is not"), "{stderr}");
    let (code, stderr, _) = dry_run("none", "auto", &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("found no scheduler"), "{stderr}");
}

#[test]
fn merge_names_a_missing_shard() {
    let tmp = tempfile::tempdir().unwrap();
    let inputs = batch_inputs(tmp.path());
    let (s1, s3) = (tmp.path().join("s1"), tmp.path().join("s3"));
    run(&inputs, &s1, shard(1, 3));
    run(&inputs, &s3, shard(3, 3));
    let out = tmp.path().join("merged");
    let (code, stderr) = merge(&[&s1, &s3], &out);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("shard 2/3 is missing"), "{stderr}");
    assert!(!out.join("report.json").exists());
    let (code, stderr) = merge(&[&s1], &out);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("shards 2/3 and 3/3 are missing"),
        "{stderr}"
    );
    let (code, stderr) = merge(&[&inputs[0]], &out);
    assert_eq!(code, 2);
    assert!(stderr.contains("no shard report"), "{stderr}");
    let (code, stderr) = merge(&[&s1.join("report.shard-1-of-3.json")], &out);
    assert_eq!(code, 2);
    assert!(stderr.contains("not a folder"), "{stderr}");
}

#[test]
fn merge_refuses_shards_of_different_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let inputs = batch_inputs(tmp.path());
    let dirs: Vec<PathBuf> = (1..=3).map(|k| tmp.path().join(format!("s{k}"))).collect();
    run(&inputs, &dirs[0], shard(1, 3));
    run(&inputs, &dirs[2], shard(3, 3));
    // Shard 2 of a run with other settings.
    let options = BatchOptions {
        side_by_side: true,
        shard: shard(2, 3),
        ..BatchOptions::default()
    };
    let (t, s) = (StandIn::translator(), StandIn::summarizer());
    run_batch(&t, &s, &inputs, &dirs[1], options);
    let out = tmp.path().join("merged");
    let refs: Vec<&Path> = dirs.iter().map(PathBuf::as_path).collect();
    let (code, stderr) = merge(&refs, &out);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("shards of different runs"), "{stderr}");
    assert!(stderr.contains("report.shard-2-of-3.json"), "{stderr}");

    // Shard 2 of a batch with one more input.
    std::fs::remove_dir_all(&dirs[1]).unwrap();
    std::fs::write(tmp.path().join("extra.txt"), "Полиция задержала вора.").unwrap();
    let mut more = inputs.clone();
    more.push(tmp.path().join("extra.txt"));
    run(&more, &dirs[1], shard(2, 3));
    let (code, stderr) = merge(&refs, &out);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("batch fingerprints differ"), "{stderr}");

    // A split into 2 beside a split into 3.
    std::fs::remove_dir_all(&dirs[1]).unwrap();
    run(&inputs, &dirs[1], shard(2, 2));
    let (code, stderr) = merge(&refs, &out);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("a split into 2"), "{stderr}");
}

#[test]
fn merge_of_a_shard_with_failures_exits_1_and_lists_them() {
    let tmp = tempfile::tempdir().unwrap();
    let hostile = tmp.path().join("hostile");
    std::fs::create_dir(&hostile).unwrap();
    hostile_inputs(&hostile);
    let inputs = vec![hostile, samples()];
    let failing = || StandIn::translator().failing_on("Интерпол");
    let run_with = |out: &Path, shard: Option<Shard>| {
        let options = BatchOptions {
            shard,
            ..BatchOptions::default()
        };
        run_batch(&failing(), &StandIn::summarizer(), &inputs, out, options)
    };
    let whole = tmp.path().join("whole");
    let report = run_with(&whole, None);
    assert!(report.counts.failed >= 3, "{:?}", report.failures);
    let dirs: Vec<PathBuf> = (1..=3).map(|k| tmp.path().join(format!("s{k}"))).collect();
    for (k, dir) in dirs.iter().enumerate() {
        run_with(dir, shard(k + 1, 3));
    }
    let merged = tmp.path().join("merged");
    let refs: Vec<&Path> = dirs.iter().map(PathBuf::as_path).collect();
    let (code, stderr) = merge(&refs, &merged);
    assert_eq!(code, 1, "{stderr}");
    for failure in &report.failures {
        assert!(
            stderr.contains(&format!("failed: {} ({})", failure.release, failure.source)),
            "{} not listed:\n{stderr}",
            failure.release
        );
    }
    assert_same_outputs(&whole, &merged);
    let merged_report = read_report(&merged);
    assert_eq!(
        merged_report["failures"],
        serde_json::to_value(&report.failures).unwrap()
    );
}

/// A skipped release whose place in the batch moved (an input was added before it) gets its
/// new position written, so a merge of old and new outputs still orders them right.
#[test]
fn a_skipped_release_records_its_new_position() {
    let tmp = tempfile::tempdir().unwrap();
    let folder = tmp.path().join("releases");
    std::fs::create_dir(&folder).unwrap();
    let sample = samples().join("01-interpol-data-exchange.txt");
    for name in ["b.txt", "c.txt"] {
        std::fs::copy(&sample, folder.join(name)).unwrap();
    }
    let out = tmp.path().join("out");
    run(std::slice::from_ref(&folder), &out, None);
    assert_eq!(json_file(&out.join("c.json"))["position"], 1);
    std::fs::copy(&sample, folder.join("a.txt")).unwrap();
    let report = run(std::slice::from_ref(&folder), &out, None);
    assert_eq!((report.counts.skipped, report.counts.processed), (2, 1));
    for (file, position) in [("a", 0), ("b", 1), ("c", 2)] {
        assert_eq!(
            json_file(&out.join(format!("{file}.json")))["position"],
            position
        );
        let entry = report
            .releases
            .iter()
            .find(|e| e.file.as_deref() == Some(file));
        assert_eq!(entry.unwrap().position, position);
    }
}

/// `merge --digest-order date` orders the merged digest as `run --digest-order date` does.
#[test]
fn merge_orders_the_digest_by_date_as_run_does() {
    let tmp = tempfile::tempdir().unwrap();
    let inputs = batch_inputs(tmp.path());
    let whole = tmp.path().join("whole");
    let options = BatchOptions {
        digest_order: mtsum::pipeline::batch::DigestOrder::Date,
        ..BatchOptions::default()
    };
    run_batch(
        &StandIn::translator(),
        &StandIn::summarizer(),
        &inputs,
        &whole,
        options,
    );
    let shared = tmp.path().join("shared");
    for k in 1..=2 {
        run(&inputs, &shared, shard(k, 2));
    }
    let merged = tmp.path().join("merged");
    let output = mtsum()
        .args(["merge", "--digest-order", "date", "--out"])
        .arg(&merged)
        .arg(&shared)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let ids = |dir: &Path| -> Vec<String> {
        std::fs::read_to_string(dir.join("digest.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["id"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect()
    };
    let want = ids(&whole);
    assert_eq!(want[0], "n9", "the oldest date first");
    assert_eq!(ids(&merged), want);
}

/// A shard folder missing a release its report lists is refused before anything is written.
#[test]
fn merge_checks_every_release_before_writing_anything() {
    let tmp = tempfile::tempdir().unwrap();
    let inputs = batch_inputs(tmp.path());
    let shared = tmp.path().join("shared");
    for k in 1..=2 {
        run(&inputs, &shared, shard(k, 2));
    }
    std::fs::remove_file(shared.join("n7.json")).unwrap();
    let out = tmp.path().join("merged");
    let (code, stderr) = merge(&[&shared], &out);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("n7.json"), "{stderr}");
    assert!(file_names(&out).is_empty(), "{:?}", file_names(&out));
}
