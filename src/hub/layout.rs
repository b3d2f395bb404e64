//! The Hugging Face cache layout, shared with Python's huggingface_hub:
//!
//! ```text
//! <cache>/models--org--name/
//!     blobs/<etag>                       file contents, named by checksum
//!     refs/<branch or tag>               the commit the revision pointed to when last fetched
//!     snapshots/<commit>/<file>          relative symlinks into blobs/ (or plain files)
//! ```
//!
//! Naming comes from hf-hub's `Cache`/`Repo`; the lookups hf-hub lacks (a commit given as the
//! revision, listing what is cached, removing a bad file) are here.

use std::path::{Component, Path, PathBuf};

use hf_hub::{Cache, Repo, RepoType};

use super::HubError;

/// One model repo's folder in the cache.
#[derive(Debug, Clone)]
pub(crate) struct CachedRepo {
    pub repo_id: String,
    pub dir: PathBuf,
    cache: Cache,
}

impl CachedRepo {
    pub fn new(cache_dir: &Path, repo_id: &str) -> CachedRepo {
        let folder = Repo::model(repo_id.to_string()).folder_name();
        CachedRepo {
            repo_id: repo_id.to_string(),
            dir: cache_dir.join(folder),
            cache: Cache::new(cache_dir.to_path_buf()),
        }
    }

    pub fn snapshot(&self, commit: &str) -> PathBuf {
        self.dir.join("snapshots").join(commit)
    }

    pub fn blob(&self, etag: &str) -> PathBuf {
        self.dir.join("blobs").join(etag)
    }

    /// The blob's lock file, where huggingface_hub keeps it: `<cache>/.locks/<folder>/<etag>.lock`.
    pub fn lock_path(&self, etag: &str) -> PathBuf {
        let folder = self.dir.file_name().unwrap_or_default().to_string_lossy();
        let cache = self.dir.parent().unwrap_or(Path::new("."));
        super::lock::lock_path(cache, &folder, etag)
    }

    fn ref_path(&self, revision: &str) -> PathBuf {
        self.dir.join("refs").join(revision)
    }

    /// The commit a revision stands for without asking the hub: a full commit hash with a
    /// snapshot, else what `refs/<revision>` says.
    pub fn local_commit(&self, revision: &str) -> Option<String> {
        if is_commit(revision) && self.snapshot(revision).is_dir() {
            return Some(revision.to_string());
        }
        let text = std::fs::read_to_string(self.ref_path(revision)).ok()?;
        let commit = text.trim();
        is_commit(commit).then(|| commit.to_string())
    }

    /// Records where a branch or tag pointed. A commit is not a ref (as in huggingface_hub).
    pub fn write_ref(&self, revision: &str, commit: &str) -> Result<(), HubError> {
        if revision == commit {
            return Ok(());
        }
        let repo = Repo::with_revision(self.repo_id.clone(), RepoType::Model, revision.into());
        self.cache
            .repo(repo)
            .create_ref(commit)
            .map_err(|e| HubError::io(self.ref_path(revision), e))
    }

    /// Every `refs/` entry (branches, tags, `pr/N`) with its commit.
    pub fn refs(&self) -> Vec<(String, String)> {
        let root = self.dir.join("refs");
        let mut out = Vec::new();
        for path in walk_files(&root) {
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let name = path.strip_prefix(&root).unwrap_or(&path);
            let name = name.to_string_lossy().replace('\\', "/");
            out.push((name, text.trim().to_string()));
        }
        out.sort();
        out
    }

    /// The commits that have a snapshot folder.
    pub fn snapshots(&self) -> Vec<String> {
        let mut out: Vec<String> = read_dir_names(&self.dir.join("snapshots"))
            .into_iter()
            .filter(|n| is_commit(n))
            .collect();
        out.sort();
        out
    }

    /// Points `snapshots/<commit>/<file>` at an existing blob, as huggingface_hub does when a
    /// file's content is already cached under another commit.
    pub fn link(&self, commit: &str, file: &str, etag: &str) -> Result<PathBuf, HubError> {
        let pointer = self.snapshot(commit).join(file);
        let blob = self.blob(etag);
        if let Some(parent) = pointer.parent() {
            std::fs::create_dir_all(parent).map_err(|e| HubError::io(parent, e))?;
        }
        let _ = std::fs::remove_file(&pointer);
        symlink_or_copy(&blob, &pointer).map_err(|e| HubError::io(&pointer, e))?;
        Ok(pointer)
    }

    /// Removes a snapshot file and, when it is a link into blobs/, the blob it points to.
    pub fn remove(&self, commit: &str, file: &str) {
        let pointer = self.snapshot(commit).join(file);
        if let Some(blob) = blob_of(&pointer) {
            let _ = std::fs::remove_file(blob);
        }
        let _ = std::fs::remove_file(&pointer);
    }

