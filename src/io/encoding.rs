//! Bytes to text: byte-order marks, UTF-8, and the Cyrillic single-byte encodings Russian
//! releases still arrive in (Windows-1251, KOI8-R), with an honest record of how sure we are.
//!
//! chardetng picks the encoding; we then check its pick against the other Cyrillic encodings
//! with a letter test: in Russian prose most non-ASCII characters are the fifteen commonest
//! lower-case letters, while decoding with the wrong table (Windows-1251 bytes as KOI8-R, say)
//! permutes the letters and swaps their case. A pick that does not clearly win that test is
//! used but recorded as not confident, so the JSON output says the guess may be wrong.

use encoding_rs::{Encoding, IBM866, ISO_8859_5, KOI8_R, KOI8_U, UTF_8, WINDOWS_1251};

use super::InputError;

/// Text decoded from a file, and how its encoding was chosen.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub text: String,
    /// WHATWG name of the encoding used, e.g. `UTF-8`, `windows-1251`, `KOI8-R`.
    pub encoding: &'static str,
    /// How the encoding was chosen: `bom`, `utf-8`, `detected` or `override`.
    pub method: &'static str,
    /// False when the detector could not clearly tell this encoding from another.
    pub confident: bool,
}

/// Fewest non-ASCII characters for the letter test to mean anything.
const MIN_LETTERS_FOR_CONFIDENCE: usize = 20;
/// How much higher the chosen decoding must score than any alternative.
const CONFIDENCE_MARGIN: f64 = 0.25;
/// The commonest Russian letters: about three quarters of the letters of ordinary prose.
const COMMON_LETTERS: &str = "оеаинтсрвлкмдпу";
/// Share of control characters above which a "text" is really binary data.
const MAX_CONTROL_SHARE: f64 = 0.01;

/// Looks up an encoding by any of its WHATWG labels (`cp1251`, `koi8-r`, `utf-16le`, ...).
pub fn by_label(label: &str) -> Result<&'static Encoding, InputError> {
    Encoding::for_label(label.trim().as_bytes()).ok_or_else(|| InputError::UnknownEncoding {
        label: label.to_string(),
    })
}

/// Decodes `bytes`, with `forced` overriding detection (but not a byte-order mark, which is
/// authoritative). Fails on empty input and on binary data.
pub fn decode(bytes: &[u8], forced: Option<&'static Encoding>) -> Result<Decoded, InputError> {
    let decoded = match Encoding::for_bom(bytes) {
        Some((encoding, bom_len)) => decoded_with(encoding, &bytes[bom_len..], "bom", true),
        None => {
            if bytes.contains(&0) {
                return Err(InputError::Binary);
            }
            match forced {
                Some(encoding) => decoded_with(encoding, bytes, "override", true),
                None => detect(bytes),
            }
        }
    };
    if decoded.text.trim().is_empty() {
        return Err(InputError::Empty);
    }
    if looks_binary(&decoded.text) {
        return Err(InputError::Binary);
    }
    Ok(decoded)
}

fn decoded_with(
    encoding: &'static Encoding,
    bytes: &[u8],
    method: &'static str,
    confident: bool,
) -> Decoded {
    let (text, _) = encoding.decode_without_bom_handling(bytes);
    Decoded {
        text: text.into_owned(),
        encoding: encoding.name(),
        method,
        confident,
    }
}

/// UTF-8 when the bytes are valid UTF-8; otherwise chardetng's pick, checked by letter case.
fn detect(bytes: &[u8]) -> Decoded {
    if let Ok(text) = std::str::from_utf8(bytes) {
        return Decoded {
            text: text.to_string(),
            encoding: UTF_8.name(),
            method: "utf-8",
            confident: true,
        };
    }
    let mut detector = chardetng::EncodingDetector::new(chardetng::Iso2022JpDetection::Deny);
    detector.feed(bytes, true);
    let guess = russian_koi8(
        detector.guess(Some(b"ru"), chardetng::Utf8Detection::Deny),
        bytes,
    );
    let mut decoded = decoded_with(guess, bytes, "detected", false);
    decoded.confident = clearly_best(guess, bytes);
    decoded
}

