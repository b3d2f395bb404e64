//! Talking to the hub: the repo listing through hf-hub's blocking client, file downloads
//! through `download.rs`, and on top what hf-hub leaves out: size and checksum checks before a
//! download takes its blob name, reuse of blobs already cached, and errors that name the cause
//! (from the hub's `X-Error-Code` header, as huggingface_hub's `hf_raise_for_status` reads it).

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use hf_hub::{Repo, RepoType};

use super::checksum::Expected;
use super::config::HubConfig;
use super::download::{Download, DownloadError};
use super::layout::{blob_of, is_commit, CachedRepo};
use super::lock::BlobLock;
use super::net::{self, Call, Client, Failure, Follow, Purpose};
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

/// What a file must be to be the hub's.
#[derive(Debug, Clone)]
pub(crate) struct FileMeta {
    pub expected: Expected,
    /// None when a mirror gives no size; the checksum still decides.
    pub size: Option<u64>,
}

/// What a request was about, to name it in an error.
struct Target<'a> {
    repo: &'a str,
    revision: &'a str,
    file: Option<&'a str>,
}

pub(crate) struct Remote {
    /// Every request (see `net.rs` for timeouts and proxies, `download.rs` for why not
    /// hf-hub's client).
    client: Client,
    config: HubConfig,
    /// What `HEAD` requests said about files the listing left bare, by (repo, commit, file),
    /// so `verify --repair` asks once per file.
    heads: Mutex<HashMap<(String, String, String), FileMeta>>,
}

impl Remote {
    pub fn new(config: &HubConfig) -> Result<Remote, HubError> {
        Ok(Remote {
            client: Client::from_env()?,
            config: config.clone(),
            heads: Mutex::new(HashMap::new()),
        })
    }

    /// `{endpoint}/{repo}/resolve/{revision}/{file}`, as hf-hub and huggingface_hub build it.
    fn file_url(&self, repo: &str, revision: &str, file: &str) -> String {
        let repo = Repo::with_revision(repo.into(), RepoType::Model, revision.into());
        format!(
            "{}/{}/resolve/{}/{file}",
            self.config.endpoint,
            repo.url(),
            repo.url_revision()
        )
    }

    /// The files of `repo` at `revision` and the commit it stands for.
    pub fn listing(&self, repo: &str, revision: &str) -> Result<Listing, HubError> {
        let target = Target {
            repo,
            revision,
            file: None,
        };
        let api = Repo::with_revision(repo.into(), RepoType::Model, revision.into()).api_url();
        let url = format!("{}/api/{api}?blobs=true", self.config.endpoint);
        let what = format!("repo listing of `{repo}`@{revision}");
        let response = self
            .client
            .send(&Call {
                method: "GET",
                url: &url,
                token: self.config.token.as_deref(),
                range_from: None,
                purpose: Purpose::Metadata,
                follow: Follow::All,
            })
            .map_err(|f| self.request_error(f, &target, &what))?;
        let bad = |problem: String| HubError::BadListing {
            url: url.clone(),
            problem,
        };
        let listing: Listing = response.into_json().map_err(|e| {
            if net::is_timeout_io(&e) {
                self.timed_out(&what, &url, Purpose::Metadata)
            } else {
                bad(format!("it is not the JSON of a repo listing ({e})"))
            }
        })?;
        if !is_commit(&listing.sha) {
            return Err(bad(format!(
                "it names `{}` as the commit, not a 40-digit commit hash",
                listing.sha
            )));
        }
        Ok(listing)
    }

    /// The checksum and size a file must have: from the listing, else (a mirror whose listing
    /// has no blob details) from the headers of its `resolve` URL.
    pub fn meta(&self, repo: &str, commit: &str, sibling: &Sibling) -> Result<FileMeta, HubError> {
        if let (Some(expected), Some(size)) = (sibling.expected(), sibling.size()) {
            return Ok(FileMeta {
                expected,
                size: Some(size),
            });
        }
        let key = (
            repo.to_string(),
            commit.to_string(),
            sibling.rfilename.clone(),
        );
        let heads = || self.heads.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(meta) = heads().get(&key) {
            return Ok(meta.clone());
        }
        let mut meta = self.head(repo, commit, &sibling.rfilename)?;
        meta.size = sibling.size().or(meta.size);
        heads().insert(key, meta.clone());
        Ok(meta)
    }

