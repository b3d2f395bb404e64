//! Summaries as text: how long, how many sentences, and the extractive summaries that need
//! no model (lead and key sentences, and the Russian sentences that cover an English summary).
//!
//! Everything here works on text and sentence lists; the pipeline runs the models, and the
//! guard against degenerate output is `crate::guard`'s.

use std::collections::{HashMap, HashSet};

use crate::guard::words;

/// How long a summary is: mapped to the generated-token bounds of the summarizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SummaryLength {
    Short,
    #[default]
    Medium,
    Long,
}

impl SummaryLength {
    /// (min_new_tokens, max_new_tokens). Medium keeps the model card's target limit of 200
    /// tokens as the upper bound of `long`, and sits in between.
    pub fn token_bounds(self) -> (usize, usize) {
        match self {
            Self::Short => (8, 60),
            Self::Medium => (24, 120),
            Self::Long => (48, 200),
        }
    }
}

/// Which side the summarizer reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SummarySide {
    /// Summarize the Russian original, then translate the summary (errors of the translation
    /// are not summarized).
    #[default]
    Ru,
    /// Summarize the English translation with an English summarizer.
    En,
}

/// The version of the summary prompts below, recorded with every LLM summary: change it
/// whenever their wording changes, so a digest can be traced to the prompt that made it.
pub const PROMPT_TEMPLATE_VERSION: &str = "summary-prompt-v1";

/// The language an instruction-following summarizer is asked to write in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SummaryLanguage {
    Ru,
    En,
}

impl SummaryLanguage {
    /// The script its summary must be written in (the guard's language check).
    pub fn script(self) -> crate::guard::Script {
        match self {
            Self::Ru => crate::guard::Script::Cyrillic,
            Self::En => crate::guard::Script::Latin,
        }
    }
}

/// The user turn that asks an instruction-tuned LLM for a summary of `document` (Russian
/// text) in `language`, in at most `sentences` sentences. The document comes first and the
/// request after it, so the Russian and English prompts of one release share everything up to
/// the request, and the engine can reuse the prompt's KV cache for the second (the chat
/// template adds the same header to both). Both requests are written in the language asked
/// for: small models answer in the language of the instruction more reliably than in one
/// named in another language. The `retry` after a rejected summary adds a line against the
/// usual faults (the wrong language, repetition): with greedy decoding the same prompt would
/// give the same answer again.
pub fn summary_prompt(
    document: &str,
    language: SummaryLanguage,
    sentences: usize,
    retry: bool,
) -> String {
    let request = match language {
        SummaryLanguage::Ru => format!(
            "Кратко изложи этот пресс-релиз на русском языке: не больше {sentences} {}. \
             Только факты из текста (кто, что, где, когда, цифры), без вступления, \
             заголовка, списков и оценок. Ответь только текстом изложения.",
            russian_sentences_word(sentences)
        ),
        SummaryLanguage::En => format!(
            "Summarize this press release in English in at most {sentences} {}. \
             Only facts from the text (who, what, where, when, figures), with no preamble, \
             heading, list or comment. Answer with the summary only.",
            if sentences == 1 {
                "sentence"
            } else {
                "sentences"
            }
        ),
    };
    let insist = match (retry, language) {
        (false, _) => "",
        (true, SummaryLanguage::Ru) => {
            "\nПиши только по-русски, кириллицей, своими словами и без повторов."
        }
        (true, SummaryLanguage::En) => {
            "\nWrite in English only, in your own words, without repeating yourself."
        }
    };
    format!("Пресс-релиз:\n\n{}\n\n{request}{insist}", document.trim())
}

/// "sentences" after "не больше N": the genitive, singular after 1, 21, 31... (not 11).
fn russian_sentences_word(n: usize) -> &'static str {
    if n % 10 == 1 && n % 100 != 11 {
        "предложения"
    } else {
        "предложений"
    }
}

/// Keeps the first `max` sentences of a summary (`--summary-sentences`).
pub fn cap_sentences(summary: &str, max: Option<usize>) -> String {
    match max {
        Some(max) => crate::text::sentences(summary)
            .into_iter()
            .take(max)
            .collect::<Vec<_>>()
            .join(" "),
        None => summary.to_string(),
    }
}

/// Indices (in document order) of the `n` sentences that best represent the text: the lead
/// sentence, then the sentences whose content words are most frequent across the release
/// (a centroid score, normalized by length so long sentences do not win by size alone).
/// Used by `--extractive` and as the fallback when a generated summary is degenerate.
pub fn key_sentences(sentences: &[String], n: usize) -> Vec<usize> {
    if sentences.is_empty() || n == 0 {
        return Vec::new();
    }
    let frequency = content_word_frequency(sentences);
    let mut scored: Vec<(usize, f64)> = sentences
        .iter()
        .enumerate()
        .skip(1)
        .map(|(i, s)| (i, centroid_score(s, &frequency)))
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut chosen: Vec<usize> = std::iter::once(0)
        .chain(scored.into_iter().map(|(i, _)| i))
        .take(n)
        .collect();
    chosen.sort_unstable();
    chosen
}

