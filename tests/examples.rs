//! The repository's examples of sharded runs (examples/ci, examples/k8s, examples/slurm), run
//! here as far as a machine without the schedulers allows: the Slurm script is run by bash
//! once per array task with the SLURM_* variables Slurm would set; the Kubernetes manifest's
//! container commands are run once per completion index with the pod's env; the GitHub
//! Actions matrix's `run:` lines are run by bash once per matrix entry, each in a folder of its
//! own, as separate runners would. Every example's merged digest must equal one unsharded
//! run's. The models are the tiny fixtures (local folders, so `--offline` holds), put in where
//! the examples let a user name other models. scripts/check_examples.py checks the YAML
//! structure with a real YAML parser (it needs Python with PyYAML; these tests do not).

mod batch_support;

use std::path::{Path, PathBuf};
use std::process::Command;

use batch_support::*;
use serde_json::{json, Value};

const TRANSLATOR: &str = "tests/fixtures/models/marian_tiny";
const SUMMARIZER: &str = "tests/fixtures/models/rut5_tiny";

fn model_flags() -> Vec<String> {
    vec![
        "--translator".into(),
        repo_path(TRANSLATOR).display().to_string(),
        "--summarizer".into(),
        repo_path(SUMMARIZER).display().to_string(),
        "--device".into(),
        "cpu".into(),
        "--max-length".into(),
        "16".into(),
    ]
}

fn binary() -> PathBuf {
    assert_cmd::cargo::cargo_bin("mtsum")
}

/// A few short releases (with a duplicate id) in `dir/releases`.
fn releases(dir: &Path) -> PathBuf {
    let folder = dir.join("releases");
    std::fs::create_dir_all(&folder).unwrap();
    let lines: Vec<String> = (0..7)
        .map(|i| {
            let id = if i == 6 {
                "r0".to_string()
            } else {
                format!("r{i}")
            };
            json!({"id": id, "text": format!("Полиция задержала подозреваемого номер {i}.")})
                .to_string()
        })
        .collect();
    std::fs::write(folder.join("news.jsonl"), lines.join("\n")).unwrap();
    std::fs::copy(
        samples().join("01-interpol-data-exchange.txt"),
        folder.join("interpol.txt"),
    )
    .unwrap();
    folder
}

/// Clears every variable `--shard auto` or the hub reads, so the test's own environment
/// cannot leak in.
fn clean(cmd: &mut Command) -> &mut Command {
    for var in SCHEDULER_VARS {
        cmd.env_remove(var);
    }
    cmd
}

/// Runs `cmd`, which must exit 0 (its output is the failure message otherwise).
fn succeed(cmd: &mut Command, what: &str) {
    let output = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        output.status.success(),
        "{what}: {}\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// One unsharded run of `input` with the tiny models.
fn unsharded(input: &Path, out: &Path) {
    let mut cmd = Command::new(binary());
    clean(&mut cmd)
        .args(model_flags())
        .args(["run", "--quiet", "--out"])
        .arg(out)
        .arg(input);
    succeed(&mut cmd, "the unsharded run");
}

/// The merged folder's digest and releases equal the unsharded run's (timings aside).
fn assert_merged_equals(merged: &Path, unsharded: &Path) {
    let lines = |dir: &Path| -> Vec<Value> {
        let text = std::fs::read_to_string(dir.join("digest.jsonl")).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let digest = lines(unsharded);
    assert_eq!(digest.len(), 8);
    assert_eq!(lines(merged), digest);
    for entry in &digest {
        let file = entry["json"].as_str().unwrap();
        let read = |dir: &Path| {
            let mut v: Value =
                serde_json::from_slice(&std::fs::read(dir.join(file)).unwrap()).unwrap();
            v.as_object_mut().unwrap().remove("timings");
            v
        };
        assert_eq!(read(merged), read(unsharded), "{file}");
    }
    let report = read_report(merged);
    assert_eq!(report["counts"]["processed"], 8);
    assert!(!report["merged_from"].as_array().unwrap().is_empty());
}

/// The value of the first line `key=value` or `key: value` (after `prefix`) in `text`.
fn setting<'t>(text: &'t str, prefix: &str) -> &'t str {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no `{prefix}` line"))
        .trim()
        .trim_matches('"')
}

