//! Sharded runs: N copies of `mtsum run`, started by a CI matrix, a Kubernetes Indexed Job or a
//! Slurm array, each processing the releases it owns; `merge` puts the pieces back together.
//!
//! Every shard reads the whole input list and names every release exactly as one unsharded run
//! would (duplicate ids get `-2`, `-3` in input order), then keeps the releases it owns. So the
//! names, positions and duplicate suffixes do not depend on which shard runs, and a release's
//! owner depends only on its final name: not on input order, on which files a machine sees
//! first, or on how many releases are already done.
//!
//! The owner of a release is `1 + (u64::from_be_bytes(sha256(name)[..8]) mod N)`, where `name`
//! is its output file stem (after the safe-name mapping and duplicate suffixes) and, for an
//! input that cannot be read, its location (`path` or `path:line`). SHA-256 because it is the
//! same on every platform and in every release of Rust (the standard library's hasher is
//! neither), so any tool can recompute the split.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::io::names::NameAllocator;
use crate::io::output::ModelsUsed;
use crate::io::ReadItem;
use crate::{Error, Result};

/// Shard `index` of `count`, 1-based: `2/3` is the second of three.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// Checks `1 <= index <= count`.
    pub fn new(index: usize, count: usize) -> Result<Shard> {
        if count == 0 || index == 0 || index > count {
            return Err(Error::Usage(format!(
                "shard {index}/{count} does not exist: a shard is K/N with 1 <= K <= N"
            )));
        }
        Ok(Shard { index, count })
    }

    /// Whether the release (or unreadable input) named `key` belongs to this shard.
    pub fn owns(&self, key: &str) -> bool {
        shard_of(key, self.count) == self.index
    }

    /// `shard-2-of-3`: the tag in the names of a shard's report and digest
    /// (`report.shard-2-of-3.json`), so shards sharing one output folder do not collide.
    pub fn file_tag(&self) -> String {
        format!("shard-{}-of-{}", self.index, self.count)
    }

    /// The shard a file tag names (`shard-2-of-3`), if it is one.
    pub fn from_file_tag(tag: &str) -> Option<Shard> {
        let (index, count) = tag.strip_prefix("shard-")?.split_once("-of-")?;
        Shard::new(index.parse().ok()?, count.parse().ok()?).ok()
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = Error;

    /// `K/N`, 1-based.
    fn from_str(s: &str) -> Result<Shard> {
        let parsed = s
            .split_once('/')
            .and_then(|(k, n)| Some((k.trim().parse().ok()?, n.trim().parse().ok()?)));
        let Some((index, count)) = parsed else {
            return Err(Error::Usage(format!(
                "shard `{s}` is not K/N (e.g. 2/3 for the second of three shards)"
            )));
        };
        Shard::new(index, count)
    }
}

/// The shard (1-based, of `count`) that owns `key`; see the module doc for the formula.
pub fn shard_of(key: &str, count: usize) -> usize {
    let digest = Sha256::digest(key.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) % count.max(1) as u64) as usize + 1
}

/// What a sharded run records in its report: which shard it was, the whole batch it is part
/// of, and which inputs it owned. `merge` checks these before it puts shards together.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardInfo {
    /// `K/N`.
    pub shard: String,
    /// Inputs in the whole batch (readable or not), over all shards.
    pub batch_size: usize,
    /// Hash of the whole batch's input names and bytes, the models and the settings: shards
    /// of one batch have the same; `merge` refuses to mix different ones.
    pub batch_fingerprint: String,
    /// The names (file stems; locations of unreadable inputs) of the inputs this shard owned,
    /// in input order.
    pub owned: Vec<String>,
}

/// Every input of a batch with its name and whether this run owns it. An unsharded run owns
/// everything.
#[derive(Debug, Clone)]
pub struct Plan {
    shard: Option<Shard>,
    /// Output file stem of each input that was read, in input order.
    files: Vec<Option<String>>,
    /// Name of each input: its file stem, or its location when it could not be read.
    keys: Vec<String>,
    /// SHA-256 of each readable input's bytes.
    hashes: Vec<Option<String>>,
    owned: Vec<bool>,
}

