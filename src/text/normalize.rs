//! What the model sees: the same text with the characters that tokenizers choke on removed.

use super::sentences::is_invisible;

/// The text as a model should see it: soft hyphens, zero-width characters, bidi marks, the BOM
/// and stress accents removed; control characters and every kind of space (non-breaking, thin,
/// line and paragraph separators, tabs, newlines) turned into one plain space; ends trimmed.
///
/// The original stays with the caller, for the Russian side of the output.
pub fn normalize_for_model(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut pending_space = false;
    for c in s.chars() {
        if is_invisible(c) || is_stress_accent(c) {
            continue;
        }
        if c.is_whitespace() || c.is_control() {
            pending_space = !out.is_empty();
            continue;
        }
        if pending_space {
            out.push(' ');
            pending_space = false;
        }
        out.push(c);
    }
    out
}

/// Combining grave and acute accents, which Russian texts use only to mark stress (`за́мок`).
fn is_stress_accent(c: char) -> bool {
    matches!(c, '\u{300}' | '\u{301}')
}

/// Runs of whitespace (non-breaking spaces included) become one space; ends trimmed.
pub fn collapse_spaces(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spaces_become_one_plain_space() {
        let s = " 5\u{a0}млн\u{202f}руб.\t\tв\r\n2024\u{2028}г. ";
        assert_eq!(normalize_for_model(s), "5 млн руб. в 2024 г.");
    }

    #[test]
    fn invisible_and_control_characters_go() {
        let s = "\u{feff}взаимо\u{ad}действие\u{200b} по\u{200d}лиции\u{7}\u{0} за\u{301}мок";
        assert_eq!(normalize_for_model(s), "взаимодействие полиции замок");
    }

    #[test]
    fn letters_with_their_own_combining_marks_stay() {
        // `й` written as `и` + combining breve must keep its breve.
        assert_eq!(normalize_for_model("и\u{306}од"), "и\u{306}од");
    }
}
