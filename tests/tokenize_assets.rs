//! Parity on the real tokenizer files of the default models in `../shared/assets` (never
//! committed, so these tests are `#[ignore]`d and `.ci/run` runs them when the files are
//! present; see `batch_support::assets`): rut5_base_sum_gazeta's tokenizer.json gives
//! transformers' ids, its spiece.model alone gives the `sentencepiece` library's ids
//! (reference/rut5_assets.json), and the real opus-mt vocab.json loads with the right special
//! ids.

mod batch_support;

use batch_support::{assets, check_rows, read_json};
use mtsum::tokenize::{Seq2SeqTokenizer, Vocab};
use serde_json::Value;

fn rows() -> Vec<Value> {
    let json: Value = read_json("tests/fixtures/reference/rut5_assets.json");
    json["rows"].as_array().unwrap().clone()
}

fn ids(value: &Value) -> Vec<u32> {
    serde_json::from_value(value.clone()).unwrap()
}

#[test]
#[ignore = "needs the real model files in ../shared/assets; .ci/run runs it when present"]
fn rut5_tokenizer_json_gives_transformers_ids() {
    let tok = Seq2SeqTokenizer::from_dir(&assets::model("rut5_base_sum_gazeta")).unwrap();
    assert_eq!((tok.pad_id(), tok.eos_id(), tok.unk_id()), (0, 1, 2));
    let rows = rows();
    // transformers 5.x ids where they differ from the tokenizers library on the file.
    let expected = |r: &Value| ids(r.get("hf_ids").unwrap_or(&r["tokenizer_json_ids"]));
    check_rows(&rows, "ids", expected, |text, _| tok.encode(text).unwrap());
    check_rows(
        &rows,
        "decodes",
        |r| r["hf_decode"].as_str().unwrap().to_string(),
        |_, r| tok.decode(&expected(r)).unwrap(),
    );
}

#[test]
#[ignore = "needs the real model files in ../shared/assets; .ci/run runs it when present"]
fn rut5_spiece_model_alone_gives_sentencepiece_ids() {
    // A folder with only the spiece.model (a temporary copy, never committed).
    let dir = tempfile::tempdir().unwrap();
    let spiece = assets::model("rut5_base_sum_gazeta").join("spiece.model");
    std::fs::copy(spiece, dir.path().join("spiece.model")).unwrap();
    let tok = Seq2SeqTokenizer::from_dir(dir.path()).unwrap();
    let rows = rows();
    check_rows(
        &rows,
        "ids",
        |r| ids(&r["spm_ids"]),
        |text, _| tok.encode(text).unwrap(),
    );
    check_rows(
        &rows,
        "decodes",
        |r| r["spm_decode"].as_str().unwrap().to_string(),
        |_, r| tok.decode(&ids(&r["spm_ids"])).unwrap(),
    );
    // The two files disagree on characters outside the old tokenizer.json's vocabulary.
    let differ = rows
        .iter()
        .filter(|r| r["spm_ids"] != r["tokenizer_json_ids"])
        .count();
    assert!(differ > 0);
}

#[test]
#[ignore = "needs the real model files in ../shared/assets; .ci/run runs it when present"]
fn opus_vocab_json_loads_with_marian_special_ids() {
    let vocab = Vocab::from_file(&assets::model("opus-mt-ru-en").join("vocab.json")).unwrap();
    assert_eq!(vocab.len(), 62_518);
    assert_eq!(vocab.id("</s>"), Some(0));
    assert_eq!(vocab.id("<unk>"), Some(1));
    assert_eq!(vocab.id("<pad>"), Some(62_517));
    assert_eq!(vocab.token(62_517), Some("<pad>"));
}
