//! "hub id[@revision], preset name or local dir" -> a folder of model files + the resolved commit.
//!
//! Contract used by the rest of the crate: `resolve(spec, &HubOptions) -> ResolvedModel`, whose
//! `dir` holds config.json, generation_config.json (when the repo has one), the weights and the
//! tokenizer files, under their hub names.
//!
//! Models live in the standard Hugging Face cache (`HF_HUB_CACHE`, else `$HF_HOME/hub`, else
//! `~/.cache/huggingface/hub`), so Python's huggingface_hub and mtsum share downloads. Online,
//! one listing request resolves the revision to a commit; only the files the model family needs
//! and the cache lacks are then downloaded, each checked against the hub's checksum. A mirror
//! whose listing lacks the checksums is asked for each file's headers instead (`remote.rs`).
//! Each blob is written under a lock huggingface_hub shares (`lock.rs`), so processes fetching
//! into one cache wait for each other. Offline (`--offline` or `HF_HUB_OFFLINE=1`) no request
//! is made at all.

mod checksum;
mod config;
mod download;
mod error;
mod gguf;
mod layout;
mod lock;
mod needs;
mod net;
mod preset;
mod remote;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use checksum::{git_sha1_file, sha256_file};
pub use error::HubError;
pub use gguf::{check_magic, is_gguf_spec, resolve_gguf, ResolvedGguf};
pub use needs::Family;
pub use preset::{default_preset, preset, presets, Preset};

use config::HubConfig;
use layout::{is_commit, walk_files, CachedRepo};
use lock::BlobLock;
use needs::{select, shards, CONFIG};
use remote::{Listing, Remote, Sibling};

/// How the hub is reached; built by the command line from its flags, completed from the HF_*
/// environment variables.
/// The `None` fields fall back to the environment, as huggingface_hub reads it.
#[derive(Clone, Default)]
pub struct HubOptions {
    /// `--offline` or `HF_HUB_OFFLINE=1`: no network call at all.
    pub offline: bool,
    /// Show download progress bars and notes (unless `--quiet`).
    pub progress: bool,
    /// Hub URL (else `HF_ENDPOINT`, else https://huggingface.co).
    pub endpoint: Option<String>,
    /// Cache folder holding `models--org--name` (else `HF_HUB_CACHE`, else `$HF_HOME/hub`).
    pub cache_dir: Option<PathBuf>,
    /// Access token (else `HF_TOKEN`, else the token file). Never printed.
    pub token: Option<String>,
    /// Only config and tokenizer files, no weights (for `mtsum tokenize`).
    pub tokenizer_only: bool,
    /// Where notes for people go (a fall-back to the cache, a wait for another process's
    /// download, a file fetched); the hub never prints them itself.
    pub notes: Notes,
}

/// A sink for the hub's notes to people: the command line prints them on stderr (unless
/// `--quiet`); the default drops them.
#[derive(Clone, Default)]
pub struct Notes(Option<Arc<NoteSink>>);

type NoteSink = dyn Fn(&str) + Send + Sync;

impl Notes {
    pub fn new(sink: impl Fn(&str) + Send + Sync + 'static) -> Self {
        Notes(Some(Arc::new(sink)))
    }

    /// Passes `text` on, if anyone listens.
    pub fn say(&self, text: &str) {
        if let Some(sink) = &self.0 {
            sink(text);
        }
    }
}

impl std::fmt::Debug for HubOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubOptions")
            .field("offline", &self.offline)
            .field("progress", &self.progress)
            .field("endpoint", &self.endpoint)
            .field("cache_dir", &self.cache_dir)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("tokenizer_only", &self.tokenizer_only)
            .finish()
    }
}

impl HubOptions {
    /// The cache folder these options use.
    pub fn cache_dir(&self) -> PathBuf {
        HubConfig::new(self).cache_dir
    }
}