#[test]
fn the_slurm_array_script_runs_each_task_and_merges() {
    let script_path = repo_path("examples/slurm/mtsum-array.sbatch");
    let script = std::fs::read_to_string(&script_path).unwrap();
    let array = setting(&script, "#SBATCH --array=");
    let (min, max) = array.split_once('-').expect("--array=MIN-MAX");
    let (min, max): (usize, usize) = (min.parse().unwrap(), max.parse().unwrap());
    let count = max - min + 1;
    assert!(count > 1, "{array}");

    let tmp = tempfile::tempdir().unwrap();
    let input = releases(tmp.path());
    let out = tmp.path().join("mtsum-out");
    let hf_home = tmp.path().join("hf-cache");
    std::fs::create_dir(&hf_home).unwrap();
    let path = format!(
        "{}:{}",
        binary().parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for id in min..=max {
        let mut cmd = Command::new("bash");
        clean(&mut cmd)
            .arg(&script_path)
            .env("PATH", &path)
            .env("SLURM_ARRAY_TASK_ID", id.to_string())
            .env("SLURM_ARRAY_TASK_MIN", min.to_string())
            .env("SLURM_ARRAY_TASK_MAX", max.to_string())
            .env("SLURM_ARRAY_TASK_COUNT", count.to_string())
            .env("SLURM_CPUS_PER_TASK", "1")
            .env("MTSUM_INPUT", &input)
            .env("MTSUM_OUT", &out)
            .env("HF_HOME", &hf_home)
            .env("MTSUM_FLAGS", model_flags().join(" "));
        succeed(&mut cmd, &format!("array task {id}"));
        let k = id - min + 1;
        assert!(out
            .join(format!("report.shard-{k}-of-{count}.json"))
            .is_file());
    }
    // The shards read models only; nothing was written to the shared cache.
    assert!(file_names(&hf_home).is_empty());

    // The merge job the script's comment submits, with /shared/ in the temporary folder.
    let merge = script
        .lines()
        .find_map(|l| l.split_once("--wrap '").map(|(_, rest)| rest))
        .and_then(|rest| rest.strip_suffix('\''))
        .expect("a `--wrap '...'` merge command");
    let merge = merge.replace("/shared/", &format!("{}/", tmp.path().display()));
    let mut cmd = Command::new("bash");
    clean(&mut cmd).args(["-c", &merge]).env("PATH", &path);
    succeed(&mut cmd, &merge);

    let whole = tmp.path().join("whole");
    unsharded(&input, &whole);
    assert_merged_equals(&tmp.path().join("mtsum-digest"), &whole);
}

/// `command: [...]` of the container named `name` (the manifest writes them as JSON arrays).
fn container_command(manifest: &str, name: &str) -> Vec<String> {
    let start = manifest
        .find(&format!("- name: {name}\n"))
        .unwrap_or_else(|| panic!("no container {name}"));
    let line = manifest[start..]
        .lines()
        .find_map(|l| l.trim().strip_prefix("command: "))
        .unwrap();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"))
}

/// The `env:` of the container named `name`: `- name: X` / `value: "Y"` pairs.
fn container_env(manifest: &str, name: &str) -> Vec<(String, String)> {
    let start = manifest.find(&format!("- name: {name}\n")).unwrap();
    let lines: Vec<&str> = manifest[start..]
        .lines()
        .skip(1)
        .take_while(|l| l.trim() != "volumes:")
        .collect();
    let Some(env_at) = lines.iter().position(|l| l.trim() == "env:") else {
        return Vec::new();
    };
    let mut vars = Vec::new();
    let mut rest = lines[env_at + 1..].iter().map(|l| l.trim());
    while let Some(name) = rest.next().and_then(|l| l.strip_prefix("- name: ")) {
        let value = rest.next().and_then(|l| l.strip_prefix("value: ")).unwrap();
        vars.push((name.to_string(), value.trim_matches('"').to_string()));
    }
    vars
}

#[test]
fn the_kubernetes_indexed_job_runs_each_index_and_merges() {
    let manifest = std::fs::read_to_string(repo_path("examples/k8s/indexed-job.yaml")).unwrap();
    assert!(manifest.contains("completionMode: Indexed"));
    let completions: usize = setting(&manifest, "completions:").parse().unwrap();
    let parallelism: usize = setting(&manifest, "parallelism:").parse().unwrap();
    let env = container_env(&manifest, "shard");
    let shards = env
        .iter()
        .find(|(k, _)| k == "MTSUM_SHARDS")
        .expect("MTSUM_SHARDS");
    assert_eq!(
        shards.1,
        completions.to_string(),
        "MTSUM_SHARDS != completions"
    );
    assert!(parallelism <= completions);

    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path();
    let input = releases(data);
    std::fs::create_dir(data.join("hf-cache")).unwrap();
    // The volume is mounted at /data: here it is the temporary folder.
    let local = |s: &str| s.replace("/data", &data.display().to_string());
    let run_container = |name: &str, index: Option<usize>| {
        let command = container_command(&manifest, name);
        assert_eq!(command[0], "mtsum");
        let mut cmd = Command::new(binary());
        clean(&mut cmd);
        for (k, v) in container_env(&manifest, name) {
            cmd.env(k, local(&v));
        }
        if let Some(i) = index {
            cmd.env("JOB_COMPLETION_INDEX", i.to_string());
            cmd.args(model_flags());
        }
        cmd.args(command[1..].iter().map(|a| local(a)));
        succeed(&mut cmd, &format!("{name} {index:?}"));
    };
    let shard_command = container_command(&manifest, "shard");
    assert!(shard_command.windows(2).any(|w| w == ["--shard", "auto"]));
    assert!(shard_command.contains(&"--offline".to_string()));
    for index in 0..completions {
        run_container("shard", Some(index));
    }
    assert!(file_names(&data.join("hf-cache")).is_empty());
    run_container("merge", None);

    let whole = tmp.path().join("whole");
    unsharded(&input, &whole);
    assert_merged_equals(&data.join("digest"), &whole);
}

/// The `run: |` block of the step named `step` in the workflow, as one shell script.
fn workflow_step(workflow: &str, step: &str) -> String {
    let start = workflow
        .find(&format!("- name: {step}\n"))
        .unwrap_or_else(|| panic!("no step {step}"));
    let mut lines = workflow[start..].lines().skip(1);
    let run = lines
        .find(|l| l.trim() == "run: |")
        .expect("a `run: |` block");
    let indent = run.len() - run.trim_start().len() + 2;
    lines
        .take_while(|l| l.len() > indent && l[..indent].trim().is_empty())
        .filter(|l| !l.trim().starts_with('#'))
        .map(|l| format!("{}\n", &l[indent..]))
        .collect()
}

#[test]
fn the_github_actions_matrix_runs_each_shard_and_merges() {
    let workflow = std::fs::read_to_string(repo_path("examples/ci/github-actions.yml")).unwrap();
    let shards: usize = setting(&workflow, "SHARDS:").parse().unwrap();
    let matrix = setting(&workflow, "shard: [");
    let matrix: Vec<usize> = matrix
        .trim_end_matches(']')
        .split(',')
        .map(|k| k.trim().parse().unwrap())
        .collect();
    assert_eq!(
        matrix,
        (1..=shards).collect::<Vec<_>>(),
        "matrix != 1..=SHARDS"
    );
    assert!(workflow.contains("actions/cache@v4") && workflow.contains("fail-on-cache-miss: true"));

    let tmp = tempfile::tempdir().unwrap();
    let input = releases(tmp.path());
    let runner = |name: &str| {
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        std::fs::copy(binary(), dir.join("bin/mtsum")).unwrap();
        dir
    };
    let bash = |dir: &Path, script: &str| {
        let mut cmd = Command::new("bash");
        clean(&mut cmd)
            .args(["-euo", "pipefail", "-c", script])
            .current_dir(dir)
            .env("SHARDS", shards.to_string())
            .env("TRANSLATOR", repo_path(TRANSLATOR))
            .env("SUMMARIZER", repo_path(SUMMARIZER))
            .env("HF_HOME", dir.join("hf-cache"));
        succeed(&mut cmd, script);
    };
    let shard_step = workflow_step(&workflow, "Shard ${{ matrix.shard }}");
    let merge_dir = runner("merge");
    for k in matrix {
        let dir = runner(&format!("shard-{k}"));
        copy_dir(&input, &dir.join("releases"));
        bash(
            &dir,
            &shard_step.replace("${{ matrix.shard }}", &k.to_string()),
        );
        // download-artifact with `pattern: shard-*` puts each shard's out/ in shards/shard-K.
        copy_dir(
            &dir.join("out"),
            &merge_dir.join(format!("shards/shard-{k}")),
        );
    }
    bash(&merge_dir, &workflow_step(&workflow, "Merge"));

    // One runner, no shards: the workflow's models with their own generation settings (no
    // --max-length), reading releases/ from its folder as the shards did.
    let whole = runner("whole");
    copy_dir(&input, &whole.join("releases"));
    let mut cmd = Command::new(binary());
    clean(&mut cmd)
        .current_dir(&whole)
        .arg("--translator")
        .arg(repo_path(TRANSLATOR))
        .arg("--summarizer")
        .arg(repo_path(SUMMARIZER))
        .args(["run", "releases/", "--quiet", "--out", "out/"]);
    succeed(&mut cmd, "the unsharded run");
    assert_merged_equals(&merge_dir.join("digest"), &whole.join("out"));
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for name in file_names(from) {
        std::fs::copy(from.join(&name), to.join(&name)).unwrap();
    }
}
