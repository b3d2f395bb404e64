//! Summaries by an instruction-following LLM ([`TextGenerator::follows_instructions`]): one
//! prompt per language, both from the Russian text, so neither summary goes through the
//! translator and no model's errors stack on another's. The two prompts of a release go to
//! the model in one call and share the document as their prefix (`summary::summary_prompt`),
//! so an engine with prefix reuse reads the release once.
//!
//! A release too long for the model's context is condensed first, as the seq2seq path chunks:
//! paragraph-aligned parts that fit are summarized in Russian, then the joined part summaries
//! are summarized in both languages. Each language is guarded on its own
//! (`guard::check_summary`: length, loops, and the language check); one that fails is retried
//! with the stricter settings, then replaced by the lead sentences (translated for English
//! when there is a translator), and the JSON says which language fell back and why.

use super::pool::{Calls, Spent};
use super::summaries::{model_text, parts_that_fit, russian_sentences};
use super::{Pipeline, TextGenerator};
use crate::generate::GenerationOverrides;
use crate::guard::{self, Degenerate};
use crate::io::output::join_sentences;
use crate::io::{SummaryMethods, SummaryOut};
use crate::progress::Stage;
use crate::summary::{self, summary_prompt, SummaryLanguage};
use crate::text::collapse_spaces;
use crate::Result;

/// How deep condensing may recurse (parts, summaries of parts, ...), as for seq2seq.
const MAX_ROUNDS: usize = 3;

const LANGUAGES: [SummaryLanguage; 2] = [SummaryLanguage::Ru, SummaryLanguage::En];

/// One language's summary and how it was made.
struct Side {
    text: String,
    method: &'static str,
}

impl<'a> Pipeline<'a> {
    /// Both summaries of `document` (Russian text) by the instruction-following summarizer.
    pub(super) async fn summarize_prompted(
        &self,
        document: &str,
        calls: &Calls<'a>,
        spent: &mut Spent,
    ) -> Result<SummaryOut> {
        let llm = self.summarizer_model()?;
        let sentences = self.options.summaries.extract_size();
        let document = model_text(document);
        let overrides = &self.options.summary;
        let (text, chunks) = self
            .condense(llm, &document, sentences, overrides, calls, spent, 1)
            .await?;
        let mut notes = Vec::new();
        let first = self
            .ask(
                llm, &text, &LANGUAGES, sentences, false, overrides, calls, spent,
            )
            .await?;
        let mut sides: Vec<Option<Side>> = Vec::new();
        let mut failed = Vec::new();
        for (language, output) in LANGUAGES.iter().zip(first) {
            match self.degenerate(&text, &output, *language) {
                None => sides.push(Some(generated(output, chunks))),
                Some(problem) => {
                    notes.push(format!(
                        "{} summary rejected ({problem}); retried with stricter settings",
                        name(*language)
                    ));
                    failed.push(*language);
                    sides.push(None);
                }
            }
        }
        if !failed.is_empty() {
            let stricter = guard::stricter(overrides);
            let retry = self
                .ask(
                    llm, &text, &failed, sentences, true, &stricter, calls, spent,
                )
                .await?;
            for (language, output) in failed.iter().zip(retry) {
                let index = LANGUAGES.iter().position(|l| l == language).unwrap_or(0);
                if let Some(problem) = self.degenerate(&text, &output, *language) {
                    notes.push(format!(
                        "{} retry rejected too ({problem}); fell back to the lead sentences",
                        name(*language)
                    ));
                    continue;
                }
                sides[index] = Some(generated(output, chunks));
            }
        }
        let lead: Vec<String> = russian_sentences(&document)
            .into_iter()
            .take(sentences)
            .collect();
        let ru = match sides[0].take() {
            Some(side) => side,
            None => Side {
                text: lead.join(" "),
                method: "lead-fallback",
            },
        };
        let en = match sides[1].take() {
            Some(side) => side,
            None => self.english_lead(&lead, &mut notes, calls, spent).await?,
        };
        let fell_back = ru.method == "lead-fallback" || en.method == "lead-fallback";
        Ok(SummaryOut {
            ru: summary::cap_sentences(&ru.text, Some(sentences)),
            en: summary::cap_sentences(&en.text, Some(sentences)),
            // A fall-back on either side holds the release for review (`--strict`).
            method: match (fell_back, chunks > 1) {
                (true, _) => "lead-fallback",
                (false, true) => "llm-chunked",
                (false, false) => "llm",
            }
            .into(),
            chunks,
            notes,
            languages: Some(SummaryMethods {
                ru: ru.method.into(),
                en: en.method.into(),
            }),
        })
    }

