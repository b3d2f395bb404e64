//! Loops inside words: a piece of a word repeated over and over ("...ationationationation",
//! "idenidenideniden").
//!
//! A seq2seq model that falls into a loop usually repeats whole words, which the output guard
//! finds by counting word n-grams. A subword vocabulary can also loop on pieces of one word,
//! and then every word n-gram is seen once and that count sees nothing. This module finds the
//! other kind: within one word (a run of letters and digits), a substring of at least
//! [`MIN_UNIT_CHARS`] characters repeated several times in a row.

/// A repeated unit must be at least this many characters; a doubled letter is spelling.
pub const MIN_UNIT_CHARS: usize = 2;

/// Units longer than this are not looked for: subword loops repeat short pieces, and the bound
/// keeps the search linear in the length of a hostile "word".
const MAX_UNIT_CHARS: usize = 32;

/// A unit repeated back to back inside one word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WordLoop {
    /// The repeated piece, lower-cased, as it first appears (`"ation"`).
    pub unit: String,
    /// How many times it comes in a row.
    pub times: usize,
    /// The word it was found in, as written.
    pub word: String,
}

/// The loop with the most repetitions in `text` (the shortest unit on a tie, then the first),
/// or None when no word has a unit of [`MIN_UNIT_CHARS`] or more characters at least twice in
/// a row. Units made only of digits are left out: `1000000000` is a number, and numbers are
/// checked elsewhere against the source.
pub fn longest_word_loop(text: &str) -> Option<WordLoop> {
    let mut best: Option<WordLoop> = None;
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        if let Some(found) = loop_in_word(word) {
            let better = best.as_ref().is_none_or(|b| {
                found.times > b.times
                    || (found.times == b.times
                        && found.unit.chars().count() < b.unit.chars().count())
            });
            if better {
                best = Some(found);
            }
        }
    }
    best
}

/// How many times in a row the most repeated unit of `text` comes (0 for none): what a source
/// may excuse in its translation.
pub fn max_word_loop_repeats(text: &str) -> usize {
    longest_word_loop(text).map_or(0, |l| l.times)
}

/// The most repeated unit in one word: for each period p, a stretch where every character
/// equals the one p places before it spans `p + matched` characters, that is
/// `(p + matched) / p` whole units.
fn loop_in_word(word: &str) -> Option<WordLoop> {
    let chars: Vec<char> = word.chars().flat_map(char::to_lowercase).collect();
    let max_unit = MAX_UNIT_CHARS.min(chars.len() / 2);
    let mut best: Option<(usize, usize, usize)> = None; // (times, period, start)
    for period in MIN_UNIT_CHARS..=max_unit {
        let mut run_start = 0;
        let mut matched = 0;
        for i in period..=chars.len() {
            if i < chars.len() && chars[i] == chars[i - period] {
                if matched == 0 {
                    run_start = i - period;
                }
                matched += 1;
                continue;
            }
            let times = (period + matched) / period;
            let unit = &chars[run_start..run_start + period];
            let digits_only = unit.iter().all(char::is_ascii_digit);
            let better = best.is_none_or(|(t, _, _)| times > t);
            if matched > 0 && times >= 2 && !digits_only && better {
                best = Some((times, period, run_start));
            }
            matched = 0;
        }
    }
    best.map(|(times, period, start)| WordLoop {
        unit: chars[start..start + period].iter().collect(),
        times,
        word: word.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(text: &str) -> Option<(String, usize)> {
        longest_word_loop(text).map(|l| (l.unit, l.times))
    }

    #[test]
    fn subword_loops_are_found_with_their_unit_and_count() {
        let l = longest_word_loop("The cooperationationationation was signed.").unwrap();
        assert_eq!((l.unit.as_str(), l.times), ("ation", 4));
        assert_eq!(l.word, "cooperationationationation");
        assert_eq!(found("idenidenideniden"), Some(("iden".to_string(), 4)));
        assert_eq!(
            found("ationationationation"),
            Some(("ation".to_string(), 4))
        );
        assert_eq!(found("blablablablabla"), Some(("bla".to_string(), 5)));
        assert_eq!(
            found("Mr. Kuznetsovovovov said"),
            Some(("ov".to_string(), 4))
        );
    }

    #[test]
    fn the_unit_is_the_shortest_period() {
        // "abab" twice and "ab" four times: the unit is "ab".
        assert_eq!(found("xabababab"), Some(("ab".to_string(), 4)));
        assert_eq!(found("AhAhAhAh"), Some(("ah".to_string(), 4)));
    }

    #[test]
    fn ordinary_words_have_at_most_short_runs() {
        for text in [
            "Police officers detained a suspect in Mississippi.",
            "The cooperation agreement was signed in Lyon.",
            "Bonbon, couscous and a tutu.",
        ] {
            let repeats = max_word_loop_repeats(text);
            assert!(repeats < 4, "{text}: {:?}", longest_word_loop(text));
        }
    }

    #[test]
    fn loops_do_not_cross_words_and_numbers_are_left_out() {
        assert_eq!(found("no no no no no"), None);
        assert_eq!(found("ha-ha-ha-ha"), None);
        assert_eq!(found("1000000000 roubles"), None);
        assert_eq!(found("12121212"), None);
        assert_eq!(found("a1b1a1b1a1b1a1b1"), Some(("a1b1".to_string(), 4)));
    }

    #[test]
    fn cyrillic_and_case_are_handled() {
        assert_eq!(found("ХАхахаха"), Some(("ха".to_string(), 4)));
        assert_eq!(max_word_loop_repeats(""), 0);
        assert_eq!(found("ёё"), None);
    }

    #[test]
    fn a_long_hostile_word_is_handled_quickly() {
        let word = "ab".repeat(5_000);
        let l = longest_word_loop(&word).unwrap();
        assert_eq!((l.unit.as_str(), l.times), ("ab", 5_000));
    }
}
