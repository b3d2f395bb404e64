//! A GGUF LLM as the pipeline's summarizer: [`LlmSummarizer`] puts the engine's model
//! (`crate::llm`) behind [`TextGenerator`], where each input is one user turn of a chat in the
//! model's own template, and tells the pipeline it follows instructions, so summaries are
//! asked of it per language (`prompted.rs`). How it samples: greedy unless asked otherwise
//! (`--temperature`, `--top-p`, `--seed`).
//!
//! Prompts that share a prefix (the two languages of one release, rendered with the document
//! first) are run as one session up to the shared tokens, then forked: the release is read
//! once.

use super::TextGenerator;
use crate::generate::{Generated, GenerationOverrides, ModelInfo};
use crate::llm::{GenerateOptions, GgufModel, Message, SamplingOptions, Session};
use crate::{Error, Result};

/// New tokens per answer when neither `--max-length` nor `--summary-length` says: room for a
/// few Russian sentences in the tokenizers of small LLMs (Qwen2.5 spends about 2.5 tokens per
/// Russian word).
pub const DEFAULT_MAX_NEW_TOKENS: usize = 256;

/// Fewest shared tokens worth a forked session: below this the prompts run apart.
const MIN_SHARED_PREFIX: usize = 16;

/// A loaded GGUF LLM serving the pipeline as an instruction-following summarizer.
pub struct LlmSummarizer {
    model: GgufModel,
    info: ModelInfo,
    sampling: Sampling,
    max_input_tokens: usize,
}

impl LlmSummarizer {
    /// `input_limit`: the preset's `max_input_tokens`, when the model was named by one; the
    /// model's context less the room for an answer bounds it in any case.
    pub fn new(
        model: GgufModel,
        info: ModelInfo,
        sampling: Sampling,
        input_limit: Option<usize>,
    ) -> Self {
        let context = model.context_length().unwrap_or(4096);
        // Room for the answer: the default budget, or a quarter of a small context.
        let answer = DEFAULT_MAX_NEW_TOKENS.min(context / 4);
        let room = context.saturating_sub(answer).max(1);
        LlmSummarizer {
            model,
            info,
            sampling,
            max_input_tokens: input_limit.map_or(room, |limit| limit.min(room)),
        }
    }

    pub fn model(&self) -> &GgufModel {
        &self.model
    }

    /// Whether the file carries a chat template; a base model without one gets the prompts
    /// as plain text (its summaries are then poor, and the guard says so).
    pub fn has_chat_template(&self) -> bool {
        self.model.chat_template().is_some()
    }

    /// The prompt ids of one user turn: the chat template rendered with the assistant's turn
    /// opened, or the text itself for a model without a template.
    pub fn prompt_ids(&self, user: &str) -> Result<Vec<u32>> {
        let rendered = match self.has_chat_template() {
            true => self.model.render_chat(&[Message::new("user", user)])?,
            false => user.to_string(),
        };
        Ok(self.model.encode_prompt(&rendered)?)
    }

    /// The answer after what `session` was fed: the engine's own decoding, or (on a guard's
    /// retry, which bans repeated n-grams) the same greedy or sampled steps with the banned
    /// tokens taken out.
    fn answer(
        &self,
        session: &mut Session<'_>,
        overrides: &GenerationOverrides,
        seed: u64,
    ) -> Result<Vec<u32>> {
        let options = GenerateOptions {
            max_new_tokens: overrides.max_new_tokens.unwrap_or(DEFAULT_MAX_NEW_TOKENS),
            sampling: SamplingOptions {
                temperature: self.sampling.temperature,
                top_p: self.sampling.top_p,
                seed,
            },
            stop_ids: None,
        };
        match overrides.no_repeat_ngram_size.filter(|n| *n > 0) {
            None => Ok(session.generate(&options, &mut |_| {})?.ids),
            Some(n) => self.answer_without_repeats(session, &options, n),
        }
    }

