//! Generation settings as transformers resolves them: the repo's generation_config.json if it
//! exists, otherwise the generation keys of config.json (transformers' legacy path, used by
//! rut5_base_sum_gazeta and distilbart-cnn-12-6), then transformers' global defaults, then the
//! command line.
//!
//! Read from transformers 5.24 (`GenerationConfig.__init__` with `_from_model_config`,
//! `GenerationMixin.adjust_generation_fn`, `_prepare_generation_config`, `_prepare_special_tokens`):
//! - without generation_config.json, transformers builds the generation config from the raw
//!   config.json (not from the config class), so class defaults such as BartConfig's
//!   `forced_eos_token_id = 2` do NOT apply; only keys written in the file count;
//! - in that legacy path `force_bos_token_to_be_generated: true` sets `forced_bos_token_id` to
//!   the file's `bos_token_id`, whatever `forced_bos_token_id` says;
//! - `generate()` never looks at the model config for forced tokens: forced_bos/forced_eos come
//!   from the generation file alone.
//!
//! When a model serves as the summarizer, [`TaskDefaults::summarization`] adds what transformers'
//! summarization pipeline added: `task_specific_params.summarization` over the file's settings and
//! the config's `prefix` before the text (see there). Every effective setting's origin is recorded
//! ([`Origin`], [`GenerationConfig::explain`]) for `mtsum models inspect`.
//!
//! Lengths are turned into counts of *generated* tokens once, here, so the search code never
//! deals with transformers' "max_length includes the decoder start token" convention.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use super::error::{GenerateError, Result};
use super::{GenerationOverrides, SpecialTokens};

/// transformers' `max_length` when no file sets one (it then adds the decoder start token).
const DEFAULT_MAX_NEW_TOKENS: usize = 20;

/// When beam search stops, as transformers' `early_stopping` (bool or "never").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EarlyStopping {
    /// Stop as soon as `num_beams` hypotheses are finished.
    True,
    /// Stop when the best running beam, at its current length, cannot beat the worst finished one.
    #[default]
    False,
    /// Like `False`, but assume the running beam could reach the maximum length (canonical beam search).
    Never,
}

/// Written as transformers writes it: true, false or "never".
impl serde::Serialize for EarlyStopping {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Self::True => s.serialize_bool(true),
            Self::False => s.serialize_bool(false),
            Self::Never => s.serialize_str("never"),
        }
    }
}

impl From<bool> for EarlyStopping {
    fn from(b: bool) -> Self {
        if b {
            Self::True
        } else {
            Self::False
        }
    }
}

/// Where an effective generation setting came from, as `mtsum models inspect` prints it.
/// Listed from the strongest layer to the weakest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// A command-line flag (`--beams`, `--max-length`, `--summary-length`...).
    Flag,
    /// mtsum's preset manifest (`models/*.toml`): the model card's settings the repo lacks.
    Preset,
    /// config.json's `task_specific_params.summarization`, when the model is the summarizer.
    TaskSpecificParams,
    /// The repo's generation_config.json.
    GenerationConfigJson,
    /// The generation keys of config.json (no generation_config.json in the repo).
    ConfigJson,
    /// A token id the generation file leaves out, taken from config.json or the model family's
    /// defaults (mtsum's fallback so that every model has its end, pad and start tokens).
    ModelConfig,
    /// transformers' global default (`GenerationConfig._get_default_generation_params`).
    TransformersDefault,
}

impl Origin {
    /// How it is written for people: the file or layer by name.
    pub fn label(self) -> &'static str {
        match self {
            Self::Flag => "flag",
            Self::Preset => "preset",
            Self::TaskSpecificParams => "config.json task_specific_params",
            Self::GenerationConfigJson => "generation_config.json",
            Self::ConfigJson => "config.json",
            Self::ModelConfig => "config.json / model defaults",
            Self::TransformersDefault => "transformers default",
        }
    }
}

/// One effective generation setting, its value and where it came from.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SettingOrigin {
    /// The field of [`Settings`] (lengths count generated tokens).
    pub setting: &'static str,
    pub value: Value,
    pub origin: Origin,
}

