//! GGUF LLMs (llama.cpp's file format) on candle-transformers' quantized model families:
//! Qwen2/2.5, Qwen3 and Llama, and Gemma 3 on candle's quantized blocks (see `gemma3` for why). This module reads the file, rebuilds its tokenizer from
//! the metadata as llama.cpp does, renders its chat template, and runs prompts (one batched
//! forward each) and greedy or seeded sampling on the KV cache, with forks that share a prompt
//! prefix. It knows nothing of releases, summaries or flags: the pipeline and the commands use
//! it the way they use `models` for seq2seq.

mod error;
mod gemma3;
mod gguf;
mod kquant;
mod model;
mod q8;
mod template;
mod tokenizer;

pub use error::LlmError;
pub use gguf::{Family, GgufInfo, SUPPORTED_ARCHITECTURES};
pub use model::{argmax, GenerateOptions, Generation, GgufModel, SamplingOptions, Session, Step};
pub use template::{ChatTemplate, Message};
pub use tokenizer::GgufTokenizer;

/// Whether `path` names a GGUF file by its extension: how commands tell a GGUF model from a
/// hub id or a model folder before opening anything.
pub fn is_gguf_path(path: &str) -> bool {
    path.to_ascii_lowercase().ends_with(".gguf")
}

/// Deterministic test inputs in about -1..1 with an occasional large one (so block maxima
/// vary), shared by the quantized kernels' tests.
#[cfg(test)]
fn test_values(count: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..count)
        .map(|i| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let v = (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
            if i % 37 == 5 {
                v * 8.0
            } else {
                v
            }
        })
        .collect()
}

/// The bit patterns of `values`, for asserting two kernels agree bit for bit (and seeing where
/// they do not).
#[cfg(test)]
fn test_bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|v| v.to_bits()).collect()
}
