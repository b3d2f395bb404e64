//! Russian sentence segmentation by rules.
//!
//! A candidate boundary is a run of terminal punctuation (`.`, `!`, `?`, `…`), any closing quotes
//! or brackets after it, and whitespace. Whether it ends a sentence is decided from the word
//! after it (a lower-case word never starts a sentence), then from the punctuation (`?`, `!`
//! and `…` end one before a capital), then from the token before a full stop: abbreviations
//! (see [`super::abbrev`]), initials, section numbers, list labels and date adverbials.
//! Boundaries inside matched «quotes» or (brackets) are kept apart as *protected*: they do not
//! split sentences, but [`super::split_long`] prefers them when a quotation is too long.

use std::ops::Range;

use super::abbrev::{self, AbbrevKind};

const TERMINAL: &[char] = &['.', '!', '?', '…'];
const CLOSERS: &[char] = &['»', '"', '”', '“', '’', ')', ']', '\''];
const OPENERS: &[char] = &['«', '"', '„', '“', '(', '[', '\''];
const DASHES: &[char] = &['—', '–', '-', '‒', '―'];

/// The sentences of a paragraph, trimmed, in order; nothing is dropped but surrounding spaces.
pub fn sentences(paragraph: &str) -> Vec<String> {
    sentence_spans(paragraph)
        .into_iter()
        .map(|span| paragraph[span].to_string())
        .collect()
}

/// Byte ranges of the sentences of `text`, each trimmed of surrounding whitespace.
pub fn sentence_spans(text: &str) -> Vec<Range<usize>> {
    let cuts = boundaries(text)
        .into_iter()
        .filter(|b| !b.protected)
        .map(|b| b.pos);
    spans_between(text, cuts)
}

/// The trimmed, non-empty pieces of `text` between the byte positions `cuts` (ascending).
pub(crate) fn spans_between(
    text: &str,
    cuts: impl IntoIterator<Item = usize>,
) -> Vec<Range<usize>> {
    let mut spans = Vec::new();
    let mut start = 0;
    for cut in cuts.into_iter().chain([text.len()]) {
        let piece = &text[start..cut];
        let lead = piece.len() - piece.trim_start().len();
        let trimmed = piece.trim();
        if !trimmed.is_empty() {
            spans.push(start + lead..start + lead + trimmed.len());
        }
        start = cut;
    }
    spans
}

/// A place where a sentence ends: the byte just after its punctuation and closing quotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Boundary {
    pub pos: usize,
    /// Inside a matched pair of quotes or brackets: a sentence of a quotation, not of the text.
    pub protected: bool,
}

/// Every sentence boundary of `text`, protected ones included, in order.
pub(crate) fn boundaries(text: &str) -> Vec<Boundary> {
    let mut quoted = QuotedSpans::new(matched_pairs(text));
    let mut found = Vec::new();
    let mut fragment_start = 0;
    for candidate in candidates(text) {
        if !ends_sentence(&candidate, &text[fragment_start..candidate.punct_start]) {
            continue;
        }
        let protected = quoted.contains(candidate.pos);
        if !protected {
            fragment_start = candidate.pos;
        }
        found.push(Boundary {
            pos: candidate.pos,
            protected,
        });
    }
    found
}

/// Answers "is this position inside a quotation?" for ascending positions in linear time.
struct QuotedSpans {
    /// Matched pairs, by start.
    pairs: Vec<Range<usize>>,
    /// How many pairs start before the last position asked about.
    started: usize,
    /// The furthest end among them.
    furthest_end: usize,
}

impl QuotedSpans {
    fn new(mut pairs: Vec<Range<usize>>) -> Self {
        pairs.sort_by_key(|pair| pair.start);
        QuotedSpans {
            pairs,
            started: 0,
            furthest_end: 0,
        }
    }

    /// Whether some pair opens before `pos` and closes after it; `pos` must not decrease
    /// between calls.
    fn contains(&mut self, pos: usize) -> bool {
        while let Some(pair) = self.pairs.get(self.started).filter(|p| p.start < pos) {
            self.furthest_end = self.furthest_end.max(pair.end);
            self.started += 1;
        }
        pos < self.furthest_end
    }
}

