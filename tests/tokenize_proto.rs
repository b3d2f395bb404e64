//! Property test of the SentencePiece model reader and what is built from it: random bytes,
//! truncated models and models with corrupted bytes (above all in the precompiled charsmap)
//! give an error or a working tokenizer, never a panic. A fixed-seed PRNG keeps it repeatable.

use std::path::PathBuf;

use mtsum::tokenize::proto::ModelProto;
use mtsum::tokenize::SpmModel;

/// xorshift64*: small, deterministic, good enough to pick bytes and positions.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

fn fixture_model() -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tokenizers/t5_spiece/spiece.model");
    std::fs::read(path).unwrap()
}

/// Builds a tokenizer from the bytes and, if that works, uses it: nothing may panic.
fn exercise(bytes: &[u8]) -> bool {
    let Ok(model) = SpmModel::from_bytes(bytes) else {
        return false;
    };
    for text in [
        "Полиция задержала 2 подозреваемых.",
        "  «ёлочки» 😀 ﬁ\u{301}\t№5 ",
        "",
    ] {
        if let Ok(ids) = model.encode_ids(text) {
            model.decode_ids(&ids);
        }
    }
    model.decode_ids(&[0, 1, 2, 3, u32::MAX]);
    true
}

#[test]
fn random_bytes_are_rejected_without_panicking() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut accepted = 0;
    for _ in 0..5_000 {
        let len = rng.below(300);
        let bytes = rng.bytes(len);
        if ModelProto::parse(&bytes).is_ok() {
            accepted += 1;
        }
        exercise(&bytes);
    }
    // Random bytes are almost never a model with pieces.
    assert!(accepted < 500, "{accepted} random inputs parsed as models");
}

#[test]
fn every_truncation_of_a_model_is_an_error_or_a_smaller_model() {
    let model = fixture_model();
    let full = ModelProto::parse(&model).unwrap();
    let mut rng = Rng(42);
    let mut cuts: Vec<usize> = (0..400).collect();
    cuts.extend((0..300).map(|_| rng.below(model.len())));
    for cut in cuts {
        match ModelProto::parse(&model[..cut]) {
            Ok(parsed) => assert!(parsed.pieces.len() < full.pieces.len(), "cut at {cut}"),
            Err(err) => assert!(err.offset <= cut, "cut at {cut}: offset {}", err.offset),
        }
    }
    // A cut inside the first piece's field is reported as truncated protobuf.
    let err = ModelProto::parse(&model[..5]).unwrap_err();
    assert!(err.what.starts_with("truncated protobuf"), "{err}");
}

#[test]
fn corrupted_models_never_panic() {
    let model = fixture_model();
    let mut rng = Rng(7);
    let mut built = 0;
    for _ in 0..150 {
        let mut bytes = model.clone();
        for _ in 0..1 + rng.below(8) {
            let at = rng.below(bytes.len());
            bytes[at] = rng.next() as u8;
        }
        built += usize::from(exercise(&bytes));
    }
    // Most single-byte corruptions land in the charsmap and still load.
    assert!(built > 0);
}

#[test]
fn a_corrupted_charsmap_trie_never_panics() {
    let model = fixture_model();
    let proto = ModelProto::parse(&model).unwrap();
    let charsmap = &proto.normalizer.precompiled_charsmap;
    let start = model
        .windows(charsmap.len())
        .position(|w| w == charsmap.as_slice())
        .unwrap();
    let trie_len = u32::from_le_bytes(charsmap[..4].try_into().unwrap()) as usize;
    let mut rng = Rng(2024);
    for _ in 0..150 {
        let mut bytes = model.clone();
        for _ in 0..1 + rng.below(64) {
            bytes[start + 4 + rng.below(trie_len)] = rng.next() as u8;
        }
        assert!(
            exercise(&bytes),
            "a corrupted trie still loads (no UTF-8 check fails)"
        );
    }
}
