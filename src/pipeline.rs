//! Release -> segments -> translation -> summary -> output record.
//!
//! The pipeline knows nothing of tensors: it sees the models only through
//! `generate::TextGenerator`, so the same code runs the real engine and the tests' stand-in.
//! A release is processed by async code that makes its model calls through `pool::Calls`:
//! alone (`process`), each call goes to the engine at once; in a group of releases (`batch`),
//! the calls of the group's releases are pooled into one engine call per phase, so the engine
//! can batch and length-sort the segments of many releases together.

pub mod batch;
pub mod merge;
pub mod pool;
pub mod shard;

use std::cell::RefCell;

use serde_json::json;

use crate::generate::{GenerationOverrides, TextGenerator};
use crate::io::output::{join_sentences, ModelsUsed, TokenCounts};
use crate::io::text_blocks::collapse_spaces;
use crate::io::{Bilingual, Block, ParagraphOut, Release, ReleaseOutput, SummaryOut};
use crate::progress::{Observer, Stage};
use crate::summary::{self, Degenerate, GuardLimits, Script, SummarySide};
use crate::text::{self, PreparedBlock, Sentence};
use crate::{Error, Result};
use pool::{Calls, Group, Spent};

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
        let calls = Calls::default();
        pool::alone(&calls, self.process_with(release, file, &calls), observer)
    }

    /// `process`, with the model calls made through `calls` (pooled when it serves a group).
    /// A release's timings are its shares of the model calls it took part in: in a group,
    /// the wall time of one release is the group's.
    pub async fn process_with(
        &self,
        release: &Release,
        file: &str,
        calls: &Calls<'a>,
    ) -> Result<ReleaseOutput> {
        let (title, paragraphs, translation) = match self.translator {
            Some(translator) if self.needs_translation() => {
                self.translate_release(translator, release, calls).await?
            }
            _ => (None, Vec::new(), Spent::default()),
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

    /// The title and every sentence of the body, in one translator call.
    async fn translate_release(
        &self,
        translator: &'a dyn TextGenerator,
        release: &Release,
        calls: &Calls<'a>,
    ) -> Result<(Option<Bilingual>, Vec<ParagraphOut>, Spent)> {
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
        let (english, spent) = self
            .translate_sentences(translator, &sentences, calls)
            .await?;
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
        Ok((title, paragraphs, spent))
    }

    /// Translates prepared sentences, guarded: sentences whose translation is degenerate
    /// (a loop, far too long, still Russian) are translated again with stricter settings, and
    /// marked whatever the second try gives.
    async fn translate_sentences(
        &self,
        translator: &'a dyn TextGenerator,
        sentences: &[&Sentence],
        calls: &Calls<'a>,
    ) -> Result<(Vec<Translated>, Spent)> {
        let overrides = &self.options.translation;
        let (texts, mut spent) = self
            .translate_once(translator, sentences, overrides, calls)
            .await?;
        let mut translated: Vec<Translated> = texts.into_iter().map(Translated::plain).collect();
        let suspects: Vec<usize> = (0..sentences.len())
            .filter(|&i| {
                self.degenerate_translation(sentences[i], &translated[i].text)
                    .is_some()
            })
            .collect();
        if suspects.is_empty() {
            return Ok((translated, spent));
        }
        let retry: Vec<&Sentence> = suspects.iter().map(|&i| sentences[i]).collect();
        let stricter = summary::stricter(overrides);
        let (second, extra) = self
            .translate_once(translator, &retry, &stricter, calls)
            .await?;
        spent += extra;
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
        Ok((translated, spent))
    }

    fn degenerate_translation(&self, sentence: &Sentence, english: &str) -> Option<Degenerate> {
        let guard = &self.options.summaries.guard;
        summary::check_output(&sentence.original, english, Some(Script::Latin), guard)
    }

    /// Translates prepared sentences in one call: every piece of every sentence goes to the
    /// model, and each sentence's pieces are joined back.
    async fn translate_once(
        &self,
        translator: &'a dyn TextGenerator,
        sentences: &[&Sentence],
        overrides: &GenerationOverrides,
        calls: &Calls<'a>,
    ) -> Result<(Vec<String>, Spent)> {
        let pieces: Vec<String> = sentences
            .iter()
            .flat_map(|s| s.pieces.iter().map(|p| p.text.clone()))
            .collect();
        let generation = calls
            .generate(translator, pieces, overrides, Stage::Translate)
            .await?;
        let mut translated = generation.texts.as_slice();
        let joined = sentences
            .iter()
            .map(|sentence| {
                let (mine, rest) = translated.split_at(sentence.pieces.len().min(translated.len()));
                translated = rest;
                sentence.join(mine)
            })
            .collect();
        Ok((joined, generation.spent))
    }

    /// Translates free-standing texts (input lines, summary sentences), each as one sentence.
    async fn translate_units(
        &self,
        translator: &'a dyn TextGenerator,
        units: &[String],
        calls: &Calls<'a>,
    ) -> Result<(Vec<Translated>, Spent)> {
        let prepared = units
            .iter()
            .map(|u| prepare_unit(translator, u))
            .collect::<Result<Vec<_>>>()?;
        let refs: Vec<&Sentence> = prepared.iter().collect();
        self.translate_sentences(translator, &refs, calls).await
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
        let calls = Calls::default();
        let units = self.translate_units(translator, &filled, &calls);
        let (texts, spent) = pool::alone(&calls, units, observer)?;
        *tokens += spent.counts;
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
    async fn summary_of(
        &self,
        release: &Release,
        paragraphs: &[ParagraphOut],
        calls: &Calls<'a>,
        spent: &mut Spent,
    ) -> Result<SummaryOut> {
        let aligned: Vec<Vec<Bilingual>> = paragraphs.iter().map(|p| p.sentences.clone()).collect();
        let summaries = &self.options.summaries;
        match (aligned.is_empty(), summaries.extractive, summaries.side) {
            (true, _, _) => {
                self.summarize_document(&release.body_text(), calls, spent)
                    .await
            }
            (false, true, _) => self.extract(aligned.concat(), calls, spent).await,
            (false, false, SummarySide::Ru) => {
                self.summarize_russian(&release.body_text(), calls, spent)
                    .await
            }
            (false, false, SummarySide::En) => self.summarize_english(&aligned, calls, spent).await,
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
        let mut summaries = self.summarize_all(&[document], observer, tokens);
        summaries.pop().expect("one summary per document")
    }

    /// `summarize` for each of `documents`, their model calls pooled (`summarize --lines`):
    /// one result per document, in order.
    pub fn summarize_all(
        &self,
        documents: &[&str],
        observer: &dyn Observer,
        tokens: &mut TokenCounts,
    ) -> Vec<Result<SummaryOut>> {
        let calls = Calls::default();
        let mut group = Group::new(&calls);
        for &document in documents {
            let calls = &calls;
            group.start(async move {
                let mut spent = Spent::default();
                let summary = self.summarize_document(document, calls, &mut spent).await;
                (summary, spent)
            });
        }
        let done = group.finish(observer).into_iter();
        done.map(|(summary, spent)| {
            *tokens += spent.counts;
            summary
        })
        .collect()
    }

    /// `summarize`, with the model calls made through `calls`.
    async fn summarize_document(
        &self,
        document: &str,
        calls: &Calls<'a>,
        spent: &mut Spent,
    ) -> Result<SummaryOut> {
        let summaries = &self.options.summaries;
        if summaries.extractive {
            let pairs = russian_sentences(document)
                .into_iter()
                .map(|ru| Bilingual::new(ru, ""))
                .collect();
            return self.extract(pairs, calls, spent).await;
        }
        match summaries.side {
            SummarySide::Ru => self.summarize_russian(document, calls, spent).await,
            SummarySide::En => {
                let aligned = self.translate_document(document, calls, spent).await?;
                self.summarize_english(&aligned, calls, spent).await
            }
        }
    }

    /// The default: the summarizer reads the Russian original (so translation errors are not
    /// summarized), and the Russian summary is translated sentence by sentence.
    async fn summarize_russian(
        &self,
        document: &str,
        calls: &Calls<'a>,
        spent: &mut Spent,
    ) -> Result<SummaryOut> {
        let summarizer = self.summarizer_model()?;
        let document = model_text(document);
        let made = self
            .guarded_summary(summarizer, &document, Script::Cyrillic, calls, spent)
            .await?;
        let ru = summary::cap_sentences(&made.text, self.options.summaries.max_sentences);
        let mut notes = made.notes;
        let en = match self.translator {
            Some(translator) => {
                let sentences = text::sentences(&ru);
                let (english, translation) =
                    self.translate_units(translator, &sentences, calls).await?;
                *spent += translation;
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
    async fn summarize_english(
        &self,
        paragraphs: &[Vec<Bilingual>],
        calls: &Calls<'a>,
        spent: &mut Spent,
    ) -> Result<SummaryOut> {
        let summarizer = self.summarizer_model()?;
        let english = paragraphs
            .iter()
            .map(|p| join_sentences(p.iter().map(|s| s.en.as_str())))
            .filter(|p| !p.is_empty())
            .collect::<Vec<_>>()
            .join("\n");
        let pairs = paragraphs.concat();
        let made = self
            .guarded_summary(summarizer, &english, Script::Latin, calls, spent)
            .await?;
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
    async fn extract(
        &self,
        pairs: Vec<Bilingual>,
        calls: &Calls<'a>,
        spent: &mut Spent,
    ) -> Result<SummaryOut> {
        let russian: Vec<String> = pairs.iter().map(|p| p.ru.clone()).collect();
        let chosen = summary::key_sentences(&russian, self.options.summaries.extract_size());
        let mut chosen: Vec<Bilingual> = chosen.into_iter().map(|i| pairs[i].clone()).collect();
        let untranslated = chosen.iter().all(|p| p.en.is_empty());
        if let (Some(translator), true, false) = (self.translator, untranslated, chosen.is_empty())
        {
            let units: Vec<String> = chosen.iter().map(|p| p.ru.clone()).collect();
            let (english, translation) = self.translate_units(translator, &units, calls).await?;
            *spent += translation;
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
    async fn translate_document(
        &self,
        document: &str,
        calls: &Calls<'a>,
        spent: &mut Spent,
    ) -> Result<Vec<Vec<Bilingual>>> {
        let translator = self.translator_model()?;
        let paragraphs: Vec<Vec<String>> = text::paragraphs(document)
            .iter()
            .map(|block| text::sentences(&block.text))
            .collect();
        let (english, translation) = self
            .translate_units(translator, &paragraphs.concat(), calls)
            .await?;
        *spent += translation;
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
    async fn guarded_summary(
        &self,
        summarizer: &'a dyn TextGenerator,
        document: &str,
        script: Script,
        calls: &Calls<'a>,
        spent: &mut Spent,
    ) -> Result<Abstract> {
        let overrides = &self.options.summary;
        let (text, chunks) = self
            .summarize_text(summarizer, document, overrides, calls, spent, 1)
            .await?;
        let Some(problem) = self.degenerate_summary(document, &text, script) else {
            return Ok(Abstract::generated(text, chunks, Vec::new()));
        };
        let mut notes = vec![format!(
            "summary rejected ({problem}); retried with stricter settings"
        )];
        let stricter = summary::stricter(overrides);
        let (retry, chunks) = self
            .summarize_text(summarizer, document, &stricter, calls, spent, 1)
            .await?;
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
    async fn summarize_text(
        &self,
        summarizer: &'a dyn TextGenerator,
        document: &str,
        overrides: &GenerationOverrides,
        calls: &Calls<'a>,
        spent: &mut Spent,
        round: usize,
    ) -> Result<(String, usize)> {
        let max = summarizer.max_input_tokens();
        let parts = if summarizer.count_tokens(document)? <= max || round >= MAX_SUMMARY_ROUNDS {
            vec![document.to_string()]
        } else {
            self.parts_that_fit(summarizer, document, max)?
        };
        let part_count = parts.len();
        let generation = calls
            .generate(summarizer, parts, overrides, Stage::Summarize)
            .await?;
        *spent += generation.spent;
        let summaries: Vec<String> = generation
            .texts
            .iter()
            .map(|s| collapse_spaces(s))
            .collect();
        if part_count == 1 {
            return Ok((summaries.into_iter().next().unwrap_or_default(), 1));
        }
        let joined = summaries.join("\n");
        let next_round =
            self.summarize_text(summarizer, &joined, overrides, calls, spent, round + 1);
        let (summary, _) = Box::pin(next_round).await?;
        Ok((summary, part_count))
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
