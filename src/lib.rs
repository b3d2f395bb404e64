//! mtsum: Russian press releases into English translations and bilingual summaries.
//!
//! Data flows one way: CLI -> pipeline -> (text, tokenize, generate -> models) -> io writers.
//! Models know nothing of tasks, files or flags; the pipeline knows nothing of tensors.

pub mod cli;
pub mod commands;
pub mod device;
pub mod error;
pub mod generate;
pub mod hub;
pub mod io;
pub mod models;
pub mod pipeline;
pub mod progress;
pub mod summary;
pub mod text;
pub mod tokenize;

pub use error::{Error, Result};
