//! `hub::resolve` and `hub::verify` against the mock hub on 127.0.0.1, each test with its own
//! empty cache folder.

mod common;

use std::path::{Path, PathBuf};

use common::mock_hub::{Fault, MockFile, MockHub};
use common::{file, marian_repo, names_in, offline, online, t5_repo};
use mtsum::hub::{self, FileState, HubError, HubOptions};

fn repo_dir(cache: &Path, repo: &str) -> PathBuf {
    cache.join(format!("models--{}", repo.replace('/', "--")))
}

#[test]
fn fetch_into_an_empty_cache_gets_only_what_the_family_needs_in_the_hf_layout() {
    let hub = MockHub::start();
    let files = marian_repo("a");
    let commit = hub.publish("Helsinki-NLP/opus-mt-ru-en", "main", files.clone());
    let cache = tempfile::tempdir().unwrap();

    let model = hub::resolve("opus-mt-ru-en", &online(&hub, cache.path())).unwrap();

    assert_eq!(model.commit.as_deref(), Some(commit.as_str()));
    assert_eq!(model.revision.as_deref(), Some("main"));
    assert_eq!(model.preset.as_ref().unwrap().name, "opus-mt-ru-en");
    let root = repo_dir(cache.path(), "Helsinki-NLP/opus-mt-ru-en");
    assert_eq!(model.dir, root.join("snapshots").join(&commit));
    assert_eq!(
        names_in(&model.dir),
        [
            "config.json",
            "generation_config.json",
            "model.safetensors",
            "source.spm",
            "target.spm",
            "tokenizer_config.json",
            "vocab.json"
        ]
    );
    for name in names_in(&model.dir) {
        let served = file(&files, &name);
        let pointer = model.dir.join(&name);
        assert_eq!(std::fs::read(&pointer).unwrap(), served.bytes, "{name}");
        // huggingface_hub's layout: relative links into blobs/, named by the ETag.
        let link = std::fs::read_link(&pointer).unwrap();
        assert_eq!(link, Path::new("../../blobs").join(served.etag()), "{name}");
    }
    let main_ref = std::fs::read_to_string(root.join("refs/main")).unwrap();
    assert_eq!(main_ref, commit);
    assert_eq!(
        names_in(&root.join("refs")),
        ["main"],
        "no ref named by a commit"
    );
    let downloaded: Vec<String> = hub.downloads().iter().map(|r| r.path.clone()).collect();
    for unwanted in [
        "pytorch_model.bin",
        "tf_model.h5",
        "rust_model.ot",
        "README.md",
    ] {
        let served = file(&files, unwanted);
        assert!(
            !downloaded
                .iter()
                .any(|p| p.ends_with(unwanted) || p.contains(&served.sha256())),
            "{unwanted} was downloaded: {downloaded:?}"
        );
    }
}

#[test]
fn a_second_run_downloads_nothing_and_offline_sends_no_request() {
    let hub = MockHub::start();
    hub.publish("org/marian", "main", marian_repo("a"));
    let cache = tempfile::tempdir().unwrap();
    let first = hub::resolve("org/marian", &online(&hub, cache.path())).unwrap();
    hub.clear_log();

    let second = hub::resolve("org/marian", &online(&hub, cache.path())).unwrap();
    assert_eq!(second.dir, first.dir);
    let requests = hub.requests();
    assert_eq!(requests.len(), 1, "only the listing: {requests:?}");
    assert!(requests[0]
        .path
        .starts_with("/api/models/org/marian/revision/main"));

    hub.clear_log();
    let mut opts = online(&hub, cache.path());
    opts.offline = true;
    let third = hub::resolve("org/marian", &opts).unwrap();
    assert_eq!(third.commit, first.commit);
    assert_eq!(hub.requests().len(), 0, "offline must not touch the hub");
}

#[test]
fn offline_with_an_empty_cache_names_the_missing_files_and_the_fetch_command() {
    let hub = MockHub::start();
    hub.publish("IlyaGusev/rut5_base_sum_gazeta", "main", t5_repo());
    let cache = tempfile::tempdir().unwrap();
    let mut opts = online(&hub, cache.path());
    opts.offline = true;

    let err = hub::resolve("rut5-base-sum-gazeta", &opts).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, HubError::NotCached { .. }), "{text}");
    assert!(
        text.contains("mtsum models fetch rut5-base-sum-gazeta"),
        "{text}"
    );
    assert!(text.contains("config.json"), "{text}");
    assert!(text.contains("tokenizer.json or spiece.model"), "{text}");
    assert!(text.contains("pytorch_model.bin"), "{text}");
    assert_eq!(hub.requests().len(), 0);
}

