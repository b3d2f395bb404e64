//! GGUF LLMs from the mock hub on 127.0.0.1: only the named file of a repo of quantizations is
//! fetched (checked by its sha256), the cache serves it offline, and a file the repo lacks is
//! named with the ones it has.

mod common;

use std::path::Path;

use common::mock_hub::{MockFile, MockHub};
use common::{mtsum_with_hub, names_in, offline, online};
use mtsum::hub::{self, HubError};

/// A GGUF (version 3) with no tensors and the given string metadata; `tokens`, when given,
/// is the embedded vocabulary (`tokenizer.ggml.tokens`). The hub reads only the header.
fn gguf(architecture: &str, tokens: Option<&[&str]>, padding: usize) -> Vec<u8> {
    fn string(out: &mut Vec<u8>, text: &str) {
        out.extend((text.len() as u64).to_le_bytes());
        out.extend(text.as_bytes());
    }
    let mut out = b"GGUF".to_vec();
    out.extend(3u32.to_le_bytes());
    out.extend(0u64.to_le_bytes());
    out.extend((1 + tokens.is_some() as u64).to_le_bytes());
    string(&mut out, "general.architecture");
    out.extend(8u32.to_le_bytes());
    string(&mut out, architecture);
    if let Some(tokens) = tokens {
        string(&mut out, "tokenizer.ggml.tokens");
        out.extend(9u32.to_le_bytes());
        out.extend(8u32.to_le_bytes());
        out.extend((tokens.len() as u64).to_le_bytes());
        for token in tokens {
            string(&mut out, token);
        }
    }
    // Stands for the weights, so the files differ in size as quantizations do.
    out.extend(std::iter::repeat_n(0u8, padding));
    out
}

const REPO: &str = "org/tiny-llm-GGUF";

