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

    /// Whether [`Seq2Seq::decode_step_blocks`] runs: the output layer can hand out its logits
    /// a block of ids at a time (an f32 layer on mtsum's CPU kernels).
    fn blocked_head(&self) -> bool {
        false
    }

    /// One decoder step as [`Seq2Seq::decode_step`], except that the logits are never held
    /// whole: `f(first_id, values)` gets them a block of `block` ids at a time ((rows, width)
    /// row-major, the last block narrower), on any thread and in no set order, with the values
    /// `decode_step` would give bit for bit. Returns the rows the output layer took, from
    /// which [`Seq2Seq::logits_of`] gives the full logits of any of them again. `block` must
    /// be a multiple of 32; only for a model whose [`Seq2Seq::blocked_head`] is true.
    ///
    /// Beam search reduces each block while it is in cache (log-sum-exp parts and the best
    /// candidates), so a batch of hundreds of hypotheses never writes, pages in and rereads a
    /// (hypotheses, vocabulary) matrix, and more hypotheses fit in a batch's memory.
    fn decode_step_blocks(
        &self,
        last: &candle_core::Tensor,
        cache: &mut Self::Cache,
        block: usize,
        f: &(dyn Fn(usize, &[f32]) + Sync),
    ) -> candle_core::Result<candle_core::Tensor> {
        let _ = (last, cache, block, f);
        candle_core::bail!("this model's output layer does not run by blocks")
    }

    /// The full logits (rows, vocab) of rows returned by [`Seq2Seq::decode_step_blocks`].
    fn logits_of(&self, hidden: &candle_core::Tensor) -> candle_core::Result<candle_core::Tensor> {
        let _ = hidden;
        candle_core::bail!("this model's output layer does not run by blocks")
    }

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
