//! Tokenizers that transformers 5.x builds at load time when a repo has no `tokenizer.json`:
//!
//! - **GPT-2 byte-level BPE** from `vocab.json` + `merges.txt` (sshleifer/distilbart-cnn-12-6,
//!   facebook/bart-*). transformers 5.x's `BartTokenizer` is `RobertaTokenizer`, which builds a
//!   `tokenizers` pipeline: a `BPE` model (no unk token, no subword prefix or suffix), a
//!   `ByteLevel` pre-tokenizer with the repo's `add_prefix_space` (default false), a `ByteLevel`
//!   decoder, and a `RobertaProcessing` post-processor that gives `<s> text </s>` (what
//!   `build_inputs_with_special_tokens` of the old BartTokenizer did). The special tokens are added
//!   unnormalized, with the `lstrip`/`rstrip` that tokenizer_config.json gives them when it writes
//!   them as `AddedToken` objects, else none: RobertaTokenizer 5.x does not lstrip a plain
//!   `"<mask>"` (the 4.x slow tokenizer did; configs saved by 4.x carry that as an object).
//!   `clean_up_tokenization_spaces` is ignored for BPE by transformers 5.x, so by us too.
//! - **mBART's `sentencepiece.bpe.model`** (facebook/mbart-large-cc25 layout). transformers 5.x's
//!   `MBartTokenizer` turns the SentencePiece model into a `Unigram` over the pieces' scores (even
//!   for a BPE-type model) with fairseq's ids: `<s>`=0 `<pad>`=1 `</s>`=2 `<unk>`=3, then the
//!   model's pieces from its fourth on (spm id + 1), the 25 fairseq language codes, `<mask>` last.
//!   No normalizer (not even the model's charsmap), a `WhitespaceSplit` + `Metaspace(always)`
//!   pre-tokenizer and decoder, and the source side `text </s> src_lang` (src_lang from
//!   tokenizer_config.json, default `en_XX`). Decoding applies transformers' clean-up of spaces
//!   before punctuation when tokenizer_config.json asks for it.
//!
//! Both are written as the `tokenizer.json` transformers would hold in memory and handed to the
//! `tokenizers` crate, so our ids come from the same code as transformers' (checked row by row
//! against `tests/fixtures/reference/tokenizers.json`).

use std::path::Path;

use serde_json::{json, Map, Value};
use tokenizers::Tokenizer;

use super::proto::ModelProto;
use super::TokenizeError;

/// transformers' `FAIRSEQ_LANGUAGE_CODES` of mBART (mbart-large-cc25): appended after the pieces.
pub const MBART_LANGUAGE_CODES: [&str; 25] = [
    "ar_AR", "cs_CZ", "de_DE", "en_XX", "es_XX", "et_EE", "fi_FI", "fr_XX", "gu_IN", "hi_IN",
    "it_IT", "ja_XX", "kk_KZ", "ko_KR", "lt_LT", "lv_LV", "my_MM", "ne_NP", "nl_XX", "ro_RO",
    "ru_RU", "si_LK", "tr_TR", "vi_VN", "zh_CN",
];

/// A special token as tokenizer_config.json / special_tokens_map.json give it: a string, or an
/// `AddedToken` object with its own stripping rules.
#[derive(Debug, Clone, PartialEq)]
struct Special {
    content: String,
    lstrip: bool,
    rstrip: bool,
}

/// The tokenizer settings of a folder: tokenizer_config.json overlaid by special_tokens_map.json.
struct FolderConfig {
    fields: Map<String, Value>,
}

impl FolderConfig {
    fn load(dir: &Path) -> Result<Self, TokenizeError> {
        let mut fields = Map::new();
        for name in ["tokenizer_config.json", "special_tokens_map.json"] {
            let path = dir.join(name);
            if !path.is_file() {
                continue;
            }
            let value: Value = super::read_json(&path)?;
            let Value::Object(map) = value else {
                return Err(TokenizeError::BadFile {
                    path,
                    reason: "not a JSON object".into(),
                });
            };
            fields.extend(map);
        }
        Ok(Self { fields })
    }