#[test]
fn offline_with_a_partial_cache_names_exactly_the_files_that_are_gone() {
    let hub = MockHub::start();
    hub.publish("org/marian", "main", marian_repo("a"));
    let cache = tempfile::tempdir().unwrap();
    let model = hub::resolve("org/marian@main", &online(&hub, cache.path())).unwrap();
    let target = file(&marian_repo("a"), "target.spm").sha256();
    std::fs::remove_file(model.dir.join("target.spm")).unwrap();

    // The blob is still there: it is linked again without a download.
    hub.clear_log();
    hub::resolve("org/marian@main", &online(&hub, cache.path())).unwrap();
    assert_eq!(hub.downloads().len(), 0, "{:?}", hub.downloads());
    std::fs::remove_file(model.dir.join("target.spm")).unwrap();
    let blobs = repo_dir(cache.path(), "org/marian").join("blobs");
    std::fs::remove_file(blobs.join(&target)).unwrap();

    let text = hub::resolve("org/marian@main", &offline(cache.path()))
        .unwrap_err()
        .to_string();
    assert!(text.contains("missing: target.spm."), "{text}");
    assert!(
        text.contains("mtsum models fetch org/marian@main"),
        "{text}"
    );

    // Online, the one missing file is fetched again and nothing else.
    hub.clear_log();
    hub::resolve("org/marian@main", &online(&hub, cache.path())).unwrap();
    let downloads = hub.downloads();
    assert_eq!(downloads.len(), 1, "{downloads:?}");
    assert!(downloads[0].path.contains(&target));
}

#[test]
fn revisions_pin_branches_tags_and_commits() {
    let hub = MockHub::start();
    let old = hub.publish("org/marian", "main", marian_repo("old"));
    hub.tag("org/marian", "v1", &old);
    let new = hub.publish("org/marian", "main", marian_repo("new"));
    let cache = tempfile::tempdir().unwrap();
    let opts = online(&hub, cache.path());
    let config =
        |m: &hub::ResolvedModel| std::fs::read_to_string(m.dir.join("config.json")).unwrap();

    let latest = hub::resolve("org/marian", &opts).unwrap();
    assert_eq!(latest.commit.as_deref(), Some(new.as_str()));
    assert!(config(&latest).contains("\"new\""));

    let tagged = hub::resolve("org/marian@v1", &opts).unwrap();
    assert_eq!(tagged.commit.as_deref(), Some(old.as_str()));
    assert!(config(&tagged).contains("\"old\""));

    let pinned = hub::resolve(&format!("org/marian@{old}"), &opts).unwrap();
    assert_eq!(pinned.dir, tagged.dir);
    let refs = names_in(&repo_dir(cache.path(), "org/marian").join("refs"));
    assert_eq!(refs, ["main", "v1"]);

    // Offline, each revision finds its own snapshot.
    hub.clear_log();
    let off = offline(cache.path());
    assert_eq!(
        hub::resolve("org/marian@v1", &off).unwrap().commit,
        Some(old.clone())
    );
    assert_eq!(
        hub::resolve(&format!("org/marian@{old}"), &off)
            .unwrap()
            .commit,
        Some(old)
    );
    assert_eq!(hub::resolve("org/marian", &off).unwrap().commit, Some(new));
    assert_eq!(hub.requests().len(), 0);
}

#[test]
fn a_commit_cached_in_full_is_used_without_asking_the_hub() {
    let hub = MockHub::start();
    let commit = hub.publish("org/marian", "main", marian_repo("a"));
    let cache = tempfile::tempdir().unwrap();
    let spec = format!("org/marian@{commit}");
    hub::resolve(&spec, &online(&hub, cache.path())).unwrap();
    hub.clear_log();
    let again = hub::resolve(&spec, &online(&hub, cache.path())).unwrap();
    assert_eq!(again.commit, Some(commit));
    assert_eq!(hub.requests().len(), 0, "{:?}", hub.requests());
}

