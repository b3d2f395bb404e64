//! Tokenizers straight from the hub's files: SentencePiece models read in Rust, Marian's
//! source.spm/target.spm/vocab.json, T5's tokenizer.json or spiece.model.
//!
//! Owner: tokenizer issue (#4). SHARED CONTRACT used by the engine: `Seq2SeqTokenizer` with
//! `from_dir`, `encode`, `encode_target`, `decode` (extend, do not change).

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum TokenizeError {
    #[error("{0}")]
    Other(String),
}

/// The tokenizer of one seq2seq model, built from the files in its folder.
#[derive(Debug, Clone)]
pub struct Seq2SeqTokenizer {}

impl Seq2SeqTokenizer {
    /// Builds the tokenizer from a model folder (Marian: source.spm, target.spm, vocab.json;
    /// T5/BART: tokenizer.json, else spiece.model). Needs no weights.
    pub fn from_dir(dir: &Path) -> Result<Self, TokenizeError> {
        Err(TokenizeError::Other(format!(
            "{}: tokenizer loading is not built yet",
            dir.display()
        )))
    }

    /// Source-side ids as the encoder sees them, the end token `</s>` appended.
    pub fn encode(&self, _text: &str) -> Result<Vec<u32>, TokenizeError> {
        Err(TokenizeError::Other("not built yet".into()))
    }

    /// Target-side ids (Marian's target.spm), the end token appended.
    pub fn encode_target(&self, _text: &str) -> Result<Vec<u32>, TokenizeError> {
        Err(TokenizeError::Other("not built yet".into()))
    }

    /// Target ids to text, special tokens skipped, as transformers' decode(skip_special_tokens=True).
    pub fn decode(&self, _ids: &[u32]) -> Result<String, TokenizeError> {
        Err(TokenizeError::Other("not built yet".into()))
    }
}