/// The generation keys of one model, as written in its files (None: the file does not set it).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GenerationConfig {
    /// Which file the settings came from, for messages.
    pub source: String,
    /// Where each key that is set came from (key: the transformers name, e.g. "max_length").
    pub origins: BTreeMap<&'static str, Origin>,
    pub max_length: Option<usize>,
    pub max_new_tokens: Option<usize>,
    pub min_length: Option<usize>,
    pub min_new_tokens: Option<usize>,
    pub num_beams: Option<usize>,
    pub length_penalty: Option<f64>,
    pub early_stopping: Option<EarlyStopping>,
    pub no_repeat_ngram_size: Option<usize>,
    pub bad_words_ids: Option<Vec<Vec<u32>>>,
    pub forced_bos_token_id: Option<u32>,
    pub forced_eos_token_id: Option<Vec<u32>>,
    pub renormalize_logits: Option<bool>,
    pub eos_token_id: Option<Vec<u32>>,
    pub pad_token_id: Option<u32>,
    pub bos_token_id: Option<u32>,
    pub decoder_start_token_id: Option<u32>,
    /// Keys the file sets to a non-default value that this engine does not implement (sampling,
    /// repetition penalties...): outputs may then differ from transformers'.
    pub unsupported: Vec<String>,
}

/// transformers generation keys and the value that leaves them inactive; any other value is a
/// setting this engine does not implement.
const INACTIVE: &[(&str, &str)] = &[
    ("do_sample", "false"),
    ("repetition_penalty", "1.0"),
    ("encoder_repetition_penalty", "1.0"),
    ("encoder_no_repeat_ngram_size", "0"),
    ("num_return_sequences", "1"),
    ("num_beam_groups", "1"),
    ("diversity_penalty", "0.0"),
    ("suppress_tokens", "null"),
    ("begin_suppress_tokens", "null"),
    ("exponential_decay_length_penalty", "null"),
    ("sequence_bias", "null"),
    ("remove_invalid_values", "false"),
    ("guidance_scale", "null"),
];

/// Everything one generation run needs, resolved: lengths count generated tokens.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Settings {
    pub num_beams: usize,
    /// Most generated tokens (the end token included).
    pub max_new_tokens: usize,
    /// The end token is banned while fewer than this many tokens were generated.
    pub min_new_tokens: usize,
    pub length_penalty: f64,
    pub early_stopping: EarlyStopping,
    pub no_repeat_ngram_size: usize,
    pub bad_words_ids: Vec<Vec<u32>>,
    pub forced_bos_token_id: Option<u32>,
    pub forced_eos_token_id: Vec<u32>,
    pub renormalize_logits: bool,
    pub eos_token_ids: Vec<u32>,
    pub pad_token_id: u32,
    pub decoder_start_token_id: u32,
}