#[test]
fn a_leftover_part_file_longer_than_the_blob_is_discarded() {
    let hub = MockHub::start();
    let files = marian_repo("a");
    hub.publish("org/marian", "main", files.clone());
    let cache = tempfile::tempdir().unwrap();
    let weights = file(&files, "model.safetensors");
    let blobs = repo_dir(cache.path(), "org/marian").join("blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    let part = blobs.join(format!("{}.incomplete", weights.sha256()));
    std::fs::write(&part, vec![0u8; weights.bytes.len() + 10]).unwrap();

    let model = hub::resolve("org/marian", &online(&hub, cache.path())).unwrap();
    assert_eq!(
        std::fs::read(model.dir.join("model.safetensors")).unwrap(),
        weights.bytes
    );
    assert!(!part.exists());
}

#[test]
fn a_pull_request_revision_is_cached_under_its_full_ref_name() {
    let hub = MockHub::start();
    hub.publish("org/marian", "main", marian_repo("main"));
    let pr = hub.publish("org/marian", "refs/pr/1", marian_repo("pr"));
    let cache = tempfile::tempdir().unwrap();

    let model = hub::resolve("org/marian@refs/pr/1", &online(&hub, cache.path())).unwrap();
    assert_eq!(model.commit.as_deref(), Some(pr.as_str()));
    let listing = &hub.requests()[0];
    assert_eq!(
        listing.path,
        "/api/models/org/marian/revision/refs%2Fpr%2F1"
    );
    // huggingface_hub's layout: refs/<revision>, slashes and all.
    let stored = repo_dir(cache.path(), "org/marian").join("refs/refs/pr/1");
    assert_eq!(std::fs::read_to_string(stored).unwrap(), pr);
    let off = hub::resolve("org/marian@refs/pr/1", &offline(cache.path())).unwrap();
    assert_eq!(off.commit, Some(pr));
}

#[test]
fn unknown_repos_and_revisions_are_named_as_such() {
    let hub = MockHub::start();
    hub.publish("org/marian", "main", marian_repo("a"));
    let cache = tempfile::tempdir().unwrap();
    let opts = online(&hub, cache.path());

    let err = hub::resolve("org/nothing-here", &opts).unwrap_err();
    assert!(matches!(err, HubError::RepoNotFound { .. }), "{err}");
    assert!(
        err.to_string().contains("`org/nothing-here` not found"),
        "{err}"
    );

    let err = hub::resolve("org/marian@no-such-branch", &opts).unwrap_err();
    assert!(matches!(err, HubError::RevisionNotFound { .. }), "{err}");
    assert!(err.to_string().contains("no-such-branch"), "{err}");
}

#[test]
fn a_gated_repo_asks_for_hf_token_and_works_with_it_without_showing_it() {
    let hub = MockHub::start();
    hub.publish("org/gated", "main", marian_repo("a"));
    hub.gate("org/gated", "hf_right_token_123");
    let cache = tempfile::tempdir().unwrap();

    let mut opts = online(&hub, cache.path());
    opts.token = Some("hf_wrong_token_456".into());
    let err = hub::resolve("org/gated", &opts).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, HubError::Gated { status: 403, .. }), "{text}");
    assert!(text.contains("HF_TOKEN"), "{text}");
    assert!(!text.contains("hf_wrong_token_456"), "{text}");
    assert!(!format!("{err:?}").contains("hf_wrong_token_456"));
    // Nothing half-fetched is left in the snapshot.
    let snapshot = repo_dir(cache.path(), "org/gated").join("snapshots");
    assert!(
        !snapshot.exists()
            || std::fs::read_dir(&snapshot).unwrap().all(|d| {
                std::fs::read_dir(d.unwrap().path())
                    .unwrap()
                    .next()
                    .is_none()
            })
    );

    opts.token = Some("hf_right_token_123".into());
    let model = hub::resolve("org/gated", &opts).unwrap();
    assert!(model.dir.join("model.safetensors").is_file());
    let sent = hub.requests();
    assert!(sent
        .iter()
        .filter(|r| r.path.contains("/resolve/"))
        .all(|r| r.authorization.is_some()));
}