/// Terminal punctuation with its closers, followed by whitespace and more text.
#[derive(Debug)]
struct Candidate<'a> {
    /// Everything before the punctuation.
    before: &'a str,
    punct: &'a str,
    closers: &'a str,
    /// Byte index of the punctuation.
    punct_start: usize,
    /// Byte index just after the closers: where the text would be cut.
    pos: usize,
    /// The text after the whitespace.
    after: &'a str,
}

fn candidates(text: &str) -> Vec<Candidate<'_>> {
    let mut found = Vec::new();
    let mut i = 0;
    while let Some(offset) = text[i..].find(TERMINAL) {
        let punct_start = i + offset;
        let punct_end = punct_start + run_len(&text[punct_start..], |c| TERMINAL.contains(&c));
        let pos = punct_end + run_len(&text[punct_end..], |c| CLOSERS.contains(&c));
        let gap = run_len(&text[pos..], is_space);
        i = pos.max(punct_end);
        if gap == 0 || pos + gap == text.len() {
            continue;
        }
        found.push(Candidate {
            before: &text[..punct_start],
            punct: &text[punct_start..punct_end],
            closers: &text[punct_end..pos],
            punct_start,
            pos,
            after: &text[pos + gap..],
        });
    }
    found
}

/// Byte length of the longest prefix of `s` whose characters all satisfy `pred`.
fn run_len(s: &str, pred: impl Fn(char) -> bool) -> usize {
    s.find(|c: char| !pred(c)).unwrap_or(s.len())
}

/// Whitespace, and the invisible characters that sit between words in real documents.
pub(crate) fn is_space(c: char) -> bool {
    c.is_whitespace() || is_invisible(c)
}

/// Characters that print as nothing: soft hyphen, zero-width spaces and joiners, BOM, bidi marks.
pub(crate) fn is_invisible(c: char) -> bool {
    matches!(c, '\u{ad}' | '\u{200b}'..='\u{200f}' | '\u{2060}'..='\u{2064}' | '\u{feff}' | '\u{202a}'..='\u{202e}')
}

/// What starts the text after a candidate boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// A lower-case word: the sentence goes on.
    Lower,
    /// A capital, an opening quote or bracket, a dialogue dash before a capital, a symbol.
    Capital,
    Digit,
    /// A comma, a colon, a closing mark: the sentence goes on.
    Punctuation,
}

fn next_kind(after: &str) -> Next {
    let after = after.trim_start_matches(is_invisible);
    let Some(first) = after.chars().next() else {
        return Next::Punctuation;
    };
    if DASHES.contains(&first) {
        // A dialogue line: what matters is the word after the dash.
        let rest = after.trim_start_matches(|c: char| DASHES.contains(&c) || is_space(c));
        return match next_kind(rest) {
            Next::Lower => Next::Lower,
            _ => Next::Capital,
        };
    }
    if first.is_lowercase() {
        Next::Lower
    } else if first.is_uppercase() {
        Next::Capital
    } else if first.is_numeric() {
        Next::Digit
    } else if OPENERS.contains(&first) {
        // `18 проц. (при сохранении ...`: a bracket or quote that opens on a lower-case word
        // goes on with the sentence; one that opens on a capital may start the next.
        let inner = after[first.len_utf8()..].trim_start_matches(is_space);
        match next_kind(inner) {
            Next::Lower => Next::Lower,
            _ => Next::Capital,
        }
    } else if "№§$€£+*•".contains(first) {
        Next::Capital
    } else {
        Next::Punctuation
    }
}

/// Whether `c` ends a sentence, given the text of the sentence so far (`fragment`, up to the
/// punctuation).
fn ends_sentence(c: &Candidate, fragment: &str) -> bool {
    let next = next_kind(c.after);
    if matches!(next, Next::Lower | Next::Punctuation) {
        return false;
    }
    if c.punct != "." {
        return true; // `?`, `!`, `…`, `...` and their combinations before a capital or digit
    }
    if !c.closers.is_empty() {
        return true; // `."` / `.»` / `.)` before a capital
    }
    full_stop_ends_sentence(c.before, fragment, c.after)
}