impl GenerationConfig {
    /// Reads generation_config.json when present, else config.json (the keys transformers
    /// copies from it when no generation config exists). A missing config.json is an error.
    /// In config.json (transformers' legacy path) `force_bos_token_to_be_generated: true` forces
    /// the file's `bos_token_id` at the first step, as transformers does.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let generation = dir.join("generation_config.json");
        if generation.is_file() {
            let value = read_json_file(&generation)?;
            return Self::from_json_as(
                &value,
                &generation.display().to_string(),
                Origin::GenerationConfigJson,
            );
        }
        let path = dir.join("config.json");
        let value = read_json_file(&path)?;
        let source = path.display().to_string();
        let mut config = Self::from_json_as(&value, &source, Origin::ConfigJson)?;
        let field = Field {
            value: &value,
            source: &source,
        };
        if field.bool("force_bos_token_to_be_generated")? == Some(true) {
            config.forced_bos_token_id = config.bos_token_id;
            match config.bos_token_id {
                Some(_) => config
                    .origins
                    .insert("forced_bos_token_id", Origin::ConfigJson),
                None => config.origins.remove("forced_bos_token_id"),
            };
        }
        Ok(config)
    }

    /// Parses the generation keys of a JSON object; `source` names it in error messages. The
    /// keys count as written by a generation_config.json.
    pub fn from_json(value: &Value, source: &str) -> Result<Self> {
        Self::from_json_as(value, source, Origin::GenerationConfigJson)
    }

    /// Like [`Self::from_json`], recording `origin` as where every key it sets came from.
    pub fn from_json_as(value: &Value, source: &str, origin: Origin) -> Result<Self> {
        let field = Field { value, source };
        let origins = (GENERATION_KEYS.iter())
            .filter(|key| field.get(key).is_some())
            .map(|&key| (key, origin))
            .collect();
        Ok(Self {
            source: source.to_string(),
            origins,
            max_length: field.usize("max_length")?,
            max_new_tokens: field.usize("max_new_tokens")?,
            min_length: field.usize("min_length")?,
            min_new_tokens: field.usize("min_new_tokens")?,
            num_beams: field.usize("num_beams")?,
            length_penalty: field.f64("length_penalty")?,
            early_stopping: field.early_stopping()?,
            no_repeat_ngram_size: field.usize("no_repeat_ngram_size")?,
            bad_words_ids: field.id_lists("bad_words_ids")?,
            forced_bos_token_id: field.id("forced_bos_token_id")?,
            forced_eos_token_id: field.ids("forced_eos_token_id")?,
            renormalize_logits: field.bool("renormalize_logits")?,
            eos_token_id: field.ids("eos_token_id")?,
            pad_token_id: field.id("pad_token_id")?,
            bos_token_id: field.id("bos_token_id")?,
            decoder_start_token_id: field.id("decoder_start_token_id")?,
            unsupported: unsupported_keys(value),
        })
    }

    /// Sets every key that `other` sets (transformers' `GenerationConfig.update`, which is what
    /// keyword arguments to `generate()` do on top of the model's own config).
    pub fn update(&mut self, other: &GenerationConfig) {
        macro_rules! take {
            ($($field:ident),*) => { $( if other.$field.is_some() {
                self.$field = other.$field.clone();
                if let Some(origin) = other.origins.get(stringify!($field)) {
                    self.origins.insert(stringify!($field), *origin);
                }
            } )* };
        }
        take!(
            max_length,
            max_new_tokens,
            min_length,
            min_new_tokens,
            num_beams,
            length_penalty,
            early_stopping,
            no_repeat_ngram_size,
            bad_words_ids,
            forced_bos_token_id,
            forced_eos_token_id,
            renormalize_logits,
            eos_token_id,
            pad_token_id,
            bos_token_id,
            decoder_start_token_id
        );
        for key in &other.unsupported {
            if !self.unsupported.contains(key) {
                self.unsupported.push(key.clone());
            }
        }
    }

    /// Applies the command line over the files and transformers' defaults. `special` fills token
    /// ids the file does not name (the model's config.json); `max_positions` caps the default
    /// length as transformers does.
    pub fn resolve(
        &self,
        overrides: &GenerationOverrides,
        special: &SpecialTokens,
        max_positions: Option<usize>,
    ) -> Result<Settings> {
        let eos_token_ids = self
            .eos_token_id
            .clone()
            .unwrap_or_else(|| vec![special.eos]);
        let max_new_tokens = self.max_new_tokens(overrides, max_positions);
        if max_new_tokens == 0 {
            return Err(GenerateError::Config(format!(
                "the maximum length leaves no token to generate ({}; use --max-length N with N >= 1)",
                self.source
            )));
        }
        let num_beams = overrides.num_beams.or(self.num_beams).unwrap_or(1);
        if num_beams == 0 {
            return Err(GenerateError::Config(match overrides.num_beams {
                Some(_) => "--beams must be at least 1".into(),
                None => format!(
                    "{}: `num_beams` is 0; it must be at least 1 (fix the file or pass --beams N)",
                    self.source
                ),
            }));
        }
        Ok(Settings {
            num_beams,
            max_new_tokens,
            min_new_tokens: self.min_new_tokens(overrides),
            length_penalty: overrides
                .length_penalty
                .or(self.length_penalty)
                .unwrap_or(1.0),
            early_stopping: overrides
                .early_stopping
                .map(EarlyStopping::from)
                .or(self.early_stopping)
                .unwrap_or_default(),
            no_repeat_ngram_size: overrides
                .no_repeat_ngram_size
                .or(self.no_repeat_ngram_size)
                .unwrap_or(0),
            // transformers never bans a lone end token through bad_words_ids.
            bad_words_ids: (self.bad_words_ids.clone().unwrap_or_default().into_iter())
                .filter(|seq| !(seq.len() == 1 && eos_token_ids.contains(&seq[0])))
                .collect(),
            // transformers takes forced tokens from the generation file alone, never from the
            // model config or its class defaults (BartConfig's forced_eos_token_id = 2 does not
            // apply to a config.json that does not write it).
            forced_bos_token_id: self.forced_bos_token_id,
            forced_eos_token_id: self.forced_eos_token_id.clone().unwrap_or_default(),
            renormalize_logits: self.renormalize_logits.unwrap_or(false),
            pad_token_id: self.pad_token_id.unwrap_or(special.pad),
            decoder_start_token_id: (self.decoder_start_token_id.or(self.bos_token_id))
                .unwrap_or(special.decoder_start),
            eos_token_ids,
        })
    }

    /// transformers: max_new_tokens wins; else max_length counts the start token; else 20 new
    /// tokens, capped by max_position_embeddings.
    fn max_new_tokens(
        &self,
        overrides: &GenerationOverrides,
        max_positions: Option<usize>,
    ) -> usize {
        if let Some(n) = overrides.max_new_tokens.or(self.max_new_tokens) {
            return n;
        }
        match self.max_length {
            Some(total) => total.saturating_sub(1),
            None => {
                let total = DEFAULT_MAX_NEW_TOKENS + 1;
                max_positions
                    .map_or(total, |p| total.min(p))
                    .saturating_sub(1)
            }
        }
    }

    /// The end token is banned while the sequence (start token included) is shorter than
    /// min_length, and while fewer than min_new_tokens were generated.
    fn min_new_tokens(&self, overrides: &GenerationOverrides) -> usize {
        if let Some(n) = overrides.min_new_tokens {
            return n;
        }
        let from_length = self.min_length.unwrap_or(0).saturating_sub(1);
        from_length.max(self.min_new_tokens.unwrap_or(0))
    }

    /// Every effective setting of [`Self::resolve`], with its value and where it came from:
    /// what `mtsum models inspect` prints.
    pub fn explain(
        &self,
        overrides: &GenerationOverrides,
        special: &SpecialTokens,
        max_positions: Option<usize>,
    ) -> Result<Vec<SettingOrigin>> {
        let settings = self.resolve(overrides, special, max_positions)?;
        let Value::Object(values) = serde_json::to_value(&settings).expect("settings serialize")
        else {
            unreachable!("Settings serializes as an object")
        };
        let file = |keys: &[&str], fallback: Origin| {
            keys.iter()
                .find_map(|key| self.origins.get(key).copied())
                .unwrap_or(fallback)
        };
        let flag_or = |flag: bool, keys: &[&str]| match flag {
            true => Origin::Flag,
            false => file(keys, Origin::TransformersDefault),
        };
        let o = overrides;
        let origin_of = |setting: &str| match setting {
            "num_beams" => flag_or(o.num_beams.is_some(), &["num_beams"]),
            "max_new_tokens" => flag_or(
                o.max_new_tokens.is_some(),
                &["max_new_tokens", "max_length"],
            ),
            "min_new_tokens" => flag_or(
                o.min_new_tokens.is_some(),
                &["min_new_tokens", "min_length"],
            ),
            "length_penalty" => flag_or(o.length_penalty.is_some(), &["length_penalty"]),
            "early_stopping" => flag_or(o.early_stopping.is_some(), &["early_stopping"]),
            "no_repeat_ngram_size" => {
                flag_or(o.no_repeat_ngram_size.is_some(), &["no_repeat_ngram_size"])
            }
            "eos_token_ids" => file(&["eos_token_id"], Origin::ModelConfig),
            "pad_token_id" => file(&["pad_token_id"], Origin::ModelConfig),
            "decoder_start_token_id" => file(
                &["decoder_start_token_id", "bos_token_id"],
                Origin::ModelConfig,
            ),
            other => file(&[other], Origin::TransformersDefault),
        };
        Ok(SETTING_NAMES
            .iter()
            .map(|&setting| SettingOrigin {
                setting,
                value: values.get(setting).cloned().unwrap_or(Value::Null),
                origin: origin_of(setting),
            })
            .collect())
    }
}