    /// Bytes the snapshot's files take on disk, each blob counted once.
    pub fn snapshot_size(&self, commit: &str) -> u64 {
        let mut seen = std::collections::HashSet::new();
        walk_files(&self.snapshot(commit))
            .into_iter()
            .filter_map(|p| std::fs::canonicalize(&p).ok())
            .filter(|p| seen.insert(p.clone()))
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum()
    }
}

/// The etag-named blob a snapshot entry links to (None for a plain file or a broken link).
pub(crate) fn blob_of(pointer: &Path) -> Option<PathBuf> {
    let target = std::fs::read_link(pointer).ok()?;
    let absolute = pointer.parent()?.join(target);
    let blob = std::fs::canonicalize(absolute).ok()?;
    let parent = blob.parent()?;
    (parent.file_name()? == "blobs").then_some(blob)
}

/// The repo ids that have a folder in the cache.
pub(crate) fn cached_repo_ids(cache_dir: &Path) -> Vec<String> {
    let mut ids: Vec<String> = read_dir_names(cache_dir)
        .into_iter()
        .filter_map(|name| {
            name.strip_prefix("models--")
                .map(|id| id.replace("--", "/"))
        })
        .collect();
    ids.sort();
    ids
}

/// A full 40-digit commit hash.
pub(crate) fn is_commit(revision: &str) -> bool {
    revision.len() == 40 && revision.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Every file below `root` (following no links out of it), relative order unspecified.
pub(crate) fn walk_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            match entry.file_type() {
                Ok(t) if t.is_dir() => stack.push(path),
                Ok(_) => out.push(path),
                Err(_) => {}
            }
        }
    }
    out
}

fn read_dir_names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// A relative link (`../../blobs/<etag>`) so the cache can move; a copy where links fail.
fn symlink_or_copy(blob: &Path, pointer: &Path) -> std::io::Result<()> {
    let relative = relative_to(blob, pointer.parent().unwrap_or(Path::new(".")));
    #[cfg(unix)]
    if std::os::unix::fs::symlink(&relative, pointer).is_ok() {
        return Ok(());
    }
    #[cfg(windows)]
    if std::os::windows::fs::symlink_file(&relative, pointer).is_ok() {
        return Ok(());
    }
    std::fs::copy(blob, pointer).map(|_| ())
}

/// `target` as seen from the folder `from`; both below the same cache.
fn relative_to(target: &Path, from: &Path) -> PathBuf {
    let target: Vec<Component> = target.components().collect();
    let from: Vec<Component> = from.components().collect();
    let common = target.iter().zip(&from).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..from.len() {
        out.push("..");
    }
    for part in &target[common..] {
        out.push(part);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_relative_like_huggingface_hubs() {
        assert_eq!(
            relative_to(
                Path::new("/c/models--a--b/blobs/e"),
                Path::new("/c/models--a--b/snapshots/123")
            ),
            PathBuf::from("../../blobs/e")
        );
    }

    #[test]
    fn refs_and_commits_are_read_without_the_network() {
        let dir = tempfile::tempdir().unwrap();
        let repo = CachedRepo::new(dir.path(), "org/name");
        assert!(repo.dir.ends_with("models--org--name"));
        let commit = "a".repeat(40);
        assert_eq!(repo.local_commit("main"), None);
        repo.write_ref("main", &commit).unwrap();
        repo.write_ref("refs/pr/1", &commit).unwrap();
        repo.write_ref(&commit, &commit).unwrap();
        assert_eq!(repo.local_commit("main"), Some(commit.clone()));
        assert_eq!(repo.local_commit(&commit), None, "no snapshot yet");
        std::fs::create_dir_all(repo.snapshot(&commit)).unwrap();
        assert_eq!(repo.local_commit(&commit), Some(commit.clone()));
        let names: Vec<String> = repo.refs().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["main", "refs/pr/1"]);
        assert_eq!(cached_repo_ids(dir.path()), ["org/name"]);
    }

    #[test]
    fn a_linked_file_is_removed_with_its_blob() {
        let dir = tempfile::tempdir().unwrap();
        let repo = CachedRepo::new(dir.path(), "org/name");
        let commit = "b".repeat(40);
        std::fs::create_dir_all(repo.blob("x").parent().unwrap()).unwrap();
        std::fs::write(repo.blob("x"), "data").unwrap();
        let pointer = repo.link(&commit, "config.json", "x").unwrap();
        assert_eq!(std::fs::read_to_string(&pointer).unwrap(), "data");
        assert_eq!(repo.snapshot_size(&commit), 4);
        repo.remove(&commit, "config.json");
        assert!(!pointer.exists() && !repo.blob("x").exists());
    }
}
