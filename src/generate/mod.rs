//! The generation engine, written once over the `Seq2Seq` trait (`crate::seq2seq`): greedy and
//! beam search with the semantics of transformers' `generate()`, the generation settings as
//! transformers resolves them, the length-sorted batch scheduler, and the [`Runner`] that puts
//! a tokenizer, a model and its settings together. It owns its errors ([`GenerateError`]) and
//! knows nothing of where models come from (`crate::loader`) or who calls it.

pub mod config;
pub mod constrained;
pub mod error;
pub mod logits;
pub mod runner;
pub mod schedule;
pub mod search;

pub use config::{EarlyStopping, GenerationConfig, Origin, SettingOrigin, Settings, TaskDefaults};
pub use constrained::{generate_constrained, CONSTRAINED_BEAMS};
pub use error::{GenerateError, Result};
pub use runner::{Runner, RunnerParts};
pub use search::generate_batch;

/// The trait the search drives and the tokens that steer it live in [`crate::seq2seq`], beside
/// neither the models nor the engine; re-exported here for the engine's callers.
pub use crate::seq2seq::{Seq2Seq, SpecialTokens};

/// Generation settings given on the command line; each one that is set wins over the model's
/// generation_config.json / config.json, which win over transformers' defaults.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct GenerationOverrides {
    pub num_beams: Option<usize>,
    /// Counts generated tokens (transformers' max_new_tokens).
    pub max_new_tokens: Option<usize>,
    /// Counts generated tokens (transformers' min_new_tokens).
    pub min_new_tokens: Option<usize>,
    pub length_penalty: Option<f64>,
    pub no_repeat_ngram_size: Option<usize>,
    pub early_stopping: Option<bool>,
}

/// The model a run used, as recorded in every output's JSON and the run report.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModelInfo {
    /// Hub id or local folder.
    pub repo: String,
    pub revision: Option<String>,
    /// Resolved commit hash (None for a local folder).
    pub commit: Option<String>,
    /// config.json's model_type: marian, bart, mbart, t5, mt5.
    pub family: String,
    pub dtype: String,
    pub device: String,
    /// For a GGUF LLM: what traces a digest back to the file and the prompt (absent for
    /// seq2seq models, so their records are as before).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub llm: Option<LlmInfo>,
}

/// What names a GGUF LLM and the way it was asked, beside [`ModelInfo`]'s repo and commit.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LlmInfo {
    /// The engine and the model family that ran it, e.g. `candle-transformers quantized_gemma3`.
    pub backend: String,
    /// The GGUF file's name in its repo (or the local file's name).
    pub gguf_file: String,
    /// The weights' quantization, e.g. `Q4_K_M` (from the GGUF's `general.file_type`, else the
    /// most common tensor type).
    pub quantization: String,
    /// The hub commit the file came from, or `local` for a file outside the cache.
    pub commit: String,
    /// The sha256 of the file, when it is known without reading a gigabyte (a hub blob's name).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sha256: Option<String>,
    /// Version of the summary prompts (`crate::summary::PROMPT_TEMPLATE_VERSION`).
    pub prompt_template_version: String,
}

/// What model calls cost in inputs and tokens: for throughput figures and every output.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TokenCounts {
    pub segments: usize,
    pub input_tokens: usize,
    pub generated_tokens: usize,
}

impl std::ops::AddAssign for TokenCounts {
    fn add_assign(&mut self, other: Self) {
        self.segments += other.segments;
        self.input_tokens += other.input_tokens;
        self.generated_tokens += other.generated_tokens;
    }
}

/// One generated output.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Generated {
    pub text: String,
    pub input_tokens: usize,
    pub output_tokens: usize,
}