/// A model whose files are on local disk.
#[derive(Debug, Clone)]
pub struct ResolvedModel {
    /// Folder holding the model's files under their hub names.
    pub dir: PathBuf,
    /// Hub id (`org/name`) or the local folder as given.
    pub repo: String,
    /// Revision used (branch, tag or commit; `main` when none was named); None for a local
    /// folder.
    pub revision: Option<String>,
    /// Commit the revision resolved to; None for a local folder outside the cache.
    pub commit: Option<String>,
    /// The preset's manifest when the model was named by a preset (task defaults such as the
    /// summarizer's input limit that the repo's own config does not carry).
    pub preset: Option<Preset>,
}

/// What a model spec names. Short-lived, so the preset is not boxed.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)]
enum Spec {
    Local(PathBuf),
    Hub {
        repo: String,
        revision: String,
        preset: Option<Preset>,
    },
}

/// Resolves a model spec to a folder of files, fetching what the cache lacks (unless offline).
pub fn resolve(spec: &str, opts: &HubOptions) -> Result<ResolvedModel, HubError> {
    let config = HubConfig::new(opts);
    match parse_spec(spec)? {
        Spec::Local(dir) => Ok(local_model(spec, dir)),
        Spec::Hub {
            repo,
            revision,
            preset,
        } => {
            let model = HubModel {
                spec,
                cached: CachedRepo::new(&config.cache_dir, &repo),
                revision: &revision,
                preset: preset.as_ref(),
                config: &config,
            };
            let commit = model.commit()?;
            Ok(ResolvedModel {
                dir: model.cached.snapshot(&commit),
                repo,
                revision: Some(revision),
                commit: Some(commit),
                preset,
            })
        }
    }
}

/// A local folder; one inside a cache (`…/snapshots/<commit>`) still reports its commit.
fn local_model(spec: &str, dir: PathBuf) -> ResolvedModel {
    let absolute = std::fs::canonicalize(&dir).unwrap_or_else(|_| dir.clone());
    let name = absolute.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let in_snapshots = absolute.parent().and_then(Path::file_name) == Some("snapshots".as_ref());
    let commit = (in_snapshots && is_commit(name)).then(|| name.to_string());
    ResolvedModel {
        dir,
        repo: spec.to_string(),
        revision: None,
        commit,
        preset: None,
    }
}

fn parse_spec(spec: &str) -> Result<Spec, HubError> {
    let path = Path::new(spec);
    if path.is_dir() {
        return Ok(Spec::Local(path.to_path_buf()));
    }
    if path.exists() {
        return Err(HubError::BadFile {
            path: path.into(),
            message: "is a file; a local model is a folder holding config.json and the weights"
                .into(),
        });
    }
    let bad = || HubError::BadSpec {
        spec: spec.into(),
        presets: preset::names(),
    };
    let (name, revision) = match spec.split_once('@') {
        Some((_, "")) => return Err(bad()),
        Some((name, revision)) => (name, Some(revision)),
        None => (spec, None),
    };
    if let Some(preset) = preset::preset(name)? {
        let revision = revision
            .map(str::to_string)
            .or_else(|| preset.revision.clone());
        return Ok(Spec::Hub {
            repo: preset.hub_id.clone(),
            revision: revision.unwrap_or_else(|| "main".into()),
            preset: Some(preset),
        });
    }
    if !is_repo_id(name) {
        return Err(bad());
    }
    // A preset's repo named by its hub id keeps the preset's task defaults (rut5's 600-token
    // input limit), which its own files do not carry.
    Ok(Spec::Hub {
        repo: name.into(),
        revision: revision.unwrap_or("main").into(),
        preset: preset::by_hub_id(name)?,
    })
}

/// `name` or `org/name`, with the characters the hub allows.
fn is_repo_id(id: &str) -> bool {
    let parts: Vec<&str> = id.split('/').collect();
    parts.len() <= 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && !p.starts_with(['.', '-'])
                && !p.ends_with('.')
                && !p.contains("--")
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        })
}

/// One hub model being resolved.
struct HubModel<'a> {
    spec: &'a str,
    cached: CachedRepo,
    revision: &'a str,
    preset: Option<&'a Preset>,
    config: &'a HubConfig,
}

