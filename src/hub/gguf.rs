//! One GGUF file instead of a repo's folder: an LLM named by `org/name[@revision]:file.gguf`,
//! by a preset whose manifest names the file (`gguf_file`), or as a local `.gguf` file.
//!
//! A GGUF repo holds a dozen quantizations of one model, each a gigabyte or more, so only the
//! named file is fetched (with the same cache layout, checksums, locks, progress bars and
//! offline rules as a whole model, `remote.rs`); the repo's `tokenizer.json` is fetched too
//! only when the GGUF's own metadata lacks a tokenizer (`tokenizer.ggml.tokens`).

use std::io::Read;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::Content;

use super::config::HubConfig;
use super::layout::CachedRepo;
use super::remote::{Listing, Remote};
use super::{preset, shell_quote, HubError, HubOptions, Preset, Resolution};

/// The magic every GGUF file starts with.
const MAGIC: &[u8; 4] = b"GGUF";
/// What a GGUF without its own tokenizer takes from its repo.
const TOKENIZER_JSON: &str = "tokenizer.json";
/// The metadata key of an embedded tokenizer's vocabulary.
const EMBEDDED_VOCAB: &str = "tokenizer.ggml.tokens";

/// A GGUF model file on local disk, and where it came from (recorded in every output).
#[derive(Debug, Clone)]
pub struct ResolvedGguf {
    /// The .gguf file.
    pub path: PathBuf,
    /// The folder holding it (the snapshot; `tokenizer.json` sits beside the file when the
    /// GGUF has no tokenizer of its own).
    pub dir: PathBuf,
    /// Hub id, or the local file as given.
    pub repo: String,
    /// The file name in the repo (or the local file's name).
    pub file: String,
    /// Revision used; None for a local file.
    pub revision: Option<String>,
    /// Commit the revision resolved to; None for a local file outside the cache.
    pub commit: Option<String>,
    /// The preset's manifest when the model was named by one.
    pub preset: Option<Preset>,
    /// The file's sha256 when its cache blob is named by it (an LFS file of the hub, checked
    /// when it was downloaded); None for a local file, which is not read through to hash it.
    pub sha256: Option<String>,
    /// The repo's tokenizer.json beside the file, when the GGUF has no tokenizer of its own.
    pub tokenizer_json: Option<PathBuf>,
}

/// What a GGUF spec names. Short-lived, so the preset is not boxed.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)]
enum GgufSpec {
    Local(PathBuf),
    Hub {
        repo: String,
        revision: String,
        file: String,
        preset: Option<Preset>,
    },
}

/// Whether `spec` names a GGUF model (a local file, `repo:file.gguf`, or a GGUF preset)
/// rather than a folder of Hugging Face files: the loader's choice of engine.
pub fn is_gguf_spec(spec: &str) -> bool {
    match parse(spec) {
        Ok(found) => found.is_some(),
        Err(_) => looks_like_gguf(spec),
    }
}

/// A spec that is plainly meant as a GGUF file even when it is wrong (a missing local
/// `x.gguf`), so the error speaks of GGUF files rather than model folders.
fn looks_like_gguf(spec: &str) -> bool {
    spec.to_ascii_lowercase().ends_with(".gguf")
        || spec
            .split_once(':')
            .is_some_and(|(_, file)| file.to_ascii_lowercase().contains(".gguf"))
}

/// Resolves a GGUF spec to a local file, fetching it (and nothing else it does not need) when
/// the cache lacks it, unless offline.
pub fn resolve_gguf(spec: &str, opts: &HubOptions) -> Result<ResolvedGguf, HubError> {
    let config = HubConfig::new(opts);
    match parse(spec)? {
        None => Err(HubError::BadSpec {
            spec: spec.into(),
            presets: preset::names(),
        }),
        Some(GgufSpec::Local(path)) => local_file(spec, path),
        Some(GgufSpec::Hub {
            repo,
            revision,
            file,
            preset,
        }) => {
            let cached = CachedRepo::new(&config.cache_dir, &repo);
            let model = HubGguf {
                spec,
                cached: &cached,
                revision: &revision,
                file: &file,
                config: &config,
            };
            let commit = model.commit()?;
            let dir = cached.snapshot(&commit);
            let path = dir.join(&file);
            Ok(ResolvedGguf {
                tokenizer_json: separate_tokenizer(&path, &dir)?,
                sha256: blob_sha256(&path),
                path,
                dir,
                repo,
                file,
                revision: Some(revision),
                commit: Some(commit),
                preset,
            })
        }
    }
}