    fn bool(&self, key: &str) -> Option<bool> {
        self.fields.get(key).and_then(Value::as_bool)
    }

    fn str(&self, key: &str) -> Option<&str> {
        self.fields.get(key).and_then(Value::as_str)
    }

    /// The special token `key`, or `default` with the given stripping when the config is silent.
    fn special(&self, key: &str, default: &str, default_lstrip: bool) -> Special {
        match self.fields.get(key) {
            Some(Value::String(s)) => Special {
                content: s.clone(),
                lstrip: default_lstrip,
                rstrip: false,
            },
            Some(Value::Object(o)) if o.get("content").and_then(Value::as_str).is_some() => {
                let flag = |k: &str| o.get(k).and_then(Value::as_bool).unwrap_or(false);
                Special {
                    content: o["content"].as_str().unwrap_or(default).to_string(),
                    lstrip: flag("lstrip"),
                    rstrip: flag("rstrip"),
                }
            }
            _ => Special {
                content: default.to_string(),
                lstrip: default_lstrip,
                rstrip: false,
            },
        }
    }

    /// `additional_special_tokens` as strings (objects give their content).
    fn additional(&self) -> Vec<String> {
        let Some(Value::Array(items)) = self.fields.get("additional_special_tokens") else {
            return Vec::new();
        };
        items
            .iter()
            .filter_map(|v| v.as_str().or_else(|| v.get("content")?.as_str()))
            .map(String::from)
            .collect()
    }
}

/// An `added_tokens` entry of tokenizer.json for a special token with a known id.
fn added_token(id: u32, special: &Special) -> Value {
    json!({
        "id": id, "content": special.content, "single_word": false, "lstrip": special.lstrip,
        "rstrip": special.rstrip, "normalized": false, "special": true,
    })
}

fn bad(path: &Path, reason: impl Into<String>) -> TokenizeError {
    TokenizeError::BadFile {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn build(json: Value, path: &Path) -> Result<Tokenizer, TokenizeError> {
    serde_json::from_value(json).map_err(|e| bad(path, format!("cannot build the tokenizer: {e}")))
}

/// BART's byte-level BPE from `dir/vocab.json` and `dir/merges.txt`, as transformers 5.x's
/// `BartTokenizer` builds it (see the module docs). Its post-processor adds `<s>` and `</s>`.
pub fn byte_level_bpe(dir: &Path) -> Result<Tokenizer, TokenizeError> {
    let vocab_path = dir.join("vocab.json");
    let merges_path = dir.join("merges.txt");
    let vocab: Value = super::read_json(&vocab_path)?;
    let Value::Object(vocab) = vocab else {
        return Err(bad(&vocab_path, "not a JSON object of token -> id"));
    };
    if let Some((token, _)) = vocab.iter().find(|(_, id)| id.as_u64().is_none()) {
        return Err(bad(
            &vocab_path,
            format!("the id of {token:?} is not a whole number"),
        ));
    }
    let merges = read_merges(&merges_path)?;
    let config = FolderConfig::load(dir)?;
    let add_prefix_space = config.bool("add_prefix_space").unwrap_or(false);
    let trim_offsets = config.bool("trim_offsets").unwrap_or(true);
    let specials = [
        config.special("bos_token", "<s>", false),
        config.special("eos_token", "</s>", false),
        config.special("unk_token", "<unk>", false),
        config.special("sep_token", "</s>", false),
        config.special("pad_token", "<pad>", false),
        config.special("cls_token", "<s>", false),
        config.special("mask_token", "<mask>", false),
    ];
    let extra: Vec<Special> = (config.additional().into_iter())
        .map(|content| Special {
            content,
            lstrip: false,
            rstrip: false,
        })
        .collect();
    // Tokens missing from vocab.json get the next free ids, in this order, as transformers adds them.
    let mut next_id = vocab
        .values()
        .filter_map(Value::as_u64)
        .max()
        .map_or(0, |m| m + 1) as u32;
    let mut added: Vec<Value> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut id_of = |content: &str| -> u32 {
        match vocab.get(content).and_then(Value::as_u64) {
            Some(id) => id as u32,
            None => {
                next_id += 1;
                next_id - 1
            }
        }
    };
    let mut ids = std::collections::HashMap::new();
    for special in specials.iter().chain(&extra) {
        if seen.insert(special.content.clone()) {
            let id = id_of(&special.content);
            ids.insert(special.content.clone(), id);
            added.push(added_token(id, special));
        }
    }
    let (sep, cls) = (&specials[3].content, &specials[5].content);
    let json = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": add_prefix_space,
                          "trim_offsets": trim_offsets, "use_regex": true},
        "post_processor": {"type": "RobertaProcessing", "sep": [sep, ids[sep]], "cls": [cls, ids[cls]],
                           "trim_offsets": trim_offsets, "add_prefix_space": add_prefix_space},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false,
                  "ignore_merges": false, "vocab": vocab, "merges": merges},
    });
    build(json, &vocab_path)
}

