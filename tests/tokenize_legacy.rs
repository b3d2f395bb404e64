//! Tokenizers built the way transformers 5.x builds them when a repo has no tokenizer.json:
//! BART's byte-level BPE from vocab.json + merges.txt and mBART's sentencepiece.bpe.model,
//! against transformers on the tricky-line corpus (reference/tokenizers_legacy.json, made by
//! tests/fixtures/make_tokcfg.py).

mod batch_support;

use batch_support::{read_json, repo_path, tokenizer_reference};
use mtsum::tokenize::Seq2SeqTokenizer;
use serde_json::Value;

fn ids(value: &Value) -> Vec<u32> {
    serde_json::from_value(value.clone()).unwrap()
}

fn load(dir: &str) -> Seq2SeqTokenizer {
    Seq2SeqTokenizer::from_dir(&repo_path(dir)).unwrap_or_else(|e| panic!("{dir}: {e}"))
}

/// (text, expected ids, expected decode) of every row of `section`: the first rows belong to the
/// corpus lines in order, later rows carry their own text; `ids_of` gives the ids of a corpus row
/// that does not repeat them.
fn rows(section: &Value, ids_of: impl Fn(usize) -> Vec<u32>) -> Vec<(String, Vec<u32>, String)> {
    let cases: Vec<String> = read_json("tests/fixtures/corpus/tokenizer_cases.json");
    let rows = section["rows"].as_array().unwrap();
    assert!(
        rows.len() > cases.len(),
        "rows for every corpus line and more"
    );
    rows.iter()
        .enumerate()
        .map(|(i, row)| {
            let text = match row.get("text") {
                Some(t) => t.as_str().unwrap().to_string(),
                None => cases[i].clone(),
            };
            let want = match row.get("ids") {
                Some(v) => ids(v),
                None => ids_of(i),
            };
            (text, want, row["decode"].as_str().unwrap().to_string())
        })
        .collect()
}

/// Every row's ids and decode; all mismatches are listed before failing.
fn check(tok: &Seq2SeqTokenizer, rows: &[(String, Vec<u32>, String)], what: &str) {
    let mut failures = Vec::new();
    for (text, want_ids, want_text) in rows {
        let got = tok.encode(text).unwrap();
        if &got != want_ids {
            failures.push(format!(
                "ids of {text:?}:\n  want {want_ids:?}\n  got  {got:?}"
            ));
        }
        let decoded = tok.decode(want_ids).unwrap();
        if &decoded != want_text {
            failures.push(format!(
                "decode of {text:?}: want {want_text:?}, got {decoded:?}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{what}: {} of {} rows differ from transformers:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
}

fn legacy_reference() -> Value {
    read_json("tests/fixtures/reference/tokenizers_legacy.json")
}

#[test]
fn bart_vocab_and_merges_without_tokenizer_json_match_transformers() {
    let reference = legacy_reference();
    let section = &reference["bart_legacy"];
    let dir = section["dir"].as_str().unwrap();
    assert!(!repo_path(dir).join("tokenizer.json").exists());
    // its ids are those of the same vocabulary's tokenizer.json (asserted by the fixture script)
    let json_rows = tokenizer_reference()["bart_bpe"]["rows"].clone();
    let rows = rows(section, |i| ids(&json_rows[i]["ids"]));
    check(&load(dir), &rows, "bart vocab.json + merges.txt");
    // and the same as the tokenizer.json path of mtsum itself
    let from_json = load("tests/fixtures/tokenizers/bart_bpe");
    for (text, want, _) in &rows {
        assert_eq!(
            &from_json.encode(text).unwrap(),
            want,
            "tokenizer.json path on {text:?}"
        );
    }
}

#[test]
fn bart_with_a_4x_tokenizer_config_adds_the_prefix_space_and_lstrips_the_mask() {
    let reference = legacy_reference();
    let section = &reference["bart_vocab_merges"];
    let tok = load(section["dir"].as_str().unwrap());
    check(
        &tok,
        &rows(section, |_| unreachable!("ids given")),
        "bart 4.x config",
    );
    let specials = tok.specials();
    assert_eq!((specials.eos, specials.pad, specials.unk), (2, 1, 3));
}

#[test]
fn mbart_sentencepiece_bpe_model_matches_transformers() {
    let reference = legacy_reference();
    let section = &reference["mbart_spm"];
    let tok = load(section["dir"].as_str().unwrap());
    check(
        &tok,
        &rows(section, |_| unreachable!("ids given")),
        "mbart spm",
    );
    let specials = tok.specials();
    let id = |key: &str| section[key].as_u64().unwrap() as u32;
    assert_eq!(
        (specials.eos, specials.pad, specials.unk),
        (id("eos_token_id"), id("pad_token_id"), id("unk_token_id"))
    );
    assert_eq!(
        tok.vocab_size(),
        section["vocab_size"].as_u64().unwrap() as usize
    );
    // the source side ends with </s> and the source language code (ru_RU in tokenizer_config.json)
    let ids = tok.encode("Привет").unwrap();
    assert_eq!(
        ids[ids.len() - 2..],
        [id("eos_token_id"), id("src_lang_id")]
    );
}

#[test]
fn a_broken_merges_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let src = repo_path("tests/fixtures/models/bart_legacy");
    std::fs::copy(src.join("vocab.json"), dir.path().join("vocab.json")).unwrap();
    std::fs::write(
        dir.path().join("merges.txt"),
        "#version: 0.2\nĠ t\nbroken\n",
    )
    .unwrap();
    let err = Seq2SeqTokenizer::from_dir(dir.path())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("merges.txt") && err.contains("line 3"),
        "{err}"
    );
}