/// `Ok(None)` when the spec is not a GGUF one (a folder, a seq2seq preset or hub id).
fn parse(spec: &str) -> Result<Option<GgufSpec>, HubError> {
    let path = Path::new(spec);
    if path.is_file() {
        return Ok(Some(GgufSpec::Local(path.to_path_buf())));
    }
    if path.is_dir() {
        return Ok(None);
    }
    if let Some((repo, file)) = spec.split_once(':') {
        // `org/name@rev:file.gguf` or `org/name:file.gguf@rev`.
        let (repo, repo_rev) = split_revision(repo);
        let (file, file_rev) = split_revision(file);
        let bad = || HubError::BadGgufSpec { spec: spec.into() };
        if !super::is_repo_id(repo)
            || !is_file_name(file)
            || (repo_rev.is_some() && file_rev.is_some())
        {
            return Err(bad());
        }
        let revision = repo_rev.or(file_rev);
        if revision == Some("") {
            return Err(bad());
        }
        return Ok(Some(GgufSpec::Hub {
            repo: repo.into(),
            revision: revision.unwrap_or("main").into(),
            file: file.into(),
            preset: preset::by_hub_id(repo)?.filter(|p| p.gguf_file.as_deref() == Some(file)),
        }));
    }
    let (name, revision) = split_revision(spec);
    if let Some(preset) = preset::preset(name)? {
        if let Some(file) = preset.gguf_file.clone() {
            let revision = revision
                .map(str::to_string)
                .or_else(|| preset.revision.clone());
            return Ok(Some(GgufSpec::Hub {
                repo: preset.hub_id.clone(),
                revision: revision.unwrap_or_else(|| "main".into()),
                file,
                preset: Some(preset),
            }));
        }
    }
    if looks_like_gguf(spec) {
        return Err(HubError::BadFile {
            path: path.into(),
            message: "no such GGUF file; name an existing .gguf file, a hub repo and file \
                      (`org/name:file.gguf`) or a preset"
                .into(),
        });
    }
    Ok(None)
}

fn split_revision(text: &str) -> (&str, Option<&str>) {
    match text.split_once('@') {
        Some((name, revision)) => (name, Some(revision)),
        None => (text, None),
    }
}

/// A file name in a repo (sub-folders allowed, as some GGUF repos keep one per quantization).
fn is_file_name(file: &str) -> bool {
    !file.is_empty()
        && file
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
        && !file.contains('\\')
}

/// A local file: it must be a GGUF (the magic), so a wrong file is named at once.
fn local_file(spec: &str, path: PathBuf) -> Result<ResolvedGguf, HubError> {
    check_magic(&path)?;
    let absolute = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
    let dir = absolute.parent().map(Path::to_path_buf).unwrap_or_default();
    let file = absolute
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| spec.to_string());
    // A file inside a cache snapshot (`…/snapshots/<commit>/x.gguf`) still names its commit.
    let in_snapshots = dir.parent().and_then(Path::file_name) == Some("snapshots".as_ref());
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let commit = (in_snapshots && super::layout::is_commit(name)).then(|| name.to_string());
    Ok(ResolvedGguf {
        tokenizer_json: separate_tokenizer(&path, &dir)?,
        sha256: blob_sha256(&path),
        path,
        dir,
        repo: spec.to_string(),
        file,
        revision: None,
        commit,
        preset: None,
    })
}

/// `tokenizer.json` beside a GGUF that lacks its own tokenizer, when there is one.
fn separate_tokenizer(path: &Path, dir: &Path) -> Result<Option<PathBuf>, HubError> {
    let json = dir.join(TOKENIZER_JSON);
    Ok((json.is_file() && !has_embedded_tokenizer(path)?).then_some(json))
}