#[test]
fn a_truncated_download_is_rejected_and_leaves_nothing_behind() {
    let hub = MockHub::start();
    let files = marian_repo("a");
    let commit = hub.publish("org/marian", "main", files.clone());
    hub.fault("model.safetensors", Fault::Truncate(150_000), 1);
    let cache = tempfile::tempdir().unwrap();

    let err = hub::resolve("org/marian", &online(&hub, cache.path())).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, HubError::Corrupt { .. }), "{text}");
    assert!(
        text.contains("model.safetensors") && text.contains("150000 bytes"),
        "{text}"
    );
    let root = repo_dir(cache.path(), "org/marian");
    let weights = file(&files, "model.safetensors");
    assert!(!root
        .join("snapshots")
        .join(&commit)
        .join("model.safetensors")
        .exists());
    assert!(!root.join("blobs").join(weights.sha256()).exists());

    // The hub behaves again: the next run gets the right file.
    let model = hub::resolve("org/marian", &online(&hub, cache.path())).unwrap();
    assert_eq!(
        std::fs::read(model.dir.join("model.safetensors")).unwrap(),
        weights.bytes
    );
}

#[test]
fn a_download_with_the_wrong_checksum_is_rejected_for_lfs_and_plain_files() {
    for name in ["model.safetensors", "vocab.json"] {
        let hub = MockHub::start();
        let commit = hub.publish("org/marian", "main", marian_repo("a"));
        hub.fault(name, Fault::Corrupt, 1);
        let cache = tempfile::tempdir().unwrap();

        let err = hub::resolve("org/marian", &online(&hub, cache.path())).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, HubError::Corrupt { .. }), "{name}: {text}");
        let kind = if name == "vocab.json" {
            "git sha1"
        } else {
            "sha256"
        };
        assert!(text.contains(name) && text.contains(kind), "{text}");
        let snapshot = repo_dir(cache.path(), "org/marian")
            .join("snapshots")
            .join(&commit);
        assert!(!snapshot.join(name).exists(), "{name} kept");
        let offline_text = hub::resolve("org/marian", &offline(cache.path()))
            .unwrap_err()
            .to_string();
        assert!(offline_text.contains("not complete"), "{offline_text}");
    }
}

#[test]
fn an_interrupted_body_is_resumed_with_a_range_request() {
    let hub = MockHub::start();
    let files = marian_repo("a");
    hub.publish("org/marian", "main", files.clone());
    hub.fault("model.safetensors", Fault::Disconnect(70_000), 1);
    let cache = tempfile::tempdir().unwrap();

    let model = hub::resolve("org/marian", &online(&hub, cache.path())).unwrap();
    let weights = file(&files, "model.safetensors");
    assert_eq!(
        std::fs::read(model.dir.join("model.safetensors")).unwrap(),
        weights.bytes
    );
    let starts: Vec<u64> = hub
        .downloads()
        .iter()
        .filter(|r| r.path.contains(&weights.sha256()))
        .filter_map(|r| r.range_start())
        .collect();
    assert_eq!(starts, [0, 70_000], "resumed where the body stopped");
}

#[test]
fn a_server_that_ignores_range_makes_the_download_start_over() {
    let hub = MockHub::start();
    let files = marian_repo("a");
    hub.publish("org/marian", "main", files.clone());
    hub.fault("model.safetensors", Fault::Disconnect(50_000), 1);
    hub.fault("model.safetensors", Fault::IgnoreRange, 1);
    let cache = tempfile::tempdir().unwrap();

    let model = hub::resolve("org/marian", &online(&hub, cache.path())).unwrap();
    let weights = file(&files, "model.safetensors");
    assert_eq!(
        std::fs::read(model.dir.join("model.safetensors")).unwrap(),
        weights.bytes
    );
    let cdn: Vec<_> = hub
        .downloads()
        .into_iter()
        .filter(|r| r.path.contains(&weights.sha256()))
        .map(|r| (r.range_start(), r.status))
        .collect();
    assert_eq!(cdn, [(Some(0), 206), (Some(50_000), 200)]);
}

#[test]
fn a_busy_server_is_asked_again() {
    let hub = MockHub::start();
    let files = marian_repo("a");
    hub.publish("org/marian", "main", files.clone());
    hub.fault("model.safetensors", Fault::Unavailable, 2);
    let cache = tempfile::tempdir().unwrap();

    let model = hub::resolve("org/marian", &online(&hub, cache.path())).unwrap();
    let weights = file(&files, "model.safetensors");
    assert_eq!(
        std::fs::read(model.dir.join("model.safetensors")).unwrap(),
        weights.bytes
    );
    let statuses: Vec<u16> = hub
        .requests()
        .into_iter()
        .filter(|r| r.path.contains(&weights.sha256()))
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, [503, 503, 206]);
}

