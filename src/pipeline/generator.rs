//! What the pipeline needs of a loaded model: text in, text out, in batches. The pipeline
//! defines it, so the engine below never looks up to the pipeline; the engine's [`Runner`] is
//! the real implementation, and tests of the batch shell use a stand-in that is never
//! reachable from the command line.

use std::borrow::Cow;

use crate::generate::{Generated, GenerationOverrides, ModelInfo, Runner};
use crate::seq2seq::Seq2Seq;
use crate::Result;

/// A model the pipeline can call.
pub trait TextGenerator: Send + Sync {
    /// Repo, commit, family, dtype, device: recorded in every output.
    fn info(&self) -> &ModelInfo;
    /// Number of source tokens the encoder sees for `text`, the end token included.
    fn count_tokens(&self, text: &str) -> Result<usize>;
    /// Most source tokens one input may have (max_position_embeddings, or a preset's lower limit).
    fn max_input_tokens(&self) -> usize;
    /// The effective generation settings after `overrides`, for the JSON output and report.
    fn settings(&self, overrides: &GenerationOverrides) -> serde_json::Value;
    /// One output per input, in input order. Batching and length-sorting are the implementation's
    /// business. `progress(done, total)` is called as inputs finish.
    fn generate(
        &self,
        inputs: &[String],
        overrides: &GenerationOverrides,
        progress: &dyn Fn(usize, usize),
    ) -> Result<Vec<Generated>>;
    /// Whether the model follows instructions (an instruction-tuned LLM): each input is then
    /// one user turn of a chat, and the pipeline asks it for each summary language with a
    /// prompt (`summary::summary_prompt`) instead of summarizing one language and translating.
    /// Seq2seq models do not.
    fn follows_instructions(&self) -> bool {
        false
    }
    /// As [`TextGenerator::generate`], each output holding the `constraints` of its input
    /// (English texts, e.g. glossary terms) where the model's constrained search can place
    /// them; an input without constraints is generated exactly as by `generate`, and one whose
    /// constraints cannot be placed gets its `generate` output. The default, for generators
    /// without a constrained search, is `generate`: nothing enforced.
    fn generate_constrained(
        &self,
        inputs: &[String],
        constraints: &[Vec<String>],
        overrides: &GenerationOverrides,
        progress: &dyn Fn(usize, usize),
    ) -> Result<Vec<Generated>> {
        let _ = constraints;
        self.generate(inputs, overrides, progress)
    }
}

impl<M: Seq2Seq + Send + Sync> TextGenerator for Runner<M> {
    fn info(&self) -> &ModelInfo {
        Runner::info(self)
    }

    fn count_tokens(&self, text: &str) -> Result<usize> {
        Ok(Runner::count_tokens(self, &self.prefixed(text))?)
    }

    fn max_input_tokens(&self) -> usize {
        Runner::max_input_tokens(self)
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
        Ok(self.generate_texts(&with_prefix(self, inputs), overrides, progress)?)
    }

    fn generate_constrained(
        &self,
        inputs: &[String],
        constraints: &[Vec<String>],
        overrides: &GenerationOverrides,
        progress: &dyn Fn(usize, usize),
    ) -> Result<Vec<Generated>> {
        let inputs = with_prefix(self, inputs);
        Ok(self.generate_texts_constrained(&inputs, constraints, overrides, progress)?)
    }
}

/// The summarizer's config prefix goes before every text a pipeline sends; a blank input stays
/// blank, so it still gives an empty output without running the model.
fn with_prefix<'i, M: Seq2Seq + Sync>(
    runner: &Runner<M>,
    inputs: &'i [String],
) -> Cow<'i, [String]> {
    if runner.prefix().is_none() {
        return Cow::Borrowed(inputs);
    }
    let inputs: Vec<String> = (inputs.iter())
        .map(|text| match text.trim().is_empty() {
            true => text.clone(),
            false => runner.prefixed(text).into_owned(),
        })
        .collect();
    Cow::Owned(inputs)
}