    /// The English fall-back: the lead sentences translated, when there is a translator.
    async fn english_lead(
        &self,
        lead: &[String],
        notes: &mut Vec<String>,
        calls: &Calls<'a>,
        spent: &mut Spent,
    ) -> Result<Side> {
        let Some(translator) = self.translator else {
            notes.push(
                "no translator for the English lead sentences: English summary left empty".into(),
            );
            return Ok(Side {
                text: String::new(),
                method: "lead-fallback",
            });
        };
        let english = self.translate_units(translator, lead, calls, spent).await?;
        Ok(Side {
            text: join_sentences(english.iter().map(|t| t.text.as_str())),
            method: "lead-fallback",
        })
    }

    /// One prompt per language, in one call (so they pool and share their prefix); a `retry`
    /// asks more insistently (`summary::summary_prompt`).
    #[allow(clippy::too_many_arguments)]
    async fn ask(
        &self,
        llm: &'a dyn TextGenerator,
        text: &str,
        languages: &[SummaryLanguage],
        sentences: usize,
        retry: bool,
        overrides: &GenerationOverrides,
        calls: &Calls<'a>,
        spent: &mut Spent,
    ) -> Result<Vec<String>> {
        let prompts = (languages.iter())
            .map(|l| summary_prompt(text, *l, sentences, retry))
            .collect();
        let generation = calls
            .generate(llm, prompts, overrides, Stage::Summarize)
            .await?;
        *spent += generation.spent;
        Ok(generation.texts.iter().map(|t| clean(t)).collect())
    }

    fn degenerate(
        &self,
        text: &str,
        summary: &str,
        language: SummaryLanguage,
    ) -> Option<Degenerate> {
        let limits = &self.options.summaries.guard;
        guard::check_summary(text, summary, language.script(), limits)
    }

    /// `document` as it is when both prompts fit the model's input limit; otherwise the
    /// Russian summaries of parts that fit, joined (and condensed again, up to
    /// [`MAX_ROUNDS`]), and the number of parts. Nothing is silently cut: past the last round
    /// the model's own input check fails the release with a message.
    #[allow(clippy::too_many_arguments)]
    async fn condense(
        &self,
        llm: &'a dyn TextGenerator,
        document: &str,
        sentences: usize,
        overrides: &GenerationOverrides,
        calls: &Calls<'a>,
        spent: &mut Spent,
        round: usize,
    ) -> Result<(String, usize)> {
        let max = llm.max_input_tokens();
        let longest = LANGUAGES
            .iter()
            .map(|l| llm.count_tokens(&summary_prompt(document, *l, sentences, true)))
            .try_fold(0, |most, n| n.map(|n| most.max(n)))?;
        if longest <= max || round >= MAX_ROUNDS {
            return Ok((document.to_string(), 1));
        }
        // What the request around a part costs, beyond the part's own tokens.
        let overhead = LANGUAGES
            .iter()
            .map(|l| llm.count_tokens(&summary_prompt("", *l, sentences, true)))
            .try_fold(0, |most, n| n.map(|n| most.max(n)))?
            .saturating_sub(llm.count_tokens("")?);
        let budget = max.saturating_sub(overhead).max(1);
        let parts = parts_that_fit(llm, document, budget)?;
        let count = parts.len();
        let prompts = (parts.iter())
            .map(|p| summary_prompt(p, SummaryLanguage::Ru, sentences, false))
            .collect();
        let generation = calls
            .generate(llm, prompts, overrides, Stage::Summarize)
            .await?;
        *spent += generation.spent;
        let joined = (generation.texts.iter())
            .map(|t| clean(t))
            .collect::<Vec<_>>()
            .join("\n");
        let next = self.condense(llm, &joined, sentences, overrides, calls, spent, round + 1);
        let (text, _) = Box::pin(next).await?;
        Ok((text, count))
    }
}

fn generated(text: String, chunks: usize) -> Side {
    Side {
        text,
        method: if chunks > 1 { "llm-chunked" } else { "llm" },
    }
}

fn name(language: SummaryLanguage) -> &'static str {
    match language {
        SummaryLanguage::Ru => "Russian",
        SummaryLanguage::En => "English",
    }
}

