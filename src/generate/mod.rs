//! The generation engine, written once over the `Seq2Seq` trait: greedy and beam search with
//! the semantics of transformers' `generate()`, and the length-sorted batch scheduler.

pub mod config;
pub mod logits;
pub mod runner;
pub mod schedule;
pub mod search;

pub use config::{EarlyStopping, GenerationConfig, Origin, SettingOrigin, Settings, TaskDefaults};
pub use runner::{Role, Runner, RunnerParts};
pub use search::generate_batch;

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
}

/// One generated output.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Generated {
    pub text: String,
    pub input_tokens: usize,
    pub output_tokens: usize,
}

/// What the pipeline needs of a loaded model: text in, text out, in batches.
///
/// SHARED CONTRACT between the engine and the pipeline: extend it, do not change what exists.
/// The real implementation is the engine's runner (tokenizer + model + generation config);
/// tests of the batch shell may use a stand-in that is never reachable from the CLI.
pub trait TextGenerator: Send + Sync {
    /// Repo, commit, family, dtype, device: recorded in every output.
    fn info(&self) -> &ModelInfo;
    /// Number of source tokens the encoder sees for `text`, the end token included.
    fn count_tokens(&self, text: &str) -> crate::Result<usize>;
    /// Most source tokens one input may have (max_position_embeddings, or a preset's lower limit).
    fn max_input_tokens(&self) -> usize;
    /// The effective generation settings after `overrides`, for the JSON output and report.
    fn settings(&self, overrides: &GenerationOverrides) -> serde_json::Value;
    /// One output per input, in input order. Batching and length-sorting are the implementation's
    /// business. `progress(done, total)` is called as inputs finish.
    fn generate(
        &self,
        inputs: &[String],
        overrides: &GenerationOverrides,
        progress: &dyn Fn(usize, usize),
    ) -> crate::Result<Vec<Generated>>;
}

/// Token ids that steer generation, read from config.json / generation_config.json: data, not
/// per-model code.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpecialTokens {
    pub decoder_start: u32,
    pub eos: u32,
    pub pad: u32,
    /// Ids never generated (Marian bans its pad id through bad_words_ids).
    pub banned: Vec<u32>,
    /// forced_eos_token_id: the end token forced at the last allowed step (BART).
    pub forced_eos: Option<u32>,
    /// forced_bos_token_id: the token forced at the first step (mBART's target language).
    pub forced_bos: Option<u32>,
}

/// An encoder-decoder model as the generation engine sees it. SHARED CONTRACT between the model
/// families (`models/`) and the engine (`generate/`): extend, do not change.
///
/// The cache is owned by the caller, so the model keeps no hidden state between inputs.
pub trait Seq2Seq {
    /// Per-layer decoder state: self-attention keys/values so far, the cross-attention keys and
    /// values (projected once from the encoder output in `start_decoding`), the encoder mask,
    /// and the current position.
    type Cache;

    /// `ids`: (batch, src_len) u32; `mask`: (batch, src_len) u32, 1 = real token, 0 = padding.
    /// Returns the encoder's last hidden state (batch, src_len, d_model). Padded positions
    /// change nothing in the real positions' outputs.
    fn encode(
        &self,
        ids: &candle_core::Tensor,
        mask: &candle_core::Tensor,
    ) -> candle_core::Result<candle_core::Tensor>;

    /// Prepares decoding for the rows of `encoded` (rows may repeat an input, e.g. per beam):
    /// projects cross-attention keys and values once and returns an empty self-attention cache.
    fn start_decoding(
        &self,
        encoded: &candle_core::Tensor,
        mask: &candle_core::Tensor,
    ) -> candle_core::Result<Self::Cache>;

    /// One decoder step: `last`: (rows,) u32, the previous token of every row. Returns the
    /// next-token logits (rows, vocab) as f32, before any processing, and grows the cache.
    fn decode_step(
        &self,
        last: &candle_core::Tensor,
        cache: &mut Self::Cache,
    ) -> candle_core::Result<candle_core::Tensor>;

    /// Keeps only `rows` (u32 indices, may repeat) of every cached tensor, in that order: beam
    /// reordering, and dropping rows that finished.
    fn select_rows(
        &self,
        cache: &mut Self::Cache,
        rows: &candle_core::Tensor,
    ) -> candle_core::Result<()>;

    fn special_tokens(&self) -> &SpecialTokens;

    fn vocab_size(&self) -> usize;

    /// Most source positions the encoder accepts (max_position_embeddings; None for T5).
    fn max_source_positions(&self) -> Option<usize>;
}
