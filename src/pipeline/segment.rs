//! Sentences of a block and pieces that fit a model's input limit.
//!
//! A deliberately small stand-in for the segmentation module (`crate::text`, issue #6): the
//! pipeline calls only `sentences` and `fit`, so switching to the real segmenter is a change
//! of these two bodies.

use crate::generate::TextGenerator;
use crate::Result;

/// Abbreviations after which a full stop does not end a Russian sentence.
const ABBREVIATIONS: &[&str] = &[
    "г", "гг", "ул", "д", "им", "см", "стр", "тыс", "млн", "млрд", "руб", "коп", "т", "е", "п",
    "др", "пр", "проф", "акад", "доц", "обл", "р", "ст", "ч", "рис", "табл", "тел", "англ", "вкл",
];

/// Splits a block into sentences: after `.`, `!`, `?` or `…` (closing quotes and brackets
/// included) followed by a space and a capital letter, digit or opening quote; not after an
/// initial (`Ю.`) or a common abbreviation (`г.`, `т. е.`).
pub fn sentences(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < chars.len() {
        if matches!(chars[i], '.' | '!' | '?' | '…') {
            let mut end = i + 1;
            while end < chars.len() && matches!(chars[end], '.' | '!' | '?' | '»' | '"' | ')') {
                end += 1;
            }
            if ends_sentence(&chars, start, i, end) {
                push_trimmed(&mut out, &chars[start..end]);
                start = end;
            }
            i = end;
        } else {
            i += 1;
        }
    }
    push_trimmed(&mut out, &chars[start..]);
    out
}

fn ends_sentence(chars: &[char], start: usize, stop: usize, end: usize) -> bool {
    let next = chars[end..].iter().position(|c| !c.is_whitespace());
    let Some(offset) = next.filter(|&o| o > 0) else {
        return false;
    };
    let first = chars[end + offset];
    if !(first.is_uppercase() || first.is_ascii_digit() || matches!(first, '«' | '"' | '(')) {
        return false;
    }
    let word: String = chars[start..stop]
        .iter()
        .rev()
        .take_while(|c| c.is_alphabetic())
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let initial = word.chars().count() == 1 && word.chars().all(char::is_uppercase);
    chars[stop] != '.' || !(initial || ABBREVIATIONS.contains(&word.to_lowercase().as_str()))
}

fn push_trimmed(out: &mut Vec<String>, chars: &[char]) {
    let s: String = chars.iter().collect();
    let s = s.trim();
    if !s.is_empty() {
        out.push(s.to_string());
    }
}

/// Cuts `text` into pieces of at most `max_tokens` source tokens of `generator`: at the
/// clause boundary (`,` `;` `:` ` – `) nearest the middle, else at the space nearest the
/// middle, else between characters; recursively. Nothing is ever dropped.
pub fn fit(text: &str, generator: &dyn TextGenerator, max_tokens: usize) -> Result<Vec<String>> {
    if generator.count_tokens(text)? <= max_tokens || text.chars().count() < 2 {
        return Ok(vec![text.to_string()]);
    }
    let (left, right) = split_near_middle(text);
    let mut pieces = fit(left, generator, max_tokens)?;
    pieces.extend(fit(right, generator, max_tokens)?);
    Ok(pieces)
}

fn split_near_middle(text: &str) -> (&str, &str) {
    let middle = text.len() / 2;
    let nearest = |candidates: Vec<usize>| {
        candidates
            .into_iter()
            .filter(|&i| i > 0 && i < text.len())
            .min_by_key(|&i| i.abs_diff(middle))
    };
    let clause_ends: Vec<usize> = text
        .match_indices([',', ';', ':'])
        .map(|(i, _)| i + 1)
        .chain(text.match_indices(" – ").map(|(i, _)| i))
        .chain(text.match_indices(" — ").map(|(i, _)| i))
        .collect();
    let spaces: Vec<usize> = text.match_indices(' ').map(|(i, _)| i).collect();
    let cut = nearest(clause_ends)
        .filter(|&i| i.abs_diff(middle) < text.len() / 3)
        .or_else(|| nearest(spaces))
        .unwrap_or_else(|| {
            let mut i = middle;
            while !text.is_char_boundary(i) {
                i += 1;
            }
            i
        });
    let (left, right) = text.split_at(cut);
    (left.trim(), right.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_sentences_but_not_initials_or_abbreviations() {
        let text =
            "В мероприятии участвовал Ю. Шток. Проект реализуется с марта 2010 г. в г. Лионе. \
                    «Мы готовы», – сказал он. Итого: 5 млн. руб. Конец!";
        assert_eq!(
            sentences(text),
            [
                "В мероприятии участвовал Ю. Шток.",
                "Проект реализуется с марта 2010 г. в г. Лионе.",
                "«Мы готовы», – сказал он.",
                "Итого: 5 млн. руб. Конец!",
            ]
        );
    }

    #[test]
    fn splits_near_the_middle_at_a_clause_boundary() {
        let (l, r) = split_near_middle("один два три, четыре пять шесть");
        assert_eq!((l, r), ("один два три,", "четыре пять шесть"));
        let (l, r) = split_near_middle("абвгде");
        assert_eq!((l, r), ("абв", "где"));
    }
}
