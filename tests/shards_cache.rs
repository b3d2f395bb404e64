//! A model cache shared by shards: `mtsum models fetch` warms it once from the (mock) hub, then
//! two shards run at the same time with `--offline` on the same HF_HOME: they make no request,
//! change nothing in the cache, and their merge is complete.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::mock_hub::MockHub;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/models")
        .join(name)
}

/// Every entry under `root`: its size, modification time and link target.
fn tree(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut entries = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let link = std::fs::read_link(&path).ok();
            entries.insert(
                path.strip_prefix(root).unwrap().to_path_buf(),
                format!("{} {:?} {link:?}", meta.len(), meta.modified().unwrap()),
            );
            if meta.is_dir() {
                stack.push(path);
            }
        }
    }
    entries
}

#[test]
fn shards_read_one_warm_cache_offline_and_concurrently() {
    let hub = MockHub::start();
    hub.publish_dir("org/marian-tiny", &fixture("marian_tiny"));
    hub.publish_dir("org/rut5-tiny", &fixture("rut5_tiny"));
    let home = tempfile::tempdir().unwrap();
    let mtsum = || {
        let mut cmd = common::mtsum_with_hub(&hub.endpoint(), home.path());
        cmd.args([
            "--translator",
            "org/marian-tiny",
            "--summarizer",
            "org/rut5-tiny",
        ])
        .args(["--device", "cpu", "--max-length", "16", "--quiet"]);
        for var in [
            "JOB_COMPLETION_INDEX",
            "SLURM_ARRAY_TASK_ID",
            "CI_NODE_INDEX",
        ] {
            cmd.env_remove(var);
        }
        cmd
    };
    let fetched = mtsum().args(["models", "fetch"]).output().unwrap();
    assert!(
        fetched.status.success(),
        "{}",
        String::from_utf8_lossy(&fetched.stderr)
    );
    let before = tree(home.path());
    assert!(before.keys().any(|p| p.ends_with("model.safetensors")));
    hub.clear_log();

    let out = tempfile::tempdir().unwrap();
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples");
    let shard = |k: usize| {
        let mut cmd = mtsum();
        cmd.args(["run", "--offline", "--shard", &format!("{k}/2"), "--out"])
            .arg(out.path())
            .arg(&samples);
        cmd
    };
    let (mut one, mut two) = (shard(1), shard(2));
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| one.output().unwrap());
        let b = s.spawn(|| two.output().unwrap());
        (a.join().unwrap(), b.join().unwrap())
    });
    for run in [&a, &b] {
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
    }
    assert!(
        hub.requests().is_empty(),
        "offline shards asked the hub: {:?}",
        hub.requests()
    );
    assert_eq!(tree(home.path()), before, "the shards changed the cache");

    let merged = tempfile::tempdir().unwrap();
    let merge = mtsum()
        .args(["merge"])
        .arg(out.path())
        .arg("--out")
        .arg(merged.path())
        .output()
        .unwrap();
    assert!(
        merge.status.success(),
        "{}",
        String::from_utf8_lossy(&merge.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(merged.path().join("report.json")).unwrap()).unwrap();
    assert_eq!(report["counts"]["processed"], 9);
    let commit = report["models"]["translator"]["commit"].as_str().unwrap();
    assert_eq!(commit.len(), 40, "the hub model's commit is recorded");
}
