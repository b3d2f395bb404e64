//! Every line of `tests/fixtures/corpus/tokenizer_cases.json` through our tokenizers gives the
//! ids and the decoded text that transformers / sentencepiece gave (reference/tokenizers.json).

mod batch_support;

use std::path::Path;

use batch_support::{check_rows, repo_path, tokenizer_reference};
use mtsum::tokenize::{Seq2SeqTokenizer, Side};
use serde_json::Value;

fn ids(value: &Value) -> Vec<u32> {
    serde_json::from_value(value.clone()).unwrap()
}

fn load(dir: &str) -> Seq2SeqTokenizer {
    Seq2SeqTokenizer::from_dir(&repo_path(dir)).unwrap()
}

fn marian_case(key: &str) {
    let reference = tokenizer_reference();
    let section = &reference[key];
    let tok = load(section["dir"].as_str().unwrap());
    let rows = section["rows"].as_array().unwrap();
    assert!(rows.len() > 300);
    let specials = tok.specials();
    assert_eq!(
        specials.eos,
        section["eos_token_id"].as_u64().unwrap() as u32
    );
    assert_eq!(
        specials.unk,
        section["unk_token_id"].as_u64().unwrap() as u32
    );
    assert_eq!(
        specials.pad,
        section["pad_token_id"].as_u64().unwrap() as u32
    );
    check_rows(
        rows,
        "source ids",
        |r| ids(&r["source_ids"]),
        |t, _| tok.encode(t).unwrap(),
    );
    check_rows(
        rows,
        "target ids",
        |r| ids(&r["target_ids"]),
        |t, _| tok.encode_target(t).unwrap(),
    );
    let text = |r: &Value, k: &str| r[k].as_str().unwrap().to_string();
    check_rows(
        rows,
        "decode target (default spm)",
        |r| text(r, "decode_target"),
        |_, r| tok.decode(&ids(&r["target_ids"])).unwrap(),
    );
    let marian = tok.as_marian().unwrap();
    check_rows(
        rows,
        "decode target with target spm",
        |r| text(r, "decode_target_with_target_spm"),
        |_, r| marian.decode_with_spm(&ids(&r["target_ids"]), Side::Target),
    );
    check_rows(
        rows,
        "decode source with source spm",
        |r| text(r, "decode_source_with_source_spm"),
        |_, r| marian.decode_with_spm(&ids(&r["source_ids"]), Side::Source),
    );
}

#[test]
fn marian_shared_vocab_matches_transformers() {
    marian_case("marian");
}

#[test]
fn marian_separate_vocabs_match_transformers() {
    marian_case("marian_separate");
}

#[test]
fn t5_spiece_model_matches_sentencepiece() {
    let reference = tokenizer_reference();
    let t5 = &reference["t5"];
    let tok = load(t5["spiece_dir"].as_str().unwrap());
    let rows = t5["rows"].as_array().unwrap();
    assert_eq!(
        tok.vocab_size(),
        t5["vocab_size"].as_u64().unwrap() as usize
    );
    check_rows(
        rows,
        "spm ids",
        |r| ids(&r["spm_ids"]),
        |t, _| tok.encode(t).unwrap(),
    );
    check_rows(
        rows,
        "spm decode",
        |r| r["spm_decode"].as_str().unwrap().to_string(),
        |_, r| tok.decode(&ids(&r["spm_ids"])).unwrap(),
    );
}

#[test]
fn t5_tokenizer_json_matches_transformers() {
    let reference = tokenizer_reference();
    let t5 = &reference["t5"];
    let tok = load(t5["json_dir"].as_str().unwrap());
    let rows = t5["rows"].as_array().unwrap();
    check_rows(
        rows,
        "hf json ids",
        |r| ids(&r["hf_json_ids"]),
        |t, _| tok.encode(t).unwrap(),
    );
    let text = |r: &Value, k: &str| r[k].as_str().unwrap().to_string();
    check_rows(
        rows,
        "hf json decode",
        |r| text(r, "hf_json_decode"),
        |_, r| tok.decode(&ids(&r["hf_json_ids"])).unwrap(),
    );
    check_rows(
        rows,
        "hf json decode of spm ids",
        |r| text(r, "hf_json_decode_of_spm_ids"),
        |_, r| tok.decode(&ids(&r["spm_ids"])).unwrap(),
    );
}

#[test]
fn a_folder_without_tokenizer_files_is_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = Seq2SeqTokenizer::from_dir(dir.path())
        .unwrap_err()
        .to_string();
    assert!(err.contains(&dir.path().display().to_string()), "{err}");
    assert!(err.contains("spiece.model"), "{err}");
}

#[test]
fn a_corrupt_spm_is_named_with_the_byte_offset() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = repo_path("tests/fixtures/tokenizers/marian");
    for name in ["target.spm", "vocab.json"] {
        std::fs::copy(fixture.join(name), dir.path().join(name)).unwrap();
    }
    let bytes = std::fs::read(fixture.join("source.spm")).unwrap();
    std::fs::write(dir.path().join("source.spm"), &bytes[..1000]).unwrap();
    let err = Seq2SeqTokenizer::from_dir(dir.path())
        .unwrap_err()
        .to_string();
    let expected = Path::new("source.spm");
    assert!(err.contains(&*expected.to_string_lossy()), "{err}");
    assert!(
        err.contains("not a SentencePiece model (truncated protobuf"),
        "{err}"
    );
    assert!(err.contains("at byte"), "{err}");
}
