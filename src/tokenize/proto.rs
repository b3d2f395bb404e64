//! A reader for SentencePiece model files (`spiece.model`, Marian's `source.spm`/`target.spm`).
//!
//! The file is a protobuf `ModelProto`. We read it with a small hand-written wire-format reader
//! instead of a protobuf crate because we need thirteen scalar fields out of four messages: a
//! generated-code crate (prost, protobuf) would add a build step or a vendored `.proto`, and their
//! schemaless readers bring more than the ~100 lines below. Every read is bounds-checked and
//! returns an error naming the byte offset; nothing here can panic on hostile bytes (see the
//! property test in `tests/tokenize_proto.rs`).
//!
//! Field numbers are those of `sentencepiece_model.proto` (sentencepiece 0.2):
//! `ModelProto { 1: pieces, 2: trainer_spec, 3: normalizer_spec }`,
//! `SentencePiece { 1: piece, 2: score (float), 3: type }`,
//! `TrainerSpec { 3: model_type, 24: treat_whitespace_as_suffix, 35: byte_fallback, 40: unk_id,
//! 44: unk_surface }`,
//! `NormalizerSpec { 1: name, 2: precompiled_charsmap, 3: add_dummy_prefix,
//! 4: remove_extra_whitespaces, 5: escape_whitespaces }`. Unknown fields are skipped.

/// The kind of a piece, as SentencePiece's `SentencePiece.Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PieceKind {
    Normal,
    Unknown,
    Control,
    UserDefined,
    Unused,
    Byte,
}

impl PieceKind {
    fn from_wire(value: u64) -> Option<Self> {
        Some(match value {
            1 => Self::Normal,
            2 => Self::Unknown,
            3 => Self::Control,
            4 => Self::UserDefined,
            5 => Self::Unused,
            6 => Self::Byte,
            _ => return None,
        })
    }
}

/// One vocabulary entry; its id is its position in [`ModelProto::pieces`].
#[derive(Debug, Clone, PartialEq)]
pub struct Piece {
    pub piece: String,
    pub score: f32,
    pub kind: PieceKind,
}

/// The segmentation algorithm the model was trained with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelType {
    Unigram,
    Bpe,
    Word,
    Char,
}

/// The parts of `TrainerSpec` that matter when encoding and decoding.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainerSpec {
    pub model_type: ModelType,
    pub byte_fallback: bool,
    /// `▁` ends words instead of starting them (not supported by the tokenizer builder).
    pub treat_whitespace_as_suffix: bool,
    pub unk_id: u32,
    /// What `<unk>` decodes to (default " ⁇ ").
    pub unk_surface: String,
}

impl Default for TrainerSpec {
    fn default() -> Self {
        Self {
            model_type: ModelType::Unigram,
            byte_fallback: false,
            treat_whitespace_as_suffix: false,
            unk_id: 0,
            unk_surface: " \u{2047} ".to_string(),
        }
    }
}

/// `NormalizerSpec`, with SentencePiece's defaults for absent fields.
#[derive(Debug, Clone, PartialEq)]
pub struct NormalizerSpec {
    pub name: String,
    /// Serialized double-array trie + normalized strings (empty: identity normalization).
    pub precompiled_charsmap: Vec<u8>,
    pub add_dummy_prefix: bool,
    pub remove_extra_whitespaces: bool,
    pub escape_whitespaces: bool,
}

impl Default for NormalizerSpec {
    fn default() -> Self {
        Self {
            name: String::new(),
            precompiled_charsmap: Vec::new(),
            add_dummy_prefix: true,
            remove_extra_whitespaces: true,
            escape_whitespaces: true,
        }
    }
}

/// A decoded SentencePiece model.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ModelProto {
    pub pieces: Vec<Piece>,
    pub trainer: TrainerSpec,
    pub normalizer: NormalizerSpec,
}

/// Why bytes are not a SentencePiece model; `offset` is where reading stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} at byte {offset}")]
pub struct ProtoError {
    pub what: &'static str,
    pub offset: usize,
}

impl ModelProto {
    /// Decodes a serialized `ModelProto`.
    pub fn parse(bytes: &[u8]) -> Result<Self, ProtoError> {
        let mut model = ModelProto::default();
        let mut reader = Reader::new(bytes, 0);
        while let Some((field, value)) = reader.next_field()? {
            match (field, value) {
                (1, Value::Bytes(b, at)) => model.pieces.push(parse_piece(b, at)?),
                (2, Value::Bytes(b, at)) => model.trainer = parse_trainer(b, at)?,
                (3, Value::Bytes(b, at)) => model.normalizer = parse_normalizer(b, at)?,
                _ => {}
            }
        }
        if model.pieces.is_empty() {
            return Err(ProtoError {
                what: "no pieces (not a SentencePiece model)",
                offset: bytes.len(),
            });
        }
        Ok(model)
    }
}

fn parse_piece(bytes: &[u8], base: usize) -> Result<Piece, ProtoError> {
    let mut piece = Piece {
        piece: String::new(),
        score: 0.0,
        kind: PieceKind::Normal,
    };
    let mut reader = Reader::new(bytes, base);
    while let Some((field, value)) = reader.next_field()? {
        match (field, value) {
            (1, Value::Bytes(b, at)) => piece.piece = utf8(b, at)?,
            (2, Value::Fixed32(bits)) => piece.score = f32::from_bits(bits),
            (3, Value::Varint(v)) => {
                piece.kind = PieceKind::from_wire(v).ok_or(ProtoError {
                    what: "unknown piece type",
                    offset: reader.pos,
                })?
            }
            _ => {}
        }
    }
    Ok(piece)
}

