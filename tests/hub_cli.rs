//! `mtsum models fetch|list|verify` as a user runs them: the HF_* environment pointing at the
//! mock hub and an empty HF_HOME.

mod common;

use std::path::Path;

use assert_cmd::Command;
use common::mock_hub::MockHub;
use common::{marian_repo, t5_repo};

fn mtsum(hub: &MockHub, home: &Path) -> Command {
    common::mtsum_with_hub(&hub.endpoint(), home)
}

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn fetch_list_and_verify_the_default_models() {
    let hub = MockHub::start();
    let translator = hub.publish("Helsinki-NLP/opus-mt-ru-en", "main", marian_repo("a"));
    let summarizer = hub.publish("IlyaGusev/rut5_base_sum_gazeta", "main", t5_repo());
    let home = tempfile::tempdir().unwrap();

    let out = mtsum(&hub, home.path())
        .args(["models", "fetch"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains(&format!("Helsinki-NLP/opus-mt-ru-en@main {translator}")),
        "{text}"
    );
    assert!(
        text.contains(&format!("IlyaGusev/rut5_base_sum_gazeta@main {summarizer}")),
        "{text}"
    );
    assert!(home
        .path()
        .join("hub/models--Helsinki-NLP--opus-mt-ru-en/refs/main")
        .is_file());

    let out = mtsum(&hub, home.path())
        .args(["models", "list"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let line = text
        .lines()
        .find(|l| l.starts_with("Helsinki-NLP/opus-mt-ru-en "))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.contains(" main ") && line.contains(&translator),
        "{line}"
    );
    assert!(line.ends_with("complete") && line.contains("KiB"), "{line}");

    let out = mtsum(&hub, home.path())
        .args(["models", "verify"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert_eq!(stdout(&out).matches(": ok,").count(), 2, "{}", stdout(&out));

    // Damage the translator's vocabulary: verify fails (exit 1) and names it; --repair fixes it.
    let snapshot = home
        .path()
        .join("hub/models--Helsinki-NLP--opus-mt-ru-en/snapshots")
        .join(&translator);
    std::fs::write(snapshot.join("vocab.json"), "{\"tampered\":1}").unwrap();
    let out = mtsum(&hub, home.path())
        .args(["models", "verify", "opus-mt-ru-en"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stdout(&out).contains("bad: vocab.json"), "{}", stdout(&out));
    let out = mtsum(&hub, home.path())
        .args(["models", "verify", "--repair", "opus-mt-ru-en"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("repaired"), "{}", stdout(&out));
}

#[test]
fn offline_by_flag_or_environment_sends_nothing_and_says_how_to_fetch() {
    let hub = MockHub::start();
    hub.publish("org/marian", "main", marian_repo("a"));
    let home = tempfile::tempdir().unwrap();

    let by_env = mtsum(&hub, home.path())
        .env("HF_HUB_OFFLINE", "1")
        .args(["models", "fetch", "org/marian"])
        .output()
        .unwrap();
    let by_flag = mtsum(&hub, home.path())
        .args(["--offline", "models", "fetch", "org/marian@main"])
        .output()
        .unwrap();
    for (out, command) in [
        (by_env, "mtsum models fetch org/marian"),
        (by_flag, "mtsum models fetch org/marian@main"),
    ] {
        assert_eq!(out.status.code(), Some(2));
        let text = stderr(&out);
        assert!(text.trim_end().ends_with(command), "{text}");
        assert!(text.contains("missing: config.json"), "{text}");
    }
    assert_eq!(hub.requests().len(), 0, "{:?}", hub.requests());
}

#[test]
fn the_token_is_sent_to_the_hub_and_never_shown() {
    let hub = MockHub::start();
    hub.publish("org/gated", "main", marian_repo("a"));
    hub.gate("org/gated", "hf_right_cli_token");
    let home = tempfile::tempdir().unwrap();

    // No token at all: 401, no Authorization header sent.
    let out = mtsum(&hub, home.path())
        .args(["models", "fetch", "org/gated"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("HTTP 401") && stderr(&out).contains("HF_TOKEN"),
        "{}",
        stderr(&out)
    );
    assert!(hub.requests().iter().all(|r| r.authorization.is_none()));

    // A wrong token from HF_TOKEN: 403, and the token appears nowhere.
    let out = mtsum(&hub, home.path())
        .env("HF_TOKEN", "hf_wrong_cli_token")
        .args(["--verbose", "models", "fetch", "org/gated"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("HTTP 403"), "{}", stderr(&out));
    assert!(
        !stderr(&out).contains("hf_wrong_cli_token")
            && !stdout(&out).contains("hf_wrong_cli_token")
    );

    // The right token from the token file ($HF_HOME/token), as `huggingface-cli login` writes it.
    std::fs::write(home.path().join("token"), "hf_right_cli_token\n").unwrap();
    hub.clear_log();
    let out = mtsum(&hub, home.path())
        .args(["models", "fetch", "org/gated"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !stderr(&out).contains("hf_right_cli_token")
            && !stdout(&out).contains("hf_right_cli_token")
    );
    let resolves: Vec<_> = hub
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("/resolve/"))
        .collect();
    assert!(!resolves.is_empty());
    assert!(resolves
        .iter()
        .all(|r| r.authorization.as_deref() == Some("Bearer hf_right_cli_token")));
    let cdn: Vec<_> = hub
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with("/cdn/"))
        .collect();
    assert!(!cdn.is_empty());
    assert!(
        cdn.iter().all(|r| r.authorization.is_none()),
        "the token left the hub: {cdn:?}"
    );
    let cache = home.path().join("hub");
    for path in walk(&cache) {
        let bytes = std::fs::read(&path).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&bytes).contains("hf_right_cli_token"),
            "{} holds the token",
            path.display()
        );
    }
}

#[test]
fn hf_hub_cache_takes_precedence_over_hf_home() {
    let hub = MockHub::start();
    hub.publish("org/marian", "main", marian_repo("a"));
    let home = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let out = mtsum(&hub, home.path())
        .env("HF_HUB_CACHE", cache.path())
        .args(["models", "fetch", "org/marian"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(cache.path().join("models--org--marian/refs/main").is_file());
    assert!(!home.path().join("hub").exists());
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() && !path.is_symlink() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}

#[test]
fn fetch_verify_and_repair_work_through_a_mirror() {
    let hub = MockHub::start();
    hub.mirror(true);
    let commit = hub.publish("org/marian", "main", marian_repo("a"));
    let home = tempfile::tempdir().unwrap();

    let out = mtsum(&hub, home.path())
        .args(["models", "fetch", "org/marian"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains(&commit), "{}", stdout(&out));
    let out = mtsum(&hub, home.path())
        .args(["models", "verify", "org/marian"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));

    let snapshot = home
        .path()
        .join("hub/models--org--marian/snapshots")
        .join(&commit);
    std::fs::write(snapshot.join("vocab.json"), "{\"tampered\":1}").unwrap();
    let out = mtsum(&hub, home.path())
        .args(["models", "verify", "org/marian"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stdout(&out).contains("bad: vocab.json"), "{}", stdout(&out));
    let out = mtsum(&hub, home.path())
        .args(["models", "verify", "--repair", "org/marian"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("repaired"), "{}", stdout(&out));
}

#[test]
fn a_corrupt_transfer_through_a_mirror_is_refused_with_the_reason() {
    let hub = MockHub::start();
    hub.mirror(true);
    let files = marian_repo("a");
    hub.publish("org/marian", "main", files.clone());
    hub.fault("model.safetensors", common::mock_hub::Fault::Corrupt, 1);
    let home = tempfile::tempdir().unwrap();

    let out = mtsum(&hub, home.path())
        .args(["models", "fetch", "org/marian"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let text = stderr(&out);
    assert!(
        text.contains("model.safetensors") && text.contains("corrupt") && text.contains("sha256"),
        "{text}"
    );
    let weights = common::file(&files, "model.safetensors").sha256();
    let blobs: Vec<String> = walk(&home.path().join("hub/models--org--marian/blobs"))
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(!blobs.iter().any(|b| b.starts_with(&weights)), "{blobs:?}");
}

/// Runs `mtsum models fetch` and returns (output, seconds it took).
fn timed_fetch(cmd: &mut Command) -> (std::process::Output, f64) {
    let start = std::time::Instant::now();
    let out = cmd
        .args(["models", "fetch", "org/marian"])
        .timeout(std::time::Duration::from_secs(60))
        .output()
        .unwrap();
    (out, start.elapsed().as_secs_f64())
}

#[test]
fn the_timeouts_from_the_environment_bound_a_stalled_hub() {
    let stall = std::time::Duration::from_secs(60);
    // A listing that never comes: HF_HUB_ETAG_TIMEOUT.
    let hub = MockHub::start();
    hub.publish("org/marian", "main", marian_repo("a"));
    hub.stall("/api/", stall);
    let home = tempfile::tempdir().unwrap();
    let (out, took) = timed_fetch(mtsum(&hub, home.path()).env("HF_HUB_ETAG_TIMEOUT", "1"));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let text = stderr(&out);
    assert!(
        text.contains("HF_HUB_ETAG_TIMEOUT") && text.contains("within 1 s"),
        "{text}"
    );
    assert!(took < 15.0, "took {took:.1} s");
    // With the model cached, a hub that does not answer in time is passed over, as
    // huggingface_hub passes it over.
    hub.clear_faults();
    let out = mtsum(&hub, home.path())
        .args(["models", "fetch", "org/marian"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    hub.stall("/api/", stall);
    let (out, took) = timed_fetch(mtsum(&hub, home.path()).env("HF_HUB_ETAG_TIMEOUT", "1"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(took < 15.0, "took {took:.1} s");

    // Content that never comes: HF_HUB_DOWNLOAD_TIMEOUT (the listing and small files are fine).
    let hub = MockHub::start();
    hub.publish("org/marian", "main", marian_repo("a"));
    hub.stall("/cdn/", stall);
    let home = tempfile::tempdir().unwrap();
    let (out, took) = timed_fetch(mtsum(&hub, home.path()).env("HF_HUB_DOWNLOAD_TIMEOUT", "1.5"));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let text = stderr(&out);
    assert!(
        text.contains("HF_HUB_DOWNLOAD_TIMEOUT") && text.contains("within 1.5 s"),
        "{text}"
    );
    assert!(took < 20.0, "took {took:.1} s");

    // A value that is not a number of seconds is named before anything is sent.
    let hub = MockHub::start();
    let out = mtsum(&hub, home.path())
        .env("HF_HUB_DOWNLOAD_TIMEOUT", "soon")
        .args(["models", "fetch", "org/marian"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("HF_HUB_DOWNLOAD_TIMEOUT=soon"),
        "{}",
        stderr(&out)
    );
    assert!(hub.requests().is_empty());
}

#[test]
fn no_proxy_sends_loopback_past_a_dead_proxy() {
    let hub = MockHub::start();
    hub.publish("org/marian", "main", marian_repo("a"));
    let dead = MockHub::unreachable_endpoint();
    let with_proxy = |home: &Path| {
        let mut cmd = mtsum(&hub, home);
        for var in ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"] {
            cmd.env(var, &dead);
        }
        cmd.args(["models", "fetch", "org/marian"]);
        cmd
    };

    // The hub is 127.0.0.1 and its CDN localhost: both listed, nothing goes to the proxy.
    let home = tempfile::tempdir().unwrap();
    let out = with_proxy(home.path())
        .env("NO_PROXY", "127.0.0.1,localhost")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let out = with_proxy(tempfile::tempdir().unwrap().path())
        .env("no_proxy", "*")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));

    // Without NO_PROXY the dead proxy is used, and the message says which variable set it.
    hub.clear_log();
    let home = tempfile::tempdir().unwrap();
    let out = with_proxy(home.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let text = stderr(&out);
    assert!(
        text.contains("through the proxy")
            && text.contains("HTTP_PROXY")
            && text.contains("NO_PROXY"),
        "{text}"
    );
    assert!(hub.requests().is_empty(), "{:?}", hub.requests());
}

#[test]
fn two_processes_fetching_one_model_download_each_blob_once() {
    let hub = MockHub::start();
    let files = marian_repo("a");
    let commit = hub.publish("org/marian", "main", files.clone());
    // Slow enough that the second process arrives while the first is still downloading.
    let slow = common::mock_hub::Fault::Slow(std::time::Duration::from_secs(3));
    hub.fault("model.safetensors", slow, 2);
    let home = tempfile::tempdir().unwrap();

    let spawn = || {
        common::mtsum_process_with_hub(&hub.endpoint(), home.path())
            .args(["models", "fetch", "org/marian"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let first = spawn();
    let second = spawn();
    let outs = [
        first.wait_with_output().unwrap(),
        second.wait_with_output().unwrap(),
    ];
    for out in &outs {
        assert!(out.status.success(), "{}", stderr(out));
        assert!(stdout(out).contains(&commit), "{}", stdout(out));
    }
    assert!(
        outs.iter()
            .any(|o| stderr(o).contains("waiting for another process")),
        "the second process never waited: {}\n{}",
        stderr(&outs[0]),
        stderr(&outs[1])
    );

    let downloads = hub.downloads();
    let weights = common::file(&files, "model.safetensors");
    let of_weights = downloads
        .iter()
        .filter(|r| r.path.contains(&weights.sha256()))
        .count();
    assert_eq!(of_weights, 1, "{downloads:?}");
    let mut paths: Vec<&str> = downloads.iter().map(|r| r.path.as_str()).collect();
    paths.sort();
    let before = paths.len();
    paths.dedup();
    assert_eq!(
        paths.len(),
        before,
        "a file was downloaded twice: {paths:?}"
    );

    let root = home.path().join("hub/models--org--marian");
    let snapshot = root.join("snapshots").join(&commit);
    for name in ["model.safetensors", "vocab.json", "source.spm"] {
        let served = common::file(&files, name);
        assert_eq!(
            std::fs::read(snapshot.join(name)).unwrap(),
            served.bytes,
            "{name}"
        );
    }
    assert!(!walk(&root.join("blobs"))
        .iter()
        .any(|p| p.to_string_lossy().ends_with(".incomplete")));
    // Where huggingface_hub keeps its locks, so Python and mtsum exclude each other too.
    assert!(home
        .path()
        .join("hub/.locks/models--org--marian")
        .join(format!("{}.lock", weights.sha256()))
        .is_file());
}
