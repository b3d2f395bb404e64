//! config.json and generation_config.json, read as transformers reads them.
//!
//! `save_pretrained` leaves out every field equal to its config class's default, so a field
//! missing from config.json means the class default: those defaults (transformers 5.x's
//! MarianConfig, BartConfig, MBartConfig, T5Config, MT5Config) are the first layer, the file
//! the second. Nothing here is specific to one model, only to a family's config class.

use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use super::ModelError;
pub use crate::seq2seq::ModelType;
use crate::seq2seq::SpecialTokens;

impl ModelType {
    /// The config class defaults of transformers for the fields this crate reads.
    fn defaults(self) -> Value {
        let bart_like = json!({
            "activation_function": "gelu", "d_model": 1024, "decoder_attention_heads": 16,
            "decoder_ffn_dim": 4096, "decoder_layers": 12, "encoder_attention_heads": 16,
            "encoder_ffn_dim": 4096, "encoder_layers": 12, "max_position_embeddings": 1024,
            "scale_embedding": false, "tie_word_embeddings": true,
        });
        let family = match self {
            Self::Marian => json!({
                "decoder_start_token_id": 58100, "eos_token_id": 0, "forced_eos_token_id": 0,
                "pad_token_id": 58100, "vocab_size": 58101, "share_encoder_decoder_embeddings": true,
            }),
            Self::Bart => json!({
                "bos_token_id": 0, "decoder_start_token_id": 2, "eos_token_id": 2,
                "forced_eos_token_id": 2, "pad_token_id": 1, "vocab_size": 50265,
            }),
            Self::MBart => json!({
                "bos_token_id": 0, "eos_token_id": 2, "forced_eos_token_id": 2,
                "pad_token_id": 1, "vocab_size": 50265,
            }),
            Self::T5 => json!({
                "d_ff": 2048, "d_kv": 64, "d_model": 512, "eos_token_id": 1,
                "feed_forward_proj": "relu", "layer_norm_epsilon": 1e-6, "num_heads": 8,
                "num_layers": 6, "pad_token_id": 0, "relative_attention_max_distance": 128,
                "relative_attention_num_buckets": 32, "vocab_size": 32128,
            }),
            Self::MT5 => json!({
                "d_ff": 1024, "d_kv": 64, "d_model": 512, "decoder_start_token_id": 0,
                "eos_token_id": 1, "feed_forward_proj": "gated-gelu", "layer_norm_epsilon": 1e-6,
                "num_heads": 6, "num_layers": 8, "pad_token_id": 0,
                "relative_attention_max_distance": 128, "relative_attention_num_buckets": 32,
                "vocab_size": 250112,
            }),
        };
        let mut merged = if matches!(self, Self::T5 | Self::MT5) {
            Map::new()
        } else {
            object(bart_like)
        };
        merged.extend(object(family));
        Value::Object(merged)
    }
}

fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// One JSON config file: its fields over the family defaults, and its path for error messages.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    path: PathBuf,
    fields: Map<String, Value>,
}

