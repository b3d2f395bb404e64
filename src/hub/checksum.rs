//! Checksums the hub publishes, so a cached file can be checked with or without the network.
//!
//! A blob in the Hugging Face cache is named by the file's ETag: the sha256 of the content for
//! LFS files (64 hex digits), the git blob id (sha1 of `blob <len>\0` + content, 40 hex digits)
//! for the others. The repo listing (`/api/models/{repo}/revision/{rev}?blobs=true`) gives the
//! same two values, as `lfs.sha256` and `blobId`.

use std::io::Read;
use std::path::Path;

use sha1::Sha1;
use sha2::{Digest, Sha256};

use super::HubError;

/// The checksum a file must have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expected {
    /// sha256 of the content (LFS files).
    Sha256(String),
    /// git blob id (other files).
    GitSha1(String),
}

impl Expected {
    /// What a cache blob's name promises, if it is a checksum at all.
    pub fn from_etag(etag: &str) -> Option<Expected> {
        let etag = etag.trim_start_matches("W/").trim_matches('"');
        let hex = etag.bytes().all(|b| b.is_ascii_hexdigit());
        match etag.len() {
            64 if hex => Some(Expected::Sha256(etag.to_ascii_lowercase())),
            40 if hex => Some(Expected::GitSha1(etag.to_ascii_lowercase())),
            _ => None,
        }
    }

    pub fn hex(&self) -> &str {
        match self {
            Expected::Sha256(h) | Expected::GitSha1(h) => h,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Expected::Sha256(_) => "sha256",
            Expected::GitSha1(_) => "git sha1",
        }
    }

    /// Ok(None) when the file matches, Ok(Some(why)) when it does not.
    pub fn check(&self, path: &Path) -> Result<Option<String>, HubError> {
        let actual = match self {
            Expected::Sha256(_) => sha256_file(path)?,
            Expected::GitSha1(_) => git_sha1_file(path)?,
        };
        Ok((actual != self.hex())
            .then(|| format!("{} is {actual}, the hub says {}", self.kind(), self.hex())))
    }
}

/// Hex sha256 of a file, read in chunks (weights can be gigabytes).
pub fn sha256_file(path: &Path) -> Result<String, HubError> {
    let mut hasher = Sha256::new();
    feed(path, |chunk| hasher.update(chunk))?;
    Ok(hex::encode(hasher.finalize()))
}

/// Git's blob id of a file: sha1 over `blob <size>\0` and the content.
pub fn git_sha1_file(path: &Path) -> Result<String, HubError> {
    let size = std::fs::metadata(path)
        .map_err(|e| HubError::io(path, e))?
        .len();
    let mut hasher = Sha1::new();
    hasher.update(format!("blob {size}\0").as_bytes());
    feed(path, |chunk| hasher.update(chunk))?;
    Ok(hex::encode(hasher.finalize()))
}

fn feed(path: &Path, mut sink: impl FnMut(&[u8])) -> Result<(), HubError> {
    let mut file = std::fs::File::open(path).map_err(|e| HubError::io(path, e))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| HubError::io(path, e))?;
        if n == 0 {
            return Ok(());
        }
        sink(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_blob_id_matches_git_hash_object() {
        // `printf 'hello\n' | git hash-object --stdin`
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "hello\n").unwrap();
        assert_eq!(
            git_sha1_file(&path).unwrap(),
            "ce013625030ba8dba906f756967f9e9ca394464a"
        );
        assert_eq!(
            sha256_file(&path).unwrap(),
            "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
        );
        let good = Expected::from_etag("\"ce013625030ba8dba906f756967f9e9ca394464a\"").unwrap();
        assert_eq!(good.check(&path).unwrap(), None);
        let bad = Expected::GitSha1("0".repeat(40));
        assert!(bad.check(&path).unwrap().unwrap().contains("git sha1"));
    }

    #[test]
    fn only_hex_etags_of_the_two_lengths_are_checksums() {
        assert!(matches!(
            Expected::from_etag(&"a".repeat(64)),
            Some(Expected::Sha256(_))
        ));
        assert!(Expected::from_etag("W/\"abc\"").is_none());
        assert!(Expected::from_etag(&"g".repeat(40)).is_none());
    }
}
