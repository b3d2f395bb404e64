//! `mtsum models inspect`: whether a model will run, and how, told before a long batch.
//!
//! Everything here is read from the model's folder the way a run reads it, through the same
//! functions: the family from config.json ([`ModelConfig`]), the weight file from
//! [`weights::locate`], the tokenizer from [`TokenizerKind::detect`] (and built, so a broken file
//! shows), the generation settings and their origins from [`loader::generation_config`] and
//! [`GenerationConfig::explain`] (config files only). Loading the weights, when asked, is
//! [`crate::models::load`] itself: the one check that catches a missing tensor or a config value
//! the family's loader refuses.
//!
//! Takes plain values (a resolved model, the overrides, the role): no flags, no printing.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use serde_json::Value;

use crate::generate::runner;
use crate::generate::{GenerationConfig, GenerationOverrides, SettingOrigin};
use crate::hub::ResolvedModel;
use crate::loader::{self, Role};
use crate::models::weights::{self, WeightSource};
use crate::models::{ModelConfig, ModelType, WeightPrecision};
use crate::tokenize::{Seq2SeqTokenizer, TokenizerKind};

/// What the model is inspected as; the settings differ only for the summarizer, which takes
/// config.json's `task_specific_params.summarization` and `prefix` as transformers'
/// summarization pipeline did. `Translator` and `Generate` resolve alike (the pipeline's
/// translator is plain `generate()`); they are told apart only in the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InspectRole {
    /// As `mtsum generate` runs it.
    Generate,
    /// As `mtsum run` / `translate` run their translator.
    Translator,
    /// As `mtsum run` / `summarize` run their summarizer.
    Summarizer,
}

impl InspectRole {
    /// The role a preset's manifest gives its model (`translator` or `summarizer`).
    pub fn of_preset(role: &str) -> Option<Self> {
        match role {
            "translator" => Some(Self::Translator),
            "summarizer" => Some(Self::Summarizer),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Generate => "generate",
            Self::Translator => "translator",
            Self::Summarizer => "summarizer",
        }
    }

    fn runner_role(self) -> Role {
        match self {
            Self::Summarizer => Role::Summarizer,
            Self::Generate | Self::Translator => Role::Generate,
        }
    }
}

/// The tokenizer a folder holds.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TokenizerReport {
    pub kind: TokenizerKind,
    pub description: &'static str,
    pub files: Vec<&'static str>,
}

/// Where the weights were loaded to check them, when they were.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LoadReport {
    pub device: String,
    pub dtype: String,
}

/// Everything `mtsum models inspect` says about one model. The JSON keys are stable (README,
/// "models inspect"); a part that could not be read is null and its reason is in `problems`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// The spec as given (hub id[@revision], preset or folder).
    pub model: String,
    /// Hub id, or the folder as given.
    pub repo: String,
    /// Revision asked for (None for a local folder).
    pub revision: Option<String>,
    /// Commit the revision resolved to (None for a folder outside the cache).
    pub commit: Option<String>,
    /// The folder the files are read from (None when the model could not be resolved).
    pub dir: Option<PathBuf>,
    /// The preset's name when the model is one of `models/*.toml`.
    pub preset: Option<String>,
    pub role: InspectRole,
    /// config.json's `model_type`, as written (also when unsupported).
    pub model_type: Option<String>,
    /// config.json's `architectures`.
    pub architectures: Vec<String>,
    pub weights: Option<WeightSource>,
    pub tokenizer: Option<TokenizerReport>,
    /// Text put before every input (the summarizer's config `prefix`).
    pub prefix: Option<String>,
    /// Most source tokens per input: the preset's limit and max_position_embeddings, the lower.
    pub max_input_tokens: Option<usize>,
    /// Where that limit comes from: `preset`, `max_position_embeddings` (config.json) or
    /// `mtsum_default` (T5 has no position limit; mtsum caps its inputs).
    pub max_input_tokens_origin: Option<&'static str>,
    /// Every generation setting a run uses, its value and where it comes from.
    pub generation: Vec<SettingOrigin>,
    /// Generation keys the files set that mtsum does not implement (outputs may differ).
    pub unsupported_settings: Vec<String>,
    /// Where the weights were loaded to check them; None when loading was skipped or failed.
    pub loaded: Option<LoadReport>,
    /// Whether mtsum can run the model: no problem found.
    pub runnable: bool,
    /// Why it cannot, one reason per part at fault, each naming the file.
    pub problems: Vec<String>,
}