/// An answer as a summary: one line, without the markdown emphasis and the label
/// ("Summary:", "Изложение:") small models like to put first.
fn clean(answer: &str) -> String {
    let text = collapse_spaces(&answer.replace("**", ""));
    let text = text.trim();
    for label in ["Summary:", "Изложение:", "Краткое изложение:", "Резюме:"]
    {
        if let Some(rest) = text.strip_prefix(label) {
            return rest.trim().to_string();
        }
    }
    text.to_string()
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::generate::{Generated, ModelInfo};
    use crate::pipeline::pool::{self, Calls};
    use crate::pipeline::{PipelineOptions, SummaryOptions};
    use crate::progress::Silent;

    /// An instruction-following stand-in: counts words as tokens, answers each summary prompt
    /// in the language its request is written in (or always in English when `english_only`),
    /// and records every call's inputs and overrides.
    #[derive(Default)]
    struct Llm {
        info: ModelInfo,
        limit: usize,
        english_only: bool,
        calls: Mutex<Vec<(Vec<String>, GenerationOverrides)>>,
    }

    impl TextGenerator for Llm {
        fn info(&self) -> &ModelInfo {
            &self.info
        }
        fn count_tokens(&self, text: &str) -> Result<usize> {
            Ok(text.split_whitespace().count() + 2)
        }
        fn max_input_tokens(&self) -> usize {
            self.limit
        }
        fn settings(&self, _: &GenerationOverrides) -> serde_json::Value {
            serde_json::Value::Null
        }
        fn follows_instructions(&self) -> bool {
            true
        }
        fn generate(
            &self,
            inputs: &[String],
            overrides: &GenerationOverrides,
            _: &dyn Fn(usize, usize),
        ) -> Result<Vec<Generated>> {
            let mut calls = self.calls.lock().unwrap();
            calls.push((inputs.to_vec(), overrides.clone()));
            let answer = |prompt: &String| match prompt.contains("Summarize") || self.english_only {
                true => "**Summary:** The police detained a suspect. He confessed.",
                false => "Полиция задержала подозреваемого. Он признался.",
            };
            Ok(inputs
                .iter()
                .map(|prompt| Generated {
                    text: answer(prompt).into(),
                    input_tokens: 1,
                    output_tokens: 1,
                })
                .collect())
        }
    }

    /// A translator stand-in for the English fall-back.
    #[derive(Default)]
    struct Translator(ModelInfo);

    impl TextGenerator for Translator {
        fn info(&self) -> &ModelInfo {
            &self.0
        }
        fn count_tokens(&self, text: &str) -> Result<usize> {
            Ok(text.split_whitespace().count())
        }
        fn max_input_tokens(&self) -> usize {
            100
        }
        fn settings(&self, _: &GenerationOverrides) -> serde_json::Value {
            serde_json::Value::Null
        }
        fn generate(
            &self,
            inputs: &[String],
            _: &GenerationOverrides,
            _: &dyn Fn(usize, usize),
        ) -> Result<Vec<Generated>> {
            Ok((inputs.iter())
                .map(|_| Generated {
                    text: "The lead sentence in English.".into(),
                    input_tokens: 1,
                    output_tokens: 1,
                })
                .collect())
        }
    }

    const RELEASE: &str = "Полиция задержала подозреваемого в краже.\n\
                           Он признался. Похищенное вернули владельцу.";

    fn summarize(llm: &Llm, translator: Option<&Translator>, document: &str) -> SummaryOut {
        let options = PipelineOptions {
            summarize: true,
            summaries: SummaryOptions {
                max_sentences: Some(2),
                ..SummaryOptions::default()
            },
            ..PipelineOptions::default()
        };
        let translator = translator.map(|t| t as &dyn TextGenerator);
        let pipeline = Pipeline::new(translator, Some(llm), options).unwrap();
        let calls = Calls::default();
        let mut spent = Spent::default();
        let task = pipeline.summarize_prompted(document, &calls, &mut spent);
        pool::alone(&calls, task, &Silent).unwrap()
    }

    #[test]
    fn both_languages_come_from_one_call_on_the_russian_text() {
        let llm = Llm {
            limit: 1000,
            ..Llm::default()
        };
        let summary = summarize(&llm, None, RELEASE);
        assert_eq!(
            summary.ru,
            "Полиция задержала подозреваемого. Он признался."
        );
        assert_eq!(summary.en, "The police detained a suspect. He confessed.");
        assert_eq!(summary.method, "llm");
        assert_eq!(summary.languages.as_ref().unwrap().en, "llm");
        assert!(summary.notes.is_empty(), "{:?}", summary.notes);
        let calls = llm.calls.lock().unwrap();
        assert_eq!(calls.len(), 1, "one call for both languages");
        let prompts = &calls[0].0;
        assert_eq!(prompts.len(), 2);
        assert!(prompts
            .iter()
            .all(|p| p.contains("Похищенное вернули владельцу.")));
        assert!(prompts[0].contains("на русском языке") && prompts[1].contains("in English"));
    }

    #[test]
    fn a_summary_in_the_wrong_language_is_retried_then_replaced_by_the_lead() {
        let llm = Llm {
            limit: 1000,
            english_only: true,
            ..Llm::default()
        };
        let summary = summarize(&llm, Some(&Translator::default()), RELEASE);
        assert_eq!(
            summary.ru,
            "Полиция задержала подозреваемого в краже. Он признался."
        );
        assert_eq!(summary.en, "The police detained a suspect. He confessed.");
        assert_eq!(summary.method, "lead-fallback");
        let languages = summary.languages.unwrap();
        assert_eq!(
            (languages.ru.as_str(), languages.en.as_str()),
            ("lead-fallback", "llm")
        );
        assert_eq!(summary.notes.len(), 2, "{:?}", summary.notes);
        assert!(summary.notes[0].starts_with("Russian summary rejected (not in Russian"));
        assert!(summary.notes[1].contains("fell back to the lead sentences"));
        let calls = llm.calls.lock().unwrap();
        assert_eq!(calls.len(), 2);
        // Only the failed language is asked again, more insistently, with the stricter
        // settings.
        assert_eq!(calls[1].0.len(), 1);
        assert!(
            calls[1].0[0].ends_with("без повторов."),
            "{}",
            calls[1].0[0]
        );
        assert_eq!(calls[1].1, guard::stricter(&GenerationOverrides::default()));
    }

    #[test]
    fn the_english_fall_back_is_the_translated_lead() {
        // A model whose English answers are loops.
        struct Looping(Llm);
        impl TextGenerator for Looping {
            fn info(&self) -> &ModelInfo {
                self.0.info()
            }
            fn count_tokens(&self, text: &str) -> Result<usize> {
                self.0.count_tokens(text)
            }
            fn max_input_tokens(&self) -> usize {
                1000
            }
            fn settings(&self, o: &GenerationOverrides) -> serde_json::Value {
                self.0.settings(o)
            }
            fn follows_instructions(&self) -> bool {
                true
            }
            fn generate(
                &self,
                inputs: &[String],
                o: &GenerationOverrides,
                p: &dyn Fn(usize, usize),
            ) -> Result<Vec<Generated>> {
                let mut out = self.0.generate(inputs, o, p)?;
                for (g, prompt) in out.iter_mut().zip(inputs) {
                    if prompt.contains("Summarize") {
                        g.text = "the police the police the police the police the police".into();
                    }
                }
                Ok(out)
            }
        }
        let options = PipelineOptions {
            summarize: true,
            ..PipelineOptions::default()
        };
        let llm = Looping(Llm::default());
        let translator = Translator::default();
        let pipeline = Pipeline::new(Some(&translator), Some(&llm), options).unwrap();
        let calls = Calls::default();
        let mut spent = Spent::default();
        let task = pipeline.summarize_prompted(RELEASE, &calls, &mut spent);
        let summary = pool::alone(&calls, task, &Silent).unwrap();
        assert_eq!(
            summary.ru,
            "Полиция задержала подозреваемого. Он признался."
        );
        assert!(
            summary.en.starts_with("The lead sentence in English."),
            "{}",
            summary.en
        );
        assert_eq!(summary.languages.unwrap().en, "lead-fallback");
        assert!(
            summary.notes[0]
                .starts_with("English summary rejected (\"police the police\" repeated"),
            "{:?}",
            summary.notes
        );
    }

    #[test]
    fn a_release_longer_than_the_context_is_condensed_in_russian_first() {
        let llm = Llm {
            limit: 60,
            ..Llm::default()
        };
        let paragraph =
            "Сотрудники полиции провели большую операцию в городе и задержали нескольких человек.";
        let document = [paragraph; 8].join("\n");
        let summary = summarize(&llm, None, &document);
        assert_eq!(summary.method, "llm-chunked");
        assert!(summary.chunks > 1, "{}", summary.chunks);
        let calls = llm.calls.lock().unwrap();
        let (parts, _) = &calls[0];
        assert_eq!(parts.len(), summary.chunks);
        assert!(parts.iter().all(|p| p.contains("на русском языке")));
        assert!(
            parts.iter().all(|p| llm.count_tokens(p).unwrap() <= 60),
            "{parts:?}"
        );
        // The last call asks for both languages, of the joined part summaries.
        let (last, _) = calls.last().unwrap();
        assert_eq!(last.len(), 2);
        assert!(last[1].contains("Полиция задержала подозреваемого."));
    }

    #[test]
    fn answers_lose_labels_emphasis_and_line_breaks() {
        assert_eq!(
            clean("**Summary:** Police\n detained  a man."),
            "Police detained a man."
        );
        assert_eq!(clean("Изложение: Полиция задержала."), "Полиция задержала.");
        assert_eq!(clean("  Plain. "), "Plain.");
    }
}
