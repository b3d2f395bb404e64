//! SentencePiece's normalizer as a `tokenizers` [`Normalizer`]: the precompiled charsmap, then
//! `remove_extra_whitespaces`, `add_dummy_prefix` and `escape_whitespaces`, in one pass.
//!
//! Why not `tokenizers::normalizers::Precompiled` followed by `Strip`/`Replace`/`Prepend`:
//! - `Precompiled` looks up whole grapheme clusters and keeps the *shortest* trie match, so
//!   `ﬁ` + U+0301 loses its accent and `\r\n` loses the `\n`; SentencePiece takes the *longest*
//!   match at every byte position and copies unmatched characters.
//! - Its double-array lookups index without bounds checks: a corrupted charsmap panics there.
//! - SentencePiece collapses and strips only the ASCII space produced by the charsmap (e.g. a
//!   tab or U+00A0 mapped to " "), not every Unicode whitespace character.
//!
//! The output keeps the alignments to the original text, so encodings carry true offsets.

use tokenizers::{NormalizedString, Normalizer};

use super::proto::NormalizerSpec;

/// SentencePiece's whitespace symbol (U+2581).
pub const SPACE_SYMBOL: char = '\u{2581}';

/// The precompiled charsmap: a Darts double-array trie over UTF-8 byte sequences whose values
/// index NUL-terminated replacement strings.
#[derive(Debug, Clone)]
pub struct CharsMap {
    units: Vec<u32>,
    normalized: String,
}

/// Why a charsmap blob cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CharsMapError {
    #[error("precompiled_charsmap is shorter than its header")]
    Truncated,
    #[error("precompiled_charsmap declares a {0}-byte trie that does not fit")]
    TrieTooLong(usize),
    #[error("precompiled_charsmap replacement strings are not UTF-8")]
    NotUtf8,
}

impl CharsMap {
    /// Reads the blob: a little-endian u32 trie size in bytes, the trie units, the strings.
    pub fn parse(blob: &[u8]) -> Result<Self, CharsMapError> {
        let header: [u8; 4] = blob
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .ok_or(CharsMapError::Truncated)?;
        let trie_len = u32::from_le_bytes(header) as usize;
        let trie = blob
            .get(4..)
            .and_then(|rest| rest.get(..trie_len))
            .filter(|t| t.len() % 4 == 0)
            .ok_or(CharsMapError::TrieTooLong(trie_len))?;
        let units = trie
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let normalized = std::str::from_utf8(&blob[4 + trie_len..])
            .map_err(|_| CharsMapError::NotUtf8)?
            .to_string();
        Ok(Self { units, normalized })
    }

    /// The longest rule matching a prefix of `input`: (replacement, matched byte length).
    /// A match that does not end on a character boundary or points outside the strings is
    /// ignored, so a corrupted map degrades to "no rule" instead of failing.
    fn longest_match<'s>(&'s self, input: &str) -> Option<(&'s str, usize)> {
        let mut best = None;
        let unit = |pos: usize| self.units.get(pos).copied();
        let offset = |u: u32| ((u >> 10) << ((u & (1 << 9)) >> 6)) as usize;
        let mut pos = offset(unit(0)?);
        for (i, &byte) in input.as_bytes().iter().enumerate() {
            if byte == 0 {
                break;
            }
            pos ^= byte as usize;
            let u = unit(pos)?;
            if u & ((1 << 31) | 0xff) != byte as u32 {
                break;
            }
            pos ^= offset(u);
            let has_leaf = (u >> 8) & 1 == 1;
            if has_leaf && input.is_char_boundary(i + 1) {
                let value = (unit(pos)? & ((1 << 31) - 1)) as usize;
                if let Some(replacement) = self.replacement(value) {
                    best = Some((replacement, i + 1));
                }
            }
        }
        best
    }

    fn replacement(&self, start: usize) -> Option<&str> {
        let rest = self.normalized.get(start..)?;
        Some(rest.split('\0').next().unwrap_or(rest))
    }
}

/// SentencePiece's `Normalizer::Normalize`, built from a model's `NormalizerSpec`.
#[derive(Debug, Clone)]
pub struct SpmNormalizer {
    charsmap: Option<CharsMap>,
    /// User-defined pieces, longest first: matched verbatim, before and instead of the charsmap.
    user_defined: Vec<String>,
    add_dummy_prefix: bool,
    remove_extra_whitespaces: bool,
    escape_whitespaces: bool,
}

/// One step of normalization: `consumed` input characters became `out`.
struct Step {
    consumed: usize,
    out: String,
}

impl SpmNormalizer {
    /// `user_defined` are the model's user-defined pieces, which SentencePiece leaves as typed.
    pub fn new(spec: &NormalizerSpec, user_defined: &[&str]) -> Result<Self, CharsMapError> {
        let charsmap = if spec.precompiled_charsmap.is_empty() {
            None
        } else {
            Some(CharsMap::parse(&spec.precompiled_charsmap)?)
        };
        let mut user_defined: Vec<String> = user_defined.iter().map(|p| p.to_string()).collect();
        user_defined.sort_by_key(|p| std::cmp::Reverse(p.len()));
        user_defined.retain(|p| !p.is_empty());
        Ok(Self {
            charsmap,
            user_defined,
            add_dummy_prefix: spec.add_dummy_prefix,
            remove_extra_whitespaces: spec.remove_extra_whitespaces,
            escape_whitespaces: spec.escape_whitespaces,
        })
    }

    /// Whether spaces become U+2581 (then a Metaspace split is possible).
    pub fn escapes_whitespace(&self) -> bool {
        self.escape_whitespaces
    }

