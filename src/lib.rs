//! mtsum: Russian press releases into English translations and bilingual summaries.
//!
//! Data flows one way:
//!
//! ```text
//! flags      cli, commands          parsed flags -> plain options (only these know flags)
//!   |
//! plan       loader, pipeline       models loaded (hub -> tokenize + generate + models);
//!   |                               PipelineOptions, SummaryOptions
//! pipeline   pipeline, summary,     release -> segments -> translation -> summary, guarded,
//!   |        guard                  model calls pooled across releases
//!   |
//! text / tokenize / engine          sentences and pieces; ids; generate (search) over the
//!   |                               seq2seq trait that models implement
//! io                                readers before, writers after: md, json, digest, report
//! ```
//!
//! Models know nothing of tasks, files or flags; the pipeline knows nothing of tensors; no
//! module below `cli`/`commands` imports them, and the top-level modules import each other in
//! one direction only (`tests/architecture.rs` checks both). Beside the flow: `error` (the
//! crate-wide error wrapping each layer's own), `outcome` (how a command ended, and its exit
//! code), `progress` (the observer that turns events into bars or log lines), `device`, `parallel`
//! (the kernels' parallel loops and the team of threads that runs them).

#![deny(unsafe_op_in_unsafe_fn)]

pub mod cli;
pub mod commands;
pub mod device;
pub mod error;
pub mod generate;
pub mod guard;
pub mod hub;
pub mod inspect;
pub mod io;
pub mod llm;
pub mod loader;
pub mod models;
pub mod outcome;
pub mod parallel;
pub mod pipeline;
pub mod progress;
pub mod seq2seq;
pub mod summary;
pub mod text;
pub mod tokenize;

pub use error::{Error, Result};
pub use outcome::Outcome;
