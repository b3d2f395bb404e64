//! Arbitrary text never makes the segmenter panic or lose a character, and over-long segments
//! always come back whole. Inputs come from a fixed pseudo-random generator over the characters
//! that matter to the rules.

use mtsum::text;

const ALPHABET: &[&str] = &[
    "а", "б", "Ю", "Ш", "г", "т", "е", "д", "п", "р", "в", "I", "V", "B", "x", "0", "7", ".", ".",
    ".", "!", "?", "…", ",", ";", ":", "«", "»", "\"", "„", "“", "”", "(", ")", "[", "]", "-", "—",
    "–", "§", "№", "/", " ", " ", " ", " ", "\u{a0}", "\u{ad}", "\u{200b}", "\n", "\n\n", "\t",
    "руб", "тыс", "ул", "им", "т. е", "т. д", "2007 г", "8.1", "1)", "# ", "- ", "<p>", "</p>",
];

/// A small linear congruential generator: the same inputs on every run and machine.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, bound: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) % bound as u64) as usize
    }
}

fn inputs() -> Vec<String> {
    let mut rng = Lcg(2024);
    (0..2_000)
        .map(|_| {
            let len = rng.next(120);
            (0..len)
                .map(|_| ALPHABET[rng.next(ALPHABET.len())])
                .collect()
        })
        .collect()
}

/// The characters that print: what no step may drop (soft hyphens and zero-width spaces at the
/// edge of a line or sentence go with the surrounding whitespace).
fn without_spaces(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_whitespace() && !matches!(c, '\u{ad}' | '\u{200b}'))
        .collect()
}

#[test]
fn sentences_keep_every_character_in_order() {
    for input in inputs() {
        let sentences = text::sentences(&input);
        assert!(
            sentences.iter().all(|s| !s.is_empty() && s.trim() == s),
            "{input:?}"
        );
        assert_eq!(
            without_spaces(&sentences.concat()),
            without_spaces(&input),
            "{input:?}"
        );
    }
}

#[test]
fn blocks_keep_every_character_but_markers() {
    for input in inputs() {
        let blocks = text::paragraphs(&input);
        let rebuilt: String = blocks
            .iter()
            .map(|b| format!("{}{}", b.marker.as_deref().unwrap_or(""), b.text))
            .collect();
        // Markdown heading marks are dropped on purpose; everything else stays.
        let expected = without_spaces(&input).replace('#', "");
        assert_eq!(
            without_spaces(&rebuilt).replace('#', ""),
            expected,
            "{input:?}"
        );
        let _ = mtsum::io::text_blocks::html(&input);
    }
}

#[test]
fn split_pieces_always_fit_and_join_back() {
    let count = |s: &str| s.chars().count().div_ceil(3);
    for (i, input) in inputs().into_iter().enumerate() {
        let normalized = text::normalize_for_model(&input);
        let max_tokens = 1 + i % 7;
        let pieces = text::split_long(&normalized, max_tokens, count);
        for piece in &pieces {
            let fits = count(&piece.text) <= max_tokens || piece.text.chars().count() == 1;
            assert!(fits, "{:?} in {normalized:?}", piece.text);
        }
        let texts: Vec<&str> = pieces.iter().map(|p| p.text.as_str()).collect();
        assert_eq!(text::join_pieces(&pieces, &texts), normalized);
    }
}
