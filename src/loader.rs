//! The loader: the one place that knows every layer a model passes through on its way in.
//! It resolves a model spec through `hub`, reads the tokenizer (`tokenize`) and generation
//! config (`generate`), loads the weights (`models`) and puts them together into a
//! [`Runner`]. It sits above those modules so that none of them has to look up to another.
//!
//! What to load and where comes in as plain values ([`LoadOptions`]); the command line builds
//! them from its flags. Notes for the user go to the caller's [`Observer`].

use candle_core::{DType, Device};

use crate::device::DeviceSpec;
use crate::generate::{
    runner::device_name, schedule, GenerationConfig, LlmInfo, ModelInfo, Origin, Runner,
    RunnerParts, TaskDefaults,
};
use crate::hub::{HubOptions, Preset, ResolvedModel};
use crate::llm::GgufModel;
use crate::models::{AnyModel, WeightPrecision};
use crate::pipeline::llm::{LlmSummarizer, Sampling};
use crate::progress::Observer;
use crate::tokenize::Seq2SeqTokenizer;
use crate::{Error, Result};

/// Where and how models are loaded.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// How the hub is reached.
    pub hub: HubOptions,
    /// Where the models run.
    pub device: DeviceSpec,
    /// The floating-point type; None takes f32 on the CPU and f16 on a GPU.
    pub dtype: Option<DType>,
    /// How the linear layers hold their weights; int8 needs the CPU and f32.
    pub precision: WeightPrecision,
    /// Token budget of one batch; None takes the device's default.
    pub batch_tokens: Option<usize>,
}

impl LoadOptions {
    /// Opens the device and picks the dtype for it. int8 weights on a GPU, or under f16 or
    /// bf16 activations, are a usage error that names what works.
    pub fn open_device(&self) -> Result<(Device, DType)> {
        let int8 = self.precision == WeightPrecision::Int8;
        let gpu = match self.device {
            DeviceSpec::Cuda(_) => Some("cuda"),
            DeviceSpec::Metal => Some("metal"),
            DeviceSpec::Auto | DeviceSpec::Cpu => None,
        };
        if let (true, Some(gpu)) = (int8, gpu) {
            return Err(int8_on_gpu(gpu));
        }
        let device = self.device.open()?;
        let dtype = crate::device::choose_dtype(&device, self.dtype);
        if int8 {
            if !device.is_cpu() {
                return Err(int8_on_gpu(&device_name(&device)));
            }
            if dtype != DType::F32 {
                return Err(Error::Usage(format!(
                    "int8 weights run with f32 activations, not {dtype:?}: use --dtype int8 alone"
                )));
            }
        }
        Ok((device, dtype))
    }
}

/// `--dtype int8` asked of a GPU: the usage error that names what works.
fn int8_on_gpu(gpu: &str) -> Error {
    Error::Usage(format!(
        "--dtype int8 runs on the CPU only, not on {gpu}: add --device cpu, or use --dtype f16, bf16 or f32 on the GPU"
    ))
}

/// What a model is loaded for: plain `generate()` (`mtsum generate`, `bench`, the translator), or
/// the summarizer of the pipeline, which also takes config.json's
/// `task_specific_params.summarization` and `prefix` as transformers' summarization pipeline did
/// (see [`TaskDefaults`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    #[default]
    Generate,
    Summarizer,
}

/// Loads the runner of a resolved model: its tokenizer, generation config and weights, on
/// `device` in `dtype`. The input limit is the model's own, lowered by the preset's when the
/// model was named by a preset. The generation settings are layered, weakest first: the repo's
/// file (generation_config.json, else config.json), the summarizer's task_specific_params, the
/// preset's, then (at each call) the flags. A generation config key mtsum does not implement is
/// reported to `observer` as a warning.
pub fn load(
    resolved: &ResolvedModel,
    device: &Device,
    dtype: DType,
    batch_tokens: Option<usize>,
    role: Role,
    observer: &dyn Observer,
) -> Result<Runner<AnyModel>> {
    let numerics = (dtype, WeightPrecision::Float);
    load_with(resolved, device, numerics, batch_tokens, role, observer)
}

/// [`load`] with the linear layers held as the precision of `(dtype, precision)` says (the
/// caller checked that the device runs it: [`LoadOptions::open_device`]).
pub fn load_with(
    resolved: &ResolvedModel,
    device: &Device,
    (dtype, precision): (DType, WeightPrecision),
    batch_tokens: Option<usize>,
    role: Role,
    observer: &dyn Observer,
) -> Result<Runner<AnyModel>> {
    let dir = &resolved.dir;
    let tokenizer = Seq2SeqTokenizer::from_dir(dir)?;
    let (config, prefix) = generation_config(dir, resolved.preset.as_ref(), role)?;
    if !config.unsupported.is_empty() {
        observer.message(&format!(
            "warning: {} sets {}, which mtsum does not implement; outputs may differ from transformers'",
            config.source,
            config.unsupported.join(", ")
        ));
    }
    let model = crate::models::load_with(dir, device, dtype, precision)?;
    let info = ModelInfo {
        repo: resolved.repo.clone(),
        revision: resolved.revision.clone(),
        commit: resolved.commit.clone(),
        family: model.model_type().name().to_string(),
        dtype: precision.label(dtype),
        device: device_name(device),
        llm: None,
    };
    let budget = match batch_tokens {
        Some(tokens) => schedule::Budget::of_tokens(tokens),
        None => schedule::default_budget(device, precision == WeightPrecision::Int8),
    };
    let runner = Runner::new(RunnerParts {
        model,
        tokenizer,
        config,
        info,
        device: device.clone(),
        max_input_tokens: resolved.preset.as_ref().and_then(|p| p.max_input_tokens),
        budget,
    });
    Ok(runner.with_dir(dir.clone()).with_prefix(prefix))
}

