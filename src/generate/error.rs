//! What can go wrong while generating, said so the user knows what to fix: a configuration
//! value (the message names the file or the flag), one input that cannot be generated as given,
//! or a failure below (tokenizer, tensors).

use std::path::PathBuf;

use crate::tokenize::TokenizeError;

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// A generation config file could not be read.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A setting that leaves nothing to generate or is not what transformers accepts; the
    /// message names the file or the flag to change.
    #[error("{0}")]
    Config(String),
    /// One input cannot be generated as given (too long for the model, an id outside its
    /// vocabulary); the message names the input.
    #[error("{0}")]
    Input(String),
    #[error(transparent)]
    Tokenize(#[from] TokenizeError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl GenerateError {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        GenerateError::Io {
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = GenerateError> = std::result::Result<T, E>;
