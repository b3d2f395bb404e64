//! Russian text into translatable segments: blocks, sentences, over-long sentences split.
//!
//! Translation models see one segment at a time and have a hard limit on its length (512
//! positions for opus-mt-ru-en). This module cuts a document the way a careful reader would,
//! keeps its structure so the translation comes back with the same headings, paragraphs and
//! list items, and never truncates: a sentence too long for the model is cut into pieces that
//! are translated one by one and joined again.
//!
//! The steps, each usable on its own:
//! - [`paragraphs`]: a plain-text document's [`Block`]s, each a heading, a paragraph or a list
//!   item (Markdown and HTML are parsed by `io::text_blocks`, which uses it for plain text).
//! - [`sentences`] / [`sentence_spans`]: the sentences of a paragraph, by rules for Russian
//!   (initials, abbreviations, dates, section numbers, quotes, dialogue dashes).
//! - [`normalize_for_model`]: the text as the model should see it (spaces, soft hyphens,
//!   zero-width and control characters); the original is kept for the Russian side of output.
//! - [`split_long`] / [`join_pieces`]: a segment over the token limit cut at the best boundary,
//!   counted by the caller's tokenizer, and the translated pieces joined back.
//!
//! [`prepare`] runs them all: blocks in, [`PreparedBlock`]s out, each sentence with its
//! original text and the pieces (usually one) that go to the model.
//!
//! ```
//! use mtsum::text;
//!
//! let doc = "Итоги\n\nВ 2007 г. Ю. Шток посетил г. Лион. Встреча прошла успешно.";
//! let words = |s: &str| s.split_whitespace().count();
//! let blocks = text::prepare(&text::paragraphs(doc), 100, &words);
//! assert_eq!(blocks[0].kind, text::BlockKind::Heading);
//! assert_eq!(blocks[1].sentences[0].original, "В 2007 г. Ю. Шток посетил г. Лион.");
//! assert!(!blocks[1].sentences[0].is_split());
//! ```

mod abbrev;
mod blocks;
pub mod glossary;
pub mod loops;
pub mod names;
mod normalize;
pub mod numbers;
mod sentences;
mod split;

pub use blocks::{paragraphs, Block, BlockKind};
pub use normalize::{collapse_spaces, normalize_for_model};
pub use sentences::{sentence_spans, sentences};
pub use split::{join_pieces, split_long, Piece};

/// One sentence: the source text and what the model gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sentence {
    /// As written in the source (trimmed): the Russian side of the output.
    pub original: String,
    /// [`normalize_for_model`] of the original, cut by [`split_long`]: one piece unless the
    /// sentence is over the token limit.
    pub pieces: Vec<Piece>,
}

impl Sentence {
    /// Whether the sentence was too long for the model and goes in several pieces (the JSON
    /// output marks such sentences).
    pub fn is_split(&self) -> bool {
        self.pieces.len() > 1
    }

    /// Joins what became of each piece (one translation per piece, in order).
    pub fn join<S: AsRef<str>>(&self, translations: &[S]) -> String {
        join_pieces(&self.pieces, translations)
    }
}

/// A block with its sentences ready for the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedBlock {
    pub kind: BlockKind,
    pub marker: Option<String>,
    /// A heading is kept as one segment; paragraphs and list items are cut into sentences.
    pub sentences: Vec<Sentence>,
}

/// Cuts each block into sentences and each sentence into pieces of at most `max_tokens`
/// tokens as counted by `count` (the model's tokenizer on the normalized text). Blocks whose
/// text is empty once normalized are left out.
pub fn prepare(
    blocks: &[Block],
    max_tokens: usize,
    count: &dyn Fn(&str) -> usize,
) -> Vec<PreparedBlock> {
    blocks
        .iter()
        .map(|block| PreparedBlock {
            kind: block.kind,
            marker: block.marker.clone(),
            sentences: block_sentences(block)
                .into_iter()
                .filter_map(|original| prepare_sentence(original, max_tokens, count))
                .collect(),
        })
        .filter(|block| !block.sentences.is_empty())
        .collect()
}

fn block_sentences(block: &Block) -> Vec<&str> {
    match block.kind {
        BlockKind::Heading => vec![block.text.trim()],
        BlockKind::Paragraph | BlockKind::ListItem => sentence_spans(&block.text)
            .into_iter()
            .map(|span| &block.text[span])
            .collect(),
    }
}

fn prepare_sentence(
    original: &str,
    max_tokens: usize,
    count: &dyn Fn(&str) -> usize,
) -> Option<Sentence> {
    let normalized = normalize_for_model(original);
    if normalized.is_empty() {
        return None;
    }
    Some(Sentence {
        original: original.to_string(),
        pieces: split_long(&normalized, max_tokens, count),
    })
}
