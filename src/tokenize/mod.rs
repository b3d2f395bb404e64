//! Tokenizers straight from the hub's files: SentencePiece models read in Rust, Marian's
//! source.spm/target.spm/vocab.json, T5's tokenizer.json or spiece.model. No conversion step,
//! and the ids are those of the Python reference (transformers / sentencepiece), checked
//! line by line against `tests/fixtures/reference/tokenizers.json`.
//!
//! - [`proto`]: the SentencePiece `ModelProto` reader (hand-written, never panics).
//! - [`normalizer`]: SentencePiece's normalizer as a `tokenizers` normalizer.
//! - [`spm`]: a SentencePiece unigram model as a `tokenizers` pipeline + SentencePiece decoding.
//! - [`marian`]: transformers' `MarianTokenizer` rules; [`single`]: one tokenizer for both
//!   sides (T5, mT5, BART, mBART), from tokenizer.json, spiece.model or [`bpe`]'s pipelines.
//! - [`bpe`]: what transformers builds when a repo has no tokenizer.json: BART's byte-level BPE
//!   from vocab.json + merges.txt, mBART's sentencepiece.bpe.model.
//!
//! What the engine uses: `Seq2SeqTokenizer` with `from_dir`, `encode`, `encode_target` and
//! `decode`.

pub mod bpe;
pub mod marian;
pub mod normalizer;
pub mod proto;
pub mod single;
pub mod spm;

use std::path::{Path, PathBuf};

use serde_json::Value;

pub use marian::{MarianTokenizer, Side, Vocab};
pub use single::SingleTokenizer;
pub use spm::{SpmModel, SpmToken};

#[derive(Debug, thiserror::Error)]
pub enum TokenizeError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A tokenizer file that cannot be used; `reason` says what is wrong with it.
    #[error("{}: {reason}", path.display())]
    BadFile { path: PathBuf, reason: String },
    #[error("{}: the special token {token:?} is not in the vocabulary", path.display())]
    MissingToken { path: PathBuf, token: String },
    #[error(
        "{}: no tokenizer files: expected source.spm + target.spm + vocab.json (Marian), \
         tokenizer.json, spiece.model (T5), vocab.json + merges.txt (BART) or \
         sentencepiece.bpe.model (mBART)",
        dir.display()
    )]
    NoTokenizer { dir: PathBuf },
    #[error("cannot tokenize: {0}")]
    Encode(String),
}

/// Ids of the special tokens the engine and pipeline need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialIds {
    pub eos: u32,
    pub unk: u32,
    pub pad: u32,
}

impl SpecialIds {
    /// Whether `id` is one of them (skipped when decoding).
    pub fn contains(&self, id: u32) -> bool {
        id == self.eos || id == self.unk || id == self.pad
    }
}

/// Which tokenizer a model folder holds, told by its files alone. The order of the checks is
/// the one [`Seq2SeqTokenizer::from_dir`] builds by (it asks this function), so what
/// `mtsum models inspect` reports is what a run uses: Marian's pair first (its repos also
/// carry a vocab.json), then tokenizer.json, spiece.model, sentencepiece.bpe.model and BART's
/// vocab.json + merges.txt, transformers' order of preference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenizerKind {
    /// Marian: source.spm + target.spm + vocab.json.
    MarianSpmPair,
    /// A `tokenizers` tokenizer.json.
    TokenizerJson,
    /// A SentencePiece unigram model, spiece.model (T5, mT5).
    SentencePiece,
    /// mBART's sentencepiece.bpe.model.
    MbartSentencePiece,
    /// GPT-2 byte-level BPE from vocab.json + merges.txt (BART without tokenizer.json).
    ByteLevelBpe,
}

impl TokenizerKind {
    /// The kind the files in `dir` make; None when the folder holds no tokenizer.
    pub fn detect(dir: &Path) -> Option<Self> {
        [
            Self::MarianSpmPair,
            Self::TokenizerJson,
            Self::SentencePiece,
            Self::MbartSentencePiece,
            Self::ByteLevelBpe,
        ]
        .into_iter()
        .find(|kind| match kind {
            // Marian's vocab.json is checked when the tokenizer is built, with its own message.
            Self::MarianSpmPair => dir.join("source.spm").is_file(),
            other => other.files().iter().all(|f| dir.join(f).is_file()),
        })
    }

    /// The files it is built from, the one named in messages first.
    pub fn files(self) -> &'static [&'static str] {
        match self {
            Self::MarianSpmPair => &["source.spm", "target.spm", "vocab.json"],
            Self::TokenizerJson => &["tokenizer.json"],
            Self::SentencePiece => &["spiece.model"],
            Self::MbartSentencePiece => &["sentencepiece.bpe.model"],
            Self::ByteLevelBpe => &["vocab.json", "merges.txt"],
        }
    }

    /// For people: "Marian SentencePiece pair", "byte-level BPE"...
    pub fn describe(self) -> &'static str {
        match self {
            Self::MarianSpmPair => "Marian SentencePiece pair",
            Self::TokenizerJson => "tokenizer.json",
            Self::SentencePiece => "SentencePiece",
            Self::MbartSentencePiece => "mBART SentencePiece BPE",
            Self::ByteLevelBpe => "byte-level BPE",
        }
    }
}

