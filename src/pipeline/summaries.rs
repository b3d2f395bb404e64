//! Summaries: of a release (from its original or its translation, or an extract), of a
//! free-standing document and of `--lines` input; guarded (a degenerate summary is retried,
//! then replaced by the lead sentences), and chunked when the document is longer than the
//! summarizer's input limit.

use super::pool::{self, Calls, Pool, Spent};
use super::{prepare_unit_within, Pipeline, TextGenerator};
use crate::generate::{GenerationOverrides, TokenCounts};
use crate::guard::{self, Degenerate, Script};
use crate::io::output::join_sentences;
use crate::io::{Bilingual, ParagraphOut, Release, SummaryOut};
use crate::progress::{Observer, Stage};
use crate::summary::{self, SummarySide};
use crate::text::{self, collapse_spaces};
use crate::Result;

/// How deep chunked summarization may recurse (parts, summaries of parts, ...).
const MAX_SUMMARY_ROUNDS: usize = 3;

impl<'a> Pipeline<'a> {
    /// The summary of a free-standing document (a release whose body was not translated, or
    /// one line of `summarize --lines`), made as the options ask.
    pub fn summarize(
        &self,
        document: &str,
        observer: &dyn Observer,
        tokens: &mut TokenCounts,
    ) -> Result<SummaryOut> {
        let calls = Calls::default();
        let mut spent = Spent::default();
        let summary = pool::alone(
            &calls,
            self.summarize_document(document, &calls, &mut spent),
            observer,
        );
        *tokens += spent.counts;
        summary
    }

    /// `summarize --lines`: every line a document, summarized as [`Pipeline::summarize`] does,
    /// in pooled groups of about `limit` waiting segments. `emit` gets each line's summary
    /// (None for a blank line, which costs nothing) or failure with what it cost, in input
    /// order, as its group finishes; it returns false when nobody reads the rest, and no more
    /// lines are started.
    pub fn summarize_lines(
        &self,
        documents: &[String],
        limit: usize,
        observer: &dyn Observer,
        mut emit: impl FnMut(Result<Option<SummaryOut>>, Spent) -> bool,
    ) {
        let calls = Calls::default();
        let mut pool = Pool::new(&calls, limit);
        let mut reading = true;
        let mut hand_over = |done: Vec<(Result<Option<SummaryOut>>, Spent)>| {
            for (summary, spent) in done {
                reading = reading && emit(summary, spent);
            }
            reading
        };
        for document in documents {
            let calls = &calls;
            let task = async move {
                let mut spent = Spent::default();
                let summary = match document.trim().is_empty() {
                    true => Ok(None),
                    false => (self.summarize_document(document, calls, &mut spent).await).map(Some),
                };
                (summary, spent)
            };
            if let Some(done) = pool.start(task, observer) {
                if !hand_over(done) {
                    return;
                }
            }
        }
        hand_over(pool.finish(observer));
    }

    /// The summary of a processed release. The sentence pairs of its translation, when there
    /// is one, serve the extract and the English-side summary without translating twice.
    pub(super) async fn summary_of(
        &self,
        release: &Release,
        paragraphs: &[ParagraphOut],
        calls: &Calls<'a>,
        spent: &mut Spent,
    ) -> Result<SummaryOut> {
        let aligned: Vec<Vec<Bilingual>> = paragraphs.iter().map(|p| p.sentences.clone()).collect();
        let summaries = &self.options.summaries;
        if self.prompted() {
            return self
                .summarize_prompted(&release.body_text(), calls, spent)
                .await;
        }
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
        if self.prompted() {
            return self.summarize_prompted(document, calls, spent).await;
        }
        match summaries.side {
            SummarySide::Ru => self.summarize_russian(document, calls, spent).await,
            SummarySide::En => {
                let aligned = self.translate_document(document, calls, spent).await?;
                self.summarize_english(&aligned, calls, spent).await
            }
        }
    }

    /// Whether summaries are asked of an instruction-following LLM, in both languages, rather
    /// than made by a seq2seq summarizer in one and translated (`prompted.rs`).
    fn prompted(&self) -> bool {
        let instruct = self.summarizer.is_some_and(|s| s.follows_instructions());
        instruct && !self.options.summaries.extractive
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
                let english = self
                    .translate_units(translator, &sentences, calls, spent)
                    .await?;
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
            languages: None,
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
            languages: None,
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
            let english = self
                .translate_units(translator, &units, calls, spent)
                .await?;
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
            languages: None,
        })
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
        let stricter = guard::stricter(overrides);
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
        guard::check_output(
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
            parts_that_fit(summarizer, document, max)?
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
}

/// Packs whole lines (paragraphs) into parts of at most `max` tokens; a paragraph that is
/// too long alone is cut into sentences and then pieces.
pub(super) fn parts_that_fit(
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
                let unit = prepare_unit_within(summarizer, &sentence, max)?;
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
pub(super) fn model_text(document: &str) -> String {
    document
        .lines()
        .map(text::normalize_for_model)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The sentences of a document, paragraph by paragraph.
pub(super) fn russian_sentences(document: &str) -> Vec<String> {
    text::paragraphs(document)
        .iter()
        .flat_map(|block| text::sentences(&block.text))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::{Generated, ModelInfo};

    /// Counts words as tokens, with an input limit of `limit` words; never generates.
    struct Words {
        info: ModelInfo,
        limit: usize,
    }

    impl Words {
        fn limit(limit: usize) -> Self {
            Words {
                info: ModelInfo::default(),
                limit,
            }
        }
    }

    impl TextGenerator for Words {
        fn info(&self) -> &ModelInfo {
            &self.info
        }
        fn count_tokens(&self, text: &str) -> Result<usize> {
            Ok(text.split_whitespace().count())
        }
        fn max_input_tokens(&self) -> usize {
            self.limit
        }
        fn settings(&self, _: &GenerationOverrides) -> serde_json::Value {
            serde_json::Value::Null
        }
        fn generate(
            &self,
            _: &[String],
            _: &GenerationOverrides,
            _: &dyn Fn(usize, usize),
        ) -> Result<Vec<Generated>> {
            unreachable!("parts are cut without generating")
        }
    }

    fn words(text: &str) -> usize {
        text.split_whitespace().count()
    }

    #[test]
    fn parts_respect_the_token_limit_and_keep_order() {
        let parts = parts_that_fit(&Words::limit(5), "a b c\nd e\nf g h i\nj", 5).unwrap();
        assert_eq!(parts, ["a b c\nd e", "f g h i\nj"]);
        assert!(parts.iter().all(|p| words(p) <= 5));
    }

    #[test]
    fn an_oversized_paragraph_is_cut_into_pieces_that_fit() {
        let document = "a\nb c d e f g\nh";
        let parts = parts_that_fit(&Words::limit(3), document, 3).unwrap();
        assert!(parts.len() >= 3, "{parts:?}");
        assert!(parts.iter().all(|p| words(p) <= 3), "{parts:?}");
        let all: Vec<&str> = parts.iter().flat_map(|p| p.split_whitespace()).collect();
        assert_eq!(all, document.split_whitespace().collect::<Vec<_>>());
    }
}
