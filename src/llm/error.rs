//! What can go wrong with a GGUF model. Every message names the file, since a user may hold
//! several GGUF files and the cause (not GGUF, cut short, an unsupported family) is about the file.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error("{path}: no such GGUF file (give the path of a .gguf model file)")]
    Missing { path: PathBuf },
    #[error("{path}: cannot read the file: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path}: not a GGUF file (it starts with {found:?}, a GGUF file starts with \"GGUF\"); \
         give a llama.cpp-format .gguf model file"
    )]
    NotGguf { path: PathBuf, found: String },
    #[error(
        "{path}: the GGUF file is corrupt or cut short ({reason}); download it again \
         (its size is {size} bytes)"
    )]
    Corrupt {
        path: PathBuf,
        reason: String,
        size: u64,
    },
    #[error(
        "{path}: the model family {architecture:?} is not supported (general.architecture); \
         supported families: {supported}"
    )]
    Unsupported {
        path: PathBuf,
        architecture: String,
        supported: String,
    },
    #[error("{path}: metadata key {key}: {reason}")]
    Metadata {
        path: PathBuf,
        key: String,
        reason: String,
    },
    #[error("{path}: {reason}")]
    Tokenizer { path: PathBuf, reason: String },
    #[error("{path}: chat template: {reason}")]
    Template { path: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    Generation { path: PathBuf, reason: String },
    #[error("{path}: {source}")]
    Candle {
        path: PathBuf,
        #[source]
        source: candle_core::Error,
    },
}
