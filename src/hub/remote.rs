//! Talking to the hub: the repo listing through hf-hub's blocking client, file downloads
//! through `download.rs`, and on top what hf-hub leaves out: size and checksum checks before a
//! download takes its blob name, reuse of blobs already cached, and errors that name the cause
//! (from the hub's `X-Error-Code` header, as huggingface_hub's `hf_raise_for_status` reads it).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use hf_hub::api::sync::{Api, ApiBuilder};
use hf_hub::{Cache, Repo, RepoType};

use super::checksum::Expected;
use super::config::HubConfig;
use super::download::{self, Download, DownloadError};
use super::layout::{blob_of, is_commit, CachedRepo};
use super::HubError;

/// A repo's files at one commit, from `/api/models/{repo}/revision/{rev}?blobs=true`.
#[derive(Debug, Clone, serde::Deserialize)]
pub(crate) struct Listing {
    /// The commit the revision resolved to.
    pub sha: String,
    #[serde(default)]
    pub siblings: Vec<Sibling>,
}

#[derive(Debug, Clone, serde::Deserialize)]
pub(crate) struct Sibling {
    pub rfilename: String,
    #[serde(rename = "blobId")]
    pub blob_id: Option<String>,
    pub size: Option<u64>,
    pub lfs: Option<Lfs>,
}

#[derive(Debug, Clone, serde::Deserialize)]
pub(crate) struct Lfs {
    pub sha256: String,
    pub size: u64,
}

impl Listing {
    pub fn has(&self, file: &str) -> bool {
        self.file(file).is_some()
    }

    pub fn file(&self, file: &str) -> Option<&Sibling> {
        self.siblings.iter().find(|s| s.rfilename == file)
    }
}

impl Sibling {
    /// The checksum the hub publishes: sha256 for LFS files, the git blob id otherwise.
    pub fn expected(&self) -> Option<Expected> {
        match (&self.lfs, &self.blob_id) {
            (Some(lfs), _) => Expected::from_etag(&lfs.sha256),
            (None, Some(id)) => Expected::from_etag(id),
            (None, None) => None,
        }
    }

    pub fn size(&self) -> Option<u64> {
        self.lfs.as_ref().map(|l| l.size).or(self.size)
    }
}

/// What a request was about, to name it in an error.
struct Target<'a> {
    repo: &'a str,
    revision: &'a str,
    file: Option<&'a str>,
}

pub(crate) struct Remote {
    /// hf-hub's client: URLs, and the repo listing (sent to the hub only).
    api: Api,
    /// File downloads (see `download.rs` for why not hf-hub's).
    agent: ureq::Agent,
    config: HubConfig,
}

impl Remote {
    pub fn new(config: &HubConfig) -> Result<Remote, HubError> {
        let api = ApiBuilder::from_cache(Cache::new(config.cache_dir.clone()))
            .with_endpoint(config.endpoint.clone())
            .with_token(config.token.clone())
            .with_progress(false)
            .with_user_agent("mtsum", env!("CARGO_PKG_VERSION"))
            .build()
            .map_err(|e| HubError::Other(format!("cannot set up the hub client: {e}")))?;
        Ok(Remote {
            api,
            agent: download::agent(),
            config: config.clone(),
        })
    }

    /// The files of `repo` at `revision` and the commit it stands for.
    pub fn listing(&self, repo: &str, revision: &str) -> Result<Listing, HubError> {
        let target = Target {
            repo,
            revision,
            file: None,
        };
        let request = self
            .api
            .repo(Repo::with_revision(
                repo.into(),
                RepoType::Model,
                revision.into(),
            ))
            .info_request()
            .query("blobs", "true");
        let url = request.url().to_string();
        let response = request.call().map_err(|e| self.request_error(e, &target))?;
        let bad = |message: String| HubError::Http {
            url: url.clone(),
            status: 200,
            message,
        };
        let listing: Listing = response
            .into_json()
            .map_err(|e| bad(format!("unreadable repo listing: {e}")))?;
        if !is_commit(&listing.sha) {
            return Err(bad(format!("`{}` is not a commit hash", listing.sha)));
        }
        Ok(listing)
    }

