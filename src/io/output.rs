//! The output record of one release: what `<id>.json` holds and every other writer reads.
//! It deserializes too, so a skipped release's digest entry comes from its earlier JSON.

use serde::{Deserialize, Serialize};

use super::release::{BlockKind, SourceInfo};
use crate::generate::ModelInfo;

/// A Russian text and its English counterpart.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Bilingual {
    pub ru: String,
    pub en: String,
    /// How many pieces a sentence too long for the model was translated in (absent when whole).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub pieces: Option<usize>,
    /// Set when the guard found the translation degenerate: what it saw and what was done.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub guard: Option<String>,
    /// The person names of the Russian side and how the English side wrote them, for a
    /// reviewer to check (absent when the sentence names nobody).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub names: Vec<NameOut>,
    /// What a reviewer must check in this pair: every number of the Russian side missing from
    /// the English side, quoted as written in the source (absent when there is none).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub warnings: Vec<String>,
    /// The glossary terms of the Russian side (`--glossary`) and whether the English side
    /// holds their translation (absent without a glossary or a term).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub terms: Vec<TermOut>,
}

/// A glossary term found in a source sentence.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TermOut {
    /// As found in the Russian sentence (`Министерству внутренних дел`).
    pub ru: String,
    /// The glossary entry's Russian side (`Министерство внутренних дел`).
    pub entry: String,
    /// The English the entry asks for.
    pub en: String,
    /// Whether the translation holds `en` (letter case aside).
    pub met: bool,
}

/// A person's name in a source sentence and its rendering in the translation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NameOut {
    /// As written in the Russian sentence (`И. П. Карташовым`).
    pub ru: String,
    /// In the nominative where the first name or the initials make it clear (`И. П. Карташов`).
    pub nominative: String,
    /// ICAO Doc 9303 transliteration, as in Russian passports (`I. P. Kartashov`).
    pub transliteration: String,
    /// The words of the translation that stand for it (`Irina Wolf`); absent when none
    /// resembles it.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub en: Option<String>,
    /// Whether the translation writes the surname as its transliteration.
    pub transliterated: bool,
}

impl Bilingual {
    /// A pair with no marks.
    pub fn new(ru: impl Into<String>, en: impl Into<String>) -> Self {
        Bilingual {
            ru: ru.into(),
            en: en.into(),
            ..Bilingual::default()
        }
    }
}

/// One paragraph (or heading, or list item) as aligned sentence pairs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParagraphOut {
    pub kind: BlockKind,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub marker: Option<String>,
    pub sentences: Vec<Bilingual>,
}

impl ParagraphOut {
    /// The paragraph's English text: its sentences joined.
    pub fn english(&self) -> String {
        join_sentences(self.sentences.iter().map(|s| s.en.as_str()))
    }
}

/// Joins sentences with single spaces, skipping empty ones.
pub fn join_sentences<'a>(sentences: impl Iterator<Item = &'a str>) -> String {
    sentences
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A summary in both languages and how it was made.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SummaryOut {
    pub ru: String,
    pub en: String,
    /// `abstractive` (one pass), `chunked` (parts summarized, then their summaries), ...
    pub method: String,
    /// Number of parts summarized separately (1 when the release fit).
    pub chunks: usize,
    /// Anything a reader should know: guards that fired, fall-backs taken.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub notes: Vec<String>,
    /// An LLM's summaries: how each language was made (`llm`, `llm-chunked`, or
    /// `lead-fallback` when its guard rejected it twice). Absent for the seq2seq path.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub languages: Option<SummaryMethods>,
}

/// How each language of a summary was made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SummaryMethods {
    pub ru: String,
    pub en: String,
}

/// The models a release was processed with.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelsUsed {
    pub translator: Option<ModelInfo>,
    pub summarizer: Option<ModelInfo>,
}

/// Where the time went for one release, in seconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    pub translate_seconds: f64,
    pub summarize_seconds: f64,
    pub total_seconds: f64,
}

/// What model calls cost, as every output records it.
pub use crate::generate::TokenCounts;

/// Everything known about one processed release.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReleaseOutput {
    pub mtsum_version: String,
    pub id: String,
    /// File stem of this release's outputs in the output folder.
    pub file: String,
    /// Place of the release in the whole batch's input order (0-based, every input counted,
    /// readable or not): the same in a sharded run as in one run, so `merge` can put the
    /// shards' releases back in order. Absent for a release processed outside a batch.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub position: Option<usize>,
    pub source: SourceInfo,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub date: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub url: Option<String>,
    pub title: Option<Bilingual>,
    pub summary: Option<SummaryOut>,
    pub paragraphs: Vec<ParagraphOut>,
    pub models: ModelsUsed,
    /// Effective generation settings of each model and the run's own options.
    pub settings: serde_json::Value,
    pub timings: Timings,
    pub tokens: TokenCounts,
    /// JSONL fields carried through.
    #[serde(skip_serializing_if = "serde_json::Map::is_empty", default)]
    pub extra: serde_json::Map<String, serde_json::Value>,
    /// What a reader should know about this release: guards that fired, fall-backs taken.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub warnings: Vec<String>,
    /// Hash of the input, models and settings: equal fingerprints mean a rerun may skip.
    pub fingerprint: String,
}
