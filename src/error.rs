//! One error type for the library. Each area keeps its own enum (so messages stay next to the
//! code that knows the cause); this one wraps them and keeps the source chain.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Hub(#[from] crate::hub::HubError),
    #[error(transparent)]
    Tokenize(#[from] crate::tokenize::TokenizeError),
    #[error(transparent)]
    Model(#[from] crate::models::ModelError),
    #[error(transparent)]
    Input(#[from] crate::io::InputError),
    #[error(transparent)]
    Merge(#[from] crate::pipeline::merge::MergeError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error("{0}")]
    Usage(String),
    #[error("output folder {path} is not writable: {source}")]
    OutputNotWritable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A generation step failed for one release (the batch goes on with the others).
    #[error("{0}")]
    Generation(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with the path it concerns, so the message names the file at fault.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
