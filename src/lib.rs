//! mtsum: Russian press releases into English translations and bilingual summaries.
//!
//! Data flows one way: CLI -> pipeline -> (text, tokenize, generate -> models) -> io writers.
//! Models know nothing of tasks, files or flags; the pipeline knows nothing of tensors.

#![deny(unsafe_op_in_unsafe_fn)]

pub mod cli;
pub mod commands;
pub mod device;
pub mod error;
pub mod generate;
pub mod guard;
pub mod hub;
pub mod io;
pub mod loader;
pub mod models;
pub mod outcome;
pub mod pipeline;
pub mod progress;
pub mod seq2seq;
pub mod summary;
pub mod text;
pub mod tokenize;

pub use error::{Error, Result};
pub use outcome::Outcome;
