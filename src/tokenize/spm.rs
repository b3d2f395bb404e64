//! A SentencePiece unigram model as a `tokenizers` pipeline that gives the `sentencepiece`
//! library's pieces and ids, and SentencePiece's own decoding rules.
//!
//! The pipeline is [`SpmNormalizer`] (charsmap + whitespace rules), a `Metaspace` split on U+2581
//! (only when no vocabulary piece has U+2581 inside it, so splitting cannot change the Viterbi
//! path) and `tokenizers`' `Unigram`. Three SentencePiece rules need care beyond that:
//! - control, unknown, unused and byte pieces are never matched from text: they enter the
//!   `Unigram` vocabulary under the empty string, which its trie never yields;
//! - runs of unknown characters are one `<unk>` whose piece is the text itself (Marian looks
//!   that text up in vocab.json), or, with `byte_fallback`, one `<0xXX>` piece per UTF-8 byte;
//! - user-defined pieces always win where they match (SentencePiece gives them a bonus score).

use std::collections::HashMap;
use std::path::Path;

use tokenizers::models::unigram::Unigram;
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::{DecoderWrapper, PostProcessorWrapper, TokenizerImpl};

use super::normalizer::{SpmNormalizer, SPACE_SYMBOL};
use super::proto::{ModelProto, ModelType, PieceKind};
use super::TokenizeError;

/// The `tokenizers` pipeline equivalent to a SentencePiece unigram model (no post-processor or
/// decoder: ids are returned bare and decoding follows [`SpmModel::decode_pieces`]).
pub type SpmPipeline =
    TokenizerImpl<Unigram, SpmNormalizer, Metaspace, PostProcessorWrapper, DecoderWrapper>;

/// One piece of an encoding: its id in the model and its text (for an unknown run, the text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpmToken {
    pub id: u32,
    pub piece: String,
}

/// A loaded SentencePiece model: encoder pipeline, piece table and decoding rules.
#[derive(Debug, Clone)]
pub struct SpmModel {
    pipeline: SpmPipeline,
    proto: ModelProto,
    ids: HashMap<String, u32>,
    byte_ids: Option<Vec<u32>>,
}