    /// The normalized form of `text`, without alignments.
    pub fn normalize_str(&self, text: &str) -> String {
        self.steps(text).into_iter().map(|s| s.out).collect()
    }

    /// A user-defined piece at the start of `rest`, else the replacement of the longest rule,
    /// else its first character; with the number of bytes consumed.
    fn prefix<'s>(&'s self, rest: &'s str) -> (&'s str, usize) {
        if let Some(piece) = self
            .user_defined
            .iter()
            .find(|p| rest.starts_with(p.as_str()))
        {
            return (&rest[..piece.len()], piece.len());
        }
        if let Some(found) = self.charsmap.as_ref().and_then(|m| m.longest_match(rest)) {
            return found;
        }
        let len = rest.chars().next().map_or(0, char::len_utf8);
        (&rest[..len], len)
    }

    fn space(&self) -> char {
        if self.escape_whitespaces {
            SPACE_SYMBOL
        } else {
            ' '
        }
    }

    fn steps(&self, text: &str) -> Vec<Step> {
        let mut steps = Vec::new();
        let mut rest = text;
        let mut take = |rest: &mut &str, len: usize, out: String| {
            steps.push(Step {
                consumed: rest[..len].chars().count(),
                out,
            });
            *rest = &rest[len..];
        };
        if self.remove_extra_whitespaces {
            while !rest.is_empty() {
                let (out, len) = self.prefix(rest);
                if out != " " {
                    break;
                }
                take(&mut rest, len, String::new());
            }
        }
        if rest.is_empty() {
            return steps;
        }
        if self.add_dummy_prefix {
            take(&mut rest, 0, self.space().to_string());
        }
        let mut prev_space = self.remove_extra_whitespaces;
        while !rest.is_empty() {
            let (mut out, len) = self.prefix(rest);
            if prev_space {
                out = out.trim_start_matches(' ');
            }
            if !out.is_empty() {
                prev_space = self.remove_extra_whitespaces && out.ends_with(' ');
            }
            let out = out.replace(' ', &self.space().to_string());
            take(&mut rest, len, out);
        }
        if self.remove_extra_whitespaces {
            self.strip_trailing_spaces(&mut steps);
        }
        steps
    }

    fn strip_trailing_spaces(&self, steps: &mut [Step]) {
        let space = self.space();
        for step in steps.iter_mut().rev() {
            while step.out.ends_with(space) {
                step.out.pop();
            }
            if !step.out.is_empty() {
                return;
            }
        }
    }
}

/// Turns steps into `NormalizedString::transform` changes: per output char, 0 replaces one
/// input char, 1 is inserted, -n also removes the n input chars after it. Input removed before
/// any output goes into the initial offset.
fn transformations(steps: Vec<Step>) -> (Vec<(char, isize)>, usize) {
    let mut changes: Vec<(char, isize)> = Vec::new();
    let mut initial = 0;
    for step in steps {
        let produced = step.out.chars().count();
        if produced == 0 {
            match changes.last_mut() {
                Some((_, change)) => *change -= step.consumed as isize,
                None => initial += step.consumed,
            }
            continue;
        }
        for (i, c) in step.out.chars().enumerate() {
            changes.push((c, if i < step.consumed { 0 } else { 1 }));
        }
        if step.consumed > produced {
            if let Some((_, change)) = changes.last_mut() {
                *change -= (step.consumed - produced) as isize;
            }
        }
    }
    (changes, initial)
}

impl Normalizer for SpmNormalizer {
    fn normalize(&self, normalized: &mut NormalizedString) -> tokenizers::Result<()> {
        let (changes, initial) = transformations(self.steps(normalized.get()));
        normalized.transform(changes, initial);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(add_dummy_prefix: bool, remove_extra_whitespaces: bool) -> SpmNormalizer {
        let spec = NormalizerSpec {
            add_dummy_prefix,
            remove_extra_whitespaces,
            ..NormalizerSpec::default()
        };
        SpmNormalizer::new(&spec, &["<x>"]).unwrap()
    }

    #[test]
    fn collapses_and_strips_spaces_and_adds_the_dummy_prefix() {
        let n = plain(true, true);
        assert_eq!(n.normalize_str("  a   b  "), "▁a▁b");
        assert_eq!(n.normalize_str("   "), "");
        assert_eq!(n.normalize_str(""), "");
        // Without a charsmap a tab is not a space.
        assert_eq!(n.normalize_str("a\tb"), "▁a\tb");
        assert_eq!(plain(false, false).normalize_str(" a  b "), "▁a▁▁b▁");
        // User-defined pieces are kept as typed.
        assert_eq!(n.normalize_str("a <x> b"), "▁a▁<x>▁b");
    }

    #[test]
    fn alignments_point_back_to_the_original_text() {
        let n = plain(true, true);
        let mut s = NormalizedString::from("  ab   cd  ");
        n.normalize(&mut s).unwrap();
        assert_eq!(s.get(), "▁ab▁cd");
        let c = s.get().find('c').unwrap();
        let original = s.convert_offsets(tokenizers::normalizer::Range::Normalized(c..c + 2));
        assert_eq!(original, Some(7..9));
    }

    #[test]
    fn a_corrupted_charsmap_is_an_error_or_harmless() {
        assert_eq!(
            CharsMap::parse(&[1, 0]).unwrap_err(),
            CharsMapError::Truncated
        );
        assert!(CharsMap::parse(&[8, 0, 0, 0, 1]).is_err());
        let map = CharsMap::parse(&[4, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, b'x']).unwrap();
        assert_eq!(map.longest_match("abc"), None);
    }
}
