//! Summaries: how long, how a release too long for the summarizer is cut into parts, the
//! guards against degenerate output, and the extractive summaries that need no model.
//!
//! Everything here works on text and sentence lists; the pipeline runs the models.

use std::collections::{HashMap, HashSet};

use crate::generate::GenerationOverrides;

/// `--summary-length`: mapped to the generated-token bounds of the summarizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
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

/// `--summarize-from`: which side the summarizer reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SummarySide {
    /// Summarize the Russian original, then translate the summary (errors of the translation
    /// are not summarized).
    #[default]
    Ru,
    /// Summarize the English translation with an English summarizer.
    En,
}

/// Groups consecutive units (paragraphs or sentences) into parts of at most `max_tokens`
/// tokens each, in order, so a release longer than the summarizer's input limit is summarized
/// part by part instead of being truncated. A single unit longer than the limit becomes a part
/// of its own; the caller splits it further (by sentences) before calling again.
pub fn group_into_parts(
    units: &[String],
    max_tokens: usize,
    count: &dyn Fn(&str) -> usize,
) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    for unit in units.iter().filter(|u| !u.trim().is_empty()) {
        let candidate = join_units(&current, unit);
        if !current.is_empty() && count(&candidate) > max_tokens {
            parts.push(std::mem::take(&mut current));
            current = unit.clone();
        } else {
            current = candidate;
        }
    }
    if !current.is_empty() {
        parts.push(current);
    }
    parts
}

fn join_units(current: &str, unit: &str) -> String {
    if current.is_empty() {
        unit.to_string()
    } else {
        format!("{current}\n{unit}")
    }
}

/// Why a generated text was judged degenerate.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Degenerate {
    /// Nothing but whitespace came out.
    Empty,
    /// One n-gram of words repeats many times: the loop users of every seq2seq tool report.
    Repetition { ngram: String, times: usize },
    /// Much longer than its source: a sign of hallucinated text.
    TooLong { ratio: f64 },
    /// The output is still mostly in the source language.
    Untranslated { source_script_share: f64 },
}

impl std::fmt::Display for Degenerate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Empty => write!(f, "empty output"),
            Self::Repetition { ngram, times } => write!(f, "\"{ngram}\" repeated {times} times"),
            Self::TooLong { ratio } => write!(f, "{ratio:.1} times longer than its source"),
            Self::Untranslated {
                source_script_share,
            } => write!(
                f,
                "{:.0}% of its letters in the source language",
                source_script_share * 100.0
            ),
        }
    }
}

/// The settings of a retry after a degenerate output: no repeated trigram and at least four
/// beams, the usual cures for loops, keeping every other choice the user made.
pub fn stricter(overrides: &GenerationOverrides) -> GenerationOverrides {
    GenerationOverrides {
        no_repeat_ngram_size: Some(overrides.no_repeat_ngram_size.map_or(3, |n| n.clamp(1, 3))),
        num_beams: Some(overrides.num_beams.unwrap_or(4).max(4)),
        ..overrides.clone()
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

/// The language the output must be in, for the untranslated check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Script {
    Latin,
    Cyrillic,
}

/// Limits of the guard; the defaults are loose enough that a normal summary or translation
/// never trips them.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct GuardLimits {
    /// An n-gram of this many words...
    pub ngram: usize,
    /// ...seen this many times is a loop.
    pub max_repeats: usize,
    /// Output characters over source characters.
    pub max_length_ratio: f64,
    /// Share of letters in the wrong script above which the output counts as untranslated.
    pub max_foreign_share: f64,
}

impl Default for GuardLimits {
    fn default() -> Self {
        Self {
            ngram: 3,
            max_repeats: 4,
            max_length_ratio: 3.0,
            max_foreign_share: 0.5,
        }
    }
}

/// Checks a generated text against its source. `expected` is the script the output must be
/// written in; None skips the untranslated check (a summary in the source language).
pub fn check_output(
    source: &str,
    output: &str,
    expected: Option<Script>,
    limits: &GuardLimits,
) -> Option<Degenerate> {
    if output.trim().is_empty() {
        return Some(Degenerate::Empty);
    }
    if let Some((ngram, times)) = most_repeated_ngram(output, limits.ngram) {
        // A source that repeats itself ("слово слово слово ...") may be translated so.
        let in_source = most_repeated_ngram(source, limits.ngram).map_or(0, |(_, n)| n);
        if times >= limits.max_repeats && times > in_source {
            return Some(Degenerate::Repetition { ngram, times });
        }
    }
    // A loop inside a word ("idenidenideniden") that word n-grams cannot see.
    if let Some(found) = crate::text::loops::longest_word_loop(output) {
        let in_source = crate::text::loops::max_word_loop_repeats(source);
        if found.times >= limits.max_repeats && found.times > in_source {
            let (ngram, times) = (found.unit, found.times);
            return Some(Degenerate::Repetition { ngram, times });
        }
    }
    let ratio = output.chars().count() as f64 / source.chars().count().max(1) as f64;
    // Very short sources ("Справочно:") legitimately translate to a few times their length.
    if ratio > limits.max_length_ratio && output.chars().count() > 40 {
        return Some(Degenerate::TooLong { ratio });
    }
    let foreign = expected.map(|script| foreign_script_share(output, script));
    match foreign {
        Some(share) if share > limits.max_foreign_share => Some(Degenerate::Untranslated {
            source_script_share: share,
        }),
        _ => None,
    }
}