/// The merge rules of `merges.txt`: one `left right` pair a line after an optional `#version`
/// header; blank lines are skipped, anything else is an error naming the line.
fn read_merges(path: &Path) -> Result<Vec<String>, TokenizeError> {
    let text = std::fs::read_to_string(path).map_err(|source| TokenizeError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut merges = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if (n == 0 && line.starts_with("#version")) || line.trim().is_empty() {
            continue;
        }
        let parts: Vec<&str> = line.split(' ').collect();
        if parts.len() != 2 || parts.iter().any(|p| p.is_empty()) {
            return Err(bad(
                path,
                format!("line {}: expected two tokens separated by one space, found {line:?}; re-download the file", n + 1),
            ));
        }
        merges.push(line.to_string());
    }
    Ok(merges)
}

/// What an mBART SentencePiece tokenizer needs beyond its `tokenizers` pipeline.
#[derive(Debug, Clone, Copy)]
pub struct MbartExtras {
    /// tokenizer_config.json's clean_up_tokenization_spaces (transformers applies it on decode).
    pub clean_up_spaces: bool,
}

/// mBART's tokenizer from `path` (`sentencepiece.bpe.model`) and its folder's
/// tokenizer_config.json, as transformers 5.x's `MBartTokenizer` builds it (see the module docs).
pub fn mbart_spm(path: &Path) -> Result<(Tokenizer, MbartExtras), TokenizeError> {
    let bytes = std::fs::read(path).map_err(|source| TokenizeError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let proto = ModelProto::parse(&bytes).map_err(|e| {
        bad(
            path,
            format!("not a SentencePiece model ({e}); re-download it"),
        )
    })?;
    if proto.pieces.len() < 3 {
        return Err(bad(
            path,
            "fewer than 3 pieces: not an mBART SentencePiece model",
        ));
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let config = FolderConfig::load(dir)?;
    let plain = |content: &str| Special {
        content: content.to_string(),
        lstrip: false,
        rstrip: false,
    };
    let bos = config.special("bos_token", "<s>", false);
    let pad = config.special("pad_token", "<pad>", false);
    let eos = config.special("eos_token", "</s>", false);
    let unk = config.special("unk_token", "<unk>", false);
    // MBartTokenizer wraps a plain "<mask>" in AddedToken(lstrip=True).
    let mask = config.special("mask_token", "<mask>", true);
    let mut vocab: Vec<(String, f64)> = [&bos, &pad, &eos, &unk]
        .iter()
        .map(|s| (s.content.clone(), 0.0))
        .collect();
    vocab.extend((proto.pieces.iter().skip(3)).map(|p| (p.piece.clone(), f64::from(p.score))));
    vocab.extend(MBART_LANGUAGE_CODES.iter().map(|c| (c.to_string(), 0.0)));
    vocab.push((mask.content.clone(), 0.0));
    let index = |content: &str| {
        vocab
            .iter()
            .position(|(p, _)| p == content)
            .map(|i| i as u32)
    };
    let mut added = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut specials: Vec<Special> = vec![
        bos,
        eos,
        unk.clone(),
        plain("</s>"),
        pad,
        plain("<s>"),
        mask,
    ];
    specials.extend(MBART_LANGUAGE_CODES.iter().map(|c| plain(c)));
    specials.extend(config.additional().iter().map(|c| plain(c)));
    for special in &specials {
        if !seen.insert(special.content.clone()) {
            continue;
        }
        let id = index(&special.content).ok_or_else(|| {
            bad(
                path,
                format!(
                    "the special token {:?} of tokenizer_config.json is not among the model's pieces",
                    special.content
                ),
            )
        })?;
        added.push(added_token(id, special));
    }
    let src_lang = config.str("src_lang").unwrap_or("en_XX").to_string();
    let eos_content = specials[1].content.clone();
    let (eos_id, lang_id) = match (index(&eos_content), index(&src_lang)) {
        (Some(e), Some(l)) => (e, l),
        _ => {
            return Err(bad(
                dir.join("tokenizer_config.json").as_path(),
                format!("src_lang {src_lang:?} is not one of mBART's language codes"),
            ))
        }
    };
    let seq = |id: &str| json!({"Sequence": {"id": id, "type_id": 0}});
    let special = |id: &str| json!({"SpecialToken": {"id": id, "type_id": 0}});
    let metaspace = json!({"type": "Metaspace", "replacement": "\u{2581}", "prepend_scheme": "always", "split": true});
    let unk_id = index(&unk.content).unwrap_or(3);
    let json = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "WhitespaceSplit"}, metaspace]},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [seq("A"), special(&eos_content), special(&src_lang)],
            "pair": [seq("A"), seq("B"), special(&eos_content), special(&src_lang)],
            "special_tokens": {
                eos_content.clone(): {"id": eos_content, "ids": [eos_id], "tokens": [eos_content]},
                src_lang.clone(): {"id": src_lang, "ids": [lang_id], "tokens": [src_lang]},
            },
        },
        "decoder": metaspace,
        "model": {"type": "Unigram", "unk_id": unk_id, "vocab": vocab, "byte_fallback": false},
    });
    let extras = MbartExtras {
        clean_up_spaces: config.bool("clean_up_tokenization_spaces").unwrap_or(false),
    };
    Ok((build(json, path)?, extras))
}