/// The fields of [`Settings`], in the order `explain` lists them.
const SETTING_NAMES: &[&str] = &[
    "num_beams",
    "max_new_tokens",
    "min_new_tokens",
    "length_penalty",
    "early_stopping",
    "no_repeat_ngram_size",
    "bad_words_ids",
    "forced_bos_token_id",
    "forced_eos_token_id",
    "renormalize_logits",
    "eos_token_ids",
    "pad_token_id",
    "decoder_start_token_id",
];

/// The generation keys [`GenerationConfig`] reads (transformers' names).
const GENERATION_KEYS: &[&str] = &[
    "max_length",
    "max_new_tokens",
    "min_length",
    "min_new_tokens",
    "num_beams",
    "length_penalty",
    "early_stopping",
    "no_repeat_ngram_size",
    "bad_words_ids",
    "forced_bos_token_id",
    "forced_eos_token_id",
    "renormalize_logits",
    "eos_token_id",
    "pad_token_id",
    "bos_token_id",
    "decoder_start_token_id",
];

/// What transformers' summarization pipeline took from a model's config.json beyond
/// `generate()`'s own settings.
///
/// transformers 5.x removed `SummarizationPipeline` (and `Text2TextGenerationPipeline`); these
/// are the semantics of the 4.x pipeline, whose `Pipeline.__init__` set `prefix` from
/// `config.prefix`, let `task_specific_params["summarization"]["prefix"]` replace it, and called
/// `generation_config.update(**task_specific_params["summarization"])` on a copy of the model's
/// generation config; the keyword arguments of the call then went over both, and
/// `_parse_and_tokenize` put the prefix in front of every input text. In mtsum the flags are
/// those keyword arguments, and a preset's settings sit between the task's and the flags.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskDefaults {
    /// `task_specific_params.summarization`'s generation keys (origin: task_specific_params).
    pub generation: GenerationConfig,
    /// Text put before every input (`prefix`, e.g. " " for distilbart, "summarize: " for t5-small).
    pub prefix: Option<String>,
}

