//! One lock per blob, so two processes fetching the same model into one cache do not write the
//! same `blobs/<etag>.incomplete` at once: the second waits, then finds the finished, checked
//! blob and links it instead of downloading it again.
//!
//! The lock file is where huggingface_hub puts its own (`<cache>/.locks/models--org--name/
//! <etag>.lock`, `hf_hub_download`), and both take an exclusive `flock` on it (std's
//! `File::lock`; Python's `filelock` on Unix), so mtsum and Python exclude each other too. The
//! file is left in place afterwards, as huggingface_hub leaves it: removing it would let a
//! third process lock a new file while the second still holds the old one.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

use super::HubError;

/// Held while a blob is written or linked; released when dropped (and if the process dies).
pub(crate) struct BlobLock {
    /// None where the file system cannot lock (some network mounts): the download then goes
    /// ahead unlocked, and the checksum check still keeps a spoiled file out of the cache.
    _file: Option<File>,
}

/// `<cache>/.locks/<repo folder>/<etag>.lock`.
pub(crate) fn lock_path(cache_dir: &Path, repo_folder: &str, etag: &str) -> PathBuf {
    cache_dir
        .join(".locks")
        .join(repo_folder)
        .join(format!("{etag}.lock"))
}

impl BlobLock {
    /// Takes the lock, waiting as long as another process holds it; `waiting` is told once
    /// when it has to wait.
    pub fn acquire(path: &Path, waiting: impl FnOnce()) -> Result<BlobLock, HubError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| HubError::io(parent, e))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| HubError::io(path, e))?;
        match file.try_lock() {
            Ok(()) => Ok(BlobLock { _file: Some(file) }),
            Err(TryLockError::WouldBlock) => {
                waiting();
                match file.lock() {
                    Ok(()) => Ok(BlobLock { _file: Some(file) }),
                    Err(e) => Err(HubError::io(path, e)),
                }
            }
            Err(TryLockError::Error(e)) if e.kind() == std::io::ErrorKind::Unsupported => {
                Ok(BlobLock { _file: None })
            }
            Err(TryLockError::Error(e)) => Err(HubError::io(path, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn a_second_holder_waits_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let path = lock_path(dir.path(), "models--org--name", "abc");
        assert!(path.ends_with(".locks/models--org--name/abc.lock"));
        let first = BlobLock::acquire(&path, || panic!("nobody holds it yet")).unwrap();
        let (told, heard) = mpsc::channel();
        let (done, finished) = mpsc::channel();
        let waiter = {
            let path = path.clone();
            std::thread::spawn(move || {
                let _second = BlobLock::acquire(&path, || told.send(()).unwrap()).unwrap();
                done.send(()).unwrap();
            })
        };
        heard.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(finished.recv_timeout(Duration::from_millis(200)).is_err());
        drop(first);
        finished.recv_timeout(Duration::from_secs(10)).unwrap();
        waiter.join().unwrap();
        assert!(
            path.is_file(),
            "the lock file stays, as huggingface_hub's does"
        );
    }
}