fn content_word_frequency(sentences: &[String]) -> HashMap<String, usize> {
    let mut frequency = HashMap::new();
    for sentence in sentences {
        let unique: HashSet<String> = words(sentence).filter(|w| is_content_word(w)).collect();
        for word in unique {
            *frequency.entry(word).or_default() += 1;
        }
    }
    frequency
}

fn centroid_score(sentence: &str, frequency: &HashMap<String, usize>) -> f64 {
    let content: Vec<String> = words(sentence).filter(|w| is_content_word(w)).collect();
    if content.is_empty() {
        return 0.0;
    }
    let total: usize = content
        .iter()
        .map(|w| frequency.get(w).copied().unwrap_or(0))
        .sum();
    total as f64 / (content.len() as f64).sqrt()
}

/// Words of four letters or more carry the content in both Russian and English; shorter ones
/// are mostly prepositions, conjunctions and articles.
fn is_content_word(word: &str) -> bool {
    word.chars().count() >= 4 && !word.chars().all(|c| c.is_ascii_digit())
}

/// For `--summarize-from en`: the Russian summary is the extract of source sentences whose
/// English translations best cover the English summary. Coverage is greedy: each step takes
/// the sentence that adds the most summary words not yet covered (ROUGE-1 recall), until
/// nothing is added or `max` sentences are taken. Returns indices in document order.
pub fn covering_sentences(translations: &[String], summary: &str, max: usize) -> Vec<usize> {
    let mut uncovered: HashSet<String> = words(summary).filter(|w| is_content_word(w)).collect();
    let sentence_words: Vec<HashSet<String>> = translations
        .iter()
        .map(|t| words(t).filter(|w| is_content_word(w)).collect())
        .collect();
    let mut chosen = Vec::new();
    while chosen.len() < max && !uncovered.is_empty() {
        let best = sentence_words
            .iter()
            .enumerate()
            .filter(|(i, _)| !chosen.contains(i))
            .map(|(i, ws)| (i, ws.intersection(&uncovered).count()))
            .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)));
        match best {
            Some((i, gain)) if gain > 0 => {
                for w in &sentence_words[i] {
                    uncovered.remove(w);
                }
                chosen.push(i);
            }
            _ => break,
        }
    }
    if chosen.is_empty() && !translations.is_empty() {
        chosen.push(0);
    }
    chosen.sort_unstable();
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn key_sentences_start_with_the_lead_and_follow_document_order() {
        let sentences = strings(&[
            "Полиция провела операцию по борьбе с киберпреступностью.",
            "Погода была хорошей.",
            "В ходе операции по борьбе с киберпреступностью полиция задержала десять человек.",
            "Операция по борьбе с киберпреступностью продолжается.",
        ]);
        let chosen = key_sentences(&sentences, 2);
        assert_eq!(chosen[0], 0);
        assert_eq!(chosen.len(), 2);
        assert_ne!(chosen[1], 1, "the off-topic sentence must not be chosen");
        assert!(key_sentences(&[], 3).is_empty());
    }

    #[test]
    fn the_two_prompts_of_a_release_share_the_document_as_their_prefix() {
        let document = "Полиция задержала подозреваемого.\nОн дал показания.";
        let ru = summary_prompt(document, SummaryLanguage::Ru, 3, false);
        let en = summary_prompt(document, SummaryLanguage::En, 1, false);
        let shared = ru
            .chars()
            .zip(en.chars())
            .take_while(|(a, b)| a == b)
            .count();
        assert!(shared > document.chars().count(), "{ru}\n{en}");
        assert!(ru.ends_with("Ответь только текстом изложения."), "{ru}");
        assert!(ru.contains("не больше 3 предложений"), "{ru}");
        assert!(en.contains("at most 1 sentence."), "{en}");
        let retry = summary_prompt(document, SummaryLanguage::Ru, 3, true);
        assert!(
            retry.starts_with(&ru) && retry.ends_with("без повторов."),
            "{retry}"
        );
        assert_eq!(russian_sentences_word(21), "предложения");
        assert_eq!(russian_sentences_word(11), "предложений");
    }

    #[test]
    fn covering_sentences_pick_what_the_summary_talks_about() {
        let translations = strings(&[
            "The ministry published statistics for the year.",
            "Road accidents decreased by ten percent.",
            "The minister thanked the traffic police.",
        ]);
        let chosen = covering_sentences(
            &translations,
            "Road accidents decreased, statistics show.",
            3,
        );
        assert_eq!(chosen, vec![0, 1]);
    }
}
