//! What the pipeline needs of a loaded model: text in, text out, in batches. The pipeline
//! defines it, so the engine below never looks up to the pipeline; the engine's [`Runner`] is
//! the real implementation, and tests of the batch shell use a stand-in that is never
//! reachable from the command line.

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
        if self.prefix().is_none() {
            return Ok(self.generate_texts(inputs, overrides, progress)?);
        }
        // The summarizer's config prefix goes before every text a pipeline sends; a blank input
        // stays blank, so it still gives an empty output without running the model.
        let inputs: Vec<String> = (inputs.iter())
            .map(|text| match text.trim().is_empty() {
                true => text.clone(),
                false => self.prefixed(text).into_owned(),
            })
            .collect();
        Ok(self.generate_texts(&inputs, overrides, progress)?)
    }
}