    /// What huggingface_hub's `get_hf_file_metadata` reads: a `HEAD` on the file's `resolve`
    /// URL at the commit, following redirects only within the hub's origin; the answer (or the
    /// redirect to the CDN) carries `X-Repo-Commit`, `X-Linked-Etag` (the sha256 of an LFS
    /// file) or `ETag` (a plain file's git blob id), and `X-Linked-Size` or `Content-Length`.
    fn head(&self, repo: &str, commit: &str, file: &str) -> Result<FileMeta, HubError> {
        let url = self.file_url(repo, commit, file);
        let target = Target {
            repo,
            revision: commit,
            file: Some(file),
        };
        let what = format!("metadata of {file} of `{repo}`");
        let response = self
            .client
            .send(&Call {
                method: "HEAD",
                url: &url,
                token: self.config.token.as_deref(),
                range_from: None,
                purpose: Purpose::Metadata,
                follow: Follow::SameOrigin,
            })
            .map_err(|f| self.request_error(f, &target, &what))?;
        let no_checksum = |problem: String| HubError::NoChecksum {
            repo: repo.into(),
            file: file.into(),
            url: url.clone(),
            problem,
        };
        if let Some(got) = response.header("X-Repo-Commit").map(str::trim) {
            if !got.eq_ignore_ascii_case(commit) {
                return Err(HubError::WrongCommit {
                    repo: repo.into(),
                    file: file.into(),
                    url: url.clone(),
                    got: got.into(),
                });
            }
        }
        let redirected = (300..400).contains(&response.status());
        // On a redirect, `ETag` is the LFS pointer's git id, not the content's checksum.
        let etag = match response.header("X-Linked-Etag") {
            Some(linked) => linked,
            None if redirected => {
                return Err(no_checksum(
                    "an X-Linked-Etag on the redirect to the file's content".into(),
                ))
            }
            None => match response.header("ETag") {
                Some(etag) => etag,
                None => return Err(no_checksum("an ETag".into())),
            },
        };
        let expected = Expected::from_etag(etag).ok_or_else(|| {
            no_checksum(format!(
                "a checksum (its ETag `{etag}` is neither a sha256 nor a git blob id)"
            ))
        })?;
        let size = response
            .header("X-Linked-Size")
            .or(if redirected {
                None
            } else {
                response.header("Content-Length")
            })
            .and_then(|v| v.trim().parse().ok());
        Ok(FileMeta { expected, size })
    }

