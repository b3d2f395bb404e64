//! The guard against degenerate output: loops of repeated words, text far longer than its
//! source, output still in the source language. The pipeline checks every translation and
//! summary with it and retries what fails with [`stricter`] settings.

use std::collections::HashMap;

use crate::generate::GenerationOverrides;

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
    /// A summary not in the language asked for: too few of its letters in that script.
    WrongLanguage {
        expected: Script,
        foreign_share: f64,
    },
    /// Bytes that are no text: control characters or pieces of broken UTF-8 (U+FFFD), as a
    /// byte-level LLM writes when it goes astray.
    Garbled,
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
            Self::Garbled => write!(f, "garbled: control characters or broken UTF-8"),
            Self::WrongLanguage {
                expected,
                foreign_share,
            } => write!(
                f,
                "not in {}: {:.0}% of its letters are not {}",
                expected.language(),
                foreign_share * 100.0,
                expected.name()
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

/// The language the output must be in, for the untranslated check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Script {
    Latin,
    Cyrillic,
}

impl Script {
    fn name(self) -> &'static str {
        match self {
            Self::Latin => "Latin",
            Self::Cyrillic => "Cyrillic",
        }
    }

    /// The language mtsum writes in this script.
    fn language(self) -> &'static str {
        match self {
            Self::Latin => "English",
            Self::Cyrillic => "Russian",
        }
    }
}

/// Most of a summary's letters in the other script: names and brands in it are fine, a
/// summary half in the other language is not.
const MAX_SUMMARY_FOREIGN_SHARE: f64 = 0.25;

/// Checks a summary written in a language it was asked for (an LLM's): the checks of
/// [`check_output`], no garbled bytes, then the language check: at least three quarters of
/// its letters must be in the language's script, so a Russian summary is mostly Cyrillic and
/// an English one mostly Latin, names in the other script aside.
pub fn check_summary(
    source: &str,
    summary: &str,
    language: Script,
    limits: &GuardLimits,
) -> Option<Degenerate> {
    if let Some(problem) = check_output(source, summary, None, limits) {
        return Some(problem);
    }
    let garbled = |c: char| c == '\u{FFFD}' || (c.is_control() && !c.is_whitespace());
    if summary.chars().any(garbled) {
        return Some(Degenerate::Garbled);
    }
    let share = foreign_script_share(summary, language);
    let limit = limits.max_foreign_share.min(MAX_SUMMARY_FOREIGN_SHARE);
    (share > limit).then_some(Degenerate::WrongLanguage {
        expected: language,
        foreign_share: share,
    })
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

/// Lower-cased words (letters and digits), punctuation dropped; also what the extractive
/// summaries count.
pub fn words(text: &str) -> impl Iterator<Item = String> + '_ {
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn summaries_must_be_in_the_language_asked_for() {
        let limits = GuardLimits::default();
        let source = "Сотрудники ГИБДД МВД России подвели итоги операции «Трезвый водитель»: \
                      за выходные задержаны 1240 водителей, из них 85 без прав.";
        let russian = "ГИБДД МВД России за выходные задержала 1240 нетрезвых водителей, \
                       85 из них ездили без прав; операция Trezvy Voditel продолжится.";
        let english = "Over the weekend the traffic police of the Russian Interior Ministry \
                       detained 1,240 drunk drivers, 85 of them without a licence.";
        assert_eq!(
            check_summary(source, russian, Script::Cyrillic, &limits),
            None
        );
        assert_eq!(check_summary(source, english, Script::Latin, &limits), None);
        let wrong = check_summary(source, english, Script::Cyrillic, &limits).unwrap();
        assert!(
            matches!(wrong, Degenerate::WrongLanguage { expected: Script::Cyrillic, foreign_share } if foreign_share > 0.99),
            "{wrong:?}"
        );
        assert_eq!(
            wrong.to_string(),
            "not in Russian: 100% of its letters are not Cyrillic"
        );
        let copied = check_summary(source, russian, Script::Latin, &limits).unwrap();
        assert!(
            copied.to_string().starts_with("not in English: "),
            "{copied}"
        );
        let mixed = "Полиция задержала 12 suspects in the Moscow region yesterday.";
        assert!(matches!(
            check_summary(source, mixed, Script::Cyrillic, &limits),
            Some(Degenerate::WrongLanguage { .. })
        ));
        assert_eq!(
            check_summary(
                source,
                "Полиция \u{1c}задержала\u{FFFD}.",
                Script::Cyrillic,
                &limits
            ),
            Some(Degenerate::Garbled)
        );
        // The other checks still come first.
        let looped = "ГИБДД задержала водителей. ".repeat(6);
        assert!(matches!(
            check_summary(source, &looped, Script::Cyrillic, &limits),
            Some(Degenerate::Repetition { .. })
        ));
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
}
