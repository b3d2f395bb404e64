//! What can go wrong between a model spec and a folder of files, each with the cause and the fix.
//!
//! Messages never contain the token: they are built from repo ids, revisions, file names,
//! URLs (which never carry credentials) and the hub's own error text.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("{0}")]
    Other(String),

    #[error(
        "model `{spec}` is neither a folder, a preset ({presets}) nor a hub id (`org/name[@revision]`)"
    )]
    BadSpec { spec: String, presets: String },

    #[error(
        "repository `{repo}` not found on {endpoint} (if it is private, set HF_TOKEN to a token that can read it)"
    )]
    RepoNotFound { repo: String, endpoint: String },

    #[error(
        "revision `{revision}` not found in `{repo}` (use a branch, a tag or a full commit hash)"
    )]
    RevisionNotFound { repo: String, revision: String },

    #[error(
        "`{repo}` is gated or private (HTTP {status}): accept its terms on {endpoint}/{repo} and set HF_TOKEN (or write the token to {token_file})"
    )]
    Gated {
        repo: String,
        status: u16,
        endpoint: String,
        token_file: PathBuf,
    },

    #[error("file `{file}` is missing from `{repo}` at {revision}; check that it is a model repository of a family mtsum runs, or name another revision")]
    FileMissing {
        repo: String,
        revision: String,
        file: String,
    },

    #[error(
        "cannot reach the hub at {endpoint} ({reason}){proxy}; to run from the cache ({cache}) use --offline or HF_HUB_OFFLINE=1"
    )]
    Unreachable {
        endpoint: String,
        reason: String,
        /// Empty, or how a proxy was involved and how to bypass it.
        proxy: String,
        cache: PathBuf,
    },

    #[error(
        "{what}: no answer from {url} within {seconds} s{proxy}; raise {variable} (seconds, default 10) on a slow network or mirror, or use --offline to run from the cache"
    )]
    TimedOut {
        /// What was being done (`repo listing of org/name`, `download of model.safetensors`).
        what: String,
        url: String,
        seconds: String,
        /// HF_HUB_ETAG_TIMEOUT or HF_HUB_DOWNLOAD_TIMEOUT.
        variable: &'static str,
        proxy: String,
    },

    #[error(
        "the repo listing from {url} is unusable: {problem}; HF_ENDPOINT must name the Hugging Face hub or a mirror that serves its /api/models endpoint"
    )]
    BadListing { url: String, problem: String },

    #[error(
        "{file} of `{repo}` cannot be checked: neither the repo listing nor the headers of {url} give {problem}. A mirror or proxy at HF_ENDPOINT must pass on X-Repo-Commit and X-Linked-Etag/ETag (a sha256 for LFS files, the git blob id otherwise); ask its operator, or use the hub itself"
    )]
    NoChecksum {
        repo: String,
        file: String,
        url: String,
        problem: String,
    },

    #[error(
        "{url} answered for commit {got}, not the one it names; the mirror or proxy at HF_ENDPOINT does not serve the commits it is asked for, so {file} of `{repo}` cannot be trusted"
    )]
    WrongCommit {
        repo: String,
        file: String,
        url: String,
        got: String,
    },

    #[error("{variable}={value} cannot be used: expected {expected}")]
    BadSetting {
        variable: String,
        value: String,
        expected: String,
    },

    #[error(
        "--repair downloads files again: it cannot run offline (drop --offline / HF_HUB_OFFLINE)"
    )]
    RepairOffline,

    #[error("download of {file} from `{repo}` was interrupted ({reason}); run the command again to resume it")]
    Interrupted {
        repo: String,
        file: String,
        reason: String,
    },

    #[error("the hub answered HTTP {status} for {url}: {message}")]
    Http {
        url: String,
        status: u16,
        message: String,
    },

    #[error(
        "`{repo}`@{revision} is not complete in the cache {cache} and offline mode is on; missing: {}. Fetch it with: {command}",
        missing.join(", ")
    )]
    NotCached {
        repo: String,
        revision: String,
        cache: PathBuf,
        missing: Vec<String>,
        command: String,
    },

    #[error(
        "`{repo}` at {commit} has no files mtsum can use; missing: {}; choose a repository or revision that has them",
        missing.join(", ")
    )]
    Incomplete {
        repo: String,
        commit: String,
        missing: Vec<String>,
    },

    #[error(
        "{file} of `{repo}` is corrupt: {what}; it was removed from the cache, run the command again (or `mtsum models verify --repair`)"
    )]
    Corrupt {
        repo: String,
        file: String,
        what: String,
    },

    #[error(
        "{path}: model_type `{model_type}` in config.json is not one mtsum runs (marian, bart, mbart, t5, mt5)"
    )]
    UnsupportedModel { path: PathBuf, model_type: String },

    #[error("disk full while writing {path}: free some space or point HF_HUB_CACHE elsewhere")]
    DiskFull { path: PathBuf },

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{path}: {message}")]
    BadFile { path: PathBuf, message: String },

    #[error(
        "model `{spec}` is not a GGUF spec: name a hub repo and file as `org/name:file.gguf` (a revision as `org/name@revision:file.gguf`), a preset, or a local .gguf file"
    )]
    BadGgufSpec { spec: String },

    #[error("`{repo}`@{revision} has no file `{file}`; its GGUF files: {available}")]
    GgufMissing {
        repo: String,
        revision: String,
        file: String,
        available: String,
    },

    #[error(
        "{path} is not a GGUF file (it starts with \"{start}\", not \"GGUF\"); an LLM summarizer is a .gguf file, a seq2seq model a folder holding config.json and the weights"
    )]
    NotGguf { path: PathBuf, start: String },

    #[error(
        "{path}: the GGUF header cannot be read ({reason}); the file is truncated or corrupt, or uses a tensor type candle does not read (such as the IQ quantizations): take a Q4_K_M, Q5_K_M, Q8_0 or F16 file (a cached one is checked and fetched again by `mtsum models verify --repair`)"
    )]
    BadGguf { path: PathBuf, reason: String },
}

impl HubError {
    /// Wraps an I/O error with the path at fault, recognising a full disk.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        if is_disk_full(&source) {
            HubError::DiskFull { path }
        } else {
            HubError::Io { path, source }
        }
    }
}

/// ENOSPC on Unix, ERROR_DISK_FULL / ERROR_HANDLE_DISK_FULL on Windows.
pub(crate) fn is_disk_full(err: &std::io::Error) -> bool {
    err.kind() == std::io::ErrorKind::StorageFull
        || matches!(err.raw_os_error(), Some(28) if cfg!(unix))
        || matches!(err.raw_os_error(), Some(39 | 112) if cfg!(windows))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_named_as_such() {
        let err = HubError::io("/cache/blobs/x", std::io::Error::from_raw_os_error(28));
        if cfg!(unix) {
            assert!(matches!(err, HubError::DiskFull { .. }), "{err}");
            assert!(err.to_string().contains("HF_HUB_CACHE"), "{err}");
        }
        let err = HubError::io("/cache/x", std::io::ErrorKind::NotFound.into());
        assert!(matches!(err, HubError::Io { .. }));
    }
}
