//! The runner: tokenizer + model + generation config, text in and text out; what the pipeline
//! drives (through its `TextGenerator` trait) and what `mtsum generate` / `mtsum bench` run.

use candle_core::Device;

use super::config::{GenerationConfig, SettingOrigin, Settings};
use super::error::{GenerateError, Result};
use super::{schedule, search, Generated, GenerationOverrides, ModelInfo, Seq2Seq};
use crate::tokenize::Seq2SeqTokenizer;

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
/// `mtsum models inspect` reports it without building a runner.
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

    /// Records the folder the model was loaded from.
    pub fn with_dir(mut self, dir: std::path::PathBuf) -> Self {
        self.dir = Some(dir);
        self
    }

    /// The folder the model was loaded from (None when built from parts).
    pub fn dir(&self) -> Option<&std::path::Path> {
        self.dir.as_deref()
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

    /// Sets the text put before every pipeline input (None or empty: nothing).
    pub fn with_prefix(mut self, prefix: Option<String>) -> Self {
        self.prefix = prefix.filter(|p| !p.is_empty());
        self
    }

    /// `text` as the pipeline feeds it to the model: with the prefix in front.
    pub fn prefixed<'t>(&self, text: &'t str) -> std::borrow::Cow<'t, str> {
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

    /// Source ids of every input, in order; a blank input gives no ids (and, generated, an
    /// empty output without running the model).
    pub fn encode_all(&self, inputs: &[String]) -> Result<Vec<Vec<u32>>> {
        (inputs.iter().enumerate())
            .map(|(i, text)| match text.trim().is_empty() {
                true => Ok(Vec::new()),
                false => self.encode(i, text),
            })
            .collect()
    }

    fn check_length(&self, index: usize, tokens: usize) -> Result<()> {
        if tokens > self.max_input_tokens {
            return Err(GenerateError::Input(format!(
                "input {} has {tokens} tokens, but {} accepts at most {}: split it into shorter \
                 segments (mtsum translate/summarize do this themselves)",
                index + 1,
                self.info.repo,
                self.max_input_tokens
            )));
        }
        Ok(())
    }

    /// One output per input text, in input order: blank inputs give empty outputs without
    /// running the model.
    pub fn generate_texts(
        &self,
        inputs: &[String],
        overrides: &GenerationOverrides,
        progress: &dyn Fn(usize, usize),
    ) -> Result<Vec<Generated>> {
        let settings = self.resolve(overrides)?;
        let sources = self.encode_all(inputs)?;
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

    /// The number of source tokens of `text`, the end token included.
    pub fn count_tokens(&self, text: &str) -> Result<usize> {
        Ok(self.tokenizer.encode(text)?.len())
    }

    /// Repo, commit, family, dtype, device.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// Most source tokens one input may have.
    pub fn max_input_tokens(&self) -> usize {
        self.max_input_tokens
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
                return Err(GenerateError::Input(format!(
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

/// "cpu", "cuda:0", "metal:0": as recorded in outputs.
pub fn device_name(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}
