//! Which files of a repo mtsum reads: config, weights in a format candle loads, and the
//! tokenizer files of the family. Everything else (TF, Flax, ONNX, rust_model.ot, READMEs) is
//! never downloaded.
//!
//! The same rules answer two questions: which files to fetch, given the hub's listing, and
//! which files are missing, given a snapshot folder.

use std::path::Path;

use super::HubError;

pub(crate) const CONFIG: &str = "config.json";
const SAFETENSORS: &str = "model.safetensors";
const SAFETENSORS_INDEX: &str = "model.safetensors.index.json";
const PYTORCH: &str = "pytorch_model.bin";

/// The model families mtsum runs; they differ only in their tokenizer files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Marian,
    Bart,
    T5,
}

impl Family {
    /// From config.json's `model_type` (or a preset's `family`).
    pub fn from_model_type(model_type: &str) -> Option<Family> {
        use crate::seq2seq::ModelType;
        ModelType::parse(model_type).map(|t| match t {
            ModelType::Marian => Family::Marian,
            ModelType::Bart | ModelType::MBart => Family::Bart,
            ModelType::T5 | ModelType::MT5 => Family::T5,
        })
    }

    /// Reads config.json's `model_type`.
    pub fn from_config(path: &Path) -> Result<Family, HubError> {
        let text = std::fs::read_to_string(path).map_err(|e| HubError::io(path, e))?;
        let bad = |message: String| HubError::BadFile {
            path: path.into(),
            message,
        };
        let config: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        let model_type = config
            .get("model_type")
            .and_then(|v| v.as_str())
            .ok_or_else(|| bad("no `model_type` string".into()))?;
        Family::from_model_type(model_type).ok_or_else(|| HubError::UnsupportedModel {
            path: path.into(),
            model_type: model_type.into(),
        })
    }

    /// Groups of tokenizer files; each group is a list of alternatives in order of preference,
    /// and an alternative is a set of files that work together.
    fn tokenizer_groups(self) -> &'static [Group] {
        match self {
            Family::Marian => MARIAN_TOKENIZER,
            Family::T5 => T5_TOKENIZER,
            Family::Bart => BART_TOKENIZER,
        }
    }
}