impl SpmModel {
    /// Reads a `.model` / `.spm` file.
    pub fn from_file(path: &Path) -> Result<Self, TokenizeError> {
        let bytes = std::fs::read(path).map_err(|source| TokenizeError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_bytes(&bytes).map_err(|reason| TokenizeError::BadFile {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// Builds the model from serialized `ModelProto` bytes; the error says what is wrong.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        let proto =
            ModelProto::parse(bytes).map_err(|e| format!("not a SentencePiece model ({e})"))?;
        Self::from_proto(proto)
    }

    pub fn from_proto(proto: ModelProto) -> Result<Self, String> {
        let unk_id = check_supported(&proto)?;
        let user_defined: Vec<&str> = proto
            .pieces
            .iter()
            .filter(|p| p.kind == PieceKind::UserDefined)
            .map(|p| p.piece.as_str())
            .collect();
        let normalizer =
            SpmNormalizer::new(&proto.normalizer, &user_defined).map_err(|e| e.to_string())?;
        let split = normalizer.escapes_whitespace() && !has_inner_space(&proto);
        let unigram = Unigram::from(unigram_vocab(&proto), Some(unk_id), false)
            .map_err(|e| format!("cannot build the unigram model: {e}"))?;
        let mut pipeline = TokenizerImpl::new(unigram);
        pipeline.with_normalizer(Some(normalizer));
        pipeline.with_pre_tokenizer(
            split.then(|| Metaspace::new(SPACE_SYMBOL, PrependScheme::Never, true)),
        );
        let ids = proto
            .pieces
            .iter()
            .enumerate()
            .map(|(id, p)| (p.piece.clone(), id as u32))
            .collect();
        let byte_ids = proto
            .trainer
            .byte_fallback
            .then(|| byte_piece_ids(&proto))
            .flatten();
        Ok(Self {
            pipeline,
            proto,
            ids,
            byte_ids,
        })
    }

    /// The `tokenizers` pipeline (normalizer, pre-tokenizer, unigram model) this model encodes
    /// with; its ids are the model's, but unknown runs stay `<unk>` (see [`Self::encode`]).
    pub fn pipeline(&self) -> &SpmPipeline {
        &self.pipeline
    }

    /// Pieces and ids as `SentencePieceProcessor.encode(text)` gives them.
    pub fn encode(&self, text: &str) -> Result<Vec<SpmToken>, TokenizeError> {
        let encoding = self
            .pipeline
            .encode(text, false)
            .map_err(|e| TokenizeError::Encode(e.to_string()))?;
        let unk = self.proto.trainer.unk_id;
        let mut out = Vec::with_capacity(encoding.len());
        for (&id, piece) in encoding.get_ids().iter().zip(encoding.get_tokens()) {
            match &self.byte_ids {
                Some(bytes) if id == unk => out.extend(piece.bytes().map(|b| SpmToken {
                    id: bytes[b as usize],
                    piece: format!("<0x{b:02X}>"),
                })),
                _ => out.push(SpmToken {
                    id,
                    piece: piece.clone(),
                }),
            }
        }
        Ok(out)
    }

    /// Ids only (what `encode(text)` returns in Python).
    pub fn encode_ids(&self, text: &str) -> Result<Vec<u32>, TokenizeError> {
        Ok(self.encode(text)?.into_iter().map(|t| t.id).collect())
    }

    /// Number of pieces.
    pub fn len(&self) -> usize {
        self.proto.pieces.len()
    }

    pub fn is_empty(&self) -> bool {
        self.proto.pieces.is_empty()
    }

    pub fn piece_to_id(&self, piece: &str) -> Option<u32> {
        self.ids.get(piece).copied()
    }

    pub fn id_to_piece(&self, id: u32) -> Option<&str> {
        self.proto.pieces.get(id as usize).map(|p| p.piece.as_str())
    }

    pub fn unk_id(&self) -> u32 {
        self.proto.trainer.unk_id
    }

    pub fn proto(&self) -> &ModelProto {
        &self.proto
    }

    /// `SentencePieceProcessor.decode_pieces`: control pieces vanish, `<unk>` is the unknown
    /// surface (" ⁇ "), a piece the model does not know is copied verbatim (U+2581 included),
    /// runs of byte pieces are UTF-8 decoded (each invalid byte is U+FFFD), U+2581 becomes a
    /// space, and the dummy-prefix space is dropped until something visible has been written.
    pub fn decode_pieces<'p>(&self, pieces: impl IntoIterator<Item = &'p str>) -> String {
        let mut decoder = PieceDecoder::new(self);
        for piece in pieces {
            decoder.push(piece);
        }
        decoder.finish()
    }

    /// `SentencePieceProcessor.decode(ids)`; ids outside the model count as `<unk>`.
    pub fn decode_ids(&self, ids: &[u32]) -> String {
        let unk = self.id_to_piece(self.unk_id()).unwrap_or_default();
        self.decode_pieces(ids.iter().map(|&id| self.id_to_piece(id).unwrap_or(unk)))
    }
}

/// Rejects models this builder would not reproduce exactly; returns the unknown piece's id.
fn check_supported(proto: &ModelProto) -> Result<usize, String> {
    if proto.trainer.model_type != ModelType::Unigram {
        return Err(format!(
            "a {:?} SentencePiece model; only unigram models are supported",
            proto.trainer.model_type
        ));
    }
    if proto.trainer.treat_whitespace_as_suffix {
        return Err(
            "a treat_whitespace_as_suffix model; only prefix `▁` models are supported".into(),
        );
    }
    let unk_id = proto.trainer.unk_id as usize;
    match proto.pieces.get(unk_id) {
        Some(p) if p.kind == PieceKind::Unknown => Ok(unk_id),
        _ => Err(format!("unk_id {unk_id} is not an unknown piece")),
    }
}

/// The unigram vocabulary: pieces that SentencePiece never matches from text get the empty
/// string (the trie never yields it) and the lowest normal score (so the unknown penalty,
/// computed from the minimum score, is SentencePiece's).
fn unigram_vocab(proto: &ModelProto) -> Vec<(String, f64)> {
    let normal = || proto.pieces.iter().filter(|p| p.kind == PieceKind::Normal);
    let min = normal()
        .map(|p| f64::from(p.score))
        .fold(f64::INFINITY, f64::min);
    let max = normal()
        .map(|p| f64::from(p.score))
        .fold(f64::NEG_INFINITY, f64::max);
    let min = if min.is_finite() { min } else { 0.0 };
    let max = if max.is_finite() { max } else { 0.0 };
    proto
        .pieces
        .iter()
        .map(|p| match p.kind {
            PieceKind::Normal => (p.piece.clone(), f64::from(p.score)),
            // SentencePiece: `length * max_score - 0.1`, enough to beat any split of the piece.
            PieceKind::UserDefined => (p.piece.clone(), p.piece.len() as f64 * max - 0.1),
            _ => (String::new(), min),
        })
        .collect()
}

/// True when some matchable piece holds U+2581 after its first character.
fn has_inner_space(proto: &ModelProto) -> bool {
    proto
        .pieces
        .iter()
        .filter(|p| matches!(p.kind, PieceKind::Normal | PieceKind::UserDefined))
        .any(|p| p.piece.chars().skip(1).any(|c| c == SPACE_SYMBOL))
}

/// Ids of `<0x00>`..`<0xFF>`, if the model has all 256 byte pieces.
fn byte_piece_ids(proto: &ModelProto) -> Option<Vec<u32>> {
    let mut ids = vec![None; 256];
    for (id, p) in proto.pieces.iter().enumerate() {
        if p.kind == PieceKind::Byte {
            if let Some(b) = parse_byte_piece(&p.piece) {
                ids[b as usize] = Some(id as u32);
            }
        }
    }
    ids.into_iter().collect()
}

fn parse_byte_piece(piece: &str) -> Option<u8> {
    let hex = piece.strip_prefix("<0x")?.strip_suffix('>')?;
    (hex.len() == 2).then(|| u8::from_str_radix(hex, 16).ok())?
}

/// State of one `decode_pieces` call.
struct PieceDecoder<'m> {
    model: &'m SpmModel,
    out: String,
    bytes: Vec<u8>,
    at_start: bool,
    strip_dummy: bool,
}

impl<'m> PieceDecoder<'m> {
    fn new(model: &'m SpmModel) -> Self {
        let spec = &model.proto.normalizer;
        Self {
            model,
            out: String::new(),
            bytes: Vec::new(),
            at_start: true,
            strip_dummy: spec.add_dummy_prefix || spec.remove_extra_whitespaces,
        }
    }