/// chardetng says KOI8-U for KOI8 text; the two differ only in eight Ukrainian letters, so
/// when the text has none of them it is KOI8-R, which is what Russian releases use.
fn russian_koi8(guess: &'static Encoding, bytes: &[u8]) -> &'static Encoding {
    if guess != KOI8_U {
        return guess;
    }
    let (text, _) = KOI8_U.decode_without_bom_handling(bytes);
    if text.contains(['є', 'і', 'ї', 'ґ', 'Є', 'І', 'Ї', 'Ґ']) {
        KOI8_U
    } else {
        KOI8_R
    }
}

/// Whether `guess` reads as Russian clearly better than every other Cyrillic encoding.
fn clearly_best(guess: &'static Encoding, bytes: &[u8]) -> bool {
    let score = |encoding: &'static Encoding| {
        let (text, _) = encoding.decode_without_bom_handling(bytes);
        common_letter_share(&text)
    };
    let Some(chosen) = score(guess) else {
        return false;
    };
    [WINDOWS_1251, KOI8_R, IBM866, ISO_8859_5]
        .into_iter()
        .filter(|&other| other != guess)
        .all(|other| score(other).is_none_or(|s| chosen - s >= CONFIDENCE_MARGIN))
}

/// Share of common lower-case Russian letters among the non-ASCII characters, or None when
/// there are too few of those.
fn common_letter_share(text: &str) -> Option<f64> {
    let (mut non_ascii, mut common) = (0usize, 0usize);
    for c in text.chars().filter(|c| !c.is_ascii()) {
        non_ascii += 1;
        common += usize::from(COMMON_LETTERS.contains(c));
    }
    (non_ascii >= MIN_LETTERS_FOR_CONFIDENCE).then(|| common as f64 / non_ascii as f64)
}

/// Text with more than a trace of control characters (other than tabs and line breaks) is
/// binary data that happened to decode.
fn looks_binary(text: &str) -> bool {
    let total = text.chars().count();
    let controls = text
        .chars()
        .filter(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t' | '\u{c}'))
        .count();
    controls as f64 > MAX_CONTROL_SHARE * total as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    const RU: &str = "Сегодня в Москве состоялось совещание руководителей подразделений \
                      Министерства, посвящённое вопросам безопасности дорожного движения.";

    fn encoded(encoding: &'static Encoding, text: &str) -> Vec<u8> {
        encoding.encode(text).0.into_owned()
    }

    #[test]
    fn detects_windows_1251_and_koi8_r_confidently() {
        for encoding in [WINDOWS_1251, KOI8_R] {
            let decoded = decode(&encoded(encoding, RU), None).unwrap();
            assert_eq!(decoded.text, RU);
            assert_eq!(decoded.encoding, encoding.name());
            assert!(decoded.confident, "{}", encoding.name());
        }
    }

    #[test]
    fn short_single_byte_text_is_not_confident() {
        let decoded = decode(&encoded(WINDOWS_1251, "Привет"), None).unwrap();
        assert!(!decoded.confident);
    }

    #[test]
    fn boms_win_over_the_override() {
        let mut utf16: Vec<u8> = vec![0xFF, 0xFE];
        for unit in RU.encode_utf16() {
            utf16.extend_from_slice(&unit.to_le_bytes());
        }
        let decoded = decode(&utf16, Some(KOI8_R)).unwrap();
        assert_eq!((decoded.text.as_str(), decoded.method), (RU, "bom"));
        let with_bom = [b"\xEF\xBB\xBF".as_slice(), RU.as_bytes()].concat();
        assert_eq!(decode(&with_bom, None).unwrap().text, RU);
    }

    #[test]
    fn override_is_used_as_given() {
        let decoded = decode(&encoded(KOI8_R, RU), Some(by_label("koi8-r").unwrap())).unwrap();
        assert_eq!((decoded.encoding, decoded.method), ("KOI8-R", "override"));
        assert!(by_label("no-such-encoding").is_err());
    }

    #[test]
    fn rejects_empty_and_binary_input() {
        assert!(matches!(decode(b"  \n\t", None), Err(InputError::Empty)));
        let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x10";
        assert!(matches!(decode(png, None), Err(InputError::Binary)));
        let controls = "a\u{1}b\u{2}c\u{3}".repeat(10);
        assert!(matches!(
            decode(controls.as_bytes(), None),
            Err(InputError::Binary)
        ));
    }
}