impl TaskDefaults {
    /// Reads `dir/config.json`'s `prefix` and `task_specific_params.summarization`; nothing set
    /// when the file has neither. A value of the wrong type is an error naming the file and key.
    pub fn summarization(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let config = read_json_file(&path)?;
        let source = format!("{} task_specific_params.summarization", path.display());
        let text = |value: &Value, key: &str, at: &str| -> Result<Option<String>> {
            match value.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(other) => Err(GenerateError::Config(format!(
                    "{at}: `{key}` should be a string, found {other}; fix the file"
                ))),
            }
        };
        let mut prefix = text(&config, "prefix", &path.display().to_string())?;
        let task = config
            .get("task_specific_params")
            .and_then(|t| t.get("summarization"));
        let generation = match task {
            None | Some(Value::Null) => GenerationConfig::default(),
            Some(task @ Value::Object(_)) => {
                if let Some(own) = text(task, "prefix", &source)? {
                    prefix = Some(own);
                }
                GenerationConfig::from_json_as(task, &source, Origin::TaskSpecificParams)?
            }
            Some(other) => {
                return Err(GenerateError::Config(format!(
                "{source}: should be an object of generation settings, found {other}; fix the file"
            )))
            }
        };
        Ok(Self { generation, prefix })
    }
}

fn read_json_file(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| GenerateError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| {
        GenerateError::Config(format!(
            "{}: not valid JSON ({e}); re-download the model",
            path.display()
        ))
    })
}

/// Typed access to one JSON object's keys, with errors that name the file and the key.
struct Field<'a> {
    value: &'a Value,
    source: &'a str,
}