#[test]
fn a_download_interrupted_in_one_run_is_never_used_and_resumes_in_the_next() {
    let hub = MockHub::start();
    let files = marian_repo("a");
    hub.publish("org/marian", "main", files.clone());
    // More cuts than hf-hub's retries: the run fails.
    hub.fault("model.safetensors", Fault::Disconnect(20_000), 10);
    let cache = tempfile::tempdir().unwrap();

    let err = hub::resolve("org/marian", &online(&hub, cache.path())).unwrap_err();
    assert!(matches!(err, HubError::Interrupted { .. }), "{err}");
    assert!(err.to_string().contains("model.safetensors"), "{err}");
    let text = hub::resolve("org/marian", &offline(cache.path()))
        .unwrap_err()
        .to_string();
    assert!(text.contains("missing: model.safetensors"), "{text}");

    hub.clear_faults();
    hub.clear_log();
    let model = hub::resolve("org/marian", &online(&hub, cache.path())).unwrap();
    let weights = file(&files, "model.safetensors");
    assert_eq!(
        std::fs::read(model.dir.join("model.safetensors")).unwrap(),
        weights.bytes
    );
    let resumed_from = hub
        .downloads()
        .iter()
        .filter(|r| r.path.contains(&weights.sha256()))
        .filter_map(|r| r.range_start())
        .collect::<Vec<_>>();
    assert_eq!(resumed_from.len(), 1);
    assert!(resumed_from[0] >= 20_000, "{resumed_from:?}");
}

#[cfg(unix)]
#[test]
fn a_cache_written_in_the_huggingface_hub_layout_by_hand_is_used_as_is() {
    let hub = MockHub::start();
    let files = t5_repo();
    let commit = hub.publish("IlyaGusev/rut5_base_sum_gazeta", "main", files.clone());
    let cache = tempfile::tempdir().unwrap();
    // What Python's snapshot_download leaves: blobs by ETag, relative links, refs/main.
    let root = repo_dir(cache.path(), "IlyaGusev/rut5_base_sum_gazeta");
    let snapshot = root.join("snapshots").join(&commit);
    std::fs::create_dir_all(root.join("blobs")).unwrap();
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::create_dir_all(root.join("refs")).unwrap();
    std::fs::write(root.join("refs/main"), &commit).unwrap();
    for f in &files {
        std::fs::write(root.join("blobs").join(f.etag()), &f.bytes).unwrap();
        std::os::unix::fs::symlink(
            Path::new("../../blobs").join(f.etag()),
            snapshot.join(&f.name),
        )
        .unwrap();
    }

    let model = hub::resolve("rut5-base-sum-gazeta", &offline(cache.path())).unwrap();
    assert_eq!(model.dir, snapshot);
    assert_eq!(model.commit.as_deref(), Some(commit.as_str()));

    let online_model = hub::resolve("rut5-base-sum-gazeta", &online(&hub, cache.path())).unwrap();
    assert_eq!(online_model.dir, snapshot);
    assert_eq!(hub.downloads().len(), 0, "{:?}", hub.downloads());
}

#[test]
fn the_hub_out_of_reach_is_named_and_a_complete_cache_still_serves() {
    let hub = MockHub::start();
    hub.publish("org/marian", "main", marian_repo("a"));
    let cache = tempfile::tempdir().unwrap();
    let mut opts = online(&hub, cache.path());
    opts.endpoint = Some(MockHub::unreachable_endpoint());

    let text = hub::resolve("org/marian", &opts).unwrap_err().to_string();
    assert!(text.contains("cannot reach the hub"), "{text}");
    assert!(text.contains("--offline"), "{text}");

    let fetched = hub::resolve("org/marian", &online(&hub, cache.path())).unwrap();
    let fallback = hub::resolve("org/marian", &opts).unwrap();
    assert_eq!(fallback.dir, fetched.dir);
}