/// The sha256 a cache blob's name gives (64 hex digits: an LFS file's checksum).
fn blob_sha256(pointer: &Path) -> Option<String> {
    let blob = super::layout::blob_of(pointer)?;
    let name = blob.file_name()?.to_str()?;
    (name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())).then(|| name.to_string())
}

/// Fails with a clear message when `path` does not start with the GGUF magic.
pub fn check_magic(path: &Path) -> Result<(), HubError> {
    let mut head = [0u8; 4];
    let mut file = std::fs::File::open(path).map_err(|e| HubError::io(path, e))?;
    let read = file.read(&mut head).map_err(|e| HubError::io(path, e))?;
    if read == 4 && &head == MAGIC {
        return Ok(());
    }
    Err(HubError::NotGguf {
        path: path.into(),
        start: String::from_utf8_lossy(&head[..read])
            .escape_debug()
            .to_string(),
    })
}

/// One GGUF file of a hub repo being resolved.
struct HubGguf<'a> {
    spec: &'a str,
    cached: &'a CachedRepo,
    revision: &'a str,
    file: &'a str,
    config: &'a HubConfig,
}

impl super::Resolution for HubGguf<'_> {
    fn config(&self) -> &HubConfig {
        self.config
    }

    fn cached(&self) -> &CachedRepo {
        self.cached
    }

    fn revision(&self) -> &str {
        self.revision
    }

    fn cached_commit(&self) -> Result<String, HubError> {
        HubGguf::cached_commit(self)
    }

    fn fetch(&self, remote: &Remote, listing: &Listing) -> Result<(), HubError> {
        HubGguf::fetch(self, remote, listing)
    }
}

impl HubGguf<'_> {
    /// Fetches the GGUF file, then `tokenizer.json` if the GGUF has no tokenizer of its own.
    fn fetch(&self, remote: &Remote, listing: &Listing) -> Result<(), HubError> {
        let Some(sibling) = listing.file(self.file) else {
            let mut available: Vec<String> = (listing.siblings.iter())
                .map(|s| s.rfilename.clone())
                .filter(|f| f.to_ascii_lowercase().ends_with(".gguf"))
                .collect();
            available.sort();
            return Err(HubError::GgufMissing {
                repo: self.cached.repo_id.clone(),
                revision: self.revision.into(),
                file: self.file.into(),
                available: match available.is_empty() {
                    true => "none: it is not a GGUF repository".into(),
                    false => available.join(", "),
                },
            });
        };
        let path = remote.fetch_file(self.cached, &listing.sha, sibling)?;
        if !has_embedded_tokenizer(&path)? {
            if let Some(tokenizer) = listing.file(TOKENIZER_JSON) {
                remote.fetch_file(self.cached, &listing.sha, tokenizer)?;
            }
        }
        Ok(())
    }

    /// Offline: the cached commit of the revision, when its snapshot holds the file (and the
    /// tokenizer.json it needs).
    fn cached_commit(&self) -> Result<String, HubError> {
        let missing = |what: Vec<String>| HubError::NotCached {
            repo: self.cached.repo_id.clone(),
            revision: self.revision.into(),
            cache: self.config.cache_dir.clone(),
            missing: what,
            command: format!("mtsum models fetch {}", shell_quote(self.spec)),
        };
        let Some(commit) = self.cached.local_commit(self.revision) else {
            return Err(missing(vec![self.file.into()]));
        };
        let snapshot = self.cached.snapshot(&commit);
        let path = snapshot.join(self.file);
        if !path.is_file() {
            return Err(missing(vec![self.file.into()]));
        }
        if !has_embedded_tokenizer(&path)? && !snapshot.join(TOKENIZER_JSON).is_file() {
            return Err(missing(vec![TOKENIZER_JSON.into()]));
        }
        Ok(commit)
    }
}

/// Whether the GGUF's metadata carries its tokenizer.
fn has_embedded_tokenizer(path: &Path) -> Result<bool, HubError> {
    Ok(header(path)?.metadata.contains_key(EMBEDDED_VOCAB))
}