/// How a revision becomes a commit whose snapshot holds what is needed, the same for a whole
/// model and for one GGUF file; they differ only in which files count and get fetched.
trait Resolution {
    fn config(&self) -> &HubConfig;
    fn cached(&self) -> &CachedRepo;
    fn revision(&self) -> &str;
    /// The commit of a cached snapshot holding every needed file, or what is missing.
    fn cached_commit(&self) -> Result<String, HubError>;
    /// Downloads the needed files the listing's commit lacks in the cache.
    fn fetch(&self, remote: &Remote, listing: &Listing) -> Result<(), HubError>;

    /// The commit whose snapshot holds every needed file, fetching what is missing.
    fn commit(&self) -> Result<String, HubError> {
        if self.config().offline {
            return self.cached_commit();
        }
        if is_commit(self.revision()) {
            // A commit never changes: a complete snapshot of it needs no word from the hub.
            if let Ok(commit) = self.cached_commit() {
                return Ok(commit);
            }
        }
        let cached = self.cached();
        let remote = Remote::new(self.config())?;
        let listing = match remote.listing(&cached.repo_id, self.revision()) {
            Err(err @ (HubError::Unreachable { .. } | HubError::TimedOut { .. })) => {
                // Like huggingface_hub: with the hub out of reach, a complete cached snapshot
                // of the revision is used as it is.
                let commit = self.cached_commit().map_err(|_| err)?;
                self.config().notes.say(&format!(
                    "warning: the hub is unreachable; using the cached {}@{} ({commit})",
                    cached.repo_id,
                    self.revision()
                ));
                return Ok(commit);
            }
            other => other?,
        };
        // Recorded first, as huggingface_hub does: after an interrupted fetch, offline mode
        // names the files still missing rather than the whole model.
        cached.write_ref(self.revision(), &listing.sha)?;
        self.fetch(&remote, &listing)?;
        Ok(listing.sha)
    }
}

impl Resolution for HubModel<'_> {
    fn config(&self) -> &HubConfig {
        self.config
    }

    fn cached(&self) -> &CachedRepo {
        &self.cached
    }

    fn revision(&self) -> &str {
        self.revision
    }

    fn cached_commit(&self) -> Result<String, HubError> {
        HubModel::cached_commit(self)
    }

    fn fetch(&self, remote: &Remote, listing: &Listing) -> Result<(), HubError> {
        self.fetch_needed(remote, listing)
    }
}

impl HubModel<'_> {
    /// Offline: the cached commit of the revision, when its snapshot is complete.
    fn cached_commit(&self) -> Result<String, HubError> {
        let family = self.preset.and_then(|p| Family::from_model_type(&p.family));
        let Some(commit) = self.cached.local_commit(self.revision) else {
            return Err(self.not_cached(needs::describe_all(family, self.weights())));
        };
        let missing = missing_files(&self.cached.snapshot(&commit), family, self.weights())?;
        if missing.is_empty() {
            Ok(commit)
        } else {
            Err(self.not_cached(missing))
        }
    }

    fn not_cached(&self, missing: Vec<String>) -> HubError {
        HubError::NotCached {
            repo: self.cached.repo_id.clone(),
            revision: self.revision.into(),
            cache: self.config.cache_dir.clone(),
            missing,
            command: format!("mtsum models fetch {}", shell_quote(self.spec)),
        }
    }

    /// Fetches config.json, learns the family from it, then fetches the family's files.
    fn fetch_needed(&self, remote: &Remote, listing: &Listing) -> Result<(), HubError> {
        let commit = &listing.sha;
        let config_path =
            remote.fetch_file(&self.cached, commit, self.sibling(listing, CONFIG)?)?;
        let family = Family::from_config(&config_path)?;
        let selection = select(family, self.weights(), |f| listing.has(f));
        if !selection.missing.is_empty() {
            return Err(HubError::Incomplete {
                repo: self.cached.repo_id.clone(),
                commit: commit.clone(),
                missing: selection.missing,
            });
        }
        for file in selection.files.iter().filter(|f| *f != CONFIG) {
            remote.fetch_file(&self.cached, commit, self.sibling(listing, file)?)?;
        }
        if let Some(index) = selection.shard_index() {
            for shard in shards(&self.cached.snapshot(commit).join(index))? {
                remote.fetch_file(&self.cached, commit, self.sibling(listing, &shard)?)?;
            }
        }
        Ok(())
    }

    /// Whether the weights are wanted too.
    fn weights(&self) -> bool {
        !self.config.tokenizer_only
    }

    fn sibling<'l>(&self, listing: &'l Listing, file: &str) -> Result<&'l Sibling, HubError> {
        listing.file(file).ok_or_else(|| HubError::FileMissing {
            repo: self.cached.repo_id.clone(),
            revision: listing.sha.clone(),
            file: file.into(),
        })
    }
}