/// transformers' `clean_up_tokenization`: removes the space before punctuation and English
/// contractions.
pub fn clean_up_tokenization(text: &str) -> String {
    text.replace(" .", ".")
        .replace(" ?", "?")
        .replace(" !", "!")
        .replace(" ,", ",")
        .replace(" ' ", "'")
        .replace(" n't", "n't")
        .replace(" 'm", "'m")
        .replace(" 's", "'s")
        .replace(" 've", "'ve")
        .replace(" 're", "'re")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_with_a_stray_line_name_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("vocab.json"),
            r#"{"a": 0, "b": 1, "ab": 2}"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("merges.txt"), "#version: 0.2\na b\nab\n").unwrap();
        let err = byte_level_bpe(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("merges.txt") && err.contains("line 3"),
            "{err}"
        );
    }

    #[test]
    fn special_tokens_missing_from_the_vocab_get_new_ids() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("vocab.json"),
            r#"{"a": 0, "b": 1, "ab": 2}"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("merges.txt"), "#version: 0.2\na b\n").unwrap();
        let tok = byte_level_bpe(dir.path()).unwrap();
        let ids = tok.encode("ab", true).unwrap().get_ids().to_vec();
        let bos = tok.token_to_id("<s>").unwrap();
        let eos = tok.token_to_id("</s>").unwrap();
        assert_eq!(ids, vec![bos, 2, eos]);
        assert!(bos >= 3 && eos >= 3 && bos != eos);
    }

    #[test]
    fn clean_up_matches_transformers_list() {
        assert_eq!(
            clean_up_tokenization("It 's done , is n't it ?"),
            "It's done, isn't it?"
        );
    }
}