/// The GGUF's header: metadata and tensor infos, not the weights.
fn header(path: &Path) -> Result<Content, HubError> {
    check_magic(path)?;
    let mut file = std::fs::File::open(path).map_err(|e| HubError::io(path, e))?;
    Content::read(&mut file).map_err(|e| HubError::BadGguf {
        path: path.into(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub(spec: &str) -> GgufSpec {
        parse(spec).unwrap().unwrap()
    }

    #[test]
    fn repo_and_file_specs_take_the_revision_on_either_side() {
        let expected = |revision: &str| GgufSpec::Hub {
            repo: "Qwen/Qwen2.5-1.5B-Instruct-GGUF".into(),
            revision: revision.into(),
            file: "qwen2.5-1.5b-instruct-q4_k_m.gguf".into(),
            preset: preset::preset("qwen2.5-1.5b-instruct").unwrap(),
        };
        assert_eq!(
            hub("Qwen/Qwen2.5-1.5B-Instruct-GGUF:qwen2.5-1.5b-instruct-q4_k_m.gguf"),
            expected("main")
        );
        assert_eq!(
            hub("Qwen/Qwen2.5-1.5B-Instruct-GGUF@v1:qwen2.5-1.5b-instruct-q4_k_m.gguf"),
            expected("v1")
        );
        assert_eq!(
            hub("Qwen/Qwen2.5-1.5B-Instruct-GGUF:qwen2.5-1.5b-instruct-q4_k_m.gguf@v1"),
            expected("v1")
        );
        // Another file of a preset's repo is not the preset.
        match hub("Qwen/Qwen2.5-1.5B-Instruct-GGUF:qwen2.5-1.5b-instruct-q8_0.gguf") {
            GgufSpec::Hub { preset, .. } => assert_eq!(preset, None),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn gguf_presets_name_their_file_and_seq2seq_specs_are_not_gguf() {
        match hub("gemma-3-1b-it") {
            GgufSpec::Hub { repo, file, .. } => {
                assert_eq!(repo, "ggml-org/gemma-3-1b-it-GGUF");
                assert_eq!(file, "gemma-3-1b-it-Q4_K_M.gguf");
            }
            other => panic!("{other:?}"),
        }
        for spec in ["rut5-base-sum-gazeta", "org/name", "org/name@v1"] {
            assert_eq!(parse(spec).unwrap(), None, "{spec}");
            assert!(!is_gguf_spec(spec), "{spec}");
        }
        assert!(is_gguf_spec("qwen2.5-1.5b-instruct"));
        assert!(is_gguf_spec("org/name:model.gguf"));
        assert!(is_gguf_spec("./missing.gguf"));
    }

    #[test]
    fn bad_specs_say_what_a_gguf_spec_is() {
        for spec in [
            "org/name:",
            "a/b/c:x.gguf",
            "org/name@:x.gguf",
            "org/name@a:x.gguf@b",
            "org/name:../x.gguf",
        ] {
            let err = parse(spec).unwrap_err().to_string();
            assert!(err.contains("org/name:file.gguf"), "{spec}: {err}");
        }
        let err = parse("./no-such-model.gguf").unwrap_err().to_string();
        assert!(err.contains("no such GGUF file"), "{err}");
    }

    #[test]
    fn an_unreadable_header_is_named_with_its_likely_causes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gguf");
        // The magic, version 3, then a header cut short.
        std::fs::write(&path, b"GGUF\x03\0\0\0\x01\0").unwrap();
        let err = has_embedded_tokenizer(&path).unwrap_err();
        assert!(matches!(err, HubError::BadGguf { .. }), "{err}");
        assert!(err.to_string().contains("truncated or corrupt"), "{err}");
    }

    #[test]
    fn a_local_file_must_start_with_the_magic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.gguf");
        std::fs::write(&path, b"{\"model_type\": \"t5\"}").unwrap();
        let err = resolve_gguf(path.to_str().unwrap(), &HubOptions::default()).unwrap_err();
        assert!(matches!(err, HubError::NotGguf { .. }), "{err}");
        assert!(err.to_string().contains("is not a GGUF file"), "{err}");
        std::fs::write(&path, b"GGUF\x03\0\0\0").unwrap();
        let resolved = resolve_gguf(path.to_str().unwrap(), &HubOptions::default()).unwrap();
        assert_eq!(resolved.file, "model.gguf");
        assert_eq!(resolved.commit, None);
    }
}
