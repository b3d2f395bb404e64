//! Marian (Helsinki-NLP/opus-mt-*) tokenization from the hub's files as they are: `source.spm`,
//! `target.spm`, `vocab.json` (and `target_vocab.json` when `separate_vocabs`), with no
//! conversion step. Behaviour follows transformers' `MarianTokenizer` (5.x):
//! - the text is first split on the special-token strings (`</s>`, `<unk>`, `<pad>` typed in
//!   the text become those ids); a chunk starting with a `>>xx<<` language code keeps it as one
//!   token;
//! - each chunk is encoded by the side's spm into pieces, each piece looked up in vocab.json
//!   (missing pieces, including a run of unknown characters, become `<unk>`), `</s>` appended;
//! - decoding drops `</s>`, `<unk>` and `<pad>`, maps ids to pieces through the vocabulary and
//!   joins them by SentencePiece's rules with the SOURCE spm when the vocabulary is shared and
//!   the target spm when it is not (transformers 4.x always used the target spm; with real
//!   files both give the same text), then U+2581 becomes a space and the ends are trimmed.

use std::collections::HashMap;
use std::path::Path;

use super::normalizer::SPACE_SYMBOL;
use super::spm::SpmModel;
use super::{read_json, SpecialIds, TokenizeError, TokenizerConfig};

/// Which side's spm (and vocabulary) to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Source,
    Target,
}

/// A `vocab.json`: token -> id, and back.
#[derive(Debug, Clone)]
pub struct Vocab {
    ids: HashMap<String, u32>,
    tokens: HashMap<u32, String>,
}

impl Vocab {
    /// Reads a `{"token": id, ...}` file.
    pub fn from_file(path: &Path) -> Result<Self, TokenizeError> {
        let ids: HashMap<String, u32> = read_json(path)?;
        let tokens = ids.iter().map(|(t, &id)| (id, t.clone())).collect();
        Ok(Self { ids, tokens })
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    pub fn id(&self, token: &str) -> Option<u32> {
        self.ids.get(token).copied()
    }

    pub fn token(&self, id: u32) -> Option<&str> {
        self.tokens.get(&id).map(String::as_str)
    }
}

/// The tokenizer of a Marian model folder.
#[derive(Debug, Clone)]
pub struct MarianTokenizer {
    source: SpmModel,
    target: SpmModel,
    vocab: Vocab,
    /// Present for `separate_vocabs` repos.
    target_vocab: Option<Vocab>,
    specials: SpecialIds,
    /// The special-token strings with their ids, longest first (the text is split on them).
    special_strings: Vec<(String, u32)>,
}

impl MarianTokenizer {
    /// Loads `source.spm`, `target.spm`, `vocab.json` and, for `separate_vocabs`,
    /// `target_vocab.json` from `dir`; `tokenizer_config.json` is optional.
    pub fn from_dir(dir: &Path) -> Result<Self, TokenizeError> {
        let config = TokenizerConfig::load(dir)?;
        let source = SpmModel::from_file(&dir.join("source.spm"))?;
        let target = SpmModel::from_file(&dir.join("target.spm"))?;
        let vocab_path = dir.join("vocab.json");
        let vocab = Vocab::from_file(&vocab_path)?;
        let target_vocab = match config.separate_vocabs {
            true => Some(Vocab::from_file(&dir.join("target_vocab.json"))?),
            false => None,
        };
        let lookup = |token: &str| {
            vocab.id(token).ok_or_else(|| TokenizeError::MissingToken {
                path: vocab_path.clone(),
                token: token.to_string(),
            })
        };
        let specials = SpecialIds {
            eos: lookup(&config.eos_token)?,
            unk: lookup(&config.unk_token)?,
            pad: lookup(&config.pad_token)?,
        };
        let mut special_strings = vec![
            (config.eos_token.clone(), specials.eos),
            (config.unk_token.clone(), specials.unk),
            (config.pad_token.clone(), specials.pad),
        ];
        special_strings.sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
        Ok(Self {
            source,
            target,
            vocab,
            target_vocab,
            specials,
            special_strings,
        })
    }

    pub fn specials(&self) -> SpecialIds {
        self.specials
    }

    /// Size of the vocabulary the decoder predicts over (target_vocab.json when separate).
    pub fn vocab_size(&self) -> usize {
        self.target_vocab.as_ref().unwrap_or(&self.vocab).len()
    }

    /// The target-side token (piece) of `id`: target_vocab.json's, else vocab.json's.
    pub fn target_token(&self, id: u32) -> Option<&str> {
        self.target_vocab.as_ref().unwrap_or(&self.vocab).token(id)
    }

