//! Release -> segments -> translation -> summary -> output record: the plan (models and
//! options) that the command line hands over, and what it makes of each release.
//!
//! The pipeline knows nothing of tensors: it sees the models only through
//! [`TextGenerator`], so the same code runs the real engine and the tests' stand-in.
//! A release is processed by async code that makes its model calls through `pool::Calls`:
//! alone ([`pool::alone`]), each call goes to the engine at once; in a group of releases
//! ([`pool::Pool`], used by `batch`, the stdout commands and `--lines`), the calls of the
//! group's releases are pooled into one engine call per phase, so the engine can batch and
//! length-sort the segments of many releases together.
//!
//! What model calls cost is counted one way: every step adds its share to the caller's
//! `&mut Spent`; a task handed to a pool owns its `Spent` and returns it with its result.
//!
//! - `translation`: the translator's side, guarded against degenerate output.
//! - `summaries`: summaries of releases, documents and lines, guarded and chunked.
//! - `batch`: a whole run into an output folder, with the digest and report; `stream`: the
//!   same releases handed to a writer (stdout) in input order.

pub mod batch;
mod generator;
pub mod llm;
pub mod merge;
pub mod pool;
mod prompted;
mod review;
pub mod shard;
mod stream;
mod summaries;
mod translation;

pub use generator::TextGenerator;
pub use review::{review_reasons, term_counts};
pub use stream::each_release;

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::json;

use crate::generate::GenerationOverrides;
use crate::guard::GuardLimits;
use crate::io::output::ModelsUsed;
use crate::io::{Bilingual, Block, ParagraphOut, Release, ReleaseOutput, SummaryOut};
use crate::summary::SummarySide;
use crate::text::glossary::Glossary;
use crate::text::{self, PreparedBlock, Sentence};
use crate::{Error, Result};
use pool::{Calls, Spent};

/// Sentences in an extract when `--summary-sentences` does not say.
const DEFAULT_EXTRACT_SENTENCES: usize = 3;

/// How summaries are made: `--summarize-from`, `--extractive`, `--summary-sentences`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct SummaryOptions {
    /// Which side the summarizer reads.
    pub side: SummarySide,
    /// Lead and key sentences instead of a summarizer model.
    pub extractive: bool,
    /// Most sentences per summary; also the size of an extract.
    pub max_sentences: Option<usize>,
    /// When a generated text counts as degenerate.
    pub guard: GuardLimits,
}

impl SummaryOptions {
    fn extract_size(&self) -> usize {
        self.max_sentences.unwrap_or(DEFAULT_EXTRACT_SENTENCES)
    }
}

/// What to do with each release, and the generation settings of each model.
#[derive(Debug, Clone, Default)]
pub struct PipelineOptions {
    /// Translate the body (off for `summarize`).
    pub translate_body: bool,
    /// Summarize (needs a summarizer).
    pub summarize: bool,
    /// Overrides for the translator.
    pub translation: GenerationOverrides,
    /// Overrides for the summarizer.
    pub summary: GenerationOverrides,
    /// How summaries are made.
    pub summaries: SummaryOptions,
    /// Options of the run that change the outputs (e.g. `--side-by-side`): part of the
    /// fingerprint, so changing them redoes the release.
    pub output_settings: serde_json::Value,
    /// Terms whose translation each sentence is checked for (`--glossary`); empty for none.
    pub glossary: Glossary,
    /// `--names transliterate`: a sentence whose translation lacks the ICAO transliteration
    /// of one of its person names (one no glossary term covers) is translated again with it
    /// as a constraint.
    pub transliterate_names: bool,
}

/// The models and options of a run.
pub struct Pipeline<'a> {
    translator: Option<&'a dyn TextGenerator>,
    summarizer: Option<&'a dyn TextGenerator>,
    options: PipelineOptions,
    /// Nanoseconds spent segmenting releases, for the report's stage timings (atomic only so
    /// that the pipeline stays shareable; releases are processed on one thread).
    segmenting: AtomicU64,
}