    /// Makes `snapshots/<commit>/<file>` hold the hub's file, downloading it unless it or a
    /// blob with its checksum is cached already. A download lands in
    /// `blobs/<etag>.incomplete` and takes the blob's name only once its size and checksum
    /// are right; a bad one is removed and reported. The blob's lock is held from the look for
    /// a cached blob to the link, so a second process waits and then links the finished blob.
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
        let meta = self.meta(&cached.repo_id, commit, sibling)?;
        let etag = meta.expected.hex();
        let lock_path = cached.lock_path(etag);
        let _lock = BlobLock::acquire(&lock_path, || {
            self.config.notes.say(&format!(
                "waiting for another process fetching {} {file} (lock {})",
                cached.repo_id,
                lock_path.display()
            ));
        })?;
        if let Some(pointer) = self.reuse_blob(cached, commit, file, &meta)? {
            return Ok(pointer);
        }
        let target = Target {
            repo: &cached.repo_id,
            revision: commit,
            file: Some(file),
        };
        let blob = cached.blob(etag);
        let part = cached.blob(&format!("{etag}.incomplete"));
        let blobs = cached.dir.join("blobs");
        std::fs::create_dir_all(&blobs).map_err(|e| HubError::io(&blobs, e))?;
        let bar = self.progress_bar(file, meta.size);
        let url = self.file_url(&cached.repo_id, commit, file);
        Download {
            client: &self.client,
            url: url.clone(),
            token: self.config.token.as_deref(),
            part: &part,
            size: meta.size,
        }
        .run(&mut |held| bar.set_position(held))
        .map_err(|e| self.download_error(e, &target, &url, &part))?;
        bar.finish();
        if let Some(what) = check(&part, Some(&meta))? {
            let _ = std::fs::remove_file(&part);
            return Err(HubError::Corrupt {
                repo: cached.repo_id.clone(),
                file: file.into(),
                what,
            });
        }
        std::fs::rename(&part, &blob).map_err(|e| HubError::io(&blob, e))?;
        if !std::io::stderr().is_terminal() {
            // Where no bar showed the download, a line says it happened.
            let size = std::fs::metadata(&blob).map(|m| m.len()).unwrap_or(0);
            self.config.notes.say(&format!(
                "fetched {} {file} ({})",
                cached.repo_id,
                indicatif::HumanBytes(size)
            ));
        }
        cached.link(commit, file, etag)
    }

    /// A bar per file on a terminal; nothing otherwise (a line is printed when done).
    fn progress_bar(&self, file: &str, size: Option<u64>) -> indicatif::ProgressBar {
        if !self.config.progress || !std::io::stderr().is_terminal() {
            return indicatif::ProgressBar::hidden();
        }
        let style = indicatif::ProgressStyle::with_template(
            "{msg:>28} [{wide_bar}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> ");
        indicatif::ProgressBar::new(size.unwrap_or(0))
            .with_style(style)
            .with_message(file.to_string())
    }

    /// Links the file to a blob already cached (from another commit, another tool, or another
    /// process that held the lock first) when the blob has the file's checksum.
    fn reuse_blob(
        &self,
        cached: &CachedRepo,
        commit: &str,
        file: &str,
        meta: &FileMeta,
    ) -> Result<Option<PathBuf>, HubError> {
        let blob = cached.blob(meta.expected.hex());
        if !blob.is_file() || check(&blob, Some(meta))?.is_some() {
            return Ok(None);
        }
        cached.link(commit, file, meta.expected.hex()).map(Some)
    }

    fn download_error(
        &self,
        err: DownloadError,
        target: &Target,
        url: &str,
        part: &Path,
    ) -> HubError {
        let file = target.file.unwrap_or_default();
        let what = format!("download of {file} from `{}`", target.repo);
        match err {
            DownloadError::Request(failure) => self.request_error(*failure, target, &what),
            DownloadError::Write(e) => HubError::io(part, e),
            DownloadError::Interrupted {
                timed_out: true, ..
            } => self.timed_out(
                &format!("{what} (what arrived is kept: run the command again to resume)"),
                url,
                Purpose::Download,
            ),
            DownloadError::Interrupted { reason, .. } => HubError::Interrupted {
                repo: target.repo.into(),
                file: file.into(),
                reason,
            },
        }
    }

    fn timed_out(&self, what: &str, url: &str, purpose: Purpose) -> HubError {
        HubError::TimedOut {
            what: what.into(),
            url: url.into(),
            seconds: seconds(self.client.timeout(purpose)),
            variable: purpose.variable(),
            proxy: String::new(),
        }
    }

    fn request_error(&self, failure: Failure, target: &Target, what: &str) -> HubError {
        let endpoint = self.config.endpoint.clone();
        let proxy = failure
            .proxy
            .map(|p| {
                format!(
                    " through the proxy {} (from {}; list the host in NO_PROXY to reach it directly)",
                    p.shown(),
                    p.variable
                )
            })
            .unwrap_or_default();
        if let Some((limit, variable)) = failure.timeout {
            return HubError::TimedOut {
                what: what.into(),
                url: failure.url,
                seconds: seconds(limit),
                variable,
                proxy,
            };
        }
        let (status, response) = match *failure.error {
            ureq::Error::Status(status, response) => (status, response),
            ureq::Error::Transport(t) => {
                return HubError::Unreachable {
                    endpoint,
                    reason: t.to_string(),
                    proxy,
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

/// Seconds for a message: `10`, `0.5`.
fn seconds(limit: std::time::Duration) -> String {
    let s = limit.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{s:.0}")
    } else {
        format!("{s}")
    }
}

/// Why a cached or downloaded file is not the hub's, if it is not: size first (cheap), then
/// the checksum the hub gives, or (offline) the one the blob's name promises.
pub(crate) fn check(path: &Path, meta: Option<&FileMeta>) -> Result<Option<String>, HubError> {
    let size = std::fs::metadata(path)
        .map_err(|e| HubError::io(path, e))?
        .len();
    if let Some(expected_size) = meta.and_then(|m| m.size) {
        if size != expected_size {
            return Ok(Some(format!("{size} bytes, the hub says {expected_size}")));
        }
    }
    let expected = meta.map(|m| m.expected.clone()).or_else(|| {
        blob_of(path)
            .and_then(|b| b.file_name().map(|n| n.to_string_lossy().into_owned()))
            .and_then(|name| Expected::from_etag(&name))
    });
    match expected {
        Some(expected) => expected.check(path),
        None => Ok(None),
    }
}
