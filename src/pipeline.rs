//! Release -> segments -> translation -> summary -> output record.
//!
//! Owner: batch shell issue (#2) and summaries issue (#7).
//!
//! The pipeline knows nothing of tensors: it sees the models only through
//! `generate::TextGenerator`, so the same code runs the real engine and the tests' stand-in.
//! One release is one call per model (all its segments at once), so the engine can batch and
//! length-sort them; the batch driver (`batch`) writes each release as soon as it is done.

pub mod batch;
pub mod segment;

use std::time::Instant;

use serde_json::json;

use crate::generate::{GenerationOverrides, TextGenerator};
use crate::io::output::{join_sentences, ModelsUsed, TokenCounts};
use crate::io::{Bilingual, ParagraphOut, Release, ReleaseOutput, SummaryOut};
use crate::progress::{Observer, Stage};
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
        let mut units: Vec<String> = release.title.iter().cloned().collect();
        let shape: Vec<usize> = release
            .blocks
            .iter()
            .map(|block| {
                let sentences = segment::sentences(&block.text);
                let n = sentences.len();
                units.extend(sentences);
                n
            })
            .collect();
        let (english, generation) = self.translate_units(translator, &units, observer)?;
        let mut pairs = units
            .into_iter()
            .zip(english)
            .map(|(ru, en)| Bilingual { ru, en });
        let title = release.title.as_ref().and_then(|_| pairs.next());
        let paragraphs = release
            .blocks
            .iter()
            .zip(shape)
            .map(|(block, n)| ParagraphOut {
                kind: block.kind,
                marker: block.marker.clone(),
                sentences: pairs.by_ref().take(n).collect(),
            })
            .collect();
        Ok((title, paragraphs, generation))
    }

    /// Translates each unit (a sentence, a title, an input line); a unit longer than the
    /// translator's input limit is cut into pieces that fit and their translations joined.
    fn translate_units(
        &self,
        translator: &dyn TextGenerator,
        units: &[String],
        observer: &dyn Observer,
    ) -> Result<(Vec<String>, Generation)> {
        let max = translator.max_input_tokens();
        let mut pieces = Vec::new();
        let mut piece_counts = Vec::with_capacity(units.len());
        for unit in units {
            let fitted = segment::fit(unit, translator, max)?;
            piece_counts.push(fitted.len());
            pieces.extend(fitted);
        }
        let generation = self.call(
            translator,
            &pieces,
            &self.options.translation,
            Stage::Translate,
            observer,
        )?;
        let mut translated = generation.texts.iter();
        let joined = piece_counts
            .iter()
            .map(|&n| join_sentences(translated.by_ref().take(n).map(String::as_str)))
            .collect();
        Ok((joined, generation))
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

    /// A Russian summary of `text` and, when a translator is loaded, its English translation.
    pub fn summarize(
        &self,
        text: &str,
        observer: &dyn Observer,
        tokens: &mut TokenCounts,
    ) -> Result<SummaryOut> {
        let summarizer = self
            .summarizer
            .ok_or_else(|| Error::Usage("summaries need a summarizer model".into()))?;
        let (ru, chunks) = self.summarize_ru(summarizer, text, observer, tokens, 1)?;
        let en = match self.translator {
            Some(translator) => {
                let sentences = segment::sentences(&ru);
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

    /// Summarizes `text` in one call when it fits the summarizer's input limit; otherwise
    /// summarizes paragraph-aligned parts that fit and then the joined part summaries, so
    /// nothing is silently truncated. Returns the summary and the number of parts.
    fn summarize_ru(
        &self,
        summarizer: &dyn TextGenerator,
        text: &str,
        observer: &dyn Observer,
        tokens: &mut TokenCounts,
        round: usize,
    ) -> Result<(String, usize)> {
        let max = summarizer.max_input_tokens();
        let parts = if summarizer.count_tokens(text)? <= max || round >= MAX_SUMMARY_ROUNDS {
            vec![text.to_string()]
        } else {
            self.parts_that_fit(summarizer, text, max)?
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
        text: &str,
        max: usize,
    ) -> Result<Vec<String>> {
        let mut pieces = Vec::new();
        for paragraph in text.lines().filter(|l| !l.trim().is_empty()) {
            if summarizer.count_tokens(paragraph)? <= max {
                pieces.push(paragraph.to_string());
            } else {
                for sentence in segment::sentences(paragraph) {
                    pieces.extend(segment::fit(&sentence, summarizer, max)?);
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

/// Line breaks inside a generated text become spaces, so line-oriented output stays aligned.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