fn gguf_repo() -> Vec<MockFile> {
    let tokens: &[&str] = &["<unk>", "a", "b"];
    vec![
        MockFile::lfs("tiny-q4_k_m.gguf", gguf("qwen2", Some(tokens), 3000)),
        MockFile::lfs("tiny-q8_0.gguf", gguf("qwen2", Some(tokens), 6000)),
        MockFile::lfs("tiny-f16.gguf", gguf("qwen2", Some(tokens), 12000)),
        MockFile::lfs("no-tokenizer.gguf", gguf("qwen2", None, 100)),
        MockFile::text("tokenizer.json", r#"{"version":"1.0"}"#),
        MockFile::text("README.md", "# tiny"),
    ]
}

/// The files whose content the hub served (LFS ones through the CDN, named by sha256).
fn downloaded_files(hub: &MockHub) -> Vec<String> {
    let files = gguf_repo();
    let mut names: Vec<String> = hub
        .downloads()
        .iter()
        .filter_map(|d| {
            files
                .iter()
                .find(|f| d.path.ends_with(&format!("/{}", f.name)) || d.path.contains(&f.sha256()))
        })
        .map(|f| f.name.clone())
        .collect();
    names.sort();
    names.dedup();
    names
}

#[test]
fn only_the_named_gguf_is_fetched_checked_and_linked_in_the_hf_layout() {
    let hub = MockHub::start();
    let files = gguf_repo();
    let commit = hub.publish(REPO, "main", files.clone());
    let cache = tempfile::tempdir().unwrap();

    let model = hub::resolve_gguf(
        &format!("{REPO}:tiny-q4_k_m.gguf"),
        &online(&hub, cache.path()),
    )
    .unwrap();

    assert_eq!(model.commit.as_deref(), Some(commit.as_str()));
    assert_eq!(model.file, "tiny-q4_k_m.gguf");
    assert_eq!(names_in(&model.dir), ["tiny-q4_k_m.gguf"]);
    assert_eq!(downloaded_files(&hub), ["tiny-q4_k_m.gguf"]);
    let served = common::file(&files, "tiny-q4_k_m.gguf");
    assert_eq!(std::fs::read(&model.path).unwrap(), served.bytes);
    // An LFS blob is named by its sha256, as huggingface_hub names it.
    let link = std::fs::read_link(&model.path).unwrap();
    assert_eq!(link, Path::new("../../blobs").join(served.sha256()));
    assert_eq!(model.sha256, Some(served.sha256()));

    // Offline, the cache serves it without a request.
    hub.clear_log();
    let again =
        hub::resolve_gguf(&format!("{REPO}:tiny-q4_k_m.gguf"), &offline(cache.path())).unwrap();
    assert_eq!(again.path, model.path);
    assert_eq!(again.commit, model.commit);
    assert!(hub.requests().is_empty());
    // Another quantization of the same repo is not cached.
    let err =
        hub::resolve_gguf(&format!("{REPO}:tiny-q8_0.gguf"), &offline(cache.path())).unwrap_err();
    assert!(matches!(err, HubError::NotCached { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("tiny-q8_0.gguf"), "{text}");
    assert!(
        text.contains(&format!("mtsum models fetch {REPO}:tiny-q8_0.gguf")),
        "{text}"
    );
}

#[test]
fn a_gguf_without_its_own_tokenizer_brings_the_repos_tokenizer_json() {
    let hub = MockHub::start();
    hub.publish(REPO, "main", gguf_repo());
    let cache = tempfile::tempdir().unwrap();
    let spec = format!("{REPO}:no-tokenizer.gguf");
    let model = hub::resolve_gguf(&spec, &online(&hub, cache.path())).unwrap();
    assert_eq!(
        names_in(&model.dir),
        ["no-tokenizer.gguf", "tokenizer.json"]
    );
    assert_eq!(model.tokenizer_json, Some(model.dir.join("tokenizer.json")));
    assert_eq!(
        downloaded_files(&hub),
        ["no-tokenizer.gguf", "tokenizer.json"]
    );
    // Offline, the tokenizer.json is part of what the cache must hold.
    std::fs::remove_file(model.dir.join("tokenizer.json")).unwrap();
    let text = hub::resolve_gguf(&spec, &offline(cache.path()))
        .unwrap_err()
        .to_string();
    assert!(text.contains("missing: tokenizer.json"), "{text}");
}

#[test]
fn a_file_the_repo_lacks_is_named_with_the_gguf_files_it_has() {
    let hub = MockHub::start();
    hub.publish(REPO, "main", gguf_repo());
    let cache = tempfile::tempdir().unwrap();
    let err = hub::resolve_gguf(
        &format!("{REPO}:tiny-q5_k_m.gguf"),
        &online(&hub, cache.path()),
    )
    .unwrap_err();
    assert!(matches!(err, HubError::GgufMissing { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "`{REPO}`@main has no file `tiny-q5_k_m.gguf`; its GGUF files: \
             no-tokenizer.gguf, tiny-f16.gguf, tiny-q4_k_m.gguf, tiny-q8_0.gguf"
        )
    );
    assert!(downloaded_files(&hub).is_empty());
}

#[test]
fn models_fetch_and_list_take_a_gguf_spec() {
    let hub = MockHub::start();
    let commit = hub.publish(REPO, "main", gguf_repo());
    let home = tempfile::tempdir().unwrap();
    let spec = format!("{REPO}:tiny-q8_0.gguf");
    let out = mtsum_with_hub(&hub.endpoint(), home.path())
        .args(["models", "fetch", &spec])
        .assert()
        .success();
    let stdout = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    assert!(
        stdout.contains(&commit) && stdout.contains("tiny-q8_0.gguf"),
        "{stdout}"
    );
    assert_eq!(downloaded_files(&hub), ["tiny-q8_0.gguf"]);
    // The cache listing counts a GGUF snapshot as usable (it has no config.json).
    let out = mtsum_with_hub(&MockHub::unreachable_endpoint(), home.path())
        .args(["models", "list"])
        .assert()
        .success();
    let list = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    assert!(list.contains(REPO), "{list}");
    assert!(
        list.contains("complete") && !list.contains("incomplete"),
        "{list}"
    );
    // Offline, fetching another file of the repo fails with the fetch command (exit 2).
    mtsum_with_hub(&MockHub::unreachable_endpoint(), home.path())
        .env("HF_HUB_OFFLINE", "1")
        .args(["models", "fetch", &format!("{REPO}:tiny-f16.gguf")])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("tiny-f16.gguf"));
}
