//! The runner: tokenizer + model + generation config, the engine's implementation of
//! [`TextGenerator`] for the pipeline and of `mtsum generate` / `mtsum bench`.

use candle_core::Device;

use super::config::{GenerationConfig, Origin, SettingOrigin, Settings, TaskDefaults};
use super::{schedule, search, Generated, GenerationOverrides, ModelInfo, Seq2Seq, TextGenerator};
use crate::tokenize::Seq2SeqTokenizer;
use crate::{Error, Result};

/// A loaded model ready to generate.
pub struct Runner<M> {
    model: M,
    tokenizer: Seq2SeqTokenizer,
    config: GenerationConfig,
    info: ModelInfo,
    device: Device,
    max_input_tokens: usize,
    batch_tokens: usize,
    /// The model's folder, when loaded from one.
    dir: Option<std::path::PathBuf>,
    /// Text put before every pipeline input (the summarizer's config `prefix`); never applied
    /// by `mtsum generate`, which is `generate()` and not a pipeline.
    prefix: Option<String>,
}

/// What a model is loaded for: plain `generate()` (`mtsum generate`, `bench`, the translator), or
/// the summarizer of the pipeline, which also takes config.json's `task_specific_params.summarization`
/// and `prefix` as transformers' summarization pipeline did (see [`TaskDefaults`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    #[default]
    Generate,
    Summarizer,
}

/// The parts a runner is built from; `max_input_tokens` None takes the model's own limit.
pub struct RunnerParts<M> {
    pub model: M,
    pub tokenizer: Seq2SeqTokenizer,
    pub config: GenerationConfig,
    pub info: ModelInfo,
    pub device: Device,
    pub max_input_tokens: Option<usize>,
    pub batch_tokens: Option<usize>,
}

/// Most source tokens when neither the model nor a preset sets a limit (T5's relative
/// positions have none; its attention cost grows with the square of the length).
const UNBOUNDED_INPUT_TOKENS: usize = 4096;

/// Most source tokens a runner accepts: the preset's limit and the model's own
/// (max_position_embeddings), the lower of the two, else [`UNBOUNDED_INPUT_TOKENS`].
pub fn input_limit(preset: Option<usize>, own: Option<usize>) -> usize {
    match (preset, own) {
        (Some(preset), Some(own)) => preset.min(own),
        (Some(limit), None) | (None, Some(limit)) => limit,
        (None, None) => UNBOUNDED_INPUT_TOKENS,
    }
}