/// The decision for a lone full stop from the token before it.
fn full_stop_ends_sentence(before: &str, fragment: &str, after: &str) -> bool {
    if is_label(fragment) {
        return false;
    }
    let chain = dotted_chain(before);
    let Some(last) = chain.last() else {
        return number_ends_sentence(last_token(before), fragment);
    };
    if let Some(ends) = latin_capitals_end_sentence(last, after) {
        return ends;
    }
    if is_number_suffix(before, last) {
        return true; // `в 1990-е.`, `на 5-м.`: the ending of a number, not an abbreviation
    }
    if abbrev::is_initial(last) {
        return false; // `Ю. Шток`, `Н. Э. Баумана` (not `н. э.`)
    }
    if let Some((kind, key_len)) = abbreviation(&chain) {
        let first_part = chain[chain.len() - key_len];
        let kind = closes_enumeration(before, first_part, fragment, kind);
        let after_number = follows_number(before, first_part);
        return abbreviation_ends_sentence(kind, after_number, fragment, after);
    }
    let single_lower = last.chars().count() == 1 && last.chars().all(char::is_lowercase);
    !single_lower
}

/// Whether the letters `last` (a slice that ends `before`) are the grammatical ending of a
/// number written in digits (`1990-е`, `90-х`, `5-й`): such a word is not an abbreviation,
/// so a full stop after it ends the sentence like one after the number itself.
fn is_number_suffix(before: &str, last: &str) -> bool {
    let start = last.as_ptr() as usize - before.as_ptr() as usize;
    let ahead = &before[..start];
    last.chars().count() <= 3
        && last.chars().all(char::is_lowercase)
        && ahead
            .strip_suffix('-')
            .is_some_and(|number| number.ends_with(|c: char| c.is_ascii_digit()))
}

/// A Roman numeral of several letters ends a sentence (`эпохи Петра II.`; as a label it was
/// caught before). A single Latin capital is an initial before a Latin word (`J. P. Morgan`)
/// and ends the sentence before anything else (`Петра I. Музей`, `категории B. 15 человек`).
/// `None` for anything else.
fn latin_capitals_end_sentence(word: &str, after: &str) -> Option<bool> {
    let mut chars = word.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) if c.is_ascii_uppercase() => Some(!starts_with_latin(after)),
        (Some(_), Some(_)) if abbrev::is_roman(word) => Some(true),
        _ => None,
    }
}

fn starts_with_latin(text: &str) -> bool {
    text.trim_start_matches(|c: char| !c.is_alphanumeric())
        .starts_with(|c: char| c.is_ascii_alphabetic())
}

fn abbreviation_ends_sentence(
    kind: AbbrevKind,
    after_number: bool,
    fragment: &str,
    after: &str,
) -> bool {
    match kind {
        AbbrevKind::Head => false,
        AbbrevKind::Unit | AbbrevKind::Year if !after_number => false,
        AbbrevKind::HeadBeforeNumber => next_kind(after) != Next::Digit,
        AbbrevKind::Measure | AbbrevKind::Unit => !continues_amount(after),
        AbbrevKind::Tail => true,
        AbbrevKind::Year => !is_date_adverbial(fragment),
    }
}

/// Whether `after` goes on with the amount before it: a number and a smaller unit
/// (`5 руб. | 50 коп.`, `10 ч. | 30 мин.`, `2 млн | 300 тыс.`).
fn continues_amount(after: &str) -> bool {
    let number_len = run_len(after, |c| c.is_ascii_digit() || c == ',' || c == ' ');
    let unit: String = after[number_len..]
        .chars()
        .take_while(|c| c.is_alphabetic())
        .collect();
    number_len > 0 && abbrev::is_unit_word(&unit.to_lowercase())
}