    /// Decoding with no n-gram of `n` tokens generated twice (transformers'
    /// no_repeat_ngram_size over the answer), the guard's cure for loops.
    fn answer_without_repeats(
        &self,
        session: &mut Session<'_>,
        options: &GenerateOptions,
        n: usize,
    ) -> Result<Vec<u32>> {
        use candle_transformers::generation::{LogitsProcessor, Sampling as Pick};
        let pick = match (options.sampling.temperature, options.sampling.top_p) {
            (Some(t), None) if t > 0.0 => Pick::All { temperature: t },
            (Some(t), Some(p)) if t > 0.0 => Pick::TopP { p, temperature: t },
            _ => Pick::ArgMax,
        };
        let mut processor = LogitsProcessor::from_sampling(options.sampling.seed, pick);
        let stops = self.model.stop_ids().to_vec();
        let context = self.model.context_length().unwrap_or(usize::MAX);
        let mut logits = session.logits().map(<[f32]>::to_vec).unwrap_or_default();
        let mut ids: Vec<u32> = Vec::new();
        for _ in 0..options.max_new_tokens {
            for banned in banned_tokens(&ids, n) {
                if let Some(l) = logits.get_mut(banned as usize) {
                    *l = f32::NEG_INFINITY;
                }
            }
            let tensor = candle_core::Tensor::new(logits.as_slice(), &candle_core::Device::Cpu)?;
            let token = processor.sample(&tensor)?;
            if stops.contains(&token) {
                break;
            }
            ids.push(token);
            if ids.len() == options.max_new_tokens || session.len() + 1 > context {
                break;
            }
            logits = session.feed(&[token])?.to_vec();
        }
        Ok(ids)
    }
}

/// The tokens that would complete an n-gram already in `ids` (as transformers bans them).
fn banned_tokens(ids: &[u32], n: usize) -> Vec<u32> {
    if n == 0 || ids.len() + 1 < n {
        return Vec::new();
    }
    let prefix = &ids[ids.len() + 1 - n..];
    ids.windows(n)
        .filter(|w| &w[..n - 1] == prefix)
        .map(|w| w[n - 1])
        .collect()
}

/// Tokens shared at the start of two prompts.
fn shared_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// A seed per prompt from the run's seed and the prompt's ids, so a sampled answer does not
/// depend on which other prompts shared its call (pooling) or their order.
fn seed_for(seed: u64, ids: &[u32]) -> u64 {
    // FNV-1a over the ids: stable across platforms and versions, unlike std's hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for id in ids {
        for byte in id.to_le_bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

impl TextGenerator for LlmSummarizer {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn count_tokens(&self, text: &str) -> Result<usize> {
        Ok(self.prompt_ids(text)?.len())
    }

    fn max_input_tokens(&self) -> usize {
        self.max_input_tokens
    }

    fn settings(&self, overrides: &GenerationOverrides) -> serde_json::Value {
        serde_json::json!({
            "max_new_tokens": overrides.max_new_tokens.unwrap_or(DEFAULT_MAX_NEW_TOKENS),
            "decoding": if self.sampling.samples() { "sampled" } else { "greedy" },
            "temperature": self.sampling.temperature,
            "top_p": self.sampling.top_p,
            "seed": self.sampling.samples().then(|| self.sampling.seed()),
            "chat_template": self.has_chat_template(),
            "max_input_tokens": self.max_input_tokens,
            "prompt_template_version": crate::summary::PROMPT_TEMPLATE_VERSION,
        })
    }

    fn follows_instructions(&self) -> bool {
        true
    }

    /// Each input a user turn; prompts sharing a prefix with the one before them (the two
    /// languages of a release) fork one session after the shared tokens. The prompt is fed in
    /// one batched forward; an input over the context fails with the engine's message.
    fn generate(
        &self,
        inputs: &[String],
        overrides: &GenerationOverrides,
        progress: &dyn Fn(usize, usize),
    ) -> Result<Vec<Generated>> {
        let prompts = (inputs.iter())
            .map(|input| self.prompt_ids(input))
            .collect::<Result<Vec<_>>>()?;
        let mut outputs = Vec::with_capacity(inputs.len());
        let mut start = 0;
        while start < prompts.len() {
            // The run of prompts sharing at least MIN_SHARED_PREFIX tokens with the first;
            // each keeps at least one token of its own to feed after the fork.
            let first = &prompts[start];
            let mut end = start + 1;
            let mut shared = first.len().saturating_sub(1);
            while let Some(next) = prompts.get(end) {
                let common = shared_prefix(first, next).min(next.len().saturating_sub(1));
                if common < MIN_SHARED_PREFIX {
                    break;
                }
                shared = shared.min(common);
                end += 1;
            }
            let shared = if end - start > 1 { shared } else { 0 };
            let mut base = self.model.session();
            if shared > 0 {
                base.feed(&first[..shared])?;
            }
            for prompt in &prompts[start..end] {
                let mut session = base.fork()?;
                session.feed(&prompt[shared..])?;
                let seed = seed_for(self.sampling.seed(), prompt);
                let ids = self.answer(&mut session, overrides, seed)?;
                outputs.push(Generated {
                    text: self.model.tokenizer().decode(&ids),
                    input_tokens: prompt.len(),
                    output_tokens: ids.len(),
                });
                progress(outputs.len(), prompts.len());
            }
            start = end;
        }
        Ok(outputs)
    }
}

/// Sampling settings of an LLM summarizer. The default is greedy (temperature 0), which gives
/// the same summaries on every run; with a temperature, a seed makes them reproducible.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Sampling {
    /// 0 (or none) is greedy.
    pub temperature: Option<f64>,
    /// Nucleus sampling: the most likely tokens up to this total probability.
    pub top_p: Option<f64>,
    /// Seed of the sampler; without one a sampled run uses a fixed default seed, so runs are
    /// reproducible unless the seed is changed.
    pub seed: Option<u64>,
}