    /// The source vocabulary (vocab.json).
    pub fn vocab(&self) -> &Vocab {
        &self.vocab
    }

    /// Ids of `text` on one side, `</s>` appended.
    pub fn encode(&self, text: &str, side: Side) -> Result<Vec<u32>, TokenizeError> {
        let (spm, vocab) = match side {
            Side::Source => (&self.source, &self.vocab),
            Side::Target => (
                &self.target,
                self.target_vocab.as_ref().unwrap_or(&self.vocab),
            ),
        };
        let id_of = |token: &str| vocab.id(token).unwrap_or(self.specials.unk);
        let mut ids = Vec::new();
        for chunk in self.split_on_specials(text) {
            let text = match chunk {
                Chunk::Special(id) => {
                    ids.push(id);
                    continue;
                }
                Chunk::Text(text) => text,
            };
            let (code, text) = split_language_code(text);
            ids.extend(code.map(id_of));
            for token in spm.encode(text)? {
                ids.push(id_of(&token.piece));
            }
        }
        ids.push(self.specials.eos);
        Ok(ids)
    }

    /// transformers' `decode(ids, skip_special_tokens=True)`.
    pub fn decode(&self, ids: &[u32]) -> String {
        let side = match self.target_vocab {
            Some(_) => Side::Target,
            None => Side::Source,
        };
        self.decode_with_spm(ids, side)
    }

    /// Decoding with a chosen spm (`use_source_tokenizer` in transformers).
    pub fn decode_with_spm(&self, ids: &[u32], side: Side) -> String {
        let spm = match side {
            Side::Source => &self.source,
            Side::Target => &self.target,
        };
        let vocab = self.target_vocab.as_ref().unwrap_or(&self.vocab);
        let unk_token = &self
            .special_strings
            .iter()
            .find(|(_, id)| *id == self.specials.unk);
        let unk_token = unk_token.map_or("<unk>", |(s, _)| s.as_str());
        let pieces = ids
            .iter()
            .filter(|&&id| !self.specials.contains(id))
            .map(|&id| {
                vocab
                    .token(id)
                    .or_else(|| spm.id_to_piece(id).filter(|p| !p.is_empty()))
                    .unwrap_or(unk_token)
            });
        // A special-token string reached through the vocabulary (possible with separate
        // vocabularies) is written as is, followed by a space, as transformers does.
        let mut text = String::new();
        let mut run = Vec::new();
        for piece in pieces {
            if self.special_strings.iter().any(|(s, _)| s == piece) {
                text += &spm.decode_pieces(run.drain(..));
                text += piece;
                text.push(' ');
            } else {
                run.push(piece);
            }
        }
        text += &spm.decode_pieces(run);
        let text = text.replace(SPACE_SYMBOL, " ");
        python_strip(&text).to_string()
    }

    /// The text cut at every special-token string (leftmost, longest first).
    fn split_on_specials<'t>(&self, mut text: &'t str) -> Vec<Chunk<'t>> {
        let mut chunks = Vec::new();
        while !text.is_empty() {
            let next = self
                .special_strings
                .iter()
                .filter_map(|(s, id)| text.find(s.as_str()).map(|at| (at, s.len(), *id)))
                .min_by_key(|&(at, len, _)| (at, std::cmp::Reverse(len)));
            let Some((at, len, id)) = next else {
                chunks.push(Chunk::Text(text));
                break;
            };
            if at > 0 {
                chunks.push(Chunk::Text(&text[..at]));
            }
            chunks.push(Chunk::Special(id));
            text = &text[at + len..];
        }
        chunks
    }
}

enum Chunk<'t> {
    Text(&'t str),
    Special(u32),
}

/// transformers' `remove_language_code`: a leading `>>xx<<` is kept as one token.
fn split_language_code(text: &str) -> (Option<&str>, &str) {
    if text.starts_with(">>") {
        if let Some(end) = text.find("<<") {
            return (Some(&text[..end + 2]), &text[end + 2..]);
        }
    }
    (None, text)
}

/// Python's `str.strip()`: Unicode whitespace plus the ASCII separators U+001C..U+001F.
fn python_strip(text: &str) -> &str {
    text.trim_matches(|c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn language_codes_are_split_like_transformers() {
        assert_eq!(
            split_language_code(">>eng<< Привет"),
            (Some(">>eng<<"), " Привет")
        );
        assert_eq!(split_language_code(">>eng Привет"), (None, ">>eng Привет"));
        assert_eq!(split_language_code("a >>eng<<"), (None, "a >>eng<<"));
    }

    #[test]
    fn strip_matches_python() {
        assert_eq!(python_strip("\u{1f} a\u{a0}\n"), "a");
    }
}
