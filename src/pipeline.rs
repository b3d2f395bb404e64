//! Release -> segments -> translation -> summary -> output record.
//!
//! Owner: batch shell issue (#2) and summaries issue (#7).
//!
//! The pipeline knows nothing of tensors: it sees the models only through
//! `generate::TextGenerator`, so the same code runs the real engine and the tests' stand-in.
//! One release is one call per model (all its segments at once), so the engine can batch and
//! length-sort them; the batch driver (`batch`) writes each release as soon as it is done.

pub mod batch;

use std::cell::RefCell;
use std::time::Instant;

use serde_json::json;

use crate::generate::{GenerationOverrides, TextGenerator};
use crate::io::output::{join_sentences, ModelsUsed, TokenCounts};
use crate::io::{Bilingual, Block, ParagraphOut, Release, ReleaseOutput, SummaryOut};
use crate::progress::{Observer, Stage};
use crate::text::{self, PreparedBlock, Sentence};
use crate::{Error, Result};

/// How deep chunked summarization may recurse (parts, summaries of parts, ...).
const MAX_SUMMARY_ROUNDS: usize = 3;

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
    /// Options of the run that change the outputs (e.g. `--side-by-side`): part of the
    /// fingerprint, so changing them redoes the release.
    pub output_settings: serde_json::Value,
}

/// The models and options of a run.
pub struct Pipeline<'a> {
    translator: Option<&'a dyn TextGenerator>,
    summarizer: Option<&'a dyn TextGenerator>,
    options: PipelineOptions,
}