impl<M: Seq2Seq> Runner<M> {
    pub fn new(parts: RunnerParts<M>) -> Self {
        let max_input_tokens =
            input_limit(parts.max_input_tokens, parts.model.max_source_positions());
        let batch_tokens =
            (parts.batch_tokens).unwrap_or_else(|| schedule::default_batch_tokens(&parts.device));
        Self {
            model: parts.model,
            tokenizer: parts.tokenizer,
            config: parts.config,
            info: parts.info,
            device: parts.device,
            max_input_tokens,
            batch_tokens,
            dir: None,
            prefix: None,
        }
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The folder the model was loaded from (None when built from parts).
    pub fn dir(&self) -> Option<&std::path::Path> {
        self.dir.as_deref()
    }

    pub fn model(&self) -> &M {
        &self.model
    }

    pub fn tokenizer(&self) -> &Seq2SeqTokenizer {
        &self.tokenizer
    }

    /// Every effective generation setting for `overrides` and where it came from (flag, preset,
    /// task_specific_params, generation_config.json, config.json, transformers' default).
    pub fn setting_origins(&self, overrides: &GenerationOverrides) -> Result<Vec<SettingOrigin>> {
        self.config.explain(
            overrides,
            self.model.special_tokens(),
            self.model.max_source_positions(),
        )
    }

    /// The text put before every pipeline input (the summarizer's `prefix`), if any.
    pub fn prefix(&self) -> Option<&str> {
        self.prefix.as_deref()
    }

    /// `text` as the pipeline feeds it to the model: with the prefix in front.
    fn with_prefix<'t>(&self, text: &'t str) -> std::borrow::Cow<'t, str> {
        match &self.prefix {
            Some(prefix) => format!("{prefix}{text}").into(),
            None => text.into(),
        }
    }

    /// The effective settings for `overrides`.
    pub fn resolve(&self, overrides: &GenerationOverrides) -> Result<Settings> {
        self.config.resolve(
            overrides,
            self.model.special_tokens(),
            self.model.max_source_positions(),
        )
    }

    /// Source ids (end token included) of `text`; a text over the input limit is an error that
    /// names the input and the limit.
    pub fn encode(&self, index: usize, text: &str) -> Result<Vec<u32>> {
        let ids = self.tokenizer.encode(text)?;
        self.check_length(index, ids.len())?;
        Ok(ids)
    }

    fn check_length(&self, index: usize, tokens: usize) -> Result<()> {
        if tokens > self.max_input_tokens {
            return Err(Error::Usage(format!(
                "input {} has {tokens} tokens, but {} accepts at most {}: split it into shorter \
                 segments (mtsum translate/summarize do this themselves)",
                index + 1,
                self.info.repo,
                self.max_input_tokens
            )));
        }
        Ok(())
    }

    /// Generated ids (no decoder start token) for every source, in input order. Empty sources
    /// give empty outputs without running the model.
    pub fn generate_ids(
        &self,
        sources: &[Vec<u32>],
        settings: &Settings,
        progress: &dyn Fn(usize, usize),
    ) -> Result<Vec<Vec<u32>>> {
        let vocab = self.model.vocab_size();
        for (index, source) in sources.iter().enumerate() {
            self.check_length(index, source.len())?;
            if let Some(id) = source.iter().find(|&&id| id as usize >= vocab) {
                return Err(Error::Usage(format!(
                    "input {}: token id {id} is outside the vocabulary of {} ({vocab} ids)",
                    index + 1,
                    self.info.repo
                )));
            }
        }
        let lengths: Vec<usize> = sources.iter().map(Vec::len).collect();
        schedule::run(
            &lengths,
            schedule::Budget::of_tokens(self.batch_tokens),
            settings.num_beams,
            |batch| {
                let real: Vec<&[u32]> = (batch.iter())
                    .map(|&i| sources[i].as_slice())
                    .filter(|s| !s.is_empty())
                    .collect();
                let mut outputs =
                    search::generate_batch(&self.model, settings, &real, &self.device)?.into_iter();
                Ok(batch
                    .iter()
                    .map(|&i| match sources[i].is_empty() {
                        true => Vec::new(),
                        false => outputs.next().unwrap_or_default(),
                    })
                    .collect())
            },
            progress,
        )
    }
}

impl<M: Seq2Seq + Send + Sync> TextGenerator for Runner<M> {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn count_tokens(&self, text: &str) -> Result<usize> {
        Ok(self.tokenizer.encode(&self.with_prefix(text))?.len())
    }

    fn max_input_tokens(&self) -> usize {
        self.max_input_tokens
    }

    fn settings(&self, overrides: &GenerationOverrides) -> serde_json::Value {
        match self.resolve(overrides) {
            Ok(settings) => serde_json::to_value(settings).unwrap_or_default(),
            Err(err) => serde_json::json!({ "error": err.to_string() }),
        }
    }

    fn generate(
        &self,
        inputs: &[String],
        overrides: &GenerationOverrides,
        progress: &dyn Fn(usize, usize),
    ) -> Result<Vec<Generated>> {
        let settings = self.resolve(overrides)?;
        let sources = (inputs.iter().enumerate())
            .map(|(i, text)| match text.trim().is_empty() {
                true => Ok(Vec::new()),
                false => self.encode(i, &self.with_prefix(text)),
            })
            .collect::<Result<Vec<_>>>()?;
        let outputs = self.generate_ids(&sources, &settings, progress)?;
        (sources.iter().zip(outputs))
            .map(|(source, ids)| {
                Ok(Generated {
                    text: self.tokenizer.decode(&ids)?,
                    input_tokens: source.len(),
                    output_tokens: ids.len(),
                })
            })
            .collect()
    }
}

/// Loads the runner of a resolved model: its tokenizer, generation config and weights, on
/// `device` in `dtype`. The input limit is the model's own, lowered by the preset's when the
/// model was named by a preset.
pub fn load(
    resolved: &crate::hub::ResolvedModel,
    device: &Device,
    dtype: candle_core::DType,
    batch_tokens: Option<usize>,
) -> Result<Runner<crate::models::AnyModel>> {
    load_as(resolved, device, dtype, batch_tokens, Role::Generate)
}