/// What to inspect and how.
pub struct Request<'a> {
    /// The spec as the user gave it, for the report and for the fetch hint.
    pub spec: &'a str,
    pub resolved: &'a ResolvedModel,
    pub role: InspectRole,
    pub overrides: &'a GenerationOverrides,
    /// Load the weights on this device in this dtype, with the linear layers held in this
    /// precision (None: only locate the weight file).
    pub load: Option<(&'a Device, DType, WeightPrecision)>,
}

/// Inspects one resolved model. Never fails: what cannot be read becomes a problem in the
/// report, so one call says everything that is wrong at once.
pub fn inspect(request: &Request) -> Report {
    let resolved = request.resolved;
    let dir = &resolved.dir;
    let mut problems = Vec::new();
    let mut note = |err: &dyn std::fmt::Display| problems.push(err.to_string());

    let (model_type, architectures, config) = match read_family(dir) {
        // Reads config.json over the family's defaults; refuses an unsupported model_type.
        Ok((model_type, architectures)) => (
            model_type,
            architectures,
            ModelConfig::read(dir).map_err(|err| note(&err)).ok(),
        ),
        Err(err) => {
            note(&err);
            (None, Vec::new(), None)
        }
    };

    // `mtsum models inspect` resolves a hub model without its weights: their absence is
    // told as such, with the command that fetches them.
    let weights = match weights::locate(dir) {
        Ok(source) => Some(source),
        Err(crate::models::ModelError::NoWeights { .. }) if resolved.revision.is_some() => {
            note(&format!(
                "{}: the weights are not in the cache (inspect downloads no weights); fetch them \
                 with `mtsum models fetch {}` or inspect with --fetch",
                dir.display(),
                request.spec
            ));
            None
        }
        Err(err) => {
            note(&err);
            None
        }
    };

    let tokenizer = TokenizerKind::detect(dir).map(|kind| TokenizerReport {
        kind,
        description: kind.describe(),
        files: kind.files().to_vec(),
    });
    // Built, not only detected: a damaged or inconsistent file shows here, not in the batch.
    if let Err(err) = Seq2SeqTokenizer::from_dir(dir) {
        note(&err);
    }

    let role = request.role.runner_role();
    let mut prefix = None;
    let mut max_input_tokens = None;
    let mut max_input_tokens_origin = None;
    let mut generation = Vec::new();
    let mut unsupported_settings = Vec::new();
    if let Some(config) = &config {
        match explain(
            dir,
            config,
            resolved.preset.as_ref(),
            role,
            request.overrides,
        ) {
            Ok(explained) => {
                // As the runner keeps it: an empty prefix is none.
                prefix = explained.prefix.filter(|p| !p.is_empty());
                max_input_tokens = Some(explained.max_input_tokens);
                max_input_tokens_origin = Some(explained.max_input_tokens_origin);
                generation = explained.settings;
                unsupported_settings = explained.unsupported;
            }
            Err(err) => note(&err),
        }
    }

    let mut loaded = None;
    if let (Some((device, dtype, precision)), Some(_), Some(_)) = (request.load, &config, &weights)
    {
        match crate::models::load_with(dir, device, dtype, precision) {
            Ok(_) => {
                loaded = Some(LoadReport {
                    device: runner::device_name(device),
                    dtype: precision.label(dtype),
                })
            }
            Err(err) => note(&err),
        }
    }

    Report {
        model: request.spec.to_string(),
        repo: resolved.repo.clone(),
        revision: resolved.revision.clone(),
        commit: resolved.commit.clone(),
        dir: Some(dir.clone()),
        preset: resolved.preset.as_ref().map(|p| p.name.clone()),
        role: request.role,
        model_type,
        architectures,
        weights,
        tokenizer,
        prefix,
        max_input_tokens,
        max_input_tokens_origin,
        generation,
        unsupported_settings,
        loaded,
        runnable: problems.is_empty(),
        problems,
    }
}

/// The report of a model that could not be resolved (not cached offline, unknown to the hub,
/// a repo without the files a run needs): only its name and why.
pub fn unresolved(spec: &str, role: InspectRole, reason: &dyn std::fmt::Display) -> Report {
    Report {
        model: spec.to_string(),
        repo: spec.to_string(),
        revision: None,
        commit: None,
        dir: None,
        preset: None,
        role,
        model_type: None,
        architectures: Vec::new(),
        weights: None,
        tokenizer: None,
        prefix: None,
        max_input_tokens: None,
        max_input_tokens_origin: None,
        generation: Vec::new(),
        unsupported_settings: Vec::new(),
        loaded: None,
        runnable: false,
        problems: vec![reason.to_string()],
    }
}