/// Texts out of one model call, with their token counts.
struct Generation {
    texts: Vec<String>,
    counts: TokenCounts,
    seconds: f64,
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
        if options.summarize && summarizer.is_none() {
            return Err(Error::Usage("summaries need a summarizer model".into()));
        }
        Ok(Pipeline {
            translator,
            summarizer,
            options,
        })
    }

    pub fn options(&self) -> &PipelineOptions {
        &self.options
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
        json!({
            "translate_body": self.options.translate_body,
            "summarize": self.options.summarize,
            "translator": self.translator.map(|t| t.settings(&self.options.translation)),
            "summarizer": self.summarizer.map(|s| s.settings(&self.options.summary)),
            "output": self.options.output_settings,
        })
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

    /// Translates and summarizes one release into its output record (`file`: its file stem).
    pub fn process(
        &self,
        release: &Release,
        file: &str,
        observer: &dyn Observer,
    ) -> Result<ReleaseOutput> {
        let started = Instant::now();
        let mut tokens = TokenCounts::default();
        let (title, paragraphs, translate_seconds) = match self.translator {
            Some(translator) if self.options.translate_body => {
                let (title, paragraphs, generation) =
                    self.translate_release(translator, release, observer)?;
                tokens += generation.counts;
                (title, paragraphs, generation.seconds)
            }
            _ => (None, Vec::new(), 0.0),
        };
        let summarize_started = Instant::now();
        let summary = match self.options.summarize {
            true => Some(self.summarize(&release.body_text(), observer, &mut tokens)?),
            false => None,
        };
        let timings = crate::io::output::Timings {
            translate_seconds,
            summarize_seconds: summarize_started.elapsed().as_secs_f64(),
            total_seconds: started.elapsed().as_secs_f64(),
        };
        Ok(ReleaseOutput {
            mtsum_version: env!("CARGO_PKG_VERSION").to_string(),
            id: release.id.clone(),
            file: file.to_string(),
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
            fingerprint: self.fingerprint(release),
        })
    }

    /// The title and every sentence of the body, in one translator call.
    fn translate_release(
        &self,
        translator: &dyn TextGenerator,
        release: &Release,
        observer: &dyn Observer,
    ) -> Result<(Option<Bilingual>, Vec<ParagraphOut>, Generation)> {
        let title = release
            .title
            .as_deref()
            .map(|t| prepare_unit(translator, t))
            .transpose()?;
        let blocks = prepare_blocks(translator, &release.blocks)?;
        let sentences: Vec<&Sentence> = title
            .iter()
            .chain(blocks.iter().flat_map(|b| &b.sentences))
            .collect();
        let (english, generation) = self.translate_sentences(translator, &sentences, observer)?;
        let mut english = english.into_iter();
        let mut pair = |sentence: &Sentence| Bilingual {
            ru: sentence.original.clone(),
            en: english.next().unwrap_or_default(),
        };
        let title = title.as_ref().map(&mut pair);
        let paragraphs = blocks
            .iter()
            .map(|block| ParagraphOut {
                kind: block.kind,
                marker: block.marker.clone(),
                sentences: block.sentences.iter().map(&mut pair).collect(),
            })
            .collect();
        Ok((title, paragraphs, generation))
    }

    /// Translates prepared sentences in one call: every piece of every sentence goes to the
    /// model, and each sentence's pieces are joined back.
    fn translate_sentences(
        &self,
        translator: &dyn TextGenerator,
        sentences: &[&Sentence],
        observer: &dyn Observer,
    ) -> Result<(Vec<String>, Generation)> {
        let pieces: Vec<String> = sentences
            .iter()
            .flat_map(|s| s.pieces.iter().map(|p| p.text.clone()))
            .collect();
        let generation = self.call(
            translator,
            &pieces,
            &self.options.translation,
            Stage::Translate,
            observer,
        )?;
        let mut translated = generation.texts.as_slice();
        let joined = sentences
            .iter()
            .map(|sentence| {
                let (mine, rest) = translated.split_at(sentence.pieces.len().min(translated.len()));
                translated = rest;
                sentence.join(mine)
            })
            .collect();
        Ok((joined, generation))
    }

    /// Translates free-standing texts (input lines, summary sentences), each as one sentence.
    fn translate_units(
        &self,
        translator: &dyn TextGenerator,
        units: &[String],
        observer: &dyn Observer,
    ) -> Result<(Vec<String>, Generation)> {
        let prepared = units
            .iter()
            .map(|u| prepare_unit(translator, u))
            .collect::<Result<Vec<_>>>()?;
        let refs: Vec<&Sentence> = prepared.iter().collect();
        self.translate_sentences(translator, &refs, observer)
    }

    /// Translates every line as one unit (`translate --lines`); blank lines stay empty and
    /// cost nothing. The result has exactly one line per input line.
    pub fn translate_lines(
        &self,
        lines: &[String],
        observer: &dyn Observer,
        tokens: &mut TokenCounts,
    ) -> Result<Vec<String>> {
        let translator = self
            .translator
            .ok_or_else(|| Error::Usage("translation needs a translator model".into()))?;
        let filled: Vec<String> = lines
            .iter()
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.trim().to_string())
            .collect();
        let (texts, generation) = self.translate_units(translator, &filled, observer)?;
        *tokens += generation.counts;
        let mut translated = texts.into_iter();
        Ok(lines
            .iter()
            .map(|line| match line.trim().is_empty() {
                true => String::new(),
                false => one_line(&translated.next().unwrap_or_default()),
            })
            .collect())
    }

    /// A Russian summary of `document` and, when a translator is loaded, its English translation.
    pub fn summarize(
        &self,
        document: &str,
        observer: &dyn Observer,
        tokens: &mut TokenCounts,
    ) -> Result<SummaryOut> {
        let summarizer = self
            .summarizer
            .ok_or_else(|| Error::Usage("summaries need a summarizer model".into()))?;
        let normalized: Vec<String> = document
            .lines()
            .map(text::normalize_for_model)
            .filter(|l| !l.is_empty())
            .collect();
        let (ru, chunks) =
            self.summarize_ru(summarizer, &normalized.join("\n"), observer, tokens, 1)?;
        let en = match self.translator {
            Some(translator) => {
                let sentences = text::sentences(&ru);
                let (english, generation) =
                    self.translate_units(translator, &sentences, observer)?;
                *tokens += generation.counts;
                join_sentences(english.iter().map(String::as_str))
            }
            None => String::new(),
        };
        Ok(SummaryOut {
            ru,
            en,
            method: if chunks > 1 { "chunked" } else { "abstractive" }.to_string(),
            chunks,
            notes: Vec::new(),
        })
    }

    /// Summarizes `document` in one call when it fits the summarizer's input limit; otherwise
    /// summarizes paragraph-aligned parts that fit and then the joined part summaries, so
    /// nothing is silently truncated. Returns the summary and the number of parts. After
    /// `MAX_SUMMARY_ROUNDS` the text goes to the model as it is, whose input check then fails
    /// the release with a message rather than cutting it.
    fn summarize_ru(
        &self,
        summarizer: &dyn TextGenerator,
        document: &str,
        observer: &dyn Observer,
        tokens: &mut TokenCounts,
        round: usize,
    ) -> Result<(String, usize)> {
        let max = summarizer.max_input_tokens();
        let parts = if summarizer.count_tokens(document)? <= max || round >= MAX_SUMMARY_ROUNDS {
            vec![document.to_string()]
        } else {
            self.parts_that_fit(summarizer, document, max)?
        };
        let generation = self.call(
            summarizer,
            &parts,
            &self.options.summary,
            Stage::Summarize,
            observer,
        )?;
        *tokens += generation.counts;
        let summaries: Vec<String> = generation.texts.iter().map(|s| one_line(s)).collect();
        if parts.len() == 1 {
            return Ok((summaries.into_iter().next().unwrap_or_default(), 1));
        }
        let joined = summaries.join("\n");
        let (summary, _) = self.summarize_ru(summarizer, &joined, observer, tokens, round + 1)?;
        Ok((summary, parts.len()))
    }

    /// Packs whole lines (paragraphs) into parts of at most `max` tokens; a paragraph that is
    /// too long alone is cut into sentences and then pieces.
    fn parts_that_fit(
        &self,
        summarizer: &dyn TextGenerator,
        document: &str,
        max: usize,
    ) -> Result<Vec<String>> {
        let mut pieces = Vec::new();
        for paragraph in document.lines().filter(|l| !l.trim().is_empty()) {
            if summarizer.count_tokens(paragraph)? <= max {
                pieces.push(paragraph.to_string());
            } else {
                for sentence in text::sentences(paragraph) {
                    let unit = prepare_unit(summarizer, &sentence)?;
                    pieces.extend(unit.pieces.into_iter().map(|p| p.text));
                }
            }
        }
        let mut parts: Vec<String> = Vec::new();
        for piece in pieces {
            if let Some(last) = parts.last_mut() {
                let candidate = format!("{last}\n{piece}");
                if summarizer.count_tokens(&candidate)? <= max {
                    *last = candidate;
                    continue;
                }
            }
            parts.push(piece);
        }
        Ok(parts)
    }

    /// One model call, reported to the observer, checked for one output per input.
    fn call(
        &self,
        generator: &dyn TextGenerator,
        inputs: &[String],
        overrides: &GenerationOverrides,
        stage: Stage,
        observer: &dyn Observer,
    ) -> Result<Generation> {
        let started = Instant::now();
        if inputs.is_empty() {
            return Ok(Generation {
                texts: Vec::new(),
                counts: TokenCounts::default(),
                seconds: 0.0,
            });
        }
        observer.stage(stage, 0, inputs.len());
        let outputs = generator.generate(inputs, overrides, &|done, total| {
            observer.stage(stage, done, total)
        })?;
        if outputs.len() != inputs.len() {
            return Err(Error::Generation(format!(
                "{} returned {} outputs for {} inputs",
                generator.info().repo,
                outputs.len(),
                inputs.len()
            )));
        }
        let counts = TokenCounts {
            segments: inputs.len(),
            input_tokens: outputs.iter().map(|o| o.input_tokens).sum(),
            generated_tokens: outputs.iter().map(|o| o.output_tokens).sum(),
        };
        let seconds = started.elapsed().as_secs_f64();
        observer.generated(stage, counts, seconds);
        Ok(Generation {
            texts: outputs
                .into_iter()
                .map(|o| o.text.trim().to_string())
                .collect(),
            counts,
            seconds,
        })
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
    let counter = TokenCounter::new(generator);
    let normalized = text::normalize_for_model(unit);
    let pieces = text::split_long(&normalized, generator.max_input_tokens(), |s| {
        counter.count(s)
    });
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

/// Line breaks inside a generated text become spaces, so line-oriented output stays aligned.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
