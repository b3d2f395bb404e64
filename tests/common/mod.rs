//! Shared by the integration tests: the mock hub and small model repos to serve from it.

#![allow(dead_code)]

pub mod mock_hub;

use std::path::Path;

use mock_hub::{MockFile, MockHub};
use mtsum::hub::HubOptions;

/// The `mtsum` binary with a clean hub environment: `HF_HOME` (an empty folder for a cold
/// cache) and `HF_ENDPOINT` (the mock hub) set, no token, cache override, offline switch,
/// timeout or proxy inherited from the machine running the tests.
pub fn mtsum_with_hub(endpoint: &str, home: &Path) -> assert_cmd::Command {
    assert_cmd::Command::from_std(mtsum_process_with_hub(endpoint, home))
}

/// The same as a `std::process::Command`, for runs that must overlap (`spawn`).
pub fn mtsum_process_with_hub(endpoint: &str, home: &Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("mtsum"));
    for var in [
        "HF_TOKEN",
        "HUGGING_FACE_HUB_TOKEN",
        "HF_TOKEN_PATH",
        "HF_HUB_CACHE",
        "HUGGINGFACE_HUB_CACHE",
        "HF_HUB_OFFLINE",
        "HF_HUB_ETAG_TIMEOUT",
        "HF_HUB_DOWNLOAD_TIMEOUT",
        "XDG_CACHE_HOME",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "no_proxy",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("HF_HOME", home).env("HF_ENDPOINT", endpoint);
    cmd
}

/// A Marian-style repo as Helsinki-NLP publishes them: the files mtsum needs and the ones it
/// must leave alone (TF, Rust-bert, README). Contents are small stand-ins: the hub does not
/// read them, and no model is built from them here.
pub fn marian_repo(tag: &str) -> Vec<MockFile> {
    vec![
        MockFile::text(
            "config.json",
            &format!(r#"{{"model_type":"marian","d_model":16,"tag":"{tag}"}}"#),
        ),
        MockFile::text(
            "generation_config.json",
            r#"{"num_beams":4,"max_length":512}"#,
        ),
        MockFile::text(
            "tokenizer_config.json",
            r#"{"source_lang":"ru","target_lang":"en"}"#,
        ),
        MockFile::text("vocab.json", r#"{"</s>":0,"<unk>":1,"<pad>":2}"#),
        MockFile::lfs("source.spm", pattern(3000, 1)),
        MockFile::lfs("target.spm", pattern(2500, 2)),
        MockFile::lfs("model.safetensors", pattern(200_000, 3)),
        MockFile::lfs("pytorch_model.bin", pattern(150_000, 4)),
        MockFile::lfs("tf_model.h5", pattern(100_000, 5)),
        MockFile::lfs("rust_model.ot", pattern(100_000, 6)),
        MockFile::text("README.md", "# opus-mt stand-in\n"),
        MockFile::text(
            ".gitattributes",
            "*.bin filter=lfs diff=lfs merge=lfs -text\n",
        ),
    ]
}

/// A T5 repo like rut5_base_sum_gazeta: tokenizer.json and spiece.model, weights as
/// pytorch_model.bin only.
pub fn t5_repo() -> Vec<MockFile> {
    vec![
        MockFile::text(
            "config.json",
            r#"{"model_type":"t5","decoder_start_token_id":0}"#,
        ),
        MockFile::text(
            "tokenizer.json",
            r#"{"version":"1.0","model":{"type":"Unigram"}}"#,
        ),
        MockFile::lfs("spiece.model", pattern(5000, 7)),
        MockFile::lfs("pytorch_model.bin", pattern(120_000, 8)),
        MockFile::text("special_tokens_map.json", "{}"),
    ]
}

/// Deterministic bytes that differ from one `seed` to the next.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u32)
                .wrapping_mul(2_654_435_761)
                .rotate_left(seed as u32) as u8
        })
        .collect()
}

/// The file named `name` in a set.
pub fn file<'a>(files: &'a [MockFile], name: &str) -> &'a MockFile {
    files
        .iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("no {name}"))
}

/// Library hub options against the mock hub, with `cache` as the cache folder.
pub fn online(hub: &MockHub, cache: &Path) -> HubOptions {
    HubOptions {
        endpoint: Some(hub.endpoint()),
        cache_dir: Some(cache.to_path_buf()),
        ..HubOptions::default()
    }
}

/// Library hub options that never reach a hub: offline, an unreachable endpoint besides.
pub fn offline(cache: &Path) -> HubOptions {
    HubOptions {
        offline: true,
        endpoint: Some(MockHub::unreachable_endpoint()),
        cache_dir: Some(cache.to_path_buf()),
        ..HubOptions::default()
    }
}

/// The sorted entry names of a folder (a snapshot, `refs`), to compare with what a fetch must
/// have written.
pub fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}
