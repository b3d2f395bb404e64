//! What a reviewer of a translated release must look at (issue 13): the person names of each
//! source sentence with their rendering in the translation, the numbers and glossary terms a
//! translation lacks, and which releases `--strict` holds for review.

use super::excerpt;
use crate::io::output::{NameOut, TermOut};
use crate::io::ReleaseOutput;
use crate::text::{self, glossary::Glossary};

/// The end of a translation guard's note when the retry was degenerate too and the output
/// was kept as it is (a fall-back that `--strict` holds for review).
pub(super) const STILL_DEGENERATE: &str = "even with stricter settings";

/// What a reviewer needs of one translated sentence: the person names of the source with
/// their rendering in the translation, and a warning for every number of the source that the
/// translation lacks (see `text::numbers` for the accepted English forms).
pub(super) fn review(russian: &str, english: &str) -> (Vec<NameOut>, Vec<String>) {
    let names = text::names::find_names(russian)
        .into_iter()
        .map(|name| {
            let rendering = text::names::rendering(&name, english);
            NameOut {
                ru: name.found,
                nominative: name.nominative,
                transliteration: name.latin,
                en: rendering.text,
                transliterated: rendering.transliterated,
            }
        })
        .collect();
    let warnings = text::numbers::missing_numbers(russian, english)
        .iter()
        .map(text::numbers::SourceNumber::missing_warning)
        .collect();
    (names, warnings)
}

/// The glossary terms of `russian` and whether `english` holds each one's translation.
pub(super) fn glossary_terms(glossary: &Glossary, russian: &str, english: &str) -> Vec<TermOut> {
    glossary
        .find(russian)
        .into_iter()
        .map(|found| {
            let entry = &glossary.entries()[found.entry];
            TermOut {
                ru: found.found,
                entry: entry.ru.clone(),
                en: entry.en.clone(),
                met: text::glossary::holds(english, &entry.en),
            }
        })
        .collect()
}

/// The warning for a glossary term missing from a translation.
pub(super) fn missed_term(term: &TermOut) -> String {
    format!(
        "glossary term \"{}\" ({} -> {}) was missing from the translation",
        term.ru, term.entry, term.en
    )
}

/// Glossary terms found in a release's translated sentences and how many of them the
/// translations hold: `(hits, misses)`.
pub fn term_counts(output: &ReleaseOutput) -> (usize, usize) {
    let sentences = output
        .title
        .iter()
        .chain(output.paragraphs.iter().flat_map(|p| &p.sentences));
    let terms: Vec<&TermOut> = sentences.flat_map(|s| &s.terms).collect();
    let hits = terms.iter().filter(|t| t.met).count();
    (hits, terms.len() - hits)
}

/// Why a release's outputs must be held for human review (`--strict`): every number and
/// glossary term missing from a translation, every translation that stayed degenerate after
/// the guard's retry, and a summary replaced by the lead sentences. Empty when nothing needs
/// review.
pub fn review_reasons(output: &ReleaseOutput) -> Vec<String> {
    let sentences = output
        .title
        .iter()
        .chain(output.paragraphs.iter().flat_map(|p| &p.sentences));
    let mut reasons = Vec::new();
    for pair in sentences {
        let fallback = pair
            .guard
            .as_ref()
            .filter(|g| g.ends_with(STILL_DEGENERATE));
        let missed = pair.terms.iter().filter(|t| !t.met).map(missed_term);
        let notes = pair.warnings.iter().chain(fallback).cloned().chain(missed);
        for note in notes {
            reasons.push(format!("translation of \"{}\": {note}", excerpt(&pair.ru)));
        }
    }
    if let Some(summary) = output
        .summary
        .as_ref()
        .filter(|s| s.method == "lead-fallback")
    {
        reasons.extend(summary.notes.iter().cloned());
    }
    reasons
}