/// The word n-gram seen most often, and how often (None for texts shorter than n words).
fn most_repeated_ngram(text: &str, n: usize) -> Option<(String, usize)> {
    let words: Vec<String> = words(text).collect();
    if words.len() < n || n == 0 {
        return None;
    }
    let mut counts: HashMap<&[String], usize> = HashMap::new();
    for window in words.windows(n) {
        *counts.entry(window).or_default() += 1;
    }
    counts
        .into_iter()
        .max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(a.0)))
        .map(|(gram, times)| (gram.join(" "), times))
}

/// Lower-cased words (letters and digits), punctuation dropped.
fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
}

/// Share of alphabetic characters not in the expected script.
fn foreign_script_share(text: &str, expected: Script) -> f64 {
    let (mut cyrillic, mut latin) = (0usize, 0usize);
    for c in text.chars().filter(|c| c.is_alphabetic()) {
        if ('\u{0400}'..='\u{04FF}').contains(&c) {
            cyrillic += 1;
        } else if c.is_ascii_alphabetic() {
            latin += 1;
        }
    }
    let total = (cyrillic + latin).max(1) as f64;
    match expected {
        Script::Latin => cyrillic as f64 / total,
        Script::Cyrillic => latin as f64 / total,
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
    fn parts_respect_the_token_limit_and_keep_order() {
        let units = strings(&["a b c", "d e", "f g h i", "j"]);
        let count = |s: &str| s.split_whitespace().count();
        let parts = group_into_parts(&units, 5, &count);
        assert_eq!(parts, strings(&["a b c\nd e", "f g h i\nj"]));
        assert!(parts.iter().all(|p| count(p) <= 5));
    }

    #[test]
    fn an_oversized_unit_becomes_its_own_part() {
        let units = strings(&["a", "b c d e f g", "h"]);
        let count = |s: &str| s.split_whitespace().count();
        assert_eq!(
            group_into_parts(&units, 3, &count),
            strings(&["a", "b c d e f g", "h"])
        );
    }

    #[test]
    fn repetition_loops_are_caught() {
        let looped =
            "The police said that the police said that the police said that the police said that.";
        let verdict = check_output(
            "Полиция заявила.",
            looped,
            Some(Script::Latin),
            &GuardLimits::default(),
        );
        assert!(matches!(verdict, Some(Degenerate::Repetition { times, .. }) if times >= 4));
    }

    #[test]
    fn loops_inside_words_are_caught_unless_the_source_has_them() {
        let limits = GuardLimits::default();
        let looped = "The idenidenideniden of the suspect was established.";
        let verdict = check_output(
            "Личность установлена.",
            looped,
            Some(Script::Latin),
            &limits,
        );
        assert_eq!(
            verdict.map(|d| d.to_string()),
            Some("\"iden\" repeated 4 times".to_string())
        );
        let laugh = check_output(
            "Хахахаха, — сказал он.",
            "Hahahaha, he said.",
            None,
            &limits,
        );
        assert_eq!(laugh, None);
    }

    #[test]
    fn a_repetitive_source_may_give_a_repetitive_output() {
        let source = "слово ".repeat(20);
        let output = "word ".repeat(20);
        assert_eq!(
            check_output(
                &source,
                &output,
                Some(Script::Latin),
                &GuardLimits::default()
            ),
            None
        );
    }

    #[test]
    fn normal_translation_passes() {
        let source = "Сотрудники полиции задержали подозреваемого в краже.";
        let output = "Police officers detained a suspect in the theft.";
        assert_eq!(
            check_output(source, output, Some(Script::Latin), &GuardLimits::default()),
            None
        );
    }

    #[test]
    fn untranslated_and_overlong_outputs_are_caught() {
        let source = "Сотрудники полиции задержали подозреваемого.";
        let copy = check_output(source, source, Some(Script::Latin), &GuardLimits::default());
        assert!(matches!(copy, Some(Degenerate::Untranslated { .. })));
        let long: String = (0..60).map(|i| format!("word{i} ")).collect();
        let verdict = check_output(source, &long, None, &GuardLimits::default());
        assert!(
            matches!(verdict, Some(Degenerate::TooLong { .. })),
            "{verdict:?}"
        );
        assert_eq!(
            check_output(source, "  ", None, &GuardLimits::default()),
            Some(Degenerate::Empty)
        );
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
