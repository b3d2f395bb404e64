//! Preset manifests (`models/*.toml`), embedded in the binary so that presets work from any
//! directory. A preset names a hub repo and carries the task defaults its own config lacks.

use super::HubError;

/// A preset manifest from `models/*.toml` (embedded in the binary).
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Preset {
    pub name: String,
    pub hub_id: String,
    pub revision: Option<String>,
    /// translator or summarizer.
    pub role: String,
    /// marian, bart, mbart, t5 or mt5 (as config.json's model_type).
    pub family: String,
    /// Most source tokens per input, when lower than the model's own limit (rut5: 600).
    pub max_input_tokens: Option<usize>,
    /// The default model of its role (what `mtsum models fetch` gets with no arguments).
    #[serde(default)]
    pub default: bool,
    /// ISO 639-1 codes of the languages it reads.
    #[serde(default)]
    pub source_languages: Vec<String>,
    /// ISO 639-1 code of the language it writes.
    #[serde(default)]
    pub target_language: String,
    #[serde(default)]
    pub description: String,
    /// Generation defaults from the model card, as transformers names them.
    pub num_beams: Option<usize>,
    pub no_repeat_ngram_size: Option<usize>,
    /// transformers' max_length: decoder start token included.
    pub max_length: Option<usize>,
    /// For a GGUF LLM: the one file of the repo to fetch (a GGUF repo holds one per
    /// quantization); `family` is then the GGUF's `general.architecture`.
    pub gguf_file: Option<String>,
}

const MANIFESTS: &[(&str, &str)] = &[
    (
        "opus-mt-ru-en.toml",
        include_str!("../../models/opus-mt-ru-en.toml"),
    ),
    (
        "opus-mt-tc-big-zle-en.toml",
        include_str!("../../models/opus-mt-tc-big-zle-en.toml"),
    ),
    (
        "rut5-base-sum-gazeta.toml",
        include_str!("../../models/rut5-base-sum-gazeta.toml"),
    ),
    (
        "distilbart-cnn-12-6.toml",
        include_str!("../../models/distilbart-cnn-12-6.toml"),
    ),
    (
        "qwen2.5-1.5b-instruct.toml",
        include_str!("../../models/qwen2.5-1.5b-instruct.toml"),
    ),
    (
        "gemma-3-1b-it.toml",
        include_str!("../../models/gemma-3-1b-it.toml"),
    ),
];

/// Every embedded preset, in a fixed order (translators first).
pub fn presets() -> Result<Vec<Preset>, HubError> {
    MANIFESTS
        .iter()
        .map(|(file, text)| parse(file, text))
        .collect()
}

/// The preset called `name`, if any.
pub fn preset(name: &str) -> Result<Option<Preset>, HubError> {
    Ok(presets()?.into_iter().find(|p| p.name == name))
}

/// The preset of the repo `hub_id`, if any.
pub fn by_hub_id(hub_id: &str) -> Result<Option<Preset>, HubError> {
    Ok(presets()?.into_iter().find(|p| p.hub_id == hub_id))
}

/// The default preset of a role (`translator` or `summarizer`).
pub fn default_preset(role: &str) -> Result<Preset, HubError> {
    presets()?
        .into_iter()
        .find(|p| p.default && p.role == role)
        .ok_or_else(|| HubError::Other(format!("no default {role} among the presets")))
}

/// The preset names, for messages.
pub(crate) fn names() -> String {
    MANIFESTS
        .iter()
        .map(|(file, _)| file.trim_end_matches(".toml"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn parse(file: &str, text: &str) -> Result<Preset, HubError> {
    let preset: Preset = toml::from_str(text).map_err(|e| HubError::BadFile {
        path: format!("models/{file}").into(),
        message: e.to_string(),
    })?;
    if format!("{}.toml", preset.name) != file {
        return Err(HubError::BadFile {
            path: format!("models/{file}").into(),
            message: format!("name `{}` differs from the file name", preset.name),
        });
    }
    Ok(preset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_presets_repo_named_by_hub_id_finds_its_preset() {
        let rut5 = by_hub_id("IlyaGusev/rut5_base_sum_gazeta")
            .unwrap()
            .unwrap();
        assert_eq!(rut5.name, "rut5-base-sum-gazeta");
        assert_eq!(rut5.max_input_tokens, Some(600));
        assert!(by_hub_id("someone/else").unwrap().is_none());
    }

    #[test]
    fn every_manifest_parses_and_names_a_known_family_and_role() {
        let all = presets().unwrap();
        assert_eq!(all.len(), MANIFESTS.len());
        for p in &all {
            // A GGUF preset's family is its general.architecture, which the LLM engine reads.
            let known = match p.gguf_file {
                Some(_) => ["qwen2", "gemma3"].contains(&p.family.as_str()),
                None => super::super::needs::Family::from_model_type(&p.family).is_some(),
            };
            assert!(known, "{}", p.name);
            assert!(matches!(p.role.as_str(), "translator" | "summarizer"));
            assert!(p.hub_id.contains('/'), "{}", p.hub_id);
        }
    }

    #[test]
    fn defaults_are_the_documented_models() {
        let translator = default_preset("translator").unwrap();
        assert_eq!(translator.hub_id, "Helsinki-NLP/opus-mt-ru-en");
        let summarizer = default_preset("summarizer").unwrap();
        assert_eq!(summarizer.hub_id, "IlyaGusev/rut5_base_sum_gazeta");
        assert_eq!(summarizer.max_input_tokens, Some(600));
        assert_eq!(summarizer.num_beams, Some(5));
        assert_eq!(summarizer.no_repeat_ngram_size, Some(4));
        assert_eq!(summarizer.max_length, Some(200));
        let quality = preset("opus-mt-tc-big-zle-en").unwrap().unwrap();
        assert_eq!(quality.family, "marian");
        let english = preset("distilbart-cnn-12-6").unwrap().unwrap();
        assert_eq!(english.hub_id, "sshleifer/distilbart-cnn-12-6");
    }

    #[test]
    fn a_manifest_with_an_unknown_key_is_rejected_with_its_file() {
        let err = parse("x.toml", "name = \"x\"\nhub_id = \"a/b\"\nrole = \"translator\"\nfamily = \"marian\"\nbeams = 3\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("models/x.toml") && err.contains("beams"),
            "{err}"
        );
    }
}
