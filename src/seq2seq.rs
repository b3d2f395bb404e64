//! What the model families and the generation engine share, so that neither looks up to the
//! other: the [`Seq2Seq`] trait a model implements and the search drives, the
//! [`SpecialTokens`] that steer the search, and the [`ModelType`] that config.json names.
//!
//! `models` implements the trait, `generate` drives it, and the loader above both (`load`)
//! puts a model and a runner together.

/// The families this crate runs, named by config.json's `model_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelType {
    Marian,
    Bart,
    MBart,
    T5,
    MT5,
}

impl ModelType {
    /// From config.json's `model_type` (or a preset's `family`).
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "marian" => Some(Self::Marian),
            "bart" => Some(Self::Bart),
            "mbart" => Some(Self::MBart),
            "t5" => Some(Self::T5),
            "mt5" => Some(Self::MT5),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Marian => "marian",
            Self::Bart => "bart",
            Self::MBart => "mbart",
            Self::T5 => "t5",
            Self::MT5 => "mt5",
        }
    }
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

/// An encoder-decoder model as the generation engine sees it. Implemented by the model
/// families (`models/`), driven by the search (`generate/`).
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