/// config.json's `model_type` and `architectures` as written, before any check of them.
fn read_family(dir: &Path) -> crate::Result<(Option<String>, Vec<String>)> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| crate::Error::io(&path, e))?;
    let config: Value = serde_json::from_str(&text)
        .map_err(|e| crate::Error::Usage(format!("{}: not valid JSON ({e})", path.display())))?;
    let model_type = config
        .get("model_type")
        .and_then(Value::as_str)
        .map(str::to_string);
    let architectures = (config.get("architectures").and_then(Value::as_array))
        .map(|list| {
            list.iter()
                .filter_map(|a| a.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    Ok((model_type, architectures))
}

struct Explained {
    settings: Vec<SettingOrigin>,
    unsupported: Vec<String>,
    prefix: Option<String>,
    max_input_tokens: usize,
    max_input_tokens_origin: &'static str,
}

/// The settings a run derives, from the config files alone: the same layering as the runner,
/// and the special tokens and position limit the loaded model would give (both come from
/// config.json; the weights play no part in them).
fn explain(
    dir: &Path,
    config: &ModelConfig,
    preset: Option<&crate::hub::Preset>,
    role: Role,
    overrides: &GenerationOverrides,
) -> crate::Result<Explained> {
    let (generation, prefix): (GenerationConfig, _) = loader::generation_config(dir, preset, role)?;
    let special = config.special_tokens()?;
    // The loaders' own limit: BART-like families have learned or sinusoidal position tables of
    // max_position_embeddings rows; T5's relative positions have none.
    let own_limit = match config.model_type {
        ModelType::T5 | ModelType::MT5 => None,
        _ => Some(config.config.positive("max_position_embeddings")?),
    };
    let settings = generation.explain(overrides, &special, own_limit)?;
    let preset_limit = preset.and_then(|p| p.max_input_tokens);
    let max_input_tokens = runner::input_limit(preset_limit, own_limit);
    Ok(Explained {
        settings,
        unsupported: generation.unsupported.clone(),
        prefix,
        max_input_tokens,
        max_input_tokens_origin: if own_limit == Some(max_input_tokens) {
            "max_position_embeddings"
        } else if preset_limit == Some(max_input_tokens) {
            "preset"
        } else {
            "mtsum_default"
        },
    })
}

/// The report for people: one `label  value` line per part, then the settings as a table.
pub fn render_text(report: &Report) -> String {
    let mut out = String::new();
    let mut line = |label: &str, value: String| {
        out.push_str(&format!("{label:<12}{value}\n"));
    };
    line(
        "model",
        match &report.preset {
            Some(preset) if *preset != report.repo => {
                format!("{} (preset {preset})", report.repo)
            }
            _ => report.repo.clone(),
        },
    );
    line(
        "revision",
        report.revision.clone().unwrap_or_else(|| "-".into()),
    );
    line(
        "commit",
        report.commit.clone().unwrap_or_else(|| "-".into()),
    );
    line(
        "folder",
        (report.dir.as_ref()).map_or_else(|| "-".into(), |d| d.display().to_string()),
    );
    line(
        "family",
        match (&report.model_type, report.architectures.is_empty()) {
            (Some(t), false) => format!("{t} ({})", report.architectures.join(", ")),
            (Some(t), true) => t.clone(),
            (None, _) => "-".into(),
        },
    );
    line(
        "weights",
        match &report.weights {
            Some(w) => format!(
                "{} ({}{}, {})",
                file_name(&w.file),
                w.format.describe(),
                if w.files.len() > 1 {
                    format!(", {} shards", w.files.len())
                } else {
                    String::new()
                },
                indicatif::HumanBytes(w.bytes)
            ),
            None => "-".into(),
        },
    );
    line(
        "tokenizer",
        match &report.tokenizer {
            Some(t) if t.files.len() == 1 && t.files[0] == t.description => t.description.into(),
            Some(t) => format!("{} ({})", t.description, t.files.join(" + ")),
            None => "-".into(),
        },
    );
    line("role", report.role.name().to_string());
    if let Some(prefix) = &report.prefix {
        line("prefix", format!("{prefix:?}"));
    }
    if let Some(n) = report.max_input_tokens {
        let from = match report.max_input_tokens_origin {
            Some("max_position_embeddings") => " (config.json max_position_embeddings)",
            Some("preset") => " (preset)",
            Some(_) => " (mtsum's limit; the model sets none)",
            None => "",
        };
        line("max input", format!("{n} tokens{from}"));
    }
    if !report.generation.is_empty() {
        out.push_str("generation\n");
        let width = (report.generation.iter())
            .map(|s| s.setting.len())
            .max()
            .unwrap_or(0);
        let values: Vec<String> = (report.generation.iter())
            .map(|s| s.value.to_string())
            .collect();
        let value_width = values.iter().map(String::len).max().unwrap_or(0);
        for (setting, value) in report.generation.iter().zip(&values) {
            out.push_str(&format!(
                "  {:<width$}  {value:<value_width$}  {}\n",
                setting.setting,
                setting.origin.label()
            ));
        }
    }
    if !report.unsupported_settings.is_empty() {
        out.push_str(&format!(
            "{:<12}{} (not implemented by mtsum; outputs may differ from transformers')\n",
            "warning",
            report.unsupported_settings.join(", ")
        ));
    }
    if let Some(load) = &report.loaded {
        out.push_str(&format!(
            "{:<12}on {} in {}\n",
            "loaded", load.device, load.dtype
        ));
    }
    if report.runnable {
        out.push_str(&format!("{:<12}ok: mtsum can run this model\n", "status"));
    } else {
        out.push_str(&format!("{:<12}cannot run\n", "status"));
        for problem in &report.problems {
            out.push_str(&format!("  {problem}\n"));
        }
    }
    out
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// Everything `mtsum models inspect` says about a GGUF LLM (what `--summarizer` takes besides
/// seq2seq models): what the file is, how mtsum would run it and trace it, and why it cannot.
/// A GGUF file is its own weights, so a hub file is read from the cache unless `--fetch`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GgufReport {
    /// The spec as given (`org/name[@rev]:file.gguf`, preset or local file).
    pub model: String,
    /// Hub id, or the local file as given (None when the spec could not be resolved).
    pub repo: Option<String>,
    pub revision: Option<String>,
    pub commit: Option<String>,
    /// The file's name in the repo (or the local file's name).
    pub file: Option<String>,
    /// Where the file is on this machine.
    pub path: Option<PathBuf>,
    pub preset: Option<String>,
    /// Always `summarizer`: mtsum runs GGUF LLMs as summarizers (and in tokenize/generate).
    pub role: &'static str,
    /// `general.architecture` as written (also when unsupported).
    pub architecture: Option<String>,
    /// The engine that would run it, as runs record it.
    pub backend: Option<String>,
    /// As llama.cpp names it (`general.file_type`, e.g. Q4_K_M).
    pub quantization: Option<String>,
    pub file_bytes: Option<u64>,
    /// The model's context length (`<arch>.context_length`).
    pub context_length: Option<usize>,
    /// The preset's input limit, when it has one.
    pub max_input_tokens: Option<usize>,
    /// Where the tokenizer comes from: the GGUF's metadata or a tokenizer.json beside it.
    pub tokenizer: Option<String>,
    /// Whether the file carries a chat template (`tokenizer.chat_template`); without one it is a
    /// base model, and summaries will be poor.
    pub chat_template: Option<bool>,
    /// The tokens generation stops at (end of turn, end of text).
    pub stop_tokens: Vec<String>,
    /// The summary prompts' version that runs record.
    pub prompt_template_version: &'static str,
    /// Where the model was loaded to check it; None when loading was skipped or failed.
    pub loaded: Option<LoadReport>,
    pub runnable: bool,
    pub problems: Vec<String>,
}

/// Inspects one GGUF spec as `hub::resolve_gguf` resolved it (or failed to). Loads the model on
/// `device` when given (the only check that catches a missing or malformed tensor), else reads
/// the header and the tokenizer only. Never fails: what cannot be read becomes a problem.
pub fn inspect_gguf(
    spec: &str,
    resolved: std::result::Result<crate::hub::ResolvedGguf, crate::hub::HubError>,
    device: Option<&Device>,
) -> GgufReport {
    let mut report = GgufReport {
        model: spec.to_string(),
        repo: None,
        revision: None,
        commit: None,
        file: None,
        path: None,
        preset: None,
        role: "summarizer",
        architecture: None,
        backend: None,
        quantization: None,
        file_bytes: None,
        context_length: None,
        max_input_tokens: None,
        tokenizer: None,
        chat_template: None,
        stop_tokens: Vec::new(),
        prompt_template_version: crate::summary::PROMPT_TEMPLATE_VERSION,
        loaded: None,
        runnable: false,
        problems: Vec::new(),
    };
    let resolved = match resolved {
        Ok(resolved) => resolved,
        Err(err) => {
            report.problems.push(err.to_string());
            return report;
        }
    };
    report.repo = Some(resolved.repo.clone());
    report.revision = resolved.revision.clone();
    report.commit = resolved.commit.clone();
    report.file = Some(resolved.file.clone());
    report.path = Some(resolved.path.clone());
    report.preset = resolved.preset.as_ref().map(|p| p.name.clone());
    report.max_input_tokens = resolved.preset.as_ref().and_then(|p| p.max_input_tokens);
    if let Err(err) = describe_gguf(&mut report, &resolved, device) {
        report.problems.push(err.to_string());
    }
    report.runnable = report.problems.is_empty();
    report
}

/// Fills in what the file says of itself; the first thing that cannot be read is the error.
fn describe_gguf(
    report: &mut GgufReport,
    resolved: &crate::hub::ResolvedGguf,
    device: Option<&Device>,
) -> std::result::Result<(), crate::llm::LlmError> {
    use crate::llm::{GgufInfo, GgufModel, GgufTokenizer, LlmError};
    let info = GgufInfo::read(&resolved.path).inspect_err(|err| {
        if let LlmError::Unsupported { architecture, .. } = err {
            report.architecture = Some(architecture.clone());
        }
    })?;
    report.architecture = Some(info.architecture.clone());
    report.quantization = Some(info.quantization());
    report.file_bytes = Some(info.file_size);
    report.context_length = info.context_length();
    report.chat_template = Some(info.chat_template().is_some());
    report.tokenizer = Some(match &resolved.tokenizer_json {
        Some(path) => format!("tokenizer.json ({})", path.display()),
        None => format!(
            "GGUF metadata (tokenizer.ggml.model = {})",
            info.get_str("tokenizer.ggml.model").unwrap_or("llama")
        ),
    });
    let family = format!("{:?}", info.family).to_lowercase();
    report.backend = Some(loader::backend_name(&family));
    let tokenizer = match &resolved.tokenizer_json {
        Some(path) => GgufTokenizer::from_tokenizer_json(&info, path)?,
        None => GgufTokenizer::from_gguf(&info)?,
    };
    let Some(device) = device else {
        return Ok(());
    };
    let model =
        GgufModel::open_with_tokenizer(&resolved.path, resolved.tokenizer_json.as_deref(), device)?;
    report.stop_tokens = (model.stop_ids().iter())
        .map(|&id| tokenizer.token_text(id).unwrap_or("?").to_string())
        .collect();
    report.loaded = Some(LoadReport {
        device: runner::device_name(device),
        dtype: model.quantization(),
    });
    Ok(())
}

/// The text form of a [`GgufReport`], one `label value` line each, like [`render_text`].
pub fn render_gguf_text(report: &GgufReport) -> String {
    let dash = || "-".to_string();
    let mut lines = vec![
        (
            "model",
            report.repo.clone().unwrap_or_else(|| report.model.clone()),
        ),
        ("file", report.file.clone().unwrap_or_else(dash)),
        ("revision", report.revision.clone().unwrap_or_else(dash)),
        ("commit", report.commit.clone().unwrap_or_else(dash)),
        (
            "path",
            (report.path.as_ref()).map_or_else(dash, |p| p.display().to_string()),
        ),
        ("family", report.architecture.clone().unwrap_or_else(dash)),
        ("backend", report.backend.clone().unwrap_or_else(dash)),
        (
            "weights",
            match (&report.quantization, report.file_bytes) {
                (Some(q), Some(bytes)) => format!("GGUF {q}, {}", indicatif::HumanBytes(bytes)),
                _ => dash(),
            },
        ),
        (
            "context",
            report
                .context_length
                .map_or_else(dash, |n| format!("{n} tokens")),
        ),
        ("tokenizer", report.tokenizer.clone().unwrap_or_else(dash)),
        (
            "chat",
            match report.chat_template {
                Some(true) => "chat template in the file".into(),
                Some(false) => "no chat template: a base model, poor summaries".into(),
                None => dash(),
            },
        ),
        (
            "role",
            format!(
                "{} (prompts {})",
                report.role, report.prompt_template_version
            ),
        ),
    ];
    if let Some(limit) = report.max_input_tokens {
        lines.push(("input", format!("at most {limit} tokens (preset)")));
    }
    if !report.stop_tokens.is_empty() {
        lines.push(("stops at", report.stop_tokens.join(" ")));
    }
    if let Some(loaded) = &report.loaded {
        lines.push(("loaded", format!("on {} ({})", loaded.device, loaded.dtype)));
    }
    let status = match report.runnable {
        true => "runs".to_string(),
        false => "cannot run".to_string(),
    };
    lines.push(("status", status));
    let mut out = String::new();
    for (label, value) in lines {
        out.push_str(&format!("{label:<12}{value}\n"));
    }
    for problem in &report.problems {
        out.push_str(&format!("  {problem}\n"));
    }
    out
}
