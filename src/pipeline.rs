//! Release -> segments -> translation -> summary -> output record.
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
use crate::io::text_blocks::collapse_spaces;
use crate::io::{Bilingual, Block, ParagraphOut, Release, ReleaseOutput, SummaryOut};
use crate::progress::{Observer, Stage};
use crate::summary::{self, Degenerate, GuardLimits, Script, SummarySide};
use crate::text::{self, PreparedBlock, Sentence};
use crate::{Error, Result};

/// How deep chunked summarization may recurse (parts, summaries of parts, ...).
const MAX_SUMMARY_ROUNDS: usize = 3;

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
        let abstractive = options.summarize && !options.summaries.extractive;
        if abstractive && summarizer.is_none() {
            return Err(Error::Usage("summaries need a summarizer model".into()));
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
            "summaries": self.options.summaries,
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
            Some(translator) if self.needs_translation() => {
                let (title, paragraphs, generation) =
                    self.translate_release(translator, release, observer)?;
                tokens += generation.counts;
                (title, paragraphs, generation.seconds)
            }
            _ => (None, Vec::new(), 0.0),
        };
        let summarize_started = Instant::now();
        let summary = match self.options.summarize {
            true => Some(self.summary_of(release, &paragraphs, observer, &mut tokens)?),
            false => None,
        };
        let warnings = guard_warnings(title.as_ref(), &paragraphs, summary.as_ref());
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
        let mut pair = |sentence: &Sentence| {
            let translated = english.next().unwrap_or_default();
            Bilingual {
                ru: sentence.original.clone(),
                en: translated.text,
                pieces: sentence.is_split().then_some(sentence.pieces.len()),
                guard: translated.guard,
            }
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

    /// Translates prepared sentences, guarded: sentences whose translation is degenerate
    /// (a loop, far too long, still Russian) are translated again with stricter settings, and
    /// marked whatever the second try gives.
    fn translate_sentences(
        &self,
        translator: &dyn TextGenerator,
        sentences: &[&Sentence],
        observer: &dyn Observer,
    ) -> Result<(Vec<Translated>, Generation)> {
        let overrides = &self.options.translation;
        let (texts, mut generation) =
            self.translate_once(translator, sentences, overrides, observer)?;
        let mut translated: Vec<Translated> = texts.into_iter().map(Translated::plain).collect();
        let suspects: Vec<usize> = (0..sentences.len())
            .filter(|&i| {
                self.degenerate_translation(sentences[i], &translated[i].text)
                    .is_some()
            })
            .collect();
        if suspects.is_empty() {
            return Ok((translated, generation));
        }
        let retry: Vec<&Sentence> = suspects.iter().map(|&i| sentences[i]).collect();
        let stricter = summary::stricter(overrides);
        let (second, extra) = self.translate_once(translator, &retry, &stricter, observer)?;
        generation.absorb(extra);
        for (&i, text) in suspects.iter().zip(second) {
            let first = self.degenerate_translation(sentences[i], &translated[i].text);
            let again = self.degenerate_translation(sentences[i], &text);
            let guard = match (first, again) {
                (Some(first), None) => format!("{first}; retried with stricter settings"),
                (_, Some(again)) => format!("{again} even with stricter settings"),
                (None, None) => continue,
            };
            translated[i] = Translated {
                text,
                guard: Some(guard),
            };
        }
        Ok((translated, generation))
    }

    fn degenerate_translation(&self, sentence: &Sentence, english: &str) -> Option<Degenerate> {
        let guard = &self.options.summaries.guard;
        summary::check_output(&sentence.original, english, Some(Script::Latin), guard)
    }

    /// Translates prepared sentences in one call: every piece of every sentence goes to the
    /// model, and each sentence's pieces are joined back.
    fn translate_once(
        &self,
        translator: &dyn TextGenerator,
        sentences: &[&Sentence],
        overrides: &GenerationOverrides,
        observer: &dyn Observer,
    ) -> Result<(Vec<String>, Generation)> {
        let pieces: Vec<String> = sentences
            .iter()
            .flat_map(|s| s.pieces.iter().map(|p| p.text.clone()))
            .collect();
        let generation = self.call(translator, &pieces, overrides, Stage::Translate, observer)?;
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
    ) -> Result<(Vec<Translated>, Generation)> {
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
        let translator = self.translator_model()?;
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
                false => collapse_spaces(&translated.next().unwrap_or_default().text),
            })
            .collect())
    }

    /// The summary of a processed release. The sentence pairs of its translation, when there
    /// is one, serve the extract and the English-side summary without translating twice.
    fn summary_of(
        &self,
        release: &Release,
        paragraphs: &[ParagraphOut],
        observer: &dyn Observer,
        tokens: &mut TokenCounts,
    ) -> Result<SummaryOut> {
        let aligned: Vec<Vec<Bilingual>> = paragraphs.iter().map(|p| p.sentences.clone()).collect();
        let summaries = &self.options.summaries;
        match (aligned.is_empty(), summaries.extractive, summaries.side) {
            (true, _, _) => self.summarize(&release.body_text(), observer, tokens),
            (false, true, _) => self.extract(aligned.concat(), observer, tokens),
            (false, false, SummarySide::Ru) => {
                self.summarize_russian(&release.body_text(), observer, tokens)
            }
            (false, false, SummarySide::En) => self.summarize_english(&aligned, observer, tokens),
        }
    }

    /// The summary of a free-standing document (`summarize --lines`, or a release whose body
    /// was not translated), made as the options ask.
    pub fn summarize(
        &self,
        document: &str,
        observer: &dyn Observer,
        tokens: &mut TokenCounts,
    ) -> Result<SummaryOut> {
        let summaries = &self.options.summaries;
        if summaries.extractive {
            let pairs = russian_sentences(document)
                .into_iter()
                .map(|ru| Bilingual::new(ru, ""))
                .collect();
            return self.extract(pairs, observer, tokens);
        }
        match summaries.side {
            SummarySide::Ru => self.summarize_russian(document, observer, tokens),
            SummarySide::En => {
                let aligned = self.translate_document(document, observer, tokens)?;
                self.summarize_english(&aligned, observer, tokens)
            }
        }
    }

    /// The default: the summarizer reads the Russian original (so translation errors are not
    /// summarized), and the Russian summary is translated sentence by sentence.
    fn summarize_russian(
        &self,
        document: &str,
        observer: &dyn Observer,
        tokens: &mut TokenCounts,
    ) -> Result<SummaryOut> {
        let summarizer = self.summarizer_model()?;
        let document = model_text(document);
        let made =
            self.guarded_summary(summarizer, &document, Script::Cyrillic, observer, tokens)?;
        let ru = summary::cap_sentences(&made.text, self.options.summaries.max_sentences);
        let mut notes = made.notes;
        let en = match self.translator {
            Some(translator) => {
                let sentences = text::sentences(&ru);
                let (english, generation) =
                    self.translate_units(translator, &sentences, observer)?;
                *tokens += generation.counts;
                notes.extend(english.iter().filter_map(|t| {
                    t.guard
                        .as_ref()
                        .map(|g| format!("summary translation: {g}"))
                }));
                join_sentences(english.iter().map(|t| t.text.as_str()))
            }
            None => String::new(),
        };
        Ok(SummaryOut {
            ru,
            en,
            method: made.method,
            chunks: made.chunks,
            notes,
        })
    }

    /// `--summarize-from en`: an English summarizer reads the translation, and nothing is
    /// translated back. The Russian side is the extract of source sentences whose
    /// translations best cover the English summary (`summary::covering_sentences`), so it
    /// says what the English says in the release's own words.
    fn summarize_english(
        &self,
        paragraphs: &[Vec<Bilingual>],
        observer: &dyn Observer,
        tokens: &mut TokenCounts,
    ) -> Result<SummaryOut> {
        let summarizer = self.summarizer_model()?;
        let english = paragraphs
            .iter()
            .map(|p| join_sentences(p.iter().map(|s| s.en.as_str())))
            .filter(|p| !p.is_empty())
            .collect::<Vec<_>>()
            .join("\n");
        let pairs = paragraphs.concat();
        let made = self.guarded_summary(summarizer, &english, Script::Latin, observer, tokens)?;
        let en = summary::cap_sentences(&made.text, self.options.summaries.max_sentences);
        let translations: Vec<String> = pairs.iter().map(|p| p.en.clone()).collect();
        let size = self.options.summaries.extract_size();
        let chosen = summary::covering_sentences(&translations, &en, size);
        Ok(SummaryOut {
            ru: join_sentences(chosen.iter().map(|&i| pairs[i].ru.as_str())),
            en,
            method: format!("{}-from-en", made.method),
            chunks: made.chunks,
            notes: made.notes,
        })
    }

    /// `--extractive`: the lead and key sentences (`summary::key_sentences`), in both
    /// languages from the aligned translation; sentences not yet translated are translated
    /// now, and only those.
    fn extract(
        &self,
        pairs: Vec<Bilingual>,
        observer: &dyn Observer,
        tokens: &mut TokenCounts,
    ) -> Result<SummaryOut> {
        let russian: Vec<String> = pairs.iter().map(|p| p.ru.clone()).collect();
        let chosen = summary::key_sentences(&russian, self.options.summaries.extract_size());
        let mut chosen: Vec<Bilingual> = chosen.into_iter().map(|i| pairs[i].clone()).collect();
        let untranslated = chosen.iter().all(|p| p.en.is_empty());
        if let (Some(translator), true, false) = (self.translator, untranslated, chosen.is_empty())
        {
            let units: Vec<String> = chosen.iter().map(|p| p.ru.clone()).collect();
            let (english, generation) = self.translate_units(translator, &units, observer)?;
            *tokens += generation.counts;
            for (pair, translated) in chosen.iter_mut().zip(english) {
                pair.en = translated.text;
            }
        }
        Ok(SummaryOut {
            ru: join_sentences(chosen.iter().map(|p| p.ru.as_str())),
            en: join_sentences(chosen.iter().map(|p| p.en.as_str())),
            method: "extractive".into(),
            chunks: 1,
            notes: Vec::new(),
        })
    }

    /// Every sentence of a document with its translation, paragraph by paragraph.
    fn translate_document(
        &self,
        document: &str,
        observer: &dyn Observer,
        tokens: &mut TokenCounts,
    ) -> Result<Vec<Vec<Bilingual>>> {
        let translator = self.translator_model()?;
        let paragraphs: Vec<Vec<String>> = text::paragraphs(document)
            .iter()
            .map(|block| text::sentences(&block.text))
            .collect();
        let (english, generation) =
            self.translate_units(translator, &paragraphs.concat(), observer)?;
        *tokens += generation.counts;
        let mut english = english.into_iter();
        Ok(paragraphs
            .into_iter()
            .map(|sentences| {
                sentences
                    .into_iter()
                    .map(|ru| Bilingual::new(ru, english.next().unwrap_or_default().text))
                    .collect()
            })
            .collect())
    }

    fn translator_model(&self) -> Result<&'a dyn TextGenerator> {
        self.translator
            .ok_or_else(|| Error::Usage("translation needs a translator model".into()))
    }

    fn summarizer_model(&self) -> Result<&'a dyn TextGenerator> {
        self.summarizer
            .ok_or_else(|| Error::Usage("summaries need a summarizer model".into()))
    }

    /// A summary that passed the guard: the first try, else a retry with stricter settings,
    /// else the lead sentences of the document. What happened is kept in the notes.
    fn guarded_summary(
        &self,
        summarizer: &dyn TextGenerator,
        document: &str,
        script: Script,
        observer: &dyn Observer,
        tokens: &mut TokenCounts,
    ) -> Result<Abstract> {
        let overrides = &self.options.summary;
        let (text, chunks) =
            self.summarize_text(summarizer, document, overrides, observer, tokens, 1)?;
        let Some(problem) = self.degenerate_summary(document, &text, script) else {
            return Ok(Abstract::generated(text, chunks, Vec::new()));
        };
        let mut notes = vec![format!(
            "summary rejected ({problem}); retried with stricter settings"
        )];
        let stricter = summary::stricter(overrides);
        let (retry, chunks) =
            self.summarize_text(summarizer, document, &stricter, observer, tokens, 1)?;
        let Some(again) = self.degenerate_summary(document, &retry, script) else {
            return Ok(Abstract::generated(retry, chunks, notes));
        };
        notes.push(format!(
            "retry rejected too ({again}); fell back to the lead sentences"
        ));
        let lead: Vec<String> = russian_sentences(document)
            .into_iter()
            .take(self.options.summaries.extract_size())
            .collect();
        Ok(Abstract {
            text: lead.join(" "),
            chunks,
            method: "lead-fallback".into(),
            notes,
        })
    }

    fn degenerate_summary(
        &self,
        document: &str,
        summary: &str,
        script: Script,
    ) -> Option<Degenerate> {
        summary::check_output(
            document,
            summary,
            Some(script),
            &self.options.summaries.guard,
        )
    }

    /// Summarizes `document` in one call when it fits the summarizer's input limit; otherwise
    /// summarizes paragraph-aligned parts that fit and then the joined part summaries, so
    /// nothing is silently truncated. Returns the summary and the number of parts. After
    /// `MAX_SUMMARY_ROUNDS` the text goes to the model as it is, whose input check then fails
    /// the release with a message rather than cutting it.
    fn summarize_text(
        &self,
        summarizer: &dyn TextGenerator,
        document: &str,
        overrides: &GenerationOverrides,
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
        let generation = self.call(summarizer, &parts, overrides, Stage::Summarize, observer)?;
        *tokens += generation.counts;
        let summaries: Vec<String> = generation
            .texts
            .iter()
            .map(|s| collapse_spaces(s))
            .collect();
        if parts.len() == 1 {
            return Ok((summaries.into_iter().next().unwrap_or_default(), 1));
        }
        let joined = summaries.join("\n");
        let (summary, _) =
            self.summarize_text(summarizer, &joined, overrides, observer, tokens, round + 1)?;
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

/// One sentence's translation and what the guard made of it.
#[derive(Debug, Clone, Default)]
struct Translated {
    text: String,
    guard: Option<String>,
}

impl Translated {
    fn plain(text: String) -> Self {
        Translated { text, guard: None }
    }
}

/// A generated summary and how it was made.
struct Abstract {
    text: String,
    chunks: usize,
    method: String,
    notes: Vec<String>,
}

impl Abstract {
    fn generated(text: String, chunks: usize, notes: Vec<String>) -> Self {
        let method = if chunks > 1 { "chunked" } else { "abstractive" };
        Abstract {
            text,
            chunks,
            method: method.into(),
            notes,
        }
    }
}

impl Generation {
    /// Adds the counts and time of a second call (a guarded retry).
    fn absorb(&mut self, other: Generation) {
        self.counts += other.counts;
        self.seconds += other.seconds;
    }
}

/// The document's lines normalized for the model, blank ones dropped.
fn model_text(document: &str) -> String {
    document
        .lines()
        .map(text::normalize_for_model)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The sentences of a document, paragraph by paragraph.
fn russian_sentences(document: &str) -> Vec<String> {
    text::paragraphs(document)
        .iter()
        .flat_map(|block| text::sentences(&block.text))
        .collect()
}

/// The release-level warnings: every guard that fired, for the JSON and the run report.
fn guard_warnings(
    title: Option<&Bilingual>,
    paragraphs: &[ParagraphOut],
    summary: Option<&SummaryOut>,
) -> Vec<String> {
    let sentences = title
        .into_iter()
        .chain(paragraphs.iter().flat_map(|p| &p.sentences));
    let translation = sentences.filter_map(|pair| {
        pair.guard
            .as_ref()
            .map(|guard| format!("translation of \"{}\": {guard}", excerpt(&pair.ru)))
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