/// `и пр.` is `и прочее` and closes a list, unless the sentence speaks of streets
/// (`ул. Ленина и пр. Победы`, where it is `проспект`).
fn closes_enumeration(
    before: &str,
    first_part: &str,
    fragment: &str,
    kind: AbbrevKind,
) -> AbbrevKind {
    let start = first_part.as_ptr() as usize - before.as_ptr() as usize;
    let after_and = last_token(before[..start].trim_end_matches(is_space)).to_lowercase() == "и";
    if after_and && first_part == "пр" && !abbrev::mentions_address(fragment) {
        AbbrevKind::Tail
    } else {
        kind
    }
}

/// After a number (`2007`, `8.1`) with no letters: a simple number ends a sentence unless it is
/// the label of a list item; a dotted number is a section (`8.1.`) unless it is a date.
fn number_ends_sentence(token: &str, fragment: &str) -> bool {
    let token = token.trim_start_matches(OPENERS);
    if token.starts_with('§') {
        return false;
    }
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() > 1 && parts.iter().all(|p| is_digits(p)) {
        return parts.last().is_some_and(|year| year.len() == 4);
    }
    !(is_digits(token) && fragment.trim() == token)
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_digit())
}

/// The last whitespace-separated token of `s`.
fn last_token(s: &str) -> &str {
    let s = s.trim_end_matches(is_space);
    s.rsplit(is_space).next().unwrap_or(s)
}

/// The letter groups that end `before`, joined by full stops (`т. е` -> `["т", "е"]`), at most
/// four; empty when `before` does not end in a letter.
fn dotted_chain(before: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut rest = before;
    loop {
        let word_start = rest
            .char_indices()
            .rev()
            .take_while(|(_, c)| c.is_alphabetic() || *c == '-' || *c == '/')
            .last()
            .map(|(i, _)| i);
        let Some(start) = word_start else { break };
        parts.push(rest[start..].trim_start_matches(['-', '/']));
        let preceding = rest[..start].trim_end_matches(' ');
        match preceding.strip_suffix('.') {
            Some(head) if parts.len() < 4 && head.ends_with(char::is_alphabetic) => rest = head,
            _ => break,
        }
    }
    parts.retain(|p| !p.is_empty());
    parts.reverse();
    parts
}

/// The longest abbreviation that ends the dotted chain, with the number of parts it takes.
fn abbreviation(chain: &[&str]) -> Option<(AbbrevKind, usize)> {
    (1..=chain.len()).rev().find_map(|len| {
        let key = chain[chain.len() - len..].join(".").to_lowercase();
        abbrev::kind(&key).map(|kind| (kind, len))
    })
}

/// Whether the abbreviation starting with `first_part` (a slice of `before`) follows a number:
/// `2007 г`, `2007г`, `1990-х гг`, `XX в`.
fn follows_number(before: &str, first_part: &str) -> bool {
    let abbr_start = first_part.as_ptr() as usize - before.as_ptr() as usize;
    let ahead = before[..abbr_start].trim_end_matches(|c: char| is_space(c) || c == '-');
    let token = last_token(ahead);
    ahead.ends_with(|c: char| c.is_ascii_digit())
        || abbrev::is_roman(token)
        || token
            .split_once('-')
            .is_some_and(|(number, _)| is_digits(number))
}

/// Labels and date adverbials are short: longer fragments are not examined, which also keeps
/// the segmenter linear on long runs of candidates that do not split (`Ю. Ю. Ю. ...`).
const SHORT_FRAGMENT_BYTES: usize = 160;

/// A list label alone: `1`, `8.1`, `§ 2`, `IV`, `а`, `Статья 5`, `Глава IV`.
fn is_label(fragment: &str) -> bool {
    const LABEL_WORDS: &[&str] = &["статья", "глава", "раздел", "часть", "пункт", "приложение"];
    if fragment.len() > SHORT_FRAGMENT_BYTES {
        return false;
    }
    let words: Vec<&str> = fragment.split(is_space).filter(|w| !w.is_empty()).collect();
    let label = match words.as_slice() {
        [label] => *label,
        [word, label] if LABEL_WORDS.contains(&word.to_lowercase().as_str()) || *word == "§" => {
            label
        }
        _ => return false,
    };
    let label = label.trim_start_matches('§');
    let single_letter = label.chars().count() == 1 && label.chars().all(char::is_alphabetic);
    single_letter || abbrev::is_roman(label) || label.split('.').all(is_digits)
}