impl Field<'_> {
    fn get(&self, key: &str) -> Option<&Value> {
        self.value.get(key).filter(|v| !v.is_null())
    }

    fn bad(&self, key: &str, expected: &str) -> GenerateError {
        GenerateError::Config(format!(
            "{}: `{key}` should be {expected}, found {}",
            self.source, self.value[key]
        ))
    }

    fn usize(&self, key: &str) -> Result<Option<usize>> {
        self.get(key)
            .map(|v| {
                v.as_u64()
                    .map(|n| n as usize)
                    .ok_or_else(|| self.bad(key, "a whole number"))
            })
            .transpose()
    }

    fn id(&self, key: &str) -> Result<Option<u32>> {
        self.get(key)
            .map(|v| as_id(v).ok_or_else(|| self.bad(key, "a token id")))
            .transpose()
    }

    fn f64(&self, key: &str) -> Result<Option<f64>> {
        self.get(key)
            .map(|v| v.as_f64().ok_or_else(|| self.bad(key, "a number")))
            .transpose()
    }

    fn bool(&self, key: &str) -> Result<Option<bool>> {
        self.get(key)
            .map(|v| v.as_bool().ok_or_else(|| self.bad(key, "true or false")))
            .transpose()
    }

    /// A token id or a list of them (eos_token_id, forced_eos_token_id).
    fn ids(&self, key: &str) -> Result<Option<Vec<u32>>> {
        self.get(key)
            .map(|v| match v {
                Value::Array(items) => items.iter().map(as_id).collect::<Option<Vec<_>>>(),
                single => as_id(single).map(|id| vec![id]),
            })
            .map(|ids| ids.ok_or_else(|| self.bad(key, "a token id or a list of them")))
            .transpose()
    }

    fn id_lists(&self, key: &str) -> Result<Option<Vec<Vec<u32>>>> {
        let parse = |v: &Value| -> Option<Vec<Vec<u32>>> {
            v.as_array()?
                .iter()
                .map(|seq| seq.as_array()?.iter().map(as_id).collect())
                .collect()
        };
        self.get(key)
            .map(|v| parse(v).ok_or_else(|| self.bad(key, "a list of lists of token ids")))
            .transpose()
    }

    fn early_stopping(&self) -> Result<Option<EarlyStopping>> {
        const KEY: &str = "early_stopping";
        self.get(KEY)
            .map(|v| match v {
                Value::Bool(b) => Ok(EarlyStopping::from(*b)),
                Value::String(s) if s == "never" => Ok(EarlyStopping::Never),
                _ => Err(self.bad(KEY, "true, false or \"never\"")),
            })
            .transpose()
    }
}

/// The keys of `value` that turn on something from [`INACTIVE`].
fn unsupported_keys(value: &Value) -> Vec<String> {
    INACTIVE
        .iter()
        .filter(|(key, inactive)| {
            let inactive: Value = serde_json::from_str(inactive).expect("valid JSON");
            let numbers_equal =
                |a: &Value, b: &Value| a.as_f64().is_some() && a.as_f64() == b.as_f64();
            value
                .get(*key)
                .is_some_and(|v| *v != inactive && !numbers_equal(v, &inactive))
        })
        .map(|(key, _)| format!("{key}={}", value[*key]))
        .collect()
}

