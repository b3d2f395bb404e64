//! One tokenizer for source and target (T5, mT5, BART, mBART: every family but Marian):
//! `tokenizer.json` when the folder has one, as transformers does, else `spiece.model` through
//! our SentencePiece pipeline.
//!
//! - `tokenizer.json` of a T5 model is used the way transformers 5.x's `T5Tokenizer` uses it: it
//!   keeps the vocabulary, added tokens and the charsmap, and rebuilds the rest (Precompiled
//!   normalizer alone, `WhitespaceSplit` + `Metaspace(always)` pre-tokenizer and decoder,
//!   `byte_fallback` off). Old files such as rut5's differ from that only on whitespace edge
//!   cases (a trailing space gave a trailing `▁` there). Its fixed padding and truncation are
//!   switched off. Any other tokenizer.json (BART, mBART) is used as written.
//! - `spiece.model` alone gives the `sentencepiece` library's ids (byte pieces for characters
//!   outside the vocabulary), what the model was trained with; transformers 5.x would convert it
//!   without byte fallback instead.
//! - `</s>` is appended to every encoding; decoding skips special tokens.

use std::path::Path;

use serde_json::{json, Value};
use tokenizers::Tokenizer;

use super::spm::SpmModel;
use super::{SpecialIds, TokenizeError, TokenizerConfig};

/// The tokenizer of a T5-style folder.
#[derive(Debug, Clone)]
pub enum SingleTokenizer {
    /// From tokenizer.json; `post_process` says whether its post-processor adds the specials.
    Json {
        tokenizer: Box<Tokenizer>,
        post_process: bool,
        /// Apply transformers' `clean_up_tokenization` after decoding (mBART's spm path).
        clean_up_spaces: bool,
    },
    /// From spiece.model.
    Spm(Box<SpmModel>),
}

impl SingleTokenizer {
    /// Reads `tokenizer.json` (T5 rules when `t5` is true).
    pub fn from_json(path: &Path, t5: bool) -> Result<Self, TokenizeError> {
        let bad = |reason: String| TokenizeError::BadFile {
            path: path.to_path_buf(),
            reason,
        };
        let mut json: Value = super::read_json(path)?;
        let fields = json
            .as_object_mut()
            .ok_or_else(|| bad("not a JSON object".into()))?;
        fields.insert("padding".into(), Value::Null);
        fields.insert("truncation".into(), Value::Null);
        if t5 {
            as_transformers_t5(fields);
        }
        let tokenizer: Tokenizer =
            serde_json::from_value(json).map_err(|e| bad(format!("not a tokenizer.json: {e}")))?;
        Ok(Self::Json {
            tokenizer: Box::new(tokenizer),
            post_process: !t5,
            clean_up_spaces: false,
        })
    }

    /// A pipeline built in memory the way transformers builds it when the folder has no
    /// tokenizer.json (see [`super::bpe`]); its post-processor adds the special tokens.
    pub fn from_pipeline(tokenizer: Tokenizer, clean_up_spaces: bool) -> Self {
        Self::Json {
            tokenizer: Box::new(tokenizer),
            post_process: true,
            clean_up_spaces,
        }
    }

    /// Reads `spiece.model`.
    pub fn from_spm(path: &Path) -> Result<Self, TokenizeError> {
        Ok(Self::Spm(Box::new(SpmModel::from_file(path)?)))
    }

    /// Looks up the special tokens named in the folder's config.
    pub fn specials(
        &self,
        config: &TokenizerConfig,
        file: &Path,
    ) -> Result<SpecialIds, TokenizeError> {
        let lookup = |token: &str| {
            self.token_to_id(token)
                .ok_or_else(|| TokenizeError::MissingToken {
                    path: file.to_path_buf(),
                    token: token.to_string(),
                })
        };
        Ok(SpecialIds {
            eos: lookup(&config.eos_token)?,
            unk: lookup(&config.unk_token)?,
            pad: lookup(&config.pad_token)?,
        })
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        match self {
            Self::Json { tokenizer, .. } => tokenizer.token_to_id(token),
            Self::Spm(spm) => spm.piece_to_id(token),
        }
    }

    pub fn vocab_size(&self) -> usize {
        match self {
            Self::Json { tokenizer, .. } => tokenizer.get_vocab_size(true),
            Self::Spm(spm) => spm.len(),
        }
    }

    /// Ids with the end token: the file's post-processor for a non-T5 tokenizer.json, else `eos`.
    pub fn encode(&self, text: &str, eos: u32) -> Result<Vec<u32>, TokenizeError> {
        let (mut ids, add_eos) = match self {
            Self::Json {
                tokenizer,
                post_process,
                ..
            } => {
                let encoding = tokenizer
                    .encode_fast(text, *post_process)
                    .map_err(|e| TokenizeError::Encode(e.to_string()))?;
                (encoding.get_ids().to_vec(), !post_process)
            }
            Self::Spm(spm) => (spm.encode_ids(text)?, true),
        };
        if add_eos {
            ids.push(eos);
        }
        Ok(ids)
    }

    /// Text of `ids` with special tokens skipped.
    pub fn decode(&self, ids: &[u32], specials: SpecialIds) -> Result<String, TokenizeError> {
        match self {
            Self::Json {
                tokenizer,
                clean_up_spaces,
                ..
            } => {
                let text = tokenizer
                    .decode(ids, true)
                    .map_err(|e| TokenizeError::Encode(e.to_string()))?;
                Ok(match clean_up_spaces {
                    true => super::bpe::clean_up_tokenization(&text),
                    false => text,
                })
            }
            Self::Spm(spm) => {
                let kept: Vec<u32> = ids
                    .iter()
                    .copied()
                    .filter(|&id| !specials.contains(id))
                    .collect();
                Ok(spm.decode_ids(&kept))
            }
        }
    }
}

/// What transformers 5.x's `T5Tokenizer.__init__` keeps of a tokenizer.json and what it sets.
fn as_transformers_t5(fields: &mut serde_json::Map<String, Value>) {
    let precompiled = fields.get("normalizer").and_then(find_precompiled).cloned();
    fields.insert("normalizer".into(), precompiled.unwrap_or(Value::Null));
    let metaspace = json!({"type": "Metaspace", "replacement": "\u{2581}", "prepend_scheme": "always", "split": true});
    fields.insert(
        "pre_tokenizer".into(),
        json!({"type": "Sequence", "pretokenizers": [{"type": "WhitespaceSplit"}, metaspace]}),
    );
    fields.insert("decoder".into(), metaspace);
    fields.insert("post_processor".into(), Value::Null);
    if let Some(model) = fields.get_mut("model").and_then(Value::as_object_mut) {
        model.insert("byte_fallback".into(), Value::Bool(false));
    }
}

/// The Precompiled normalizer, alone or inside a Sequence.
fn find_precompiled(normalizer: &Value) -> Option<&Value> {
    match normalizer.get("type")?.as_str()? {
        "Precompiled" => Some(normalizer),
        "Sequence" => normalizer
            .get("normalizers")?
            .as_array()?
            .iter()
            .find_map(find_precompiled),
        _ => None,
    }
}