impl<'a> Pipeline<'a> {
    /// Checks that each model the options need is there.
    pub fn new(
        translator: Option<&'a dyn TextGenerator>,
        summarizer: Option<&'a dyn TextGenerator>,
        options: PipelineOptions,
    ) -> Result<Self> {
        if options.translate_body && translator.is_none() {
            return Err(Error::Usage("translation needs a translator model".into()));
        }
        let abstractive = options.summarize && !options.summaries.extractive;
        if abstractive && summarizer.is_none() {
            return Err(Error::Usage("summaries need a summarizer model".into()));
        }
        let instruct = summarizer.is_some_and(|s| s.follows_instructions());
        if abstractive && instruct && options.summaries.side == SummarySide::En {
            return Err(Error::Usage(
                "an LLM summarizer reads the Russian original and writes both summaries itself: drop --summarize-from en".into(),
            ));
        }
        if options.summarize && options.summaries.side == SummarySide::En && translator.is_none() {
            return Err(Error::Usage(
                "--summarize-from en summarizes the translation: it needs a translator".into(),
            ));
        }
        Ok(Pipeline {
            translator,
            summarizer,
            options,
            segmenting: AtomicU64::new(0),
        })
    }

    /// Seconds spent so far cutting release bodies and titles into model-sized pieces.
    pub fn segment_seconds(&self) -> f64 {
        self.segmenting.load(Ordering::Relaxed) as f64 / 1e9
    }

    /// `work`, its time counted as segmentation.
    fn segmenting<T>(&self, work: impl FnOnce() -> T) -> T {
        let started = std::time::Instant::now();
        let done = work();
        let nanos = started.elapsed().as_nanos().min(u64::MAX as u128) as u64;
        self.segmenting.fetch_add(nanos, Ordering::Relaxed);
        done
    }

    /// The models as recorded in outputs and the report.
    pub fn models(&self) -> ModelsUsed {
        ModelsUsed {
            translator: self.translator.map(|t| t.info().clone()),
            summarizer: self.summarizer.map(|s| s.info().clone()),
        }
    }

    /// Effective generation settings of each model, and the output options.
    pub fn settings(&self) -> serde_json::Value {
        let mut settings = json!({
            "translate_body": self.options.translate_body,
            "summarize": self.options.summarize,
            "translator": self.translator.map(|t| t.settings(&self.options.translation)),
            "summarizer": self.summarizer.map(|s| s.settings(&self.options.summary)),
            "summaries": self.options.summaries,
            "output": self.options.output_settings,
        });
        // Only with a glossary, so the settings of a run without one are as before; its
        // digest makes a changed glossary redo the releases.
        let glossary = &self.options.glossary;
        if !glossary.is_empty() {
            settings["glossary"] = json!({
                "entries": glossary.entries().len(),
                "sha256": crate::io::read::sha256_hex(glossary.canonical().as_bytes()),
            });
        }
        // Only when set, as the glossary.
        if self.options.transliterate_names {
            settings["names"] = json!("transliterate");
        }
        settings
    }

    pub fn options(&self) -> &PipelineOptions {
        &self.options
    }

    /// What a release's outputs depend on: its id and bytes, the models (resolved commits)
    /// and the settings. Equal fingerprints let a rerun skip the release.
    pub fn fingerprint(&self, release: &Release) -> String {
        let key = json!({
            "id": release.id,
            "sha256": release.source.sha256,
            "encoding": release.source.encoding,
            "models": self.models(),
            "settings": self.settings(),
        });
        crate::io::read::sha256_hex(key.to_string().as_bytes())
    }

    /// Translates and summarizes one release into its output record (`file`: its file stem),
    /// with the model calls made through `calls` (pooled when it serves a group; alone with
    /// [`pool::alone`]). A release's timings are its shares of the model calls it took part in: in a group,
    /// the wall time of one release is the group's.
    pub async fn process_with(
        &self,
        release: &Release,
        file: &str,
        calls: &Calls<'a>,
    ) -> Result<ReleaseOutput> {
        let mut translation = Spent::default();
        let (title, paragraphs) = match self.translator {
            Some(translator) if self.needs_translation() => {
                self.translate_release(translator, release, calls, &mut translation)
                    .await?
            }
            _ => (None, Vec::new()),
        };
        let mut summarizing = Spent::default();
        let summary = match self.options.summarize {
            true => Some(
                self.summary_of(release, &paragraphs, calls, &mut summarizing)
                    .await?,
            ),
            false => None,
        };
        let warnings = guard_warnings(title.as_ref(), &paragraphs, summary.as_ref());
        let timings = crate::io::output::Timings {
            translate_seconds: translation.seconds,
            summarize_seconds: summarizing.seconds,
            total_seconds: translation.seconds + summarizing.seconds,
        };
        let mut tokens = translation.counts;
        tokens += summarizing.counts;
        Ok(ReleaseOutput {
            mtsum_version: env!("CARGO_PKG_VERSION").to_string(),
            id: release.id.clone(),
            file: file.to_string(),
            position: None,
            source: release.source.clone(),
            date: release.date.clone(),
            url: release.url.clone(),
            title,
            summary,
            paragraphs,
            models: self.models(),
            settings: self.settings(),
            timings,
            tokens,
            extra: release.extra.clone(),
            warnings,
            fingerprint: self.fingerprint(release),
        })
    }

