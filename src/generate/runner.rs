//! The runner: tokenizer + model + generation config, text in and text out; what the pipeline
//! drives (through its `TextGenerator` trait) and what `mtsum generate` / `mtsum bench` run.

use candle_core::Device;

use super::config::{GenerationConfig, SettingOrigin, Settings};
use super::error::{GenerateError, Result};
use super::{constrained, schedule, search, Generated, GenerationOverrides, ModelInfo, Seq2Seq};
use crate::tokenize::Seq2SeqTokenizer;

/// A loaded model ready to generate.
pub struct Runner<M> {
    model: M,
    tokenizer: Seq2SeqTokenizer,
    config: GenerationConfig,
    info: ModelInfo,
    device: Device,
    max_input_tokens: usize,
    budget: schedule::Budget,
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
    /// What one batch may hold (`--batch-tokens`, or the default for the device and weights).
    pub budget: schedule::Budget,
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

impl<M: Seq2Seq + Sync> Runner<M> {
    pub fn new(parts: RunnerParts<M>) -> Self {
        let max_input_tokens =
            input_limit(parts.max_input_tokens, parts.model.max_source_positions());
        Self {
            model: parts.model,
            tokenizer: parts.tokenizer,
            config: parts.config,
            info: parts.info,
            device: parts.device,
            max_input_tokens,
            budget: parts.budget,
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
        self.check_sources(sources)?;
        self.scheduled(sources, settings.num_beams, progress, |_, real| {
            search::generate_batch(&self.model, settings, real, &self.device)
        })
    }

    /// Generated ids for every source that must hold its `constraints` (token-id sequences,
    /// e.g. glossary terms as [`Runner::encode_constraint`] gives them): a source without
    /// constraints is generated exactly as by [`Runner::generate_ids`] (the same ids, alone or
    /// in any batch); a source with some goes through the constrained beam search (at least
    /// [`super::CONSTRAINED_BEAMS`] beams), and where that cannot place them all within the
    /// length limit, it too gets its [`Runner::generate_ids`] output. Returns, per source, the
    /// ids and whether the constrained search placed its constraints (false for none).
    pub fn generate_ids_constrained(
        &self,
        sources: &[Vec<u32>],
        constraints: &[Vec<Vec<u32>>],
        settings: &Settings,
        progress: &dyn Fn(usize, usize),
    ) -> Result<Vec<(Vec<u32>, bool)>> {
        assert_eq!(
            sources.len(),
            constraints.len(),
            "constraints for every source"
        );
        self.check_sources(sources)?;
        let wants =
            |i: usize| !sources[i].is_empty() && constraints[i].iter().any(|c| !c.is_empty());
        let (constrained, plain): (Vec<usize>, Vec<usize>) =
            (0..sources.len()).partition(|&i| wants(i));
        let mut outputs: Vec<(Vec<u32>, bool)> = vec![(Vec::new(), false); sources.len()];
        let total = sources.len();
        let subset =
            |idx: &[usize]| -> Vec<Vec<u32>> { idx.iter().map(|&i| sources[i].clone()).collect() };
        let placed = {
            let mine = subset(&constrained);
            let beams = constrained::constrained_beams(settings);
            let continuations = match constrained.is_empty() {
                true => Vec::new(),
                false => self.tokenizer.word_continuations(self.model.vocab_size()),
            };
            self.scheduled(
                &mine,
                beams,
                &|done, _| progress(done, total),
                |batch, real| {
                    let cs: Vec<Vec<Vec<u32>>> = (batch.iter())
                        .map(|&k| constraints[constrained[k]].clone())
                        .collect();
                    constrained::generate_constrained(
                        &self.model,
                        settings,
                        real,
                        &cs,
                        &continuations,
                        &self.device,
                    )
                },
            )?
        };
        let mut fallback = plain;
        for (&i, ids) in constrained.iter().zip(placed) {
            match ids {
                Some(ids) => outputs[i] = (ids, true),
                None => fallback.push(i),
            }
        }
        fallback.sort_unstable();
        let done_first = constrained.len();
        let rest = self.generate_ids(&subset(&fallback), settings, &|done, _| {
            progress((done_first + done).min(total), total)
        })?;
        for (&i, ids) in fallback.iter().zip(rest) {
            outputs[i] = (ids, false);
        }
        Ok(outputs)
    }

    /// A constraint's target-side ids: `text` as the target tokenizer encodes it, without the
    /// end token. SentencePiece marks a word after a space and the first word of a text alike
    /// (`▁Interpol`), so these are the ids of the term as it normally stands in a sentence,
    /// after a space; a term right after an opening quote or bracket is tokenized otherwise
    /// and is not what the search places.
    pub fn encode_constraint(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = self.tokenizer.encode_target(text.trim())?;
        if ids.last() == Some(&self.tokenizer.eos_id()) {
            ids.pop();
        }
        Ok(ids)
    }

    /// One output per input text, as [`Runner::generate_texts`], each holding its
    /// `constraints` (texts) where the constrained search can place them; see
    /// [`Runner::generate_ids_constrained`]. A constraint with a piece the target vocabulary
    /// lacks is left out.
    pub fn generate_texts_constrained(
        &self,
        inputs: &[String],
        constraints: &[Vec<String>],
        overrides: &GenerationOverrides,
        progress: &dyn Fn(usize, usize),
    ) -> Result<Vec<Generated>> {
        let settings = self.resolve(overrides)?;
        let sources = self.encode_all(inputs)?;
        // A constraint the target vocabulary cannot spell (an unknown piece) is dropped: the
        // search would place the unknown token, which decodes to nothing.
        let unk = self.tokenizer.unk_id();
        let spelled = |c: &String| -> Result<Option<Vec<u32>>> {
            let ids = self.encode_constraint(c)?;
            Ok((!ids.contains(&unk)).then_some(ids))
        };
        let ids = (constraints.iter())
            .map(|cs| cs.iter().filter_map(|c| spelled(c).transpose()).collect())
            .collect::<Result<Vec<Vec<Vec<u32>>>>>()?;
        let outputs = self.generate_ids_constrained(&sources, &ids, &settings, progress)?;
        (sources.iter().zip(outputs))
            .map(|(source, (ids, _))| {
                Ok(Generated {
                    text: self.tokenizer.decode(&ids)?,
                    input_tokens: source.len(),
                    output_tokens: ids.len(),
                })
            })
            .collect()
    }

    /// Every source within the input limit and the vocabulary.
    fn check_sources(&self, sources: &[Vec<u32>]) -> Result<()> {
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
        Ok(())
    }

    /// `work(indices, sources)` on the non-empty sources of every batch of the scheduler's
    /// plan (by the token budget, for `beams` hypotheses per input), with their indices in
    /// `sources`; empty sources give default outputs.
    fn scheduled<T: Default>(
        &self,
        sources: &[Vec<u32>],
        beams: usize,
        progress: &dyn Fn(usize, usize),
        work: impl Fn(&[usize], &[&[u32]]) -> Result<Vec<T>>,
    ) -> Result<Vec<T>> {
        let lengths: Vec<usize> = sources.iter().map(Vec::len).collect();
        schedule::run(
            &lengths,
            self.budget,
            beams,
            |batch| {
                let indices: Vec<usize> = (batch.iter().copied())
                    .filter(|&i| !sources[i].is_empty())
                    .collect();
                let real: Vec<&[u32]> = indices.iter().map(|&i| sources[i].as_slice()).collect();
                let mut outputs = work(&indices, &real)?.into_iter();
                Ok(batch
                    .iter()
                    .map(|&i| match sources[i].is_empty() {
                        true => T::default(),
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