fn parse_trainer(bytes: &[u8], base: usize) -> Result<TrainerSpec, ProtoError> {
    let mut spec = TrainerSpec::default();
    let mut reader = Reader::new(bytes, base);
    while let Some((field, value)) = reader.next_field()? {
        match (field, value) {
            (3, Value::Varint(v)) => {
                spec.model_type = match v {
                    1 => ModelType::Unigram,
                    2 => ModelType::Bpe,
                    3 => ModelType::Word,
                    4 => ModelType::Char,
                    _ => {
                        return Err(ProtoError {
                            what: "unknown model type",
                            offset: reader.pos,
                        })
                    }
                }
            }
            (24, Value::Varint(v)) => spec.treat_whitespace_as_suffix = v != 0,
            (35, Value::Varint(v)) => spec.byte_fallback = v != 0,
            // int32 fields are sign-extended varints; ids outside u32 are rejected when used.
            (40, Value::Varint(v)) => spec.unk_id = u32::try_from(v).unwrap_or(u32::MAX),
            (44, Value::Bytes(b, at)) => spec.unk_surface = utf8(b, at)?,
            _ => {}
        }
    }
    Ok(spec)
}

fn parse_normalizer(bytes: &[u8], base: usize) -> Result<NormalizerSpec, ProtoError> {
    let mut spec = NormalizerSpec::default();
    let mut reader = Reader::new(bytes, base);
    while let Some((field, value)) = reader.next_field()? {
        match (field, value) {
            (1, Value::Bytes(b, at)) => spec.name = utf8(b, at)?,
            (2, Value::Bytes(b, _)) => spec.precompiled_charsmap = b.to_vec(),
            (3, Value::Varint(v)) => spec.add_dummy_prefix = v != 0,
            (4, Value::Varint(v)) => spec.remove_extra_whitespaces = v != 0,
            (5, Value::Varint(v)) => spec.escape_whitespaces = v != 0,
            _ => {}
        }
    }
    Ok(spec)
}

fn utf8(bytes: &[u8], offset: usize) -> Result<String, ProtoError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| ProtoError {
        what: "string field is not UTF-8",
        offset,
    })
}

/// A field's payload; length-delimited payloads carry their absolute offset for error messages.
enum Value<'a> {
    Varint(u64),
    Fixed32(u32),
    Fixed64,
    Bytes(&'a [u8], usize),
}

/// Protobuf wire-format cursor over one message.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// Offset of `bytes` in the whole file, so errors point into the file.
    base: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8], base: usize) -> Self {
        Self {
            bytes,
            pos: 0,
            base,
        }
    }

    fn error(&self, what: &'static str) -> ProtoError {
        ProtoError {
            what,
            offset: self.base + self.pos,
        }
    }

    /// The next (field number, value), or None at the end of the message.
    fn next_field(&mut self) -> Result<Option<(u64, Value<'a>)>, ProtoError> {
        if self.pos >= self.bytes.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let field = key >> 3;
        if field == 0 {
            return Err(self.error("invalid field number 0"));
        }
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => {
                self.take(8, "truncated protobuf (fixed64)")?;
                Value::Fixed64
            }
            2 => {
                let len = self.varint()?;
                let len = usize::try_from(len).map_err(|_| self.error("length too large"))?;
                let at = self.base + self.pos;
                Value::Bytes(
                    self.take(len, "truncated protobuf (length-delimited field)")?,
                    at,
                )
            }
            5 => {
                let b = self.take(4, "truncated protobuf (fixed32)")?;
                Value::Fixed32(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            }
            _ => return Err(self.error("unsupported protobuf wire type")),
        };
        Ok(Some((field, value)))
    }

    fn take(&mut self, len: usize, what: &'static str) -> Result<&'a [u8], ProtoError> {
        let end = self
            .pos
            .checked_add(len)
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| self.error(what))?;
        let slice = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    fn varint(&mut self) -> Result<u64, ProtoError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self
                .bytes
                .get(self.pos)
                .ok_or_else(|| self.error("truncated protobuf (varint)"))?;
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(self.error("varint longer than 10 bytes"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(number: u64, wire: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![((number << 3) | wire) as u8];
        if wire == 2 {
            out.push(payload.len() as u8);
        }
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn reads_pieces_scores_types_and_specs() {
        let mut piece = field(1, 2, b"abc");
        piece.extend(field(2, 5, &(-1.5f32).to_le_bytes()));
        piece.extend(field(3, 0, &[6]));
        let mut bytes = field(1, 2, &piece);
        bytes.extend(field(2, 2, &[0x98, 0x02, 0x01])); // field 35 (byte_fallback) = 1
        bytes.extend(field(3, 2, &field(3, 0, &[0])));
        let model = ModelProto::parse(&bytes).unwrap();
        assert_eq!(
            model.pieces,
            vec![Piece {
                piece: "abc".into(),
                score: -1.5,
                kind: PieceKind::Byte
            }]
        );
        assert!(model.trainer.byte_fallback);
        assert!(!model.normalizer.add_dummy_prefix);
        assert!(model.normalizer.remove_extra_whitespaces);
    }

    #[test]
    fn truncation_is_reported_with_its_offset() {
        let bytes = field(1, 2, b"\x0a\x05ab");
        let err = ModelProto::parse(&bytes).unwrap_err();
        assert_eq!(err.what, "truncated protobuf (length-delimited field)");
        assert_eq!(err.offset, 4);
    }
}