fn as_id(v: &Value) -> Option<u32> {
    v.as_u64().and_then(|n| u32::try_from(n).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn special() -> SpecialTokens {
        SpecialTokens {
            decoder_start: 9,
            eos: 0,
            pad: 9,
            ..Default::default()
        }
    }

    fn resolve(file: Value, overrides: GenerationOverrides) -> Settings {
        GenerationConfig::from_json(&file, "test.json")
            .unwrap()
            .resolve(&overrides, &special(), Some(512))
            .unwrap()
    }

    #[test]
    fn defaults_are_transformers_defaults() {
        let s = resolve(json!({}), GenerationOverrides::default());
        assert_eq!(s.max_new_tokens, 20);
        assert_eq!(s.num_beams, 1);
        assert_eq!(s.length_penalty, 1.0);
        assert_eq!(s.early_stopping, EarlyStopping::False);
        assert_eq!(s.min_new_tokens, 0);
        assert_eq!((s.decoder_start_token_id, s.eos_token_ids), (9, vec![0]));
    }

    #[test]
    fn default_length_is_capped_by_positions() {
        let cfg = GenerationConfig::from_json(&json!({}), "t").unwrap();
        let s = cfg
            .resolve(&GenerationOverrides::default(), &special(), Some(8))
            .unwrap();
        assert_eq!(s.max_new_tokens, 7);
    }

    #[test]
    fn file_lengths_count_the_start_token_and_flags_count_new_tokens() {
        let file = json!({"max_length": 200, "min_length": 30, "num_beams": 5});
        let s = resolve(file.clone(), GenerationOverrides::default());
        assert_eq!(
            (s.max_new_tokens, s.min_new_tokens, s.num_beams),
            (199, 29, 5)
        );
        let flags = GenerationOverrides {
            max_new_tokens: Some(32),
            min_new_tokens: Some(32),
            num_beams: Some(2),
            early_stopping: Some(true),
            ..Default::default()
        };
        let s = resolve(file, flags);
        assert_eq!(
            (s.max_new_tokens, s.min_new_tokens, s.num_beams),
            (32, 32, 2)
        );
        assert_eq!(s.early_stopping, EarlyStopping::True);
    }

    #[test]
    fn reads_marian_style_token_lists() {
        let file = json!({
            "bad_words_ids": [[62517], [0], [5, 6]], "eos_token_id": 0, "forced_eos_token_id": 0,
            "decoder_start_token_id": 62517, "pad_token_id": 62517, "early_stopping": "never"
        });
        let s = resolve(file, GenerationOverrides::default());
        assert_eq!(s.bad_words_ids, vec![vec![62517], vec![5, 6]]);
        assert_eq!(s.forced_eos_token_id, vec![0]);
        assert_eq!(s.decoder_start_token_id, 62517);
        assert_eq!(s.early_stopping, EarlyStopping::Never);
    }

    #[test]
    fn bad_values_name_the_file_and_key() {
        let err = GenerationConfig::from_json(&json!({"num_beams": "four"}), "gen.json")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("gen.json") && err.contains("num_beams"),
            "{err}"
        );
    }

    #[test]
    fn update_overlays_only_the_keys_it_sets() {
        let mut cfg =
            GenerationConfig::from_json(&json!({"max_length": 60, "num_beams": 5}), "t").unwrap();
        cfg.update(
            &GenerationConfig::from_json(&json!({"num_beams": 2, "min_length": 10}), "k").unwrap(),
        );
        let s = cfg
            .resolve(&GenerationOverrides::default(), &special(), None)
            .unwrap();
        assert_eq!(
            (s.max_new_tokens, s.num_beams, s.min_new_tokens),
            (59, 2, 9)
        );
    }

    #[test]
    fn early_stopping_serializes_as_transformers_writes_it() {
        let as_json = |e: EarlyStopping| serde_json::to_value(e).unwrap();
        assert_eq!(as_json(EarlyStopping::True), json!(true));
        assert_eq!(as_json(EarlyStopping::False), json!(false));
        assert_eq!(as_json(EarlyStopping::Never), json!("never"));
    }

    #[test]
    fn settings_this_engine_lacks_are_named() {
        let file = json!({"do_sample": false, "repetition_penalty": 1.2, "num_return_sequences": 1, "suppress_tokens": null});
        let cfg = GenerationConfig::from_json(&file, "t").unwrap();
        assert_eq!(cfg.unsupported, vec!["repetition_penalty=1.2".to_string()]);
    }

    fn folder(files: &[(&str, Value)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, value) in files {
            std::fs::write(dir.path().join(name), value.to_string()).unwrap();
        }
        dir
    }

    #[test]
    fn force_bos_in_config_json_forces_the_bos_token_as_transformers_does() {
        let config = json!({"bos_token_id": 0, "forced_bos_token_id": 5,
                            "force_bos_token_to_be_generated": true, "forced_eos_token_id": 2});
        let dir = folder(&[("config.json", config)]);
        let cfg = GenerationConfig::from_dir(dir.path()).unwrap();
        assert_eq!(cfg.forced_bos_token_id, Some(0));
        assert_eq!(cfg.origins["forced_bos_token_id"], Origin::ConfigJson);
        // without a bos_token_id it forces nothing (transformers sets None)
        let dir = folder(&[(
            "config.json",
            json!({"force_bos_token_to_be_generated": true}),
        )]);
        let cfg = GenerationConfig::from_dir(dir.path()).unwrap();
        assert_eq!(cfg.forced_bos_token_id, None);
        assert!(!cfg.origins.contains_key("forced_bos_token_id"));
    }

    #[test]
    fn force_bos_in_a_generation_config_json_is_not_a_setting() {
        let dir = folder(&[
            ("config.json", json!({"bos_token_id": 0})),
            (
                "generation_config.json",
                json!({"bos_token_id": 0, "force_bos_token_to_be_generated": true}),
            ),
        ]);
        let cfg = GenerationConfig::from_dir(dir.path()).unwrap();
        assert_eq!(cfg.forced_bos_token_id, None);
    }

    #[test]
    fn forced_tokens_come_from_the_file_alone() {
        let special = SpecialTokens {
            forced_eos: Some(0),
            forced_bos: Some(4),
            ..special()
        };
        let cfg = GenerationConfig::from_json(&json!({}), "t").unwrap();
        let s = cfg
            .resolve(&GenerationOverrides::default(), &special, None)
            .unwrap();
        assert_eq!(
            (s.forced_bos_token_id, s.forced_eos_token_id),
            (None, vec![])
        );
    }

    #[test]
    fn task_prefix_replaces_the_config_prefix_and_bad_types_are_named() {
        let config = json!({"prefix": " ", "task_specific_params": {"summarization":
                            {"prefix": "summarize: ", "num_beams": 4, "max_length": 200}}});
        let dir = folder(&[("config.json", config)]);
        let task = TaskDefaults::summarization(dir.path()).unwrap();
        assert_eq!(task.prefix.as_deref(), Some("summarize: "));
        assert_eq!(task.generation.num_beams, Some(4));
        assert_eq!(
            task.generation.origins["max_length"],
            Origin::TaskSpecificParams
        );
        let dir = folder(&[("config.json", json!({"prefix": 3}))]);
        let err = TaskDefaults::summarization(dir.path())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("config.json") && err.contains("`prefix`"),
            "{err}"
        );
        let dir = folder(&[("config.json", json!({}))]);
        assert_eq!(
            TaskDefaults::summarization(dir.path()).unwrap(),
            TaskDefaults::default()
        );
    }

    #[test]
    fn explain_names_the_layer_of_every_setting() {
        let mut cfg = GenerationConfig::from_json_as(
            &json!({"num_beams": 5, "max_length": 200, "length_penalty": 2.0}),
            "config.json",
            Origin::ConfigJson,
        )
        .unwrap();
        cfg.update(
            &GenerationConfig::from_json_as(
                &json!({"max_length": 60}),
                "task",
                Origin::TaskSpecificParams,
            )
            .unwrap(),
        );
        let flags = GenerationOverrides {
            length_penalty: Some(1.0),
            ..Default::default()
        };
        let explained = cfg.explain(&flags, &special(), None).unwrap();
        let get = |name: &str| explained.iter().find(|o| o.setting == name).unwrap();
        assert_eq!(explained.len(), SETTING_NAMES.len());
        assert_eq!(
            (get("num_beams").value.clone(), get("num_beams").origin),
            (json!(5), Origin::ConfigJson)
        );
        assert_eq!(
            (
                get("max_new_tokens").value.clone(),
                get("max_new_tokens").origin
            ),
            (json!(59), Origin::TaskSpecificParams)
        );
        assert_eq!(get("length_penalty").origin, Origin::Flag);
        assert_eq!(
            get("no_repeat_ngram_size").origin,
            Origin::TransformersDefault
        );
        assert_eq!(get("eos_token_ids").origin, Origin::ModelConfig);
        assert_eq!(
            Origin::TaskSpecificParams.label(),
            "config.json task_specific_params"
        );
    }

    #[test]
    fn zero_new_tokens_is_an_error() {
        let cfg = GenerationConfig::from_json(&json!({"max_length": 1}), "t").unwrap();
        let err = cfg.resolve(&GenerationOverrides::default(), &special(), None);
        assert!(err.is_err());
    }

    #[test]
    fn zero_beams_name_the_flag_or_the_file_that_asked_for_them() {
        let cfg = GenerationConfig::from_json(&json!({"num_beams": 0}), "gen.json").unwrap();
        let err = |overrides: &GenerationOverrides| {
            cfg.resolve(overrides, &special(), None)
                .unwrap_err()
                .to_string()
        };
        let from_file = err(&GenerationOverrides::default());
        assert!(
            from_file.starts_with("gen.json: `num_beams` is 0"),
            "{from_file}"
        );
        let from_flag = err(&GenerationOverrides {
            num_beams: Some(0),
            ..Default::default()
        });
        assert_eq!(from_flag, "--beams must be at least 1");
    }
}