    fn push(&mut self, piece: &str) {
        let id = self.model.piece_to_id(piece);
        let kind = id
            .and_then(|id| self.model.proto.pieces.get(id as usize))
            .map(|p| p.kind);
        if kind == Some(PieceKind::Byte) {
            if let Some(b) = parse_byte_piece(piece) {
                self.bytes.push(b);
                return;
            }
        }
        self.flush_bytes();
        let text = match kind {
            Some(PieceKind::Control) => String::new(),
            Some(PieceKind::Unknown) => self.model.proto.trainer.unk_surface.clone(),
            None => piece.to_string(),
            Some(_) => {
                let piece = match piece.strip_prefix(SPACE_SYMBOL) {
                    Some(rest) if self.at_start && self.strip_dummy => rest,
                    _ => piece,
                };
                piece.replace(SPACE_SYMBOL, " ")
            }
        };
        self.write(&text);
    }

    fn write(&mut self, text: &str) {
        if !text.is_empty() {
            self.at_start = false;
            self.out.push_str(text);
        }
    }

    fn flush_bytes(&mut self) {
        if !self.bytes.is_empty() {
            let text = utf8_per_byte_lossy(&std::mem::take(&mut self.bytes));
            self.write(&text);
        }
    }

    fn finish(mut self) -> String {
        self.flush_bytes();
        self.out
    }
}

/// UTF-8 decoding where every byte that does not start a valid character becomes U+FFFD
/// (SentencePiece's rule; `String::from_utf8_lossy` merges some invalid runs).
fn utf8_per_byte_lossy(bytes: &[u8]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < bytes.len() {
        let len = match bytes[i] {
            0x00..=0x7f => 1,
            0xc0..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf7 => 4,
            _ => 0,
        };
        match bytes
            .get(i..i + len)
            .filter(|_| len > 0)
            .map(std::str::from_utf8)
        {
            Some(Ok(s)) => {
                out.push_str(s);
                i += len;
            }
            _ => {
                out.push('\u{fffd}');
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenize::proto::Piece;

    fn model(pieces: &[(&str, f32, PieceKind)], byte_fallback: bool) -> Result<SpmModel, String> {
        let mut proto = ModelProto::default();
        proto.trainer.byte_fallback = byte_fallback;
        proto.pieces = pieces
            .iter()
            .map(|&(piece, score, kind)| Piece {
                piece: piece.into(),
                score,
                kind,
            })
            .collect();
        SpmModel::from_proto(proto)
    }

    const BASE: [(&str, f32, PieceKind); 6] = [
        ("<unk>", 0.0, PieceKind::Unknown),
        ("</s>", 0.0, PieceKind::Control),
        ("\u{2581}", -1.0, PieceKind::Normal),
        ("a", -2.0, PieceKind::Normal),
        ("\u{2581}ab", -1.0, PieceKind::Normal),
        ("b", -2.0, PieceKind::Normal),
    ];

    #[test]
    fn control_pieces_are_not_matched_and_unknown_runs_keep_their_text() {
        let m = model(&BASE, false).unwrap();
        let tokens = m.encode("ab </s>xy").unwrap();
        let pieces: Vec<&str> = tokens.iter().map(|t| t.piece.as_str()).collect();
        assert_eq!(pieces, ["\u{2581}ab", "\u{2581}", "</s>xy"]);
        assert_eq!(tokens[2].id, 0);
        assert_eq!(
            m.decode_pieces(["\u{2581}ab", "</s>", "<unk>", "zz\u{2581}"]),
            "ab ⁇ zz\u{2581}"
        );
    }

    #[test]
    fn byte_fallback_spells_unknown_characters_in_bytes() {
        let mut pieces = BASE.to_vec();
        let names: Vec<String> = (0..=255u8).map(|b| format!("<0x{b:02X}>")).collect();
        pieces.extend(names.iter().map(|n| (n.as_str(), 0.0, PieceKind::Byte)));
        let m = model(&pieces, true).unwrap();
        assert_eq!(m.encode_ids("aё").unwrap(), [2, 3, 6 + 0xd1, 6 + 0x91]);
        assert_eq!(m.decode_ids(&[2, 3, 6 + 0xd1, 6 + 0x91]), "aё");
    }

    #[test]
    fn unsupported_models_are_refused_with_the_reason() {
        let mut proto = ModelProto {
            pieces: vec![Piece {
                piece: "<unk>".into(),
                score: 0.0,
                kind: PieceKind::Normal,
            }],
            ..ModelProto::default()
        };
        assert!(SpmModel::from_proto(proto.clone())
            .unwrap_err()
            .contains("not an unknown piece"));
        proto.trainer.model_type = ModelType::Bpe;
        assert!(SpmModel::from_proto(proto)
            .unwrap_err()
            .contains("only unigram"));
    }

    #[test]
    fn invalid_bytes_become_one_replacement_each() {
        assert_eq!(utf8_per_byte_lossy(&[0xf0, 0x9f]), "\u{fffd}\u{fffd}");
        assert_eq!(utf8_per_byte_lossy("ёж".as_bytes()), "ёж");
        assert_eq!(utf8_per_byte_lossy(&[b'a', 0x80, b'b']), "a\u{fffd}b");
    }

    #[test]
    fn byte_pieces_parse_only_in_canonical_form() {
        assert_eq!(parse_byte_piece("<0x0A>"), Some(10));
        assert_eq!(parse_byte_piece("<0xA>"), None);
        assert_eq!(parse_byte_piece("<0x0G>"), None);
    }
}