    /// Makes `snapshots/<commit>/<file>` hold the hub's file, downloading it unless it or a
    /// blob with its checksum is cached already. A download lands in
    /// `blobs/<etag>.incomplete` and takes the blob's name only once its size and checksum
    /// are right; a bad one is removed and reported.
    pub fn fetch_file(
        &self,
        cached: &CachedRepo,
        commit: &str,
        sibling: &Sibling,
    ) -> Result<PathBuf, HubError> {
        let file = sibling.rfilename.as_str();
        let pointer = cached.snapshot(commit).join(file);
        if let Ok(meta) = std::fs::metadata(&pointer) {
            // Checked when it was downloaded; `mtsum models verify` checks it again on demand.
            if sibling.size().is_none_or(|size| size == meta.len()) {
                return Ok(pointer);
            }
        }
        if let Some(pointer) = self.reuse_blob(cached, commit, sibling)? {
            return Ok(pointer);
        }
        let target = Target {
            repo: &cached.repo_id,
            revision: commit,
            file: Some(file),
        };
        let (Some(expected), Some(size)) = (sibling.expected(), sibling.size()) else {
            return Err(HubError::Http {
                url: format!("{}/api/models/{}", self.config.endpoint, cached.repo_id),
                status: 200,
                message: format!("the repo listing gives no size or checksum for {file}"),
            });
        };
        let blob = cached.blob(expected.hex());
        let part = cached.blob(&format!("{}.incomplete", expected.hex()));
        let blobs = cached.dir.join("blobs");
        std::fs::create_dir_all(&blobs).map_err(|e| HubError::io(&blobs, e))?;
        let repo = Repo::with_revision(cached.repo_id.clone(), RepoType::Model, commit.into());
        let bar = self.progress_bar(file, size);
        Download {
            agent: &self.agent,
            url: self.api.repo(repo).url(file),
            token: self.config.token.as_deref(),
            part: &part,
            size,
        }
        .run(&mut |held| bar.set_position(held))
        .map_err(|e| self.download_error(e, &target, &part))?;
        bar.finish();
        if let Some(what) = check(&part, sibling)? {
            let _ = std::fs::remove_file(&part);
            return Err(HubError::Corrupt {
                repo: cached.repo_id.clone(),
                file: file.into(),
                what,
            });
        }
        std::fs::rename(&part, &blob).map_err(|e| HubError::io(&blob, e))?;
        if self.config.progress && !std::io::stderr().is_terminal() {
            eprintln!(
                "fetched {} {file} ({})",
                cached.repo_id,
                indicatif::HumanBytes(size)
            );
        }
        cached.link(commit, file, expected.hex())
    }

    /// A bar per file on a terminal; nothing otherwise (a line is printed when done).
    fn progress_bar(&self, file: &str, size: u64) -> indicatif::ProgressBar {
        if !self.config.progress || !std::io::stderr().is_terminal() {
            return indicatif::ProgressBar::hidden();
        }
        let style = indicatif::ProgressStyle::with_template(
            "{msg:>28} [{wide_bar}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> ");
        indicatif::ProgressBar::new(size)
            .with_style(style)
            .with_message(file.to_string())
    }

    /// Links the file to a blob already cached (from another commit or another tool) when
    /// the listing gives its checksum and the blob has it.
    fn reuse_blob(
        &self,
        cached: &CachedRepo,
        commit: &str,
        sibling: &Sibling,
    ) -> Result<Option<PathBuf>, HubError> {
        let Some(expected) = sibling.expected() else {
            return Ok(None);
        };
        let blob = cached.blob(expected.hex());
        if !blob.is_file() || check(&blob, sibling)?.is_some() {
            return Ok(None);
        }
        cached
            .link(commit, &sibling.rfilename, expected.hex())
            .map(Some)
    }

    fn download_error(&self, err: DownloadError, target: &Target, part: &Path) -> HubError {
        match err {
            DownloadError::Request(e) => self.request_error(*e, target),
            DownloadError::Write(e) => HubError::io(part, e),
            DownloadError::Interrupted(reason) => HubError::Interrupted {
                repo: target.repo.into(),
                file: target.file.unwrap_or_default().into(),
                reason,
            },
        }
    }

    fn request_error(&self, err: ureq::Error, target: &Target) -> HubError {
        let endpoint = self.config.endpoint.clone();
        let (status, response) = match err {
            ureq::Error::Status(status, response) => (status, response),
            ureq::Error::Transport(t) => {
                return HubError::Unreachable {
                    endpoint,
                    reason: t.to_string(),
                    cache: self.config.cache_dir.clone(),
                }
            }
        };
        let code = response.header("X-Error-Code").unwrap_or("").to_string();
        let repo = target.repo.to_string();
        match (code.as_str(), status) {
            ("RepoNotFound", _) => HubError::RepoNotFound { repo, endpoint },
            ("RevisionNotFound", _) => HubError::RevisionNotFound {
                repo,
                revision: target.revision.into(),
            },
            ("GatedRepo", _) | (_, 401 | 403) => HubError::Gated {
                repo,
                status,
                endpoint,
                token_file: self.config.token_file.clone(),
            },
            ("EntryNotFound", _) | (_, 404) if target.file.is_some() => HubError::FileMissing {
                repo,
                revision: target.revision.into(),
                file: target.file.unwrap_or_default().into(),
            },
            (_, 404) => HubError::RepoNotFound { repo, endpoint },
            _ => HubError::Http {
                url: response.get_url().to_string(),
                status,
                message: response
                    .header("X-Error-Message")
                    .unwrap_or("no details")
                    .to_string(),
            },
        }
    }
}

/// Why a cached or downloaded file is not the hub's, if it is not: size first (cheap), then
/// the checksum from the listing, or else the one the blob's name promises.
pub(crate) fn check(path: &Path, sibling: &Sibling) -> Result<Option<String>, HubError> {
    let size = std::fs::metadata(path)
        .map_err(|e| HubError::io(path, e))?
        .len();
    if let Some(expected_size) = sibling.size() {
        if size != expected_size {
            return Ok(Some(format!("{size} bytes, the hub says {expected_size}")));
        }
    }
    let expected = sibling.expected().or_else(|| {
        blob_of(path)
            .and_then(|b| b.file_name().map(|n| n.to_string_lossy().into_owned()))
            .and_then(|name| Expected::from_etag(&name))
    });
    match expected {
        Some(expected) => expected.check(path),
        None => Ok(None),
    }
}