#[test]
fn sharded_safetensors_come_with_every_shard_and_pytorch_is_the_last_resort() {
    let hub = MockHub::start();
    let index = r#"{"metadata":{"total_size":2},"weight_map":{"a.weight":"model-00001-of-00002.safetensors","b.weight":"model-00002-of-00002.safetensors"}}"#;
    let mut files = vec![
        MockFile::text("config.json", r#"{"model_type":"bart"}"#),
        MockFile::text("tokenizer.json", "{}"),
        MockFile::text("vocab.json", "{}"),
        MockFile::text("merges.txt", "#version: 0.2\n"),
        MockFile::text("model.safetensors.index.json", index),
        MockFile::lfs("model-00001-of-00002.safetensors", common::pattern(9000, 1)),
        MockFile::lfs("model-00002-of-00002.safetensors", common::pattern(8000, 2)),
        MockFile::lfs("pytorch_model.bin", common::pattern(7000, 3)),
    ];
    hub.publish("org/bart", "main", files.clone());
    let cache = tempfile::tempdir().unwrap();
    let model = hub::resolve("org/bart", &online(&hub, cache.path())).unwrap();
    assert_eq!(
        names_in(&model.dir),
        [
            "config.json",
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
            "model.safetensors.index.json",
            "tokenizer.json"
        ]
    );

    files.retain(|f| !f.name.contains("safetensors") && f.name != "tokenizer.json");
    hub.publish("org/bart-old", "main", files);
    let model = hub::resolve("org/bart-old", &online(&hub, cache.path())).unwrap();
    assert_eq!(
        names_in(&model.dir),
        [
            "config.json",
            "merges.txt",
            "pytorch_model.bin",
            "vocab.json"
        ]
    );
}

#[test]
fn a_repo_without_the_files_a_family_needs_says_which() {
    let hub = MockHub::start();
    let files: Vec<MockFile> = t5_repo()
        .into_iter()
        .filter(|f| f.name != "tokenizer.json" && f.name != "spiece.model")
        .collect();
    hub.publish("org/t5-no-tokenizer", "main", files);
    hub.publish(
        "org/no-config",
        "main",
        vec![MockFile::text("README.md", "hi")],
    );
    let cache = tempfile::tempdir().unwrap();
    let opts = online(&hub, cache.path());

    let err = hub::resolve("org/t5-no-tokenizer", &opts).unwrap_err();
    assert!(matches!(err, HubError::Incomplete { .. }), "{err}");
    assert!(
        err.to_string().contains("tokenizer.json or spiece.model"),
        "{err}"
    );

    let err = hub::resolve("org/no-config", &opts).unwrap_err();
    assert!(matches!(err, HubError::FileMissing { .. }), "{err}");
    assert!(err.to_string().contains("config.json"), "{err}");
}

#[test]
fn a_blob_shared_by_two_commits_is_downloaded_once() {
    let hub = MockHub::start();
    let first = marian_repo("one");
    hub.publish("org/marian", "main", first.clone());
    let cache = tempfile::tempdir().unwrap();
    hub::resolve("org/marian", &online(&hub, cache.path())).unwrap();

    hub.publish("org/marian", "main", marian_repo("two"));
    hub.clear_log();
    let second = hub::resolve("org/marian", &online(&hub, cache.path())).unwrap();
    let downloads = hub.downloads();
    assert_eq!(
        downloads.len(),
        1,
        "only the changed config.json: {downloads:?}"
    );
    assert!(downloads[0].path.ends_with("/config.json"));
    assert!(second.dir.join("model.safetensors").is_file());
}

#[test]
fn verify_finds_a_damaged_blob_and_repair_fetches_it_again() {
    let hub = MockHub::start();
    let files = marian_repo("a");
    hub.publish("org/marian", "main", files.clone());
    let cache = tempfile::tempdir().unwrap();
    let opts = online(&hub, cache.path());
    let model = hub::resolve("org/marian", &opts).unwrap();

    let reports = hub::verify(&[], &opts, false).unwrap();
    assert_eq!(reports.len(), 1);
    assert!(
        reports[0].is_good() && reports[0].against_hub,
        "{reports:?}"
    );

    // Same size, one byte changed: only a checksum sees it.
    let weights = model.dir.join("model.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    bytes[100] ^= 1;
    std::fs::write(&weights, bytes).unwrap();
    for opts in [opts.clone(), offline(cache.path())] {
        let report = &hub::verify(&["org/marian".into()], &opts, false).unwrap()[0];
        assert!(!report.is_good());
        let bad: Vec<&String> = report
            .files
            .iter()
            .filter(|(_, s)| matches!(s, FileState::Bad(_)))
            .map(|(f, _)| f)
            .collect();
        assert_eq!(bad, ["model.safetensors"], "{report:?}");
    }

    let report = &hub::verify(&["org/marian".into()], &opts, true).unwrap()[0];
    assert!(report.repaired && report.is_good(), "{report:?}");
    let served = file(&files, "model.safetensors");
    assert_eq!(std::fs::read(&weights).unwrap(), served.bytes);
}

#[test]
fn verify_reports_a_missing_file_and_refuses_to_repair_offline() {
    let hub = MockHub::start();
    hub.publish("org/marian", "main", marian_repo("a"));
    let cache = tempfile::tempdir().unwrap();
    let model = hub::resolve("org/marian", &online(&hub, cache.path())).unwrap();
    std::fs::remove_file(model.dir.join("vocab.json")).unwrap();

    let report = &hub::verify(&[], &offline(cache.path()), false).unwrap()[0];
    assert_eq!(report.missing, ["vocab.json"]);
    assert!(!report.against_hub);
    let err = hub::verify(&[], &offline(cache.path()), true).unwrap_err();
    assert!(err.to_string().contains("offline"), "{err}");
}

#[cfg(target_os = "linux")]
#[test]
fn a_full_disk_is_reported_as_such() {
    let hub = MockHub::start();
    let files = marian_repo("a");
    hub.publish("org/marian", "main", files.clone());
    let cache = tempfile::tempdir().unwrap();
    // Every write to /dev/full fails with ENOSPC: put it where the download goes.
    let weights = file(&files, "model.safetensors");
    let blobs = repo_dir(cache.path(), "org/marian").join("blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    let part = blobs.join(format!("{}.incomplete", weights.sha256()));
    std::os::unix::fs::symlink("/dev/full", &part).unwrap();

    let err = hub::resolve("org/marian", &online(&hub, cache.path())).unwrap_err();
    assert!(matches!(err, HubError::DiskFull { .. }), "{err}");
    assert!(err.to_string().contains("disk full"), "{err}");
}

#[test]
fn an_empty_file_is_fetched_without_a_range_request() {
    let hub = MockHub::start();
    let mut files = t5_repo();
    files.retain(|f| f.name != "special_tokens_map.json");
    files.push(MockFile::text("special_tokens_map.json", ""));
    hub.publish("org/t5", "main", files);
    let cache = tempfile::tempdir().unwrap();

    let model = hub::resolve("org/t5", &online(&hub, cache.path())).unwrap();
    let empty = model.dir.join("special_tokens_map.json");
    assert_eq!(std::fs::metadata(&empty).unwrap().len(), 0);
    assert!(hub::verify(&[], &online(&hub, cache.path()), false).unwrap()[0].is_good());
}

#[test]
fn tokenizer_only_fetches_no_weights_and_a_run_fetches_them_later() {
    let hub = MockHub::start();
    hub.publish("org/marian", "main", marian_repo("a"));
    let cache = tempfile::tempdir().unwrap();
    let mut opts = online(&hub, cache.path());
    opts.tokenizer_only = true;

    let model = hub::resolve("org/marian", &opts).unwrap();
    assert!(model.dir.join("source.spm").is_file());
    assert!(!model.dir.join("model.safetensors").exists());
    opts.offline = true;
    hub::resolve("org/marian", &opts).unwrap();
    let text = hub::resolve("org/marian", &offline(cache.path()))
        .unwrap_err()
        .to_string();
    assert!(text.contains("missing: model.safetensors or"), "{text}");

    hub.clear_log();
    let full = hub::resolve("org/marian", &online(&hub, cache.path())).unwrap();
    assert!(full.dir.join("model.safetensors").is_file());
    assert_eq!(hub.downloads().len(), 1, "{:?}", hub.downloads());
}

/// What each file of a repo must be in a cache: its bytes, behind a link named by its etag.
fn assert_cached_as_served(dir: &Path, files: &[MockFile]) {
    for name in names_in(dir) {
        let served = file(files, &name);
        let pointer = dir.join(&name);
        assert_eq!(std::fs::read(&pointer).unwrap(), served.bytes, "{name}");
        let link = std::fs::read_link(&pointer).unwrap();
        assert_eq!(link, Path::new("../../blobs").join(served.etag()), "{name}");
    }
}

#[test]
fn a_mirror_listing_without_blob_details_is_completed_from_the_resolve_headers() {
    let hub = MockHub::start();
    hub.mirror(true);
    let files = marian_repo("a");
    let commit = hub.publish("org/marian", "main", files.clone());
    let cache = tempfile::tempdir().unwrap();
    let opts = online(&hub, cache.path());

    let model = hub::resolve("org/marian", &opts).unwrap();
    assert_eq!(model.commit.as_deref(), Some(commit.as_str()));
    assert_eq!(names_in(&model.dir).len(), 7, "{:?}", names_in(&model.dir));
    assert_cached_as_served(&model.dir, &files);
    // One HEAD per needed file, at the commit, never followed to the CDN.
    let heads: Vec<String> = hub
        .requests()
        .into_iter()
        .filter(|r| r.method == "HEAD")
        .map(|r| r.path)
        .collect();
    assert_eq!(heads.len(), 7, "{heads:?}");
    assert!(heads
        .iter()
        .all(|p| p.starts_with(&format!("/org/marian/resolve/{commit}/"))));

    // A second run: the listing only, no HEAD, no download.
    hub.clear_log();
    hub::resolve("org/marian", &opts).unwrap();
    assert_eq!(hub.requests().len(), 1, "{:?}", hub.requests());

    // verify asks the mirror for each file's checksum; --repair fetches a damaged one again.
    let report = &hub::verify(&[], &opts, false).unwrap()[0];
    assert!(report.is_good() && report.against_hub, "{report:?}");
    let weights = model.dir.join("model.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    bytes[10] ^= 1;
    std::fs::write(&weights, bytes).unwrap();
    let report = &hub::verify(&[], &opts, false).unwrap()[0];
    assert_eq!(
        report.bad_files().collect::<Vec<_>>(),
        ["model.safetensors"]
    );
    let report = &hub::verify(&[], &opts, true).unwrap()[0];
    assert!(report.repaired && report.is_good(), "{report:?}");
    assert_cached_as_served(&model.dir, &files);
}

#[test]
fn a_corrupt_transfer_through_a_mirror_is_refused_and_leaves_nothing_behind() {
    for name in ["model.safetensors", "vocab.json"] {
        let hub = MockHub::start();
        hub.mirror(true);
        let files = marian_repo("a");
        let commit = hub.publish("org/marian", "main", files.clone());
        hub.fault(name, Fault::Corrupt, 1);
        let cache = tempfile::tempdir().unwrap();

        let err = hub::resolve("org/marian", &online(&hub, cache.path())).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, HubError::Corrupt { .. }), "{name}: {text}");
        let kind = if name == "vocab.json" {
            "git sha1"
        } else {
            "sha256"
        };
        assert!(text.contains(name) && text.contains(kind), "{text}");
        let root = repo_dir(cache.path(), "org/marian");
        let served = file(&files, name);
        assert!(!root.join("snapshots").join(&commit).join(name).exists());
        let blobs = names_in(&root.join("blobs"));
        assert!(
            !blobs.iter().any(|b| b.starts_with(&served.etag())),
            "{name}: {blobs:?}"
        );

        let model = hub::resolve("org/marian", &online(&hub, cache.path())).unwrap();
        assert_cached_as_served(&model.dir, &files);
    }
}

#[test]
fn a_mirror_that_drops_the_checksums_is_named_and_nothing_is_downloaded() {
    let hub = MockHub::start();
    hub.mirror(true);
    hub.strip_etags(true);
    hub.publish("org/marian", "main", marian_repo("a"));
    let cache = tempfile::tempdir().unwrap();

    let err = hub::resolve("org/marian", &online(&hub, cache.path())).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, HubError::NoChecksum { .. }), "{text}");
    assert!(
        text.contains("config.json") && text.contains("HF_ENDPOINT") && text.contains("ETag"),
        "{text}"
    );
    assert!(hub.downloads().is_empty(), "{:?}", hub.downloads());
}

#[test]
fn a_listing_that_is_not_a_hub_listing_says_so() {
    // An endpoint that answers 200 with something else (a web page, a proxy's login form).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for mut stream in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let body = "<html>please log in</html>";
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let cache = tempfile::tempdir().unwrap();
    let opts = HubOptions {
        endpoint: Some(endpoint),
        cache_dir: Some(cache.path().to_path_buf()),
        ..HubOptions::default()
    };
    let err = hub::resolve("org/marian", &opts).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, HubError::BadListing { .. }), "{text}");
    assert!(
        text.contains("HF_ENDPOINT") && !text.contains("HTTP 200"),
        "{text}"
    );
}
