//! Talking to the hub: the repo listing and file downloads through hf-hub's blocking client,
//! with what hf-hub leaves out added on top: checksum and size checks after every download,
//! reuse of blobs already cached, and errors that name the cause (from the hub's
//! `X-Error-Code` header, as huggingface_hub's `hf_raise_for_status` reads it).
//!
//! hf-hub downloads into `blobs/<etag>.part`, resuming from its length with a Range request
//! (and retrying an interrupted body from where it stopped), then renames it to the blob: a
//! half-downloaded file never has the blob's name.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use hf_hub::api::sync::{Api, ApiBuilder, ApiError};
use hf_hub::{Cache, Repo, RepoType};

use super::checksum::Expected;
use super::config::HubConfig;
use super::layout::{blob_of, CachedRepo};
use super::HubError;

/// How many times hf-hub resumes an interrupted body before giving up.
const RETRIES: usize = 3;

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
    api: Api,
    config: HubConfig,
}

impl Remote {
    pub fn new(config: &HubConfig) -> Result<Remote, HubError> {
        let api = ApiBuilder::from_cache(Cache::new(config.cache_dir.clone()))
            .with_endpoint(config.endpoint.clone())
            .with_token(config.token.clone())
            .with_progress(false)
            .with_retries(RETRIES)
            .with_user_agent("mtsum", env!("CARGO_PKG_VERSION"))
            .build()
            .map_err(|e| HubError::Other(format!("cannot set up the hub client: {e}")))?;
        Ok(Remote {
            api,
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
        response.into_json().map_err(|e| HubError::Http {
            url,
            status: 200,
            message: format!("unreadable repo listing: {e}"),
        })
    }

    /// Makes `snapshots/<commit>/<file>` hold the hub's file, downloading it unless a blob with
    /// its checksum is cached already. The file is checked (size, then checksum) before it is
    /// used; a bad one is removed and reported.
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
        // hf-hub keeps an existing snapshot entry as it is; a bad one must go first.
        cached.remove(commit, file);
        discard_overlong_part(cached, sibling);
        let repo = Repo::with_revision(cached.repo_id.clone(), RepoType::Model, commit.into());
        let downloaded = if self.config.progress && std::io::stderr().is_terminal() {
            let bar = FileBar(indicatif::ProgressBar::new(0));
            self.api.repo(repo).download_with_progress(file, bar)
        } else {
            self.api.repo(repo).download_with_progress(file, ())
        };
        cached.drop_commit_ref(commit);
        let target = Target {
            repo: &cached.repo_id,
            revision: commit,
            file: Some(file),
        };
        let pointer = downloaded.map_err(|e| self.api_error(e, &target, cached))?;
        if let Some(what) = check(&pointer, sibling)? {
            cached.remove(commit, file);
            return Err(HubError::Corrupt {
                repo: cached.repo_id.clone(),
                file: file.into(),
                what,
            });
        }
        if self.config.progress && !std::io::stderr().is_terminal() {
            let size = indicatif::HumanBytes(sibling.size().unwrap_or(0));
            eprintln!("fetched {} {file} ({size})", cached.repo_id);
        }
        Ok(pointer)
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

    fn api_error(&self, err: ApiError, target: &Target, cached: &CachedRepo) -> HubError {
        match err {
            ApiError::RequestError(e) => self.request_error(*e, target),
            ApiError::TooManyRetries(inner) => self.api_error(*inner, target, cached),
            ApiError::IoError(e) if super::error::is_disk_full(&e) => HubError::DiskFull {
                path: cached.dir.join("blobs"),
            },
            ApiError::IoError(e) => HubError::Interrupted {
                repo: target.repo.into(),
                file: target.file.unwrap_or_default().into(),
                reason: e.to_string(),
            },
            ApiError::LockAcquisition(path) => HubError::Other(format!(
                "another process is downloading into {}; wait for it, or remove that lock file if none is",
                path.display()
            )),
            other => HubError::Http {
                url: format!("{}/{}", self.config.endpoint, target.repo),
                status: 0,
                message: other.to_string(),
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

/// hf-hub resumes `blobs/<etag>.part` from its length and refuses one longer than the file;
/// such a leftover can only be garbage, so it goes and the download starts over.
fn discard_overlong_part(cached: &CachedRepo, sibling: &Sibling) {
    let (Some(expected), Some(size)) = (sibling.expected(), sibling.size()) else {
        return;
    };
    let part = cached.blob(&format!("{}.part", expected.hex()));
    if std::fs::metadata(&part).is_ok_and(|m| m.len() > size) {
        let _ = std::fs::remove_file(part);
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

/// One indicatif bar per downloaded file.
struct FileBar(indicatif::ProgressBar);

impl hf_hub::api::Progress for FileBar {
    fn init(&mut self, size: usize, filename: &str) {
        let style = indicatif::ProgressStyle::with_template(
            "{msg:>28} [{wide_bar}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> ");
        self.0.set_style(style);
        self.0.set_length(size as u64);
        self.0.set_position(0);
        self.0.set_message(filename.to_string());
    }

    fn update(&mut self, size: usize) {
        self.0.inc(size as u64);
    }

    fn finish(&mut self) {
        self.0.finish();
    }
}
