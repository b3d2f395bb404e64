//! Segments too long for the model, split at the best boundary available and never truncated.

use super::sentences::{self, is_space};

/// One piece of a segment that was too long for the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    pub text: String,
    /// Whether whitespace separated this piece from the one before it (false for the first
    /// piece and for a cut inside an over-long word), so that [`join_pieces`] restores it.
    pub space_before: bool,
}

/// Cuts `text` into pieces of at most `max_tokens` tokens each, as counted by `count` (the
/// model's own tokenizer, special tokens included as the model will see them). Joining the
/// pieces back ([`join_pieces`]) gives `text` with its ends trimmed and each whitespace run at a
/// cut made one space: nothing is dropped or reordered.
///
/// Each cut is made at the best boundary available, in this order: a sentence end inside a
/// quotation or brackets, a semicolon, a colon, a spaced dash (which starts the next piece), a
/// comma before a conjunction, any comma, any space, and as a last resort between characters
/// (for a single "word" longer than the limit). Among boundaries of one kind the most balanced
/// is taken; the first kind whose best cut makes both halves fit wins, otherwise the first kind
/// that cuts at least a quarter off, and the halves are split again as needed.
///
/// A piece of one character is returned even if `count` says it does not fit: it cannot be
/// split further.
pub fn split_long(text: &str, max_tokens: usize, count: impl Fn(&str) -> usize) -> Vec<Piece> {
    let mut pieces = Vec::new();
    split_into(text.trim(), false, max_tokens, &count, &mut pieces);
    pieces
}

/// Joins what became of each piece (its translation, or its own text) in the pieces' order,
/// with a space where the source had one. `texts` has one entry per piece; extra entries on
/// either side are ignored.
pub fn join_pieces<S: AsRef<str>>(pieces: &[Piece], texts: &[S]) -> String {
    let mut out = String::new();
    for (piece, text) in pieces.iter().zip(texts) {
        let text = text.as_ref().trim();
        if text.is_empty() {
            continue;
        }
        if piece.space_before && !out.is_empty() {
            out.push(' ');
        }
        out.push_str(text);
    }
    out
}

fn split_into(
    text: &str,
    space_before: bool,
    max_tokens: usize,
    count: &dyn Fn(&str) -> usize,
    out: &mut Vec<Piece>,
) {
    if text.is_empty() {
        return;
    }
    if text.chars().nth(1).is_none() || count(text) <= max_tokens {
        out.push(Piece {
            text: text.to_string(),
            space_before,
        });
        return;
    }
    let cut = best_cut(text, max_tokens, count);
    let (left, right) = text.split_at(cut);
    let spaced = left.ends_with(is_space) || right.starts_with(is_space);
    split_into(left.trim_end(), space_before, max_tokens, count, out);
    split_into(right.trim_start(), spaced, max_tokens, count, out);
}

/// The kinds of boundary, best first. Each gives the byte positions where `text` may be cut.
const KINDS: &[fn(&str) -> Vec<usize>] = &[
    quoted_sentence_ends,
    |t| after_mark(t, ';'),
    |t| after_mark(t, ':'),
    before_spaced_dashes,
    commas_before_conjunctions,
    |t| after_mark(t, ','),
    spaces,
];

fn best_cut(text: &str, max_tokens: usize, count: &dyn Fn(&str) -> usize) -> usize {
    let fits = |cut: usize| {
        count(text[..cut].trim_end()) <= max_tokens && count(text[cut..].trim_start()) <= max_tokens
    };
    let mut fallback = None;
    for kind in KINDS {
        let cuts: Vec<usize> = kind(text)
            .into_iter()
            .filter(|&c| cuts_in_two(text, c))
            .collect();
        let Some(cut) = most_balanced(text, &cuts) else {
            continue;
        };
        if fits(cut) {
            return cut;
        }
        let smaller = text[..cut].chars().count().min(text[cut..].chars().count());
        if fallback.is_none() && smaller * 4 >= text.chars().count() {
            fallback = Some(cut);
        }
    }
    fallback.unwrap_or_else(|| middle_char(text))
}

/// Whether cutting at `cut` leaves text on both sides.
fn cuts_in_two(text: &str, cut: usize) -> bool {
    !text[..cut].trim().is_empty() && !text[cut..].trim().is_empty()
}

fn most_balanced(text: &str, cuts: &[usize]) -> Option<usize> {
    let half = text.len() / 2;
    cuts.iter().copied().min_by_key(|&cut| cut.abs_diff(half))
}

fn middle_char(text: &str) -> usize {
    let n = text.chars().count();
    text.char_indices()
        .nth(n / 2)
        .map_or(text.len(), |(i, _)| i)
}