/// The tokenizer of one seq2seq model, built from the files in its folder.
#[derive(Debug, Clone)]
pub struct Seq2SeqTokenizer {
    kind: Kind,
    specials: SpecialIds,
}

#[derive(Debug, Clone)]
enum Kind {
    Marian(Box<MarianTokenizer>),
    Single(SingleTokenizer),
}

impl Seq2SeqTokenizer {
    /// Builds the tokenizer from a model folder (Marian: source.spm, target.spm, vocab.json;
    /// others: tokenizer.json, else spiece.model (T5), vocab.json + merges.txt (BART) or
    /// sentencepiece.bpe.model (mBART), in transformers' order of preference). Needs no weights.
    pub fn from_dir(dir: &Path) -> Result<Self, TokenizeError> {
        let Some(kind) = TokenizerKind::detect(dir) else {
            return Err(TokenizeError::NoTokenizer {
                dir: dir.to_path_buf(),
            });
        };
        let file = dir.join(kind.files()[0]);
        let config = || TokenizerConfig::load(dir);
        let single = match kind {
            TokenizerKind::MarianSpmPair => {
                let marian = MarianTokenizer::from_dir(dir)?;
                let specials = marian.specials();
                return Ok(Self {
                    kind: Kind::Marian(Box::new(marian)),
                    specials,
                });
            }
            TokenizerKind::TokenizerJson => SingleTokenizer::from_json(&file, config()?.is_t5())?,
            TokenizerKind::SentencePiece => SingleTokenizer::from_spm(&file)?,
            TokenizerKind::MbartSentencePiece => {
                let (tokenizer, extras) = bpe::mbart_spm(&file)?;
                SingleTokenizer::from_pipeline(tokenizer, extras.clean_up_spaces)
            }
            TokenizerKind::ByteLevelBpe => {
                SingleTokenizer::from_pipeline(bpe::byte_level_bpe(dir)?, false)
            }
        };
        let specials = single.specials(&config()?, &file)?;
        Ok(Self {
            kind: Kind::Single(single),
            specials,
        })
    }

    /// Source-side ids as the encoder sees them, the end token `</s>` appended.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizeError> {
        match &self.kind {
            Kind::Marian(m) => m.encode(text, Side::Source),
            Kind::Single(t) => t.encode(text, self.specials.eos),
        }
    }

    /// Target-side ids (Marian's target.spm), the end token appended.
    pub fn encode_target(&self, text: &str) -> Result<Vec<u32>, TokenizeError> {
        match &self.kind {
            Kind::Marian(m) => m.encode(text, Side::Target),
            Kind::Single(t) => t.encode(text, self.specials.eos),
        }
    }

    /// Target ids to text, special tokens skipped, as transformers' decode(skip_special_tokens=True).
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizeError> {
        match &self.kind {
            Kind::Marian(m) => Ok(m.decode(ids)),
            Kind::Single(t) => t.decode(ids, self.specials),
        }
    }

    /// For every target id below `vocab`, whether its piece continues the word before it: it
    /// starts with a letter or digit, not with SentencePiece's `▁` or byte-level BPE's `Ġ`
    /// word marks (`s` after `▁police` makes `polices`). The constrained search keeps such a
    /// piece from following a placed term, so that a term stays a whole word.
    pub fn word_continuations(&self, vocab: usize) -> Vec<bool> {
        (0..vocab as u32)
            .map(|id| {
                let piece = match &self.kind {
                    Kind::Marian(m) => m.target_token(id).map(str::to_string),
                    Kind::Single(t) => t.id_to_token(id),
                };
                let first = piece.and_then(|p| p.chars().next());
                first
                    .is_some_and(|c| c.is_alphanumeric() && c != 'Ġ' && !self.specials.contains(id))
            })
            .collect()
    }

    /// Number of source ids `encode` gives (end token included).
    pub fn count_tokens(&self, text: &str) -> Result<usize, TokenizeError> {
        Ok(self.encode(text)?.len())
    }

    pub fn specials(&self) -> SpecialIds {
        self.specials
    }

    pub fn eos_id(&self) -> u32 {
        self.specials.eos
    }

    pub fn pad_id(&self) -> u32 {
        self.specials.pad
    }

    pub fn unk_id(&self) -> u32 {
        self.specials.unk
    }

    /// Size of the vocabulary the decoder predicts over (the config's vocab_size may be larger).
    pub fn vocab_size(&self) -> usize {
        match &self.kind {
            Kind::Marian(m) => m.vocab_size(),
            Kind::Single(t) => t.vocab_size(),
        }
    }

    /// The Marian tokenizer, for callers that need its sides or vocabulary.
    pub fn as_marian(&self) -> Option<&MarianTokenizer> {
        match &self.kind {
            Kind::Marian(m) => Some(m),
            Kind::Single(_) => None,
        }
    }
}

