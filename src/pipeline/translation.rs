//! Translation: a release's title and sentences, free-standing texts and `--lines` input,
//! through the translator, guarded: a degenerate translation (a loop, far too long, still
//! Russian) is retried with stricter settings and marked.

use super::pool::{Calls, Pool, Spent};
use super::review::{glossary_terms, review, STILL_DEGENERATE};
use super::{prepare_blocks, prepare_unit, Pipeline, TextGenerator};
use crate::generate::GenerationOverrides;
use crate::guard::{self, Degenerate, Script};
use crate::io::{Bilingual, ParagraphOut, Release};
use crate::progress::{Observer, Stage};
use crate::text::{self, collapse_spaces, Sentence};
use crate::Result;

impl<'a> Pipeline<'a> {
    /// The title and every sentence of the body, in one translator call.
    pub(super) async fn translate_release(
        &self,
        translator: &'a dyn TextGenerator,
        release: &Release,
        calls: &Calls<'a>,
        spent: &mut Spent,
    ) -> Result<(Option<Bilingual>, Vec<ParagraphOut>)> {
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
        let english = self
            .translate_sentences(translator, &sentences, calls, spent)
            .await?;
        let mut english = english.into_iter();
        let mut pair = |sentence: &Sentence| {
            let translated = english.next().unwrap_or_default();
            let (names, warnings) = review(&sentence.original, &translated.text);
            let glossary = &self.options.glossary;
            let terms = glossary_terms(glossary, &sentence.original, &translated.text);
            Bilingual {
                ru: sentence.original.clone(),
                en: translated.text,
                pieces: sentence.is_split().then_some(sentence.pieces.len()),
                guard: translated.guard,
                names,
                warnings,
                terms,
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
        Ok((title, paragraphs))
    }

    /// Translates prepared sentences, guarded: sentences whose translation is degenerate
    /// (a loop, far too long, still Russian) are translated again with stricter settings, and
    /// marked whatever the second try gives.
    async fn translate_sentences(
        &self,
        translator: &'a dyn TextGenerator,
        sentences: &[&Sentence],
        calls: &Calls<'a>,
        spent: &mut Spent,
    ) -> Result<Vec<Translated>> {
        let overrides = &self.options.translation;
        let texts = self
            .translate_once(translator, sentences, overrides, calls, spent)
            .await?;
        let mut translated: Vec<Translated> = texts.into_iter().map(Translated::plain).collect();
        let suspects: Vec<usize> = (0..sentences.len())
            .filter(|&i| {
                self.degenerate_translation(sentences[i], &translated[i].text)
                    .is_some()
            })
            .collect();
        if suspects.is_empty() {
            return Ok(translated);
        }
        let retry: Vec<&Sentence> = suspects.iter().map(|&i| sentences[i]).collect();
        let stricter = guard::stricter(overrides);
        let second = self
            .translate_once(translator, &retry, &stricter, calls, spent)
            .await?;
        for (&i, text) in suspects.iter().zip(second) {
            let first = self.degenerate_translation(sentences[i], &translated[i].text);
            let again = self.degenerate_translation(sentences[i], &text);
            let guard = match (first, again) {
                (Some(first), None) => format!("{first}; retried with stricter settings"),
                (_, Some(again)) => format!("{again} {STILL_DEGENERATE}"),
                (None, None) => continue,
            };
            translated[i] = Translated {
                text,
                guard: Some(guard),
            };
        }
        Ok(translated)
    }

    fn degenerate_translation(&self, sentence: &Sentence, english: &str) -> Option<Degenerate> {
        let guard = &self.options.summaries.guard;
        guard::check_output(&sentence.original, english, Some(Script::Latin), guard)
    }

    /// Translates prepared sentences in one call: every piece of every sentence goes to the
    /// model, and each sentence's pieces are joined back.
    async fn translate_once(
        &self,
        translator: &'a dyn TextGenerator,
        sentences: &[&Sentence],
        overrides: &GenerationOverrides,
        calls: &Calls<'a>,
        spent: &mut Spent,
    ) -> Result<Vec<String>> {
        let pieces: Vec<String> = sentences
            .iter()
            .flat_map(|s| s.pieces.iter().map(|p| p.text.clone()))
            .collect();
        let generation = calls
            .generate(translator, pieces, overrides, Stage::Translate)
            .await?;
        *spent += generation.spent;
        let mut translated = generation.texts.as_slice();
        let joined = sentences
            .iter()
            .map(|sentence| {
                let (mine, rest) = translated.split_at(sentence.pieces.len().min(translated.len()));
                translated = rest;
                sentence.join(mine)
            })
            .collect();
        Ok(joined)
    }

    /// Translates free-standing texts (input lines, summary sentences), each as one sentence.
    pub(super) async fn translate_units(
        &self,
        translator: &'a dyn TextGenerator,
        units: &[String],
        calls: &Calls<'a>,
        spent: &mut Spent,
    ) -> Result<Vec<Translated>> {
        let prepared = units
            .iter()
            .map(|u| prepare_unit(translator, u))
            .collect::<Result<Vec<_>>>()?;
        let refs: Vec<&Sentence> = prepared.iter().collect();
        self.translate_sentences(translator, &refs, calls, spent)
            .await
    }

    /// Every sentence of a document with its translation, paragraph by paragraph.
    pub(super) async fn translate_document(
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
        let english = self
            .translate_units(translator, &paragraphs.concat(), calls, spent)
            .await?;
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

    /// One line of `translate --lines`, translated as one unit: a blank line gives an empty
    /// line and costs nothing.
    pub async fn translate_line(
        &self,
        line: &str,
        calls: &Calls<'a>,
        spent: &mut Spent,
    ) -> Result<String> {
        if line.trim().is_empty() {
            return Ok(String::new());
        }
        let translator = self.translator_model()?;
        let mut translated = self
            .translate_units(translator, &[line.trim().to_string()], calls, spent)
            .await?;
        Ok(collapse_spaces(&translated.pop().unwrap_or_default().text))
    }

    /// `translate --lines`: every line through [`Pipeline::translate_line`], in pooled groups
    /// of about `limit` waiting segments. `emit` gets each line's translation or failure with
    /// what it cost, in input order, as its group finishes; it returns false when nobody reads
    /// the rest, and no more lines are started.
    pub fn translate_lines(
        &self,
        lines: &[String],
        limit: usize,
        observer: &dyn Observer,
        mut emit: impl FnMut(Result<String>, Spent) -> bool,
    ) {
        let calls = Calls::default();
        let mut pool = Pool::new(&calls, limit);
        let mut reading = true;
        let mut hand_over = |done: Vec<(Result<String>, Spent)>| {
            for (line, spent) in done {
                reading = reading && emit(line, spent);
            }
            reading
        };
        for line in lines {
            let calls = &calls;
            let task = async move {
                let mut spent = Spent::default();
                (self.translate_line(line, calls, &mut spent).await, spent)
            };
            if let Some(done) = pool.start(task, observer) {
                if !hand_over(done) {
                    return;
                }
            }
        }
        hand_over(pool.finish(observer));
    }
}

/// One sentence's translation and what the guard made of it.
#[derive(Debug, Clone, Default)]
pub(super) struct Translated {
    pub(super) text: String,
    pub(super) guard: Option<String>,
}

impl Translated {
    fn plain(text: String) -> Self {
        Translated { text, guard: None }
    }
}