fn quoted_sentence_ends(text: &str) -> Vec<usize> {
    sentences::boundaries(text)
        .into_iter()
        .map(|b| b.pos)
        .collect()
}

/// Just after each `mark` that is followed by a space.
fn after_mark(text: &str, mark: char) -> Vec<usize> {
    text.match_indices(mark)
        .map(|(i, _)| i + mark.len_utf8())
        .filter(|&end| text[end..].starts_with(is_space))
        .collect()
}

/// Just before each dash that has a space on both sides.
fn before_spaced_dashes(text: &str) -> Vec<usize> {
    text.char_indices()
        .filter(|&(i, c)| {
            matches!(c, '—' | '–' | '-')
                && text[..i].ends_with(is_space)
                && text[i + c.len_utf8()..].starts_with(is_space)
        })
        .map(|(i, _)| i)
        .collect()
}

/// Words that open a clause after a comma.
const CONJUNCTIONS: &[&str] = &[
    "и",
    "а",
    "но",
    "или",
    "либо",
    "что",
    "чтобы",
    "где",
    "когда",
    "если",
    "так",
    "поскольку",
    "однако",
    "причем",
    "причём",
    "хотя",
    "потому",
    "зато",
    "пока",
    "ибо",
    "как",
    "чем",
    "куда",
    "откуда",
    "в том числе",
];

/// Just after each comma followed by a conjunction or a form of `который`.
fn commas_before_conjunctions(text: &str) -> Vec<usize> {
    after_mark(text, ',')
        .into_iter()
        .filter(|&end| {
            let next = text[end..].trim_start_matches(is_space);
            let word: String = next
                .chars()
                .take_while(|c| c.is_alphabetic())
                .collect::<String>()
                .to_lowercase();
            word.starts_with("котор") || CONJUNCTIONS.contains(&word.as_str())
        })
        .collect()
}

/// At the start of each run of whitespace.
fn spaces(text: &str) -> Vec<usize> {
    text.char_indices()
        .filter(|&(i, c)| is_space(c) && !text[..i].ends_with(is_space))
        .map(|(i, _)| i)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> usize {
        s.split_whitespace().count()
    }

    fn texts(pieces: &[Piece]) -> Vec<&str> {
        pieces.iter().map(|p| p.text.as_str()).collect()
    }

    #[test]
    fn a_segment_that_fits_is_left_whole() {
        assert_eq!(
            texts(&split_long("  Один два три. ", 3, words)),
            vec!["Один два три."]
        );
    }

    #[test]
    fn semicolon_beats_a_more_balanced_comma() {
        let s = "Первое длинное слово здесь; второе, третье и четвёртое слово там";
        assert_eq!(
            texts(&split_long(s, 8, words)),
            vec![
                "Первое длинное слово здесь;",
                "второе, третье и четвёртое слово там"
            ]
        );
    }

    #[test]
    fn a_dash_starts_the_next_piece() {
        let s = "Сотрудники полиции задержали троих подозреваемых — все они ранее судимы";
        let pieces = split_long(s, 6, words);
        assert_eq!(
            texts(&pieces),
            vec![
                "Сотрудники полиции задержали троих подозреваемых",
                "— все они ранее судимы"
            ]
        );
    }

    #[test]
    fn comma_before_conjunction_beats_a_plain_comma() {
        let s = "В операции участвовали Москва, Тверь, Казань, а также другие регионы страны сразу";
        let pieces = split_long(s, 9, words);
        assert_eq!(
            pieces[0].text,
            "В операции участвовали Москва, Тверь, Казань,"
        );
    }

    #[test]
    fn a_quoted_passage_is_cut_between_its_sentences() {
        let s = "«Мы завершили первый этап работы. Второй этап начнётся весной», — сказал он";
        let pieces = split_long(s, 8, words);
        assert_eq!(pieces[0].text, "«Мы завершили первый этап работы.");
    }

    #[test]
    fn a_word_longer_than_the_limit_is_cut_between_characters() {
        let chars = |s: &str| s.chars().count();
        let pieces = split_long("абвгдежзик", 3, chars);
        assert!(pieces.iter().all(|p| chars(&p.text) <= 3));
        assert_eq!(join_pieces(&pieces, &texts(&pieces)), "абвгдежзик");
    }

    #[test]
    fn a_zero_limit_still_terminates_and_keeps_everything() {
        let pieces = split_long("да нет", 0, words);
        assert_eq!(join_pieces(&pieces, &texts(&pieces)), "да нет");
    }

    #[test]
    fn joining_puts_translations_in_place_and_skips_empty_ones() {
        let pieces = split_long("один; два; три", 1, words);
        assert_eq!(pieces.len(), 3);
        assert_eq!(join_pieces(&pieces, &[" one; ", "", "three"]), "one; three");
    }
}
