//! "hub id[@revision], preset name or local dir" -> a folder of model files + the resolved commit.
//!
//! Owner: hub issue (#3). Contract used by the rest of the crate:
//! `resolve(spec, &HubOptions) -> ResolvedModel`, whose `dir` holds config.json,
//! generation_config.json (optional), the weights and the tokenizer files, under their hub names.

use std::path::PathBuf;

/// How the hub is reached; built from the global flags and the HF_* environment variables.
#[derive(Debug, Clone, Default)]
pub struct HubOptions {
    /// `--offline` or `HF_HUB_OFFLINE=1`: no network call at all.
    pub offline: bool,
    /// Show download progress bars.
    pub progress: bool,
}

/// A model whose files are on local disk.
#[derive(Debug, Clone)]
pub struct ResolvedModel {
    /// Folder holding the model's files under their hub names.
    pub dir: PathBuf,
    /// Hub id (`org/name`) or the local folder as given.
    pub repo: String,
    /// Revision asked for (branch, tag or commit), if any.
    pub revision: Option<String>,
    /// Commit the revision resolved to; None for a local folder.
    pub commit: Option<String>,
    /// The preset's manifest when the model was named by a preset (task defaults such as the
    /// summarizer's input limit that the repo's own config does not carry).
    pub preset: Option<Preset>,
}

/// A preset manifest from `models/*.toml` (embedded in the binary).
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize, serde::Serialize)]
pub struct Preset {
    pub name: String,
    pub hub_id: String,
    pub revision: Option<String>,
    /// translator or summarizer.
    pub role: String,
    pub family: String,
    /// Most source tokens per input, when lower than the model's own limit (rut5: 600).
    pub max_input_tokens: Option<usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("{0}")]
    Other(String),
}

/// Resolves a model spec. Until the hub issue lands only local folders are understood.
pub fn resolve(spec: &str, _opts: &HubOptions) -> Result<ResolvedModel, HubError> {
    let dir = PathBuf::from(spec);
    if dir.is_dir() {
        return Ok(ResolvedModel {
            dir,
            repo: spec.to_string(),
            revision: None,
            commit: None,
            preset: None,
        });
    }
    Err(HubError::Other(format!("model `{spec}` not found")))
}