/// [`load`] for a `role`. The settings are layered, weakest first: the repo's file
/// (generation_config.json, else config.json), the summarizer's task_specific_params, the
/// preset's, then (at each call) the flags.
pub fn load_as(
    resolved: &crate::hub::ResolvedModel,
    device: &Device,
    dtype: candle_core::DType,
    batch_tokens: Option<usize>,
    role: Role,
) -> Result<Runner<crate::models::AnyModel>> {
    let dir = &resolved.dir;
    let tokenizer = Seq2SeqTokenizer::from_dir(dir)?;
    let (config, prefix) = generation_config(dir, resolved.preset.as_ref(), role)?;
    if !config.unsupported.is_empty() && crate::progress::is_verbose_enough(1) {
        eprintln!(
            "warning: {} sets {}, which mtsum does not implement; outputs may differ from transformers'",
            config.source,
            config.unsupported.join(", ")
        );
    }
    if device.is_cpu() {
        tune_allocator(AllocatorMode::Loading);
    }
    let model = crate::models::load(dir, device, dtype)?;
    if device.is_cpu() {
        tune_allocator(AllocatorMode::Decoding);
    }
    let info = ModelInfo {
        repo: resolved.repo.clone(),
        revision: resolved.revision.clone(),
        commit: resolved.commit.clone(),
        family: model.model_type().name().to_string(),
        dtype: format!("{dtype:?}").to_lowercase(),
        device: device_name(device),
    };
    let mut runner = Runner::new(RunnerParts {
        model,
        tokenizer,
        config,
        info,
        device: device.clone(),
        max_input_tokens: resolved.preset.as_ref().and_then(|p| p.max_input_tokens),
        batch_tokens,
    });
    runner.dir = Some(dir.clone());
    runner.prefix = prefix;
    Ok(runner)
}

/// The generation settings of the model in `dir` for `role`, layered as [`load_as`] layers them
/// (the flags go over them at each call), and the text put before every input (the summarizer's
/// `prefix`). Reads only config files: `mtsum models inspect` explains them without the weights.
pub fn generation_config(
    dir: &std::path::Path,
    preset: Option<&crate::hub::Preset>,
    role: Role,
) -> Result<(GenerationConfig, Option<String>)> {
    let mut config = GenerationConfig::from_dir(dir)?;
    let mut prefix = None;
    if role == Role::Summarizer {
        let task = TaskDefaults::summarization(dir)?;
        config.update(&task.generation);
        prefix = task.prefix.filter(|p| !p.is_empty());
    }
    if let Some(preset) = preset {
        config.update(&preset_defaults(preset));
    }
    Ok((config, prefix))
}

/// The generation settings a preset's manifest adds to the repo's own config (the model card's
/// settings that the repo's files do not carry, e.g. rut5's no_repeat_ngram_size 4). They sit
/// between the files and the command line, as keyword arguments to `generate()` would.
fn preset_defaults(preset: &crate::hub::Preset) -> GenerationConfig {
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

/// Resolves `spec` (hub id[@revision], preset or folder) and loads its runner on the device and
/// dtype the global flags choose: the one model of `generate` and `bench`. (The pipeline's
/// commands load translator and summarizer with `commands::common::Models`, which opens the
/// device once for both.)
pub fn open(
    spec: &str,
    global: &crate::cli::GlobalArgs,
) -> Result<Runner<crate::models::AnyModel>> {
    let options = crate::hub::HubOptions::from_global(global);
    let resolved = crate::hub::resolve(spec, &options)?;
    let device = global.device.open()?;
    let dtype = crate::device::choose_dtype(&device, global.dtype);
    load(&resolved, &device, dtype, global.batch_tokens)
}

/// "cpu", "cuda:0", "metal:0": as recorded in outputs.
pub fn device_name(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

/// How glibc's allocator should treat large buffers (Linux with glibc; elsewhere a no-op).
#[derive(Clone, Copy)]
enum AllocatorMode {
    /// Loading weights: every buffer of 64 KiB or more is its own mapping, returned to the
    /// kernel when freed. The loader frees each tensor it read once it is packed; kept in the
    /// heap, those holes cost about 30 MB of resident memory for opus-mt.
    Loading,
    /// Decoding: freed memory is kept for reuse, never returned. Every decoding step allocates
    /// and frees buffers of megabytes (logits, caches); mapped and unmapped each time, the page
    /// faults of re-touching them cost a quarter of a beam-search step on the CPU. One arena
    /// keeps the retained memory bounded.
    Decoding,
}

fn tune_allocator(mode: AllocatorMode) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; a failure leaves the previous ones.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        match mode {
            AllocatorMode::Loading => {
                libc::mallopt(libc::M_MMAP_MAX, 65536);
                libc::mallopt(libc::M_MMAP_THRESHOLD, 64 * 1024);
            }
            AllocatorMode::Decoding => {
                libc::mallopt(libc::M_MMAP_MAX, 0);
                libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
            }
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = mode;
}