    /// The body is translated for the output, and also when a summary is made from it
    /// (`--summarize-from en`, or an extract whose English side comes from the alignment).
    fn needs_translation(&self) -> bool {
        let summaries = &self.options.summaries;
        self.options.translate_body
            || (self.options.summarize
                && (summaries.side == SummarySide::En || summaries.extractive))
    }

    fn translator_model(&self) -> Result<&'a dyn TextGenerator> {
        self.translator
            .ok_or_else(|| Error::Usage("translation needs a translator model".into()))
    }

    fn summarizer_model(&self) -> Result<&'a dyn TextGenerator> {
        self.summarizer
            .ok_or_else(|| Error::Usage("summaries need a summarizer model".into()))
    }
}

/// The blocks' sentences, each cut into pieces that fit the model (the segmenter's work,
/// counted with the model's own tokenizer).
fn prepare_blocks(generator: &dyn TextGenerator, blocks: &[Block]) -> Result<Vec<PreparedBlock>> {
    let counter = TokenCounter::new(generator);
    let prepared = text::prepare(blocks, generator.max_input_tokens(), &|s| counter.count(s));
    counter.finish()?;
    Ok(prepared)
}

/// One text as one sentence: normalized for the model and cut into pieces that fit.
fn prepare_unit(generator: &dyn TextGenerator, unit: &str) -> Result<Sentence> {
    prepare_unit_within(generator, unit, generator.max_input_tokens())
}

/// As [`prepare_unit`], with pieces of at most `max` tokens (an LLM's parts leave room for
/// the request around them).
fn prepare_unit_within(generator: &dyn TextGenerator, unit: &str, max: usize) -> Result<Sentence> {
    let counter = TokenCounter::new(generator);
    let normalized = text::normalize_for_model(unit);
    let pieces = text::split_long(&normalized, max, |s| counter.count(s));
    counter.finish()?;
    Ok(Sentence {
        original: unit.trim().to_string(),
        pieces,
    })
}

/// The segmenter counts with an infallible function; this keeps the first tokenizer error
/// to report it once the segmenter is done.
struct TokenCounter<'g> {
    generator: &'g dyn TextGenerator,
    error: RefCell<Option<Error>>,
}

impl<'g> TokenCounter<'g> {
    fn new(generator: &'g dyn TextGenerator) -> Self {
        TokenCounter {
            generator,
            error: RefCell::new(None),
        }
    }

    fn count(&self, text: &str) -> usize {
        self.generator.count_tokens(text).unwrap_or_else(|err| {
            self.error.borrow_mut().get_or_insert(err);
            0
        })
    }

    fn finish(self) -> Result<()> {
        self.error.into_inner().map_or(Ok(()), Err)
    }
}

/// The release-level warnings: every guard that fired and every number and glossary term
/// missing from a translation, for the JSON and the run report.
fn guard_warnings(
    title: Option<&Bilingual>,
    paragraphs: &[ParagraphOut],
    summary: Option<&SummaryOut>,
) -> Vec<String> {
    let sentences = title
        .into_iter()
        .chain(paragraphs.iter().flat_map(|p| &p.sentences));
    let translation = sentences.flat_map(|pair| {
        let missed = pair
            .terms
            .iter()
            .filter(|t| !t.met)
            .map(review::missed_term);
        let notes = pair
            .guard
            .iter()
            .chain(&pair.warnings)
            .cloned()
            .chain(missed);
        notes.map(move |note| format!("translation of \"{}\": {note}", excerpt(&pair.ru)))
    });
    let summary = summary.into_iter().flat_map(|s| s.notes.iter().cloned());
    translation.chain(summary).collect()
}

/// The first words of a sentence, to name it in a warning.
fn excerpt(sentence: &str) -> String {
    let words: Vec<&str> = sentence.split_whitespace().take(8).collect();
    let more = sentence.split_whitespace().count() > words.len();
    format!("{}{}", words.join(" "), if more { " ..." } else { "" })
}
