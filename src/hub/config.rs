//! Where the hub and the cache are, from `HubOptions` first and the `HF_*` environment second,
//! with the same precedence as Python's huggingface_hub (`constants.py`), so both share a cache.

use std::path::PathBuf;

use super::HubOptions;

pub(crate) const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// The settings one resolve or fetch works with.
#[derive(Clone)]
pub(crate) struct HubConfig {
    pub endpoint: String,
    pub cache_dir: PathBuf,
    pub token_file: PathBuf,
    /// Secret: never printed, logged or written (see the Debug impl).
    pub token: Option<String>,
    pub offline: bool,
    pub progress: bool,
    pub tokenizer_only: bool,
    pub notes: super::Notes,
}

impl std::fmt::Debug for HubConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubConfig")
            .field("endpoint", &self.endpoint)
            .field("cache_dir", &self.cache_dir)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("offline", &self.offline)
            .finish()
    }
}

impl HubConfig {
    pub fn new(opts: &HubOptions) -> Self {
        let home = hf_home();
        let cache_dir = opts
            .cache_dir
            .clone()
            .or_else(|| env_path("HF_HUB_CACHE"))
            .or_else(|| env_path("HUGGINGFACE_HUB_CACHE"))
            .unwrap_or_else(|| home.join("hub"));
        let token_file = env_path("HF_TOKEN_PATH").unwrap_or_else(|| home.join("token"));
        let token = opts
            .token
            .clone()
            .or_else(|| env("HF_TOKEN"))
            .or_else(|| env("HUGGING_FACE_HUB_TOKEN"))
            .or_else(|| read_token_file(&token_file));
        let endpoint = opts
            .endpoint
            .clone()
            .or_else(|| env("HF_ENDPOINT"))
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string())
            .trim_end_matches('/')
            .to_string();
        HubConfig {
            endpoint,
            cache_dir,
            token_file,
            token,
            offline: opts.offline || env("HF_HUB_OFFLINE").is_some_and(|v| is_true(&v)),
            progress: opts.progress,
            tokenizer_only: opts.tokenizer_only,
            notes: opts.notes.clone(),
        }
    }
}

/// `HF_HOME`, else `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface`.
fn hf_home() -> PathBuf {
    env_path("HF_HOME").unwrap_or_else(|| {
        env_path("XDG_CACHE_HOME")
            .or_else(|| {
                env_path("HOME")
                    .or_else(|| env_path("USERPROFILE"))
                    .map(|h| h.join(".cache"))
            })
            .unwrap_or_else(|| PathBuf::from(".cache"))
            .join("huggingface")
    })
}

/// huggingface_hub's truthy values for boolean variables.
fn is_true(value: &str) -> bool {
    matches!(
        value.trim().to_ascii_uppercase().as_str(),
        "1" | "ON" | "YES" | "TRUE"
    )
}

/// A variable's value; unset and empty are the same.
fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn env_path(name: &str) -> Option<PathBuf> {
    env(name).map(PathBuf::from)
}

fn read_token_file(path: &std::path::Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let token = text.trim();
    (!token.is_empty()).then(|| token.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truthy_values_follow_huggingface_hub() {
        for v in ["1", "on", "YES", "True "] {
            assert!(is_true(v), "{v}");
        }
        for v in ["0", "off", "no", "false", ""] {
            assert!(!is_true(v), "{v}");
        }
    }

    #[test]
    fn options_override_the_environment_and_the_token_stays_out_of_debug() {
        let opts = HubOptions {
            endpoint: Some("http://127.0.0.1:9/".into()),
            cache_dir: Some("/tmp/some-cache".into()),
            token: Some("hf_dont_print_me".into()),
            offline: true,
            ..HubOptions::default()
        };
        let config = HubConfig::new(&opts);
        assert_eq!(config.endpoint, "http://127.0.0.1:9");
        assert_eq!(config.cache_dir, PathBuf::from("/tmp/some-cache"));
        assert!(config.offline);
        assert!(!format!("{config:?}").contains("hf_dont_print_me"));
        assert!(!format!("{opts:?}").contains("hf_dont_print_me"));
    }
}