/// What a model folder's `tokenizer_config.json`, `special_tokens_map.json` and `config.json`
/// say about tokenization (each optional).
#[derive(Debug, Clone)]
pub struct TokenizerConfig {
    pub eos_token: String,
    pub unk_token: String,
    pub pad_token: String,
    pub separate_vocabs: bool,
    pub tokenizer_class: Option<String>,
    pub model_type: Option<String>,
}

impl TokenizerConfig {
    pub fn load(dir: &Path) -> Result<Self, TokenizeError> {
        let mut config = Self {
            eos_token: "</s>".into(),
            unk_token: "<unk>".into(),
            pad_token: "<pad>".into(),
            separate_vocabs: false,
            tokenizer_class: None,
            model_type: None,
        };
        // special_tokens_map.json wins over tokenizer_config.json, as in transformers.
        for name in ["tokenizer_config.json", "special_tokens_map.json"] {
            if let Some(json) = read_optional_json(&dir.join(name))? {
                config.apply(&json);
            }
        }
        if let Some(json) = read_optional_json(&dir.join("config.json"))? {
            config.model_type = json
                .get("model_type")
                .and_then(Value::as_str)
                .map(String::from);
        }
        Ok(config)
    }

    fn apply(&mut self, json: &Value) {
        let token = |key: &str| {
            let value = json.get(key)?;
            value
                .as_str()
                .or_else(|| value.get("content")?.as_str())
                .map(String::from)
        };
        self.eos_token = token("eos_token").unwrap_or(std::mem::take(&mut self.eos_token));
        self.unk_token = token("unk_token").unwrap_or(std::mem::take(&mut self.unk_token));
        self.pad_token = token("pad_token").unwrap_or(std::mem::take(&mut self.pad_token));
        if let Some(separate) = json.get("separate_vocabs").and_then(Value::as_bool) {
            self.separate_vocabs = separate;
        }
        if let Some(class) = json.get("tokenizer_class").and_then(Value::as_str) {
            self.tokenizer_class = Some(class.to_string());
        }
    }

    /// T5-family tokenizers get transformers' T5 treatment of tokenizer.json.
    pub fn is_t5(&self) -> bool {
        let t5_model = matches!(
            self.model_type.as_deref(),
            Some("t5" | "mt5" | "umt5" | "longt5")
        );
        let t5_class = self
            .tokenizer_class
            .as_deref()
            .is_some_and(|c| c.contains("T5Tokenizer"));
        t5_model || t5_class
    }
}

/// Reads and parses a JSON file, naming it in any error.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, TokenizeError> {
    let text = std::fs::read_to_string(path).map_err(|source| TokenizeError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| TokenizeError::BadFile {
        path: path.to_path_buf(),
        reason: format!("invalid JSON ({e})"),
    })
}

fn read_optional_json(path: &Path) -> Result<Option<Value>, TokenizeError> {
    if path.is_file() {
        read_json(path).map(Some)
    } else {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kind follows from_dir's order: Marian's pair before its own vocab.json, tokenizer.json
    /// before the files transformers would convert.
    #[test]
    fn tokenizer_kind_follows_the_order_of_preference() {
        let dir = tempfile::tempdir().unwrap();
        let touch = |name: &str| std::fs::write(dir.path().join(name), b"").unwrap();
        assert_eq!(TokenizerKind::detect(dir.path()), None);
        touch("vocab.json");
        assert_eq!(TokenizerKind::detect(dir.path()), None);
        touch("merges.txt");
        assert_eq!(
            TokenizerKind::detect(dir.path()),
            Some(TokenizerKind::ByteLevelBpe)
        );
        touch("sentencepiece.bpe.model");
        assert_eq!(
            TokenizerKind::detect(dir.path()),
            Some(TokenizerKind::MbartSentencePiece)
        );
        touch("spiece.model");
        assert_eq!(
            TokenizerKind::detect(dir.path()),
            Some(TokenizerKind::SentencePiece)
        );
        touch("tokenizer.json");
        assert_eq!(
            TokenizerKind::detect(dir.path()),
            Some(TokenizerKind::TokenizerJson)
        );
        touch("source.spm");
        assert_eq!(
            TokenizerKind::detect(dir.path()),
            Some(TokenizerKind::MarianSpmPair)
        );
    }

    #[test]
    fn tokenizers_can_be_shared_across_threads() {
        fn shareable<T: Send + Sync + Clone>() {}
        shareable::<Seq2SeqTokenizer>();
    }
}
