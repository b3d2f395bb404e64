//! The crate-wide error. Each layer keeps its own enum (`HubError`, `TokenizeError`,
//! `ModelError`, `GenerateError`, `InputError`, `OutputError`), so messages stay next to the
//! code that knows the cause and no layer looks up to this one; this one wraps them, keeps the
//! source chain, and adds what only the pipeline and the command line can say.

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
    Generate(#[from] crate::generate::GenerateError),
    #[error(transparent)]
    Llm(#[from] crate::llm::LlmError),
    #[error(transparent)]
    Input(#[from] crate::io::InputError),
    #[error(transparent)]
    Output(#[from] crate::io::OutputError),
    /// Shards that cannot be merged (`pipeline::merge::MergeError`, which converts itself into
    /// this variant so that this module need not look up to the pipeline).
    #[error(transparent)]
    Merge(Box<dyn std::error::Error + Send + Sync>),
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