/// The seed when none is given: sampling stays reproducible by default.
pub const DEFAULT_SEED: u64 = 299_792_458;

impl Sampling {
    /// Whether any sampling flag was given (they apply to LLM summarizers only).
    pub fn is_set(&self) -> bool {
        *self != Sampling::default()
    }

    /// Whether tokens are drawn at random (a temperature above 0).
    pub fn samples(&self) -> bool {
        self.temperature.is_some_and(|t| t > 0.0)
    }

    /// The seed in use.
    pub fn seed(&self) -> u64 {
        self.seed.unwrap_or(DEFAULT_SEED)
    }

    /// Rejects values no sampler takes, naming the flag.
    pub fn validate(&self) -> Result<()> {
        if let Some(t) = self.temperature {
            if !(t.is_finite() && t >= 0.0) {
                return Err(Error::Usage(format!(
                    "--temperature {t}: expected 0 (greedy) or more"
                )));
            }
        }
        if let Some(p) = self.top_p {
            if !(p > 0.0 && p <= 1.0) {
                return Err(Error::Usage(format!(
                    "--top-p {p}: expected a probability above 0 and at most 1"
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn banned_tokens_complete_an_ngram_already_generated() {
        assert_eq!(banned_tokens(&[1, 2, 3, 1, 2], 3), vec![3]);
        assert_eq!(banned_tokens(&[1, 2, 3, 1, 2], 2), vec![3]);
        assert!(banned_tokens(&[1, 2], 3).is_empty());
        assert_eq!(banned_tokens(&[5, 5, 5], 1), vec![5, 5, 5]);
    }

    #[test]
    fn seeds_depend_on_the_prompt_not_on_its_neighbours() {
        assert_eq!(seed_for(7, &[1, 2, 3]), seed_for(7, &[1, 2, 3]));
        assert_ne!(seed_for(7, &[1, 2, 3]), seed_for(7, &[1, 2, 4]));
        assert_ne!(seed_for(7, &[1, 2, 3]), seed_for(8, &[1, 2, 3]));
        assert_eq!(shared_prefix(&[1, 2, 3], &[1, 2, 4, 5]), 2);
    }

    #[test]
    fn greedy_is_the_default_and_bad_values_name_their_flag() {
        assert!(!Sampling::default().samples());
        assert!(!Sampling::default().is_set());
        let sampled = Sampling {
            temperature: Some(0.7),
            top_p: Some(0.9),
            seed: None,
        };
        assert!(sampled.samples() && sampled.validate().is_ok());
        assert_eq!(sampled.seed(), DEFAULT_SEED);
        let bad = Sampling {
            top_p: Some(1.5),
            ..Sampling::default()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("--top-p 1.5"));
        let bad = Sampling {
            temperature: Some(-1.0),
            ..Sampling::default()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("--temperature -1"));
    }
}