/// One need: the first alternative whose files are all present is taken.
struct Group {
    alternatives: &'static [&'static [&'static str]],
    required: bool,
}

impl Group {
    const fn required(alternatives: &'static [&'static [&'static str]]) -> Group {
        Group {
            alternatives,
            required: true,
        }
    }

    const fn optional(alternatives: &'static [&'static [&'static str]]) -> Group {
        Group {
            alternatives,
            required: false,
        }
    }

    fn describe(&self) -> String {
        self.alternatives
            .iter()
            .map(|files| files.join(" + "))
            .collect::<Vec<_>>()
            .join(" or ")
    }
}

const MARIAN_TOKENIZER: &[Group] = &[
    Group::required(&[&["source.spm"]]),
    Group::required(&[&["target.spm"]]),
    Group::required(&[&["vocab.json"]]),
    Group::optional(&[&["target_vocab.json"]]),
];
const T5_TOKENIZER: &[Group] = &[Group::required(&[&["tokenizer.json"], &["spiece.model"]])];
// mBART repos (mbart-large-cc25) may carry only sentencepiece.bpe.model.
const BART_TOKENIZER: &[Group] = &[Group::required(&[
    &["tokenizer.json"],
    &["vocab.json", "merges.txt"],
    &["sentencepiece.bpe.model"],
])];

/// Files that are always read, or read when present.
const COMMON: &[Group] = &[
    Group::required(&[&[CONFIG]]),
    Group::optional(&[&["generation_config.json"]]),
    Group::optional(&[&["tokenizer_config.json"]]),
    // Read by the tokenizer: its special tokens win over tokenizer_config.json's.
    Group::optional(&[&["special_tokens_map.json"]]),
];

/// Weights in the order candle prefers them; a sharded checkpoint adds the shards its index
/// names (see [`shards`]).
const WEIGHTS: Group = Group::required(&[&[SAFETENSORS], &[SAFETENSORS_INDEX], &[PYTORCH]]);

/// The outcome of matching the needs against what a repo or a folder has.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Selection {
    /// Files to use, config first, the weights last.
    pub files: Vec<String>,
    /// Required groups with no alternative present, described for a message.
    pub missing: Vec<String>,
}

impl Selection {
    /// The sharded index among the selected files, whose shards are still to be added.
    pub fn shard_index(&self) -> Option<&str> {
        self.files
            .iter()
            .map(String::as_str)
            .find(|f| *f == SAFETENSORS_INDEX)
    }
}

/// Picks the files a family needs among those for which `has` is true; the weights too
/// unless only the tokenizer is wanted.
pub(crate) fn select(family: Family, weights: bool, has: impl Fn(&str) -> bool) -> Selection {
    let mut selection = Selection::default();
    let groups = COMMON
        .iter()
        .chain(family.tokenizer_groups())
        .chain(weights.then_some(&WEIGHTS));
    for group in groups {
        match group
            .alternatives
            .iter()
            .find(|files| files.iter().all(|f| has(f)))
        {
            Some(files) => selection.files.extend(files.iter().map(|f| f.to_string())),
            None if group.required => selection.missing.push(group.describe()),
            None => {}
        }
    }
    selection
}

/// What a run needs before anything is known of the repo: for the message of an empty cache.
pub(crate) fn describe_all(family: Option<Family>, weights: bool) -> Vec<String> {
    let tokenizer: Vec<String> = match family {
        Some(family) => family
            .tokenizer_groups()
            .iter()
            .filter(|g| g.required)
            .map(Group::describe)
            .collect(),
        None => vec!["the tokenizer files".into()],
    };
    std::iter::once(CONFIG.to_string())
        .chain(tokenizer)
        .chain(weights.then(|| WEIGHTS.describe()))
        .collect()
}

/// The shard files a `model.safetensors.index.json` names, sorted and without repeats.
pub(crate) fn shards(index: &Path) -> Result<Vec<String>, HubError> {
    let text = std::fs::read_to_string(index).map_err(|e| HubError::io(index, e))?;
    crate::models::weights::shard_names(&text).map_err(|message| HubError::BadFile {
        path: index.into(),
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn has<'a>(files: &'a [&'a str]) -> impl Fn(&str) -> bool + 'a {
        move |f| files.contains(&f)
    }

    #[test]
    fn marian_takes_the_spm_pair_and_vocab_and_prefers_safetensors() {
        let repo = [
            "config.json",
            "generation_config.json",
            "pytorch_model.bin",
            "model.safetensors",
            "tf_model.h5",
            "rust_model.ot",
            "source.spm",
            "target.spm",
            "vocab.json",
            "tokenizer_config.json",
            "README.md",
        ];
        let s = select(Family::Marian, true, has(&repo));
        assert_eq!(
            s.files,
            [
                "config.json",
                "generation_config.json",
                "tokenizer_config.json",
                "source.spm",
                "target.spm",
                "vocab.json",
                "model.safetensors"
            ]
        );
        assert!(s.missing.is_empty());
    }

    #[test]
    fn t5_falls_back_to_spiece_and_pytorch_weights() {
        let s = select(
            Family::T5,
            true,
            has(&["config.json", "spiece.model", "pytorch_model.bin"]),
        );
        assert_eq!(
            s.files,
            ["config.json", "spiece.model", "pytorch_model.bin"]
        );
        let s = select(
            Family::T5,
            true,
            has(&[
                "config.json",
                "tokenizer.json",
                "spiece.model",
                "model.safetensors",
            ]),
        );
        assert_eq!(
            s.files,
            ["config.json", "tokenizer.json", "model.safetensors"]
        );
    }

    #[test]
    fn bart_needs_both_vocab_and_merges_without_tokenizer_json() {
        let s = select(
            Family::Bart,
            true,
            has(&["config.json", "vocab.json", "model.safetensors"]),
        );
        assert_eq!(
            s.missing,
            ["tokenizer.json or vocab.json + merges.txt or sentencepiece.bpe.model"]
        );
        let s = select(
            Family::Bart,
            true,
            has(&[
                "config.json",
                "sentencepiece.bpe.model",
                "model.safetensors",
            ]),
        );
        assert!(s.missing.is_empty());
        assert!(s.files.iter().any(|f| f == "sentencepiece.bpe.model"));
        let s = select(
            Family::Bart,
            true,
            has(&[
                "config.json",
                "vocab.json",
                "merges.txt",
                "model.safetensors.index.json",
            ]),
        );
        assert_eq!(s.shard_index(), Some("model.safetensors.index.json"));
        assert!(s.missing.is_empty());
    }

    #[test]
    fn tokenizer_only_leaves_the_weights_out() {
        let repo = [
            "config.json",
            "source.spm",
            "target.spm",
            "vocab.json",
            "model.safetensors",
        ];
        let s = select(Family::Marian, false, has(&repo));
        assert_eq!(
            s.files,
            ["config.json", "source.spm", "target.spm", "vocab.json"]
        );
        assert_eq!(
            describe_all(Some(Family::T5), false),
            ["config.json", "tokenizer.json or spiece.model"]
        );
    }

    #[test]
    fn missing_weights_are_described_with_every_alternative() {
        let s = select(
            Family::Marian,
            true,
            has(&[
                "config.json",
                "source.spm",
                "target.spm",
                "vocab.json",
                "tf_model.h5",
            ]),
        );
        assert_eq!(
            s.missing,
            ["model.safetensors or model.safetensors.index.json or pytorch_model.bin"]
        );
    }

    #[test]
    fn shards_come_from_the_weight_map_and_must_stay_beside_the_index() {
        let dir = tempfile::tempdir().unwrap();
        let index = dir.path().join(SAFETENSORS_INDEX);
        std::fs::write(
            &index,
            r#"{"metadata":{},"weight_map":{"a":"model-00002-of-00002.safetensors","b":"model-00001-of-00002.safetensors","c":"model-00001-of-00002.safetensors"}}"#,
        )
        .unwrap();
        assert_eq!(
            shards(&index).unwrap(),
            [
                "model-00001-of-00002.safetensors",
                "model-00002-of-00002.safetensors"
            ]
        );
        std::fs::write(&index, r#"{"weight_map":{"a":"../../etc/passwd"}}"#).unwrap();
        assert!(shards(&index).is_err());
    }

    #[test]
    fn family_comes_from_model_type() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join(CONFIG);
        std::fs::write(&config, r#"{"model_type":"mt5"}"#).unwrap();
        assert_eq!(Family::from_config(&config).unwrap(), Family::T5);
        std::fs::write(&config, r#"{"model_type":"gpt2"}"#).unwrap();
        let err = Family::from_config(&config).unwrap_err().to_string();
        assert!(err.contains("gpt2") && err.contains("config.json"), "{err}");
    }
}