/// A date adverbial alone (`В 2007 г`, `С 1 по 15 июля 2024 г`): a sentence needs more.
fn is_date_adverbial(fragment: &str) -> bool {
    if fragment.len() > SHORT_FRAGMENT_BYTES {
        return false;
    }
    let words: Vec<String> = fragment
        .split(|c: char| is_space(c) || c == '.' || c == ',')
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    words
        .iter()
        .any(|w| w.starts_with(|c: char| c.is_ascii_digit()))
        && words.iter().all(|w| abbrev::is_date_word(w))
}

const MAX_NESTING: usize = 8;

/// Start and end (exclusive, the byte index of the closing mark) of each matched pair of quotes
/// or brackets. An opening mark that is never closed protects nothing.
fn matched_pairs(text: &str) -> Vec<Range<usize>> {
    let mut open: Vec<(char, usize)> = Vec::new();
    let mut pairs = Vec::new();
    let mut previous = ' ';
    for (i, c) in text.char_indices() {
        let opens_here =
            is_space(previous) || OPENERS.contains(&previous) || DASHES.contains(&previous);
        let role = match c {
            '«' | '„' | '(' | '[' => Some(true),
            '»' | ')' | ']' | '”' => Some(false),
            '"' | '“' => Some(opens_here),
            _ => None,
        };
        match role {
            Some(true) => open.push((c, i)),
            Some(false) => {
                // Look a few levels down only: a closer skips unclosed openers inside it, but
                // real nesting is shallow, and this keeps hostile input linear.
                let searched = open.len().saturating_sub(MAX_NESTING);
                if let Some(depth) = open[searched..].iter().rposition(|(o, _)| closes(*o, c)) {
                    let depth = searched + depth;
                    pairs.push(open[depth].1..i);
                    open.truncate(depth);
                }
            }
            None => {}
        }
        previous = c;
    }
    pairs
}

/// Whether `close` closes a pair opened by `open`.
fn closes(open: char, close: char) -> bool {
    matches!(
        (open, close),
        ('«', '»')
            | ('(', ')')
            | ('[', ']')
            | ('"', '"')
            | ('„', '“')
            | ('„', '”')
            | ('“', '”')
            | ('“', '"')
            | ('"', '“')
            | ('"', '”')
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotted_chains() {
        assert_eq!(dotted_chain("и т. д"), vec!["т", "д"]);
        assert_eq!(dotted_chain("т.н"), vec!["т", "н"]);
        assert_eq!(dotted_chain("доцент, к.п.н"), vec!["к", "п", "н"]);
        assert_eq!(dotted_chain("в 2007г"), vec!["г"]);
        assert!(dotted_chain("в 2007").is_empty());
    }

    #[test]
    fn labels_and_dates() {
        assert!(is_label("8.1") && is_label("IV") && is_label("Статья 5") && is_label("§ 2"));
        assert!(!is_label("Задержаны 15"));
        assert!(
            is_date_adverbial("В 2007 г") && is_date_adverbial("С 1 января по 15 марта 2024 г")
        );
        assert!(!is_date_adverbial("Москва, 12 марта 2024 г"));
    }

    #[test]
    fn quotes_protect_inner_boundaries() {
        let text = "Он сказал: «Мы рады. Спасибо». Затем ушёл.";
        let found = boundaries(text);
        assert_eq!(found.len(), 2);
        assert!(found[0].protected && !found[1].protected);
    }

    #[test]
    fn an_unclosed_quote_protects_nothing() {
        assert_eq!(sentences("«Мы рады. Спасибо всем.").len(), 2);
    }
}