/// Resolves `spec` (hub id[@revision], preset or folder) and loads its runner for `role` on
/// `device` in `dtype`, with the batch budget of `options`.
pub fn open(
    spec: &str,
    options: &LoadOptions,
    device: &Device,
    dtype: DType,
    role: Role,
    observer: &dyn Observer,
) -> Result<Runner<AnyModel>> {
    let resolved = crate::hub::resolve(spec, &options.hub)?;
    load_with(
        &resolved,
        device,
        (dtype, options.precision),
        options.batch_tokens,
        role,
        observer,
    )
}

/// The generation settings of the model in `dir` for `role`, layered as [`load`] layers them
/// (the flags go over them at each call), and the summarizer's `prefix`. Reads only config
/// files: `mtsum models inspect` explains the settings without loading the weights.
pub fn generation_config(
    dir: &std::path::Path,
    preset: Option<&Preset>,
    role: Role,
) -> Result<(GenerationConfig, Option<String>)> {
    let mut config = GenerationConfig::from_dir(dir)?;
    let mut prefix = None;
    if role == Role::Summarizer {
        let task = TaskDefaults::summarization(dir)?;
        config.update(&task.generation);
        prefix = task.prefix;
    }
    if let Some(preset) = preset {
        config.update(&preset_defaults(preset));
    }
    Ok((config, prefix))
}

/// The generation settings a preset's manifest adds to the repo's own config (the model card's
/// settings that the repo's files do not carry, e.g. rut5's no_repeat_ngram_size 4). They sit
/// between the files and the command line, as keyword arguments to `generate()` would.
fn preset_defaults(preset: &Preset) -> GenerationConfig {
    let set = [
        ("num_beams", preset.num_beams.is_some()),
        (
            "no_repeat_ngram_size",
            preset.no_repeat_ngram_size.is_some(),
        ),
        ("max_length", preset.max_length.is_some()),
    ];
    GenerationConfig {
        source: format!("preset {}", preset.name),
        origins: (set.into_iter())
            .filter(|(_, is_set)| *is_set)
            .map(|(key, _)| (key, Origin::Preset))
            .collect(),
        num_beams: preset.num_beams,
        no_repeat_ngram_size: preset.no_repeat_ngram_size,
        max_length: preset.max_length,
        ..GenerationConfig::default()
    }
}

/// Resolves a GGUF spec (`org/name[@revision]:file.gguf`, a GGUF preset or a local .gguf
/// file) and loads it as an LLM summarizer on `device`: the engine's model (`crate::llm`),
/// recorded as what traces a digest to it (backend, file, quantization, commit, prompt
/// version). A file without a chat template (a base model) is loaded with a warning: its
/// prompts go to it as plain text.
pub fn open_llm(
    spec: &str,
    options: &LoadOptions,
    device: &Device,
    sampling: Sampling,
    observer: &dyn Observer,
) -> Result<LlmSummarizer> {
    sampling.validate()?;
    let resolved = crate::hub::resolve_gguf(spec, &options.hub)?;
    let model =
        GgufModel::open_with_tokenizer(&resolved.path, resolved.tokenizer_json.as_deref(), device)?;
    if model.chat_template().is_none() {
        observer.message(&format!(
            "warning: {} has no chat template (tokenizer.chat_template): a base model, not an \
             instruction model; its prompts go to it as plain text and its summaries will be poor",
            resolved.path.display()
        ));
    }
    let quantization = model.quantization();
    let family = format!("{:?}", model.family()).to_lowercase();
    let info = ModelInfo {
        repo: resolved.repo.clone(),
        revision: resolved.revision.clone(),
        commit: resolved.commit.clone(),
        family: model.architecture().to_string(),
        dtype: quantization.clone(),
        device: device_name(device),
        llm: Some(LlmInfo {
            backend: backend_name(&family),
            gguf_file: resolved.file.clone(),
            quantization,
            commit: resolved.commit.clone().unwrap_or_else(|| "local".into()),
            sha256: resolved.sha256.clone(),
            prompt_template_version: crate::summary::PROMPT_TEMPLATE_VERSION.into(),
        }),
    };
    let limit = resolved.preset.as_ref().and_then(|p| p.max_input_tokens);
    Ok(LlmSummarizer::new(model, info, sampling, limit))
}

/// The engine that runs a GGUF family, as recorded: candle-transformers' quantized model, except
/// Gemma 3, which mtsum wires itself (`llm/gemma3.rs`: the candle-transformers model computes
/// its feed-forward with the wrong activation), with its Q8_0 products on mtsum's own kernels
/// (`llm/q8.rs`), its Q4_K/Q6_K products on mtsum's own kernel for generated tokens
/// (`llm/kquant.rs`) and on candle's for prompts, other quantizations on candle's.
pub fn backend_name(family: &str) -> String {
    match family {
        "gemma3" => "mtsum gemma3 (own Q8_0 kernels, own k-quant kernels per token)".into(),
        other => format!("candle-transformers quantized_{other}"),
    }
}