impl ConfigFile {
    /// Reads a JSON object from `path`.
    pub fn read(path: &Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let value: Value = serde_json::from_str(&text).map_err(|e| ModelError::BadConfig {
            file: path.to_path_buf(),
            field: "(file)".into(),
            problem: format!("not valid JSON: {e}"),
        })?;
        match value {
            Value::Object(fields) => Ok(Self {
                path: path.to_path_buf(),
                fields,
            }),
            _ => Err(ModelError::BadConfig {
                file: path.to_path_buf(),
                field: "(file)".into(),
                problem: "expected a JSON object".into(),
            }),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The raw value of a field, if the file sets it (and not to null).
    pub fn get(&self, field: &str) -> Option<&Value> {
        self.fields.get(field).filter(|v| !v.is_null())
    }

    fn bad(&self, field: &str, problem: impl Into<String>) -> ModelError {
        ModelError::BadConfig {
            file: self.path.clone(),
            field: field.into(),
            problem: problem.into(),
        }
    }

    fn missing(&self, field: &str) -> ModelError {
        self.bad(field, "missing (and transformers has no default for it)")
    }

    pub fn opt_usize(&self, field: &str) -> Result<Option<usize>, ModelError> {
        self.get(field)
            .map(|v| {
                v.as_u64()
                    .map(|n| n as usize)
                    .ok_or_else(|| self.bad(field, format!("expected a whole number, found {v}")))
            })
            .transpose()
    }

    pub fn usize(&self, field: &str) -> Result<usize, ModelError> {
        self.opt_usize(field)?.ok_or_else(|| self.missing(field))
    }

    /// A size that must be at least 1 (heads, dimensions, vocabulary).
    pub fn positive(&self, field: &str) -> Result<usize, ModelError> {
        match self.usize(field)? {
            0 => Err(self.bad(field, "must be at least 1")),
            n => Ok(n),
        }
    }

    pub fn f64(&self, field: &str) -> Result<f64, ModelError> {
        let v = self.get(field).ok_or_else(|| self.missing(field))?;
        v.as_f64()
            .ok_or_else(|| self.bad(field, format!("expected a number, found {v}")))
    }

    pub fn bool(&self, field: &str) -> Result<bool, ModelError> {
        let v = self.get(field).ok_or_else(|| self.missing(field))?;
        v.as_bool()
            .ok_or_else(|| self.bad(field, format!("expected true or false, found {v}")))
    }

    pub fn opt_bool(&self, field: &str) -> Result<Option<bool>, ModelError> {
        self.get(field).map(|_| self.bool(field)).transpose()
    }

    pub fn str(&self, field: &str) -> Result<&str, ModelError> {
        let v = self.get(field).ok_or_else(|| self.missing(field))?;
        v.as_str()
            .ok_or_else(|| self.bad(field, format!("expected a string, found {v}")))
    }

    /// A token id field; transformers also accepts a list (several end tokens), of which the
    /// first is the one used to end and pad.
    pub fn token(&self, field: &str) -> Result<Option<u32>, ModelError> {
        let Some(v) = self.get(field) else {
            return Ok(None);
        };
        let first = match v {
            Value::Array(items) => items.first(),
            other => Some(other),
        };
        match first.map(|f| f.as_u64().and_then(|n| u32::try_from(n).ok())) {
            None => Ok(None),
            Some(Some(id)) => Ok(Some(id)),
            Some(None) => Err(self.bad(field, format!("expected a token id, found {v}"))),
        }
    }

    /// `bad_words_ids`: a list of token sequences; single tokens become banned ids.
    fn banned_tokens(&self) -> Result<Option<Vec<u32>>, ModelError> {
        const FIELD: &str = "bad_words_ids";
        let Some(v) = self.get(FIELD) else {
            return Ok(None);
        };
        let bad = |problem: &str| self.bad(FIELD, format!("{problem}, found {v}"));
        let lists = v
            .as_array()
            .ok_or_else(|| bad("expected a list of lists"))?;
        lists
            .iter()
            .map(|seq| match seq.as_array().map(Vec::as_slice) {
                Some([id]) => id
                    .as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| bad("expected token ids")),
                Some(_) => Err(bad(
                    "only single-token entries are supported (a ban on a token sequence is not)",
                )),
                None => Err(bad("expected a list of lists")),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }
}

/// A model folder's config.json (over its family's defaults) and generation_config.json.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub model_type: ModelType,
    /// config.json with the config class defaults filled in.
    pub config: ConfigFile,
    /// generation_config.json, when the folder has one.
    pub generation: Option<ConfigFile>,
}

impl ModelConfig {
    /// Reads `dir/config.json` and, if present, `dir/generation_config.json`.
    pub fn read(dir: &Path) -> Result<Self, ModelError> {
        let mut config = ConfigFile::read(&dir.join("config.json"))?;
        let model_type = config.str("model_type")?.to_string();
        let model_type =
            ModelType::parse(&model_type).ok_or_else(|| ModelError::UnsupportedModelType {
                file: config.path.clone(),
                model_type: model_type.clone(),
            })?;
        let mut fields = object(model_type.defaults());
        fields.extend(std::mem::take(&mut config.fields));
        config.fields = fields;
        let generation_path = dir.join("generation_config.json");
        let generation = if generation_path.is_file() {
            Some(ConfigFile::read(&generation_path)?)
        } else {
            None
        };
        Ok(Self {
            model_type,
            config,
            generation,
        })
    }

    /// The generation setting `field`: generation_config.json wins over config.json.
    fn generation_token(&self, field: &str) -> Result<Option<u32>, ModelError> {
        if let Some(g) = &self.generation {
            if let Some(id) = g.token(field)? {
                return Ok(Some(id));
            }
        }
        self.config.token(field)
    }

    /// The token ids that steer generation, as transformers' GenerationConfig resolves them.
    pub fn special_tokens(&self) -> Result<SpecialTokens, ModelError> {
        let eos = self
            .generation_token("eos_token_id")?
            .ok_or_else(|| self.config.missing("eos_token_id"))?;
        let pad = self.generation_token("pad_token_id")?.unwrap_or(eos);
        let decoder_start = match self.generation_token("decoder_start_token_id")? {
            Some(id) => id,
            None => self
                .generation_token("bos_token_id")?
                .ok_or_else(|| self.config.missing("decoder_start_token_id"))?,
        };
        let banned = match &self.generation {
            Some(g) => g.banned_tokens()?,
            None => None,
        };
        let banned = match banned {
            Some(b) => b,
            None => self.config.banned_tokens()?.unwrap_or_default(),
        };
        Ok(SpecialTokens {
            decoder_start,
            eos,
            pad,
            banned,
            forced_eos: self.generation_token("forced_eos_token_id")?,
            forced_bos: self.generation_token("forced_bos_token_id")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(config: &str, generation: Option<&str>) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), config).unwrap();
        if let Some(g) = generation {
            std::fs::write(dir.path().join("generation_config.json"), g).unwrap();
        }
        dir
    }

    #[test]
    fn class_defaults_fill_missing_fields() {
        let dir = folder(r#"{"model_type": "bart", "d_model": 16}"#, None);
        let cfg = ModelConfig::read(dir.path()).unwrap();
        assert_eq!(cfg.config.usize("d_model").unwrap(), 16);
        assert_eq!(cfg.config.usize("max_position_embeddings").unwrap(), 1024);
        let special = cfg.special_tokens().unwrap();
        assert_eq!((special.decoder_start, special.eos, special.pad), (2, 2, 1));
        assert_eq!(special.forced_eos, Some(2));
    }

    #[test]
    fn generation_config_wins_and_bans_pad() {
        let dir = folder(
            r#"{"model_type": "marian", "pad_token_id": 7, "decoder_start_token_id": 7, "eos_token_id": 0}"#,
            Some(r#"{"bad_words_ids": [[7]], "eos_token_id": [3, 4], "forced_eos_token_id": 3}"#),
        );
        let special = ModelConfig::read(dir.path())
            .unwrap()
            .special_tokens()
            .unwrap();
        assert_eq!(special.banned, vec![7]);
        assert_eq!(special.eos, 3);
        assert_eq!(special.pad, 7);
        assert_eq!(special.forced_eos, Some(3));
    }

    #[test]
    fn unknown_model_type_names_the_file() {
        let dir = folder(r#"{"model_type": "llama"}"#, None);
        let err = ModelConfig::read(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("llama") && err.contains("config.json"),
            "{err}"
        );
    }

    #[test]
    fn wrong_field_type_names_field_and_file() {
        let dir = folder(r#"{"model_type": "t5", "num_heads": "eight"}"#, None);
        let cfg = ModelConfig::read(dir.path()).unwrap();
        let err = cfg.config.usize("num_heads").unwrap_err().to_string();
        assert!(
            err.contains("num_heads") && err.contains("config.json"),
            "{err}"
        );
    }
}