/// The needed files a snapshot folder lacks (a broken link counts as missing).
fn missing_files(
    snapshot: &Path,
    family: Option<Family>,
    weights: bool,
) -> Result<Vec<String>, HubError> {
    let config = snapshot.join(CONFIG);
    if !config.is_file() {
        // A GGUF repo's snapshot holds only the file(s) fetched: each is a whole model.
        if walk_files(snapshot).iter().any(|f| {
            f.extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
        }) {
            return Ok(Vec::new());
        }
        return Ok(needs::describe_all(family, weights));
    }
    let family = Family::from_config(&config)?;
    let selection = select(family, weights, |f| snapshot.join(f).is_file());
    let mut missing = selection.missing.clone();
    if let Some(index) = selection.shard_index() {
        missing.extend(
            shards(&snapshot.join(index))?
                .into_iter()
                .filter(|s| !snapshot.join(s).is_file()),
        );
    }
    Ok(missing)
}

/// Quotes a spec for a command line when it needs it.
fn shell_quote(text: &str) -> String {
    let plain = text
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_./@:".contains(&b));
    if plain {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// A cached model repo as `mtsum models list` shows it.
#[derive(Debug, Clone)]
pub struct CachedModel {
    pub repo: String,
    /// Branches and tags with the commit each pointed to when last fetched.
    pub refs: Vec<(String, String)>,
    pub snapshots: Vec<CachedSnapshot>,
}

#[derive(Debug, Clone)]
pub struct CachedSnapshot {
    pub commit: String,
    /// Bytes on disk, each blob counted once.
    pub size: u64,
    /// Needed files that are absent (empty when a run can use it); the error text when the
    /// snapshot's config.json is unreadable.
    pub missing: Vec<String>,
}

/// Every model repo in the cache, read without the network.
pub fn cached_models(opts: &HubOptions) -> Vec<CachedModel> {
    let config = HubConfig::new(opts);
    layout::cached_repo_ids(&config.cache_dir)
        .into_iter()
        .map(|repo| {
            let cached = CachedRepo::new(&config.cache_dir, &repo);
            let snapshots = cached
                .snapshots()
                .into_iter()
                .map(|commit| {
                    let dir = cached.snapshot(&commit);
                    CachedSnapshot {
                        size: cached.snapshot_size(&commit),
                        missing: missing_files(&dir, None, true)
                            .unwrap_or_else(|e| vec![e.to_string()]),
                        commit,
                    }
                })
                .collect();
            CachedModel {
                refs: cached.refs(),
                repo,
                snapshots,
            }
        })
        .collect()
}

/// The state of one cached file after `verify`.
#[derive(Debug, Clone, PartialEq)]
pub enum FileState {
    /// Its checksum matches the hub's.
    Good,
    /// It differs from the hub's file, or the hub has no such file at this commit.
    Bad(String),
    /// A plain file with nothing to check it against (offline, not in blobs/).
    Unchecked,
}

/// The outcome of verifying one cached snapshot.
#[derive(Debug, Clone)]
pub struct VerifyReport {
    pub repo: String,
    pub commit: String,
    pub files: Vec<(String, FileState)>,
    /// Needed files that are absent.
    pub missing: Vec<String>,
    /// Whether the hub's listing was used (else only the checksums in the blob names).
    pub against_hub: bool,
    /// Whether bad or missing files were fetched again.
    pub repaired: bool,
}

impl VerifyReport {
    pub fn is_good(&self) -> bool {
        self.missing.is_empty() && self.bad_files().next().is_none()
    }

    /// The files whose content is not the hub's.
    pub fn bad_files(&self) -> impl Iterator<Item = &str> {
        self.files
            .iter()
            .filter(|(_, state)| matches!(state, FileState::Bad(_)))
            .map(|(file, _)| file.as_str())
    }
}

/// Checks the cached snapshots of the named models (all cached models when none is named)
/// against the hub's checksums, or offline against the checksums their blob names carry.
/// With `repair`, bad files are removed and fetched again with whatever else is missing.
pub fn verify(
    specs: &[String],
    opts: &HubOptions,
    repair: bool,
) -> Result<Vec<VerifyReport>, HubError> {
    let config = HubConfig::new(opts);
    if repair && config.offline {
        return Err(HubError::RepairOffline);
    }
    let remote = (!config.offline)
        .then(|| Remote::new(&config))
        .transpose()?;
    snapshots_to_verify(specs, &config)?
        .into_iter()
        .map(|(repo, commit)| {
            let cached = CachedRepo::new(&config.cache_dir, &repo);
            match &remote {
                None => verify_snapshot(&cached, &commit, None),
                Some(remote) => verify_online(&cached, &commit, remote, &config, repair),
            }
        })
        .collect()
}

/// Checks a snapshot against the hub's listing of its commit; with `repair`, removes the bad
/// files and fetches them (and any missing one) again.
fn verify_online(
    cached: &CachedRepo,
    commit: &str,
    remote: &Remote,
    config: &HubConfig,
    repair: bool,
) -> Result<VerifyReport, HubError> {
    let listing = remote.listing(&cached.repo_id, commit)?;
    let report = verify_snapshot(cached, commit, Some((&listing, remote)))?;
    if !repair || report.is_good() {
        return Ok(report);
    }
    for file in report.bad_files() {
        // Under the blob's lock: another process may be linking the same blob right now.
        let blob = layout::blob_of(&cached.snapshot(commit).join(file));
        let etag = blob.as_deref().and_then(Path::file_name);
        let _lock = etag
            .map(|etag| BlobLock::acquire(&cached.lock_path(&etag.to_string_lossy()), || {}))
            .transpose()?;
        cached.remove(commit, file);
    }
    let model = HubModel {
        spec: &cached.repo_id,
        cached: cached.clone(),
        revision: commit,
        preset: None,
        config,
    };
    model.fetch_needed(remote, &listing)?;
    let mut report = verify_snapshot(cached, commit, Some((&listing, remote)))?;
    report.repaired = true;
    Ok(report)
}

/// (repo, commit) pairs: the named models' cached commits, or every cached snapshot.
fn snapshots_to_verify(
    specs: &[String],
    config: &HubConfig,
) -> Result<Vec<(String, String)>, HubError> {
    if specs.is_empty() {
        return Ok(layout::cached_repo_ids(&config.cache_dir)
            .into_iter()
            .flat_map(|repo| {
                let cached = CachedRepo::new(&config.cache_dir, &repo);
                cached
                    .snapshots()
                    .into_iter()
                    .map(move |commit| (repo.clone(), commit))
            })
            .collect());
    }
    specs
        .iter()
        .map(|spec| match parse_spec(spec)? {
            Spec::Local(dir) => Err(HubError::BadFile {
                path: dir,
                message: "is a local folder; only cached hub models can be verified".into(),
            }),
            Spec::Hub { repo, revision, .. } => {
                let cached = CachedRepo::new(&config.cache_dir, &repo);
                let commit = cached
                    .local_commit(&revision)
                    .ok_or_else(|| HubError::NotCached {
                        repo: repo.clone(),
                        revision: revision.clone(),
                        cache: config.cache_dir.clone(),
                        missing: vec!["everything".into()],
                        command: format!("mtsum models fetch {}", shell_quote(spec)),
                    })?;
                Ok((repo, commit))
            }
        })
        .collect()
}

/// Checks every file of a snapshot: against what the hub says of it when `hub` is given,
/// else against the checksum its blob's name promises.
fn verify_snapshot(
    cached: &CachedRepo,
    commit: &str,
    hub: Option<(&Listing, &Remote)>,
) -> Result<VerifyReport, HubError> {
    let snapshot = cached.snapshot(commit);
    let mut files = Vec::new();
    let mut paths = walk_files(&snapshot);
    paths.sort();
    for path in paths {
        let name = path
            .strip_prefix(&snapshot)
            .unwrap_or(&path)
            .to_string_lossy()
            .replace('\\', "/");
        let state = file_state(cached, commit, &path, &name, hub)?;
        files.push((name, state));
    }
    Ok(VerifyReport {
        repo: cached.repo_id.clone(),
        commit: commit.into(),
        files,
        missing: missing_files(&snapshot, None, true).unwrap_or_else(|e| vec![e.to_string()]),
        against_hub: hub.is_some(),
        repaired: false,
    })
}

fn file_state(
    cached: &CachedRepo,
    commit: &str,
    path: &Path,
    name: &str,
    hub: Option<(&Listing, &Remote)>,
) -> Result<FileState, HubError> {
    if !path.is_file() {
        return Ok(FileState::Bad("broken link: its blob is gone".into()));
    }
    let meta = match hub {
        Some((listing, remote)) => match listing.file(name) {
            // A mirror's listing without blob details: the file's headers say it.
            Some(sibling) => Some(remote.meta(&cached.repo_id, commit, sibling)?),
            None => {
                return Ok(FileState::Bad(
                    "the hub has no such file at this commit".into(),
                ))
            }
        },
        None if layout::blob_of(path).is_none() => return Ok(FileState::Unchecked),
        None => None,
    };
    Ok(match remote::check(path, meta.as_ref())? {
        None => FileState::Good,
        Some(why) => FileState::Bad(why),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub(spec: &str) -> Spec {
        parse_spec(spec).unwrap()
    }

    #[test]
    fn specs_name_presets_hub_ids_revisions_and_folders() {
        match hub("opus-mt-ru-en") {
            Spec::Hub {
                repo,
                revision,
                preset,
            } => {
                assert_eq!(repo, "Helsinki-NLP/opus-mt-ru-en");
                assert_eq!(revision, "main");
                assert_eq!(preset.unwrap().role, "translator");
            }
            other => panic!("{other:?}"),
        }
        match hub("rut5-base-sum-gazeta@v1.0") {
            Spec::Hub { revision, .. } => assert_eq!(revision, "v1.0"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            hub("org/name@refs/pr/1"),
            Spec::Hub {
                repo: "org/name".into(),
                revision: "refs/pr/1".into(),
                preset: None
            }
        );
        assert_eq!(
            hub("t5-small"),
            Spec::Hub {
                repo: "t5-small".into(),
                revision: "main".into(),
                preset: None
            }
        );
        let dir = tempfile::tempdir().unwrap();
        let spec = dir.path().to_str().unwrap();
        assert_eq!(hub(spec), Spec::Local(dir.path().into()));
    }

    #[test]
    fn a_bad_spec_lists_the_presets() {
        for spec in [
            "./no-such-folder",
            "a/b/c",
            "org/name@",
            "org/.hidden",
            "a b",
        ] {
            let err = parse_spec(spec).unwrap_err().to_string();
            assert!(err.contains("opus-mt-ru-en"), "{spec}: {err}");
        }
    }

    #[test]
    fn a_folder_inside_a_cache_reports_its_commit() {
        let dir = tempfile::tempdir().unwrap();
        let commit = "c".repeat(40);
        let snapshot = dir.path().join("snapshots").join(&commit);
        std::fs::create_dir_all(&snapshot).unwrap();
        let model = resolve(snapshot.to_str().unwrap(), &HubOptions::default()).unwrap();
        assert_eq!(model.commit, Some(commit));
        let model = resolve(dir.path().to_str().unwrap(), &HubOptions::default()).unwrap();
        assert_eq!(model.commit, None);
    }

    #[test]
    fn quoting_leaves_plain_specs_alone() {
        assert_eq!(shell_quote("org/name@v1"), "org/name@v1");
        assert_eq!(shell_quote("my model"), "'my model'");
    }
}
