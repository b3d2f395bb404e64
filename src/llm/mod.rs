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