impl Plan {
    /// Names every input as an unsharded run would, then marks the ones `shard` owns.
    pub fn new(items: &[ReadItem], shard: Option<Shard>) -> Plan {
        let mut names = NameAllocator::default();
        let (mut files, mut keys, mut hashes) = (Vec::new(), Vec::new(), Vec::new());
        for item in items {
            match item {
                Ok(release) => {
                    let file = names.allocate(&release.id);
                    keys.push(file.clone());
                    files.push(Some(file));
                    hashes.push(Some(release.source.sha256.clone()));
                }
                Err(failure) => {
                    keys.push(failure.location.clone());
                    files.push(None);
                    hashes.push(None);
                }
            }
        }
        let owned = keys
            .iter()
            .map(|key| shard.is_none_or(|s| s.owns(key)))
            .collect();
        Plan {
            shard,
            files,
            keys,
            hashes,
            owned,
        }
    }

    /// Whether this run processes input `index`.
    pub fn owns(&self, index: usize) -> bool {
        self.owned[index]
    }

    /// How many inputs this run processes.
    pub fn owned_count(&self) -> usize {
        self.owned.iter().filter(|&&o| o).count()
    }

    /// The output file stem of input `index` (`None` when it could not be read).
    pub fn file(&self, index: usize) -> Option<&str> {
        self.files[index].as_deref()
    }

    pub fn shard(&self) -> Option<Shard> {
        self.shard
    }

    /// The report's record of a sharded run; `None` for an unsharded one.
    pub fn info(&self, models: &ModelsUsed, settings: &serde_json::Value) -> Option<ShardInfo> {
        let shard = self.shard?;
        let owned = self
            .keys
            .iter()
            .zip(&self.owned)
            .filter(|(_, &owned)| owned)
            .map(|(key, _)| key.clone())
            .collect();
        Some(ShardInfo {
            shard: shard.to_string(),
            batch_size: self.keys.len(),
            batch_fingerprint: self.batch_fingerprint(models, settings),
            owned,
        })
    }

    /// Hash of every input's name and bytes in order, the models and the settings: what makes
    /// shards parts of the same batch.
    pub fn batch_fingerprint(&self, models: &ModelsUsed, settings: &serde_json::Value) -> String {
        let inputs: Vec<(&String, &Option<String>)> = self.keys.iter().zip(&self.hashes).collect();
        let key = serde_json::json!({
            "inputs": inputs,
            "models": models,
            "settings": settings,
        });
        crate::io::read::sha256_hex(key.to_string().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_k_of_n() {
        let shard: Shard = "2/3".parse().unwrap();
        assert_eq!(shard, Shard { index: 2, count: 3 });
        assert_eq!(shard.to_string(), "2/3");
        assert_eq!(shard.file_tag(), "shard-2-of-3");
        assert_eq!(Shard::from_file_tag("shard-2-of-3"), Some(shard));
        assert_eq!(Shard::from_file_tag("shard-4-of-3"), None);
        for bad in ["0/3", "4/3", "1/0", "3", "a/b", "auto"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_owner_is_the_documented_hash_of_the_name() {
        // sha256("a") = ca978112ca1bbdca...; 0xca978112ca1bbdca mod 3 = 1 -> shard 2.
        assert_eq!(
            u64::from_be_bytes(*b"\xca\x97\x81\x12\xca\x1b\xbd\xca") % 3,
            1
        );
        assert_eq!(shard_of("a", 3), 2);
        assert_eq!(shard_of("a", 1), 1);
        let owners: Vec<usize> = (0..300).map(|i| shard_of(&format!("r{i}"), 3)).collect();
        for k in 1..=3 {
            let n = owners.iter().filter(|&&o| o == k).count();
            assert!((70..=130).contains(&n), "shard {k} owns {n} of 300");
        }
    }
}
