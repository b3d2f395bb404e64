//! Translation: a release's title and sentences, free-standing texts and `--lines` input,
//! through the translator, guarded: a degenerate translation (a loop, far too long, still
//! Russian) is retried with stricter settings and marked.

use std::future::{poll_fn, Future};
use std::pin::pin;
use std::task::Poll;

use super::pool::{Calls, Pool, Spent};
use super::review::{glossary_terms, review, STILL_DEGENERATE};
use super::{prepare_blocks, prepare_unit, Pipeline, TextGenerator};
use crate::generate::GenerationOverrides;
use crate::guard::{self, Degenerate, Script};
use crate::io::{Bilingual, ParagraphOut, Release};
use crate::progress::{Observer, Stage};
use crate::text::numbers::SourceNumber;
use crate::text::{self, collapse_spaces, Sentence};
use crate::{Error, Result};

impl<'a> Pipeline<'a> {
    /// The title and every sentence of the body, in one translator call.
    pub(super) async fn translate_release(
        &self,
        translator: &'a dyn TextGenerator,
        release: &Release,
        calls: &Calls<'a>,
        spent: &mut Spent,
    ) -> Result<(Option<Bilingual>, Vec<ParagraphOut>)> {
        let (title, blocks) = self.segmenting(|| {
            let title = (release.title.as_deref())
                .map(|t| prepare_unit(translator, t))
                .transpose()?;
            Ok::<_, Error>((title, prepare_blocks(translator, &release.blocks)?))
        })?;
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
            let numbers = &translated.constrained_numbers;
            let (names, warnings) = review(&sentence.original, &translated.text, numbers);
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
    /// marked whatever the second try gives. A sentence whose translation lacks one of its
    /// numbers, or (with a glossary) the English of one of its terms, is translated again with
    /// constraints (the constrained beam search): the English of every term of the sentence
    /// and the first accepted English form of every missing number; the guard's retry of such
    /// a sentence keeps them. Sentences that lack nothing are translated exactly as without a
    /// glossary.
    async fn translate_sentences(
        &self,
        translator: &'a dyn TextGenerator,
        sentences: &[&Sentence],
        calls: &Calls<'a>,
        spent: &mut Spent,
    ) -> Result<Vec<Translated>> {
        let overrides = &self.options.translation;
        let texts = self
            .translate_once(translator, sentences, overrides, None, calls, spent)
            .await?;
        let mut translated: Vec<Translated> = texts.into_iter().map(Translated::plain).collect();
        // Per sentence: the constraints of each piece, and the missing numbers constrained.
        let mut constraints: Vec<Vec<Vec<String>>> = vec![Vec::new(); sentences.len()];
        let mut lacking = Vec::new();
        for (i, sentence) in sentences.iter().enumerate() {
            let missing = text::numbers::missing_numbers(&sentence.original, &translated[i].text);
            let english = &translated[i].text;
            let names = self.names_to_transliterate(&sentence.original);
            let lacks_name = names
                .iter()
                .any(|n| !text::glossary::holds(english, &n.latin));
            if missing.is_empty() && !lacks_name && !self.lacks_terms(sentence, english) {
                continue;
            }
            lacking.push(i);
            constraints[i] = (sentence.pieces.iter())
                .map(|piece| self.piece_constraints(&piece.text, &missing))
                .collect();
            // A number found in no piece (cut in two by a split) cannot be constrained.
            let in_pieces: Vec<String> = (sentence.pieces.iter())
                .flat_map(|p| text::numbers::source_numbers(&p.text))
                .map(|n| n.text)
                .collect();
            translated[i].constrained_numbers = (missing.into_iter())
                .filter(|n| in_pieces.contains(&n.text))
                .map(|n| (n.text, n.accepted[0].clone()))
                .collect();
        }
        // One more round, its two calls parked together so that every release's pool with
        // the others': degenerate translations again with stricter settings (and their
        // constraints, if any), the others that lack something with their constraints.
        let suspects: Vec<usize> = (0..sentences.len())
            .filter(|&i| {
                self.degenerate_translation(sentences[i], &translated[i].text)
                    .is_some()
            })
            .collect();
        let lacking: Vec<usize> = lacking
            .into_iter()
            .filter(|i| !suspects.contains(i))
            .collect();
        let pieces_of = |indices: &[usize]| -> Vec<Vec<String>> {
            (indices.iter())
                .flat_map(|&i| match constraints[i].is_empty() {
                    true => vec![Vec::new(); sentences[i].pieces.len()],
                    false => constraints[i].clone(),
                })
                .collect()
        };
        let again: Vec<&Sentence> = lacking.iter().map(|&i| sentences[i]).collect();
        let retry: Vec<&Sentence> = suspects.iter().map(|&i| sentences[i]).collect();
        let stricter = guard::stricter(overrides);
        let (mut spent_again, mut spent_retry) = (Spent::default(), Spent::default());
        let (constrained, second) = both(
            self.translate_once(
                translator,
                &again,
                overrides,
                Some(pieces_of(&lacking)),
                calls,
                &mut spent_again,
            ),
            self.translate_once(
                translator,
                &retry,
                &stricter,
                Some(pieces_of(&suspects)),
                calls,
                &mut spent_retry,
            ),
        )
        .await;
        *spent += spent_again;
        *spent += spent_retry;
        for (&i, text) in lacking.iter().zip(constrained?) {
            // A constrained translation that is degenerate is not kept (nor retried): the
            // sentence keeps its first translation, and its misses are reported.
            if self.degenerate_translation(sentences[i], &text).is_none() {
                translated[i].text = text;
            }
        }
        for (&i, text) in suspects.iter().zip(second?) {
            let first = self.degenerate_translation(sentences[i], &translated[i].text);
            let again = self.degenerate_translation(sentences[i], &text);
            let guard = match (first, again) {
                (Some(first), None) => format!("{first}; retried with stricter settings"),
                (_, Some(again)) => format!("{again} {STILL_DEGENERATE}"),
                (None, None) => continue,
            };
            translated[i].text = text;
            translated[i].guard = Some(guard);
        }
        Ok(translated)
    }

    fn degenerate_translation(&self, sentence: &Sentence, english: &str) -> Option<Degenerate> {
        let guard = &self.options.summaries.guard;
        guard::check_output(&sentence.original, english, Some(Script::Latin), guard)
    }

    /// Whether `english` lacks the translation of a glossary term of `sentence`.
    fn lacks_terms(&self, sentence: &Sentence, english: &str) -> bool {
        let glossary = &self.options.glossary;
        (glossary.find(&sentence.original).iter())
            .any(|found| !text::glossary::holds(english, &glossary.entries()[found.entry].en))
    }

    /// With `--names transliterate`, the person names of `text` that no glossary term covers
    /// (a glossary says how to write a name, e.g. a foreign one in Cyrillic); else none.
    fn names_to_transliterate(&self, text: &str) -> Vec<text::names::PersonName> {
        if !self.options.transliterate_names {
            return Vec::new();
        }
        let terms = self.options.glossary.find(text);
        let covered = |span: &std::ops::Range<usize>| {
            (terms.iter()).any(|t| t.span.start < span.end && span.start < t.span.end)
        };
        (text::names::find_names(text).into_iter())
            .filter(|name| !covered(&name.span) && !name.latin.is_empty())
            .collect()
    }

    /// The constraints of one piece of a sentence: the English side of the glossary terms
    /// found in it, the transliteration of its names (with `--names transliterate`), and the
    /// first accepted English form of each of its numbers that is `missing` from the
    /// sentence's translation.
    fn piece_constraints(&self, piece: &str, missing: &[SourceNumber]) -> Vec<String> {
        let glossary = &self.options.glossary;
        let mut constraints: Vec<String> = Vec::new();
        let terms = glossary.find(piece).into_iter();
        let terms = terms.map(|found| glossary.entries()[found.entry].en.clone());
        let names = self
            .names_to_transliterate(piece)
            .into_iter()
            .map(|n| n.latin);
        let numbers = (text::numbers::source_numbers(piece).into_iter())
            .filter(|n| missing.iter().any(|m| m.text == n.text))
            .map(|n| n.accepted[0].clone());
        for constraint in terms.chain(names).chain(numbers) {
            if !constraints.contains(&constraint) {
                constraints.push(constraint);
            }
        }
        constraints
    }

    /// Translates prepared sentences in one call: every piece of every sentence goes to the
    /// model, and each sentence's pieces are joined back. `constraints`: per piece, in order,
    /// the texts its translation must hold (a piece without any is translated as in a call
    /// without constraints).
    async fn translate_once(
        &self,
        translator: &'a dyn TextGenerator,
        sentences: &[&Sentence],
        overrides: &GenerationOverrides,
        constraints: Option<Vec<Vec<String>>>,
        calls: &Calls<'a>,
        spent: &mut Spent,
    ) -> Result<Vec<String>> {
        let pieces: Vec<String> = sentences
            .iter()
            .flat_map(|s| s.pieces.iter().map(|p| p.text.clone()))
            .collect();
        let stage = Stage::Translate;
        let generation = match constraints {
            Some(constraints) => {
                let call =
                    calls.generate_constrained(translator, pieces, constraints, overrides, stage);
                call.await?
            }
            None => calls.generate(translator, pieces, overrides, stage).await?,
        };
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

/// One sentence's translation, what the guard made of it, and the numbers its first
/// translation lacked that were then given as constraints: (as written in the source, the
/// English form constrained to).
#[derive(Debug, Clone, Default)]
pub(super) struct Translated {
    pub(super) text: String,
    pub(super) guard: Option<String>,
    pub(super) constrained_numbers: Vec<(String, String)>,
}

impl Translated {
    fn plain(text: String) -> Self {
        Translated {
            text,
            ..Translated::default()
        }
    }
}

/// Runs two futures of one task together: both park their model calls at once, so that the
/// group runs each kind once for all its tasks.
async fn both<A, B>(a: impl Future<Output = A>, b: impl Future<Output = B>) -> (A, B) {
    let (mut a, mut b) = (pin!(a), pin!(b));
    let (mut first, mut second) = (None, None);
    poll_fn(|cx| {
        if first.is_none() {
            if let Poll::Ready(out) = a.as_mut().poll(cx) {
                first = Some(out);
            }
        }
        if second.is_none() {
            if let Poll::Ready(out) = b.as_mut().poll(cx) {
                second = Some(out);
            }
        }
        match (first.is_some(), second.is_some()) {
            (true, true) => Poll::Ready((first.take().unwrap(), second.take().unwrap())),
            _ => Poll::Pending,
        }
    })
    .await
}
