//! Files in and out: readers (txt, md, html, jsonl, stdin; encoding detection) that make
//! releases, the output records, and writers (md, json, digest, report) with their own
//! errors ([`InputError`], [`OutputError`]).

use std::path::PathBuf;

pub mod encoding;
pub mod names;
pub mod output;
pub mod read;
pub mod release;
pub mod text_blocks;
pub mod write;

pub use output::{Bilingual, ParagraphOut, ReleaseOutput, SummaryMethods, SummaryOut};
pub use read::{Input, ReadFailure, ReadItem, ReadOptions};
pub use release::{Block, BlockKind, Format, Release, SourceInfo};
pub use write::OutputDir;

/// Why an output could not be written; the message names the file or folder at fault.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("output folder {path} is not writable: {source}")]
    OutputNotWritable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl OutputError {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        OutputError::Io {
            path: path.into(),
            source,
        }
    }
}

/// The result of a writer.
pub type OutputResult<T> = std::result::Result<T, OutputError>;

/// Why an input gave no release. The location (file, JSONL line) is added by `ReadFailure`.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{path}: no such file or folder")]
    NotFound { path: PathBuf },
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the file is empty")]
    Empty,
    #[error("binary data, not text")]
    Binary,
    #[error("no text left after removing markup")]
    NoText,
    #[error("unknown encoding `{label}` (try utf-8, windows-1251, koi8-r, utf-16le)")]
    UnknownEncoding { label: String },
    #[error("line {line}: {reason}")]
    JsonLine { line: usize, reason: String },
    #[error("{0}")]
    Other(String),
}

impl InputError {
    /// What the user can do about it, for the run report.
    pub fn hint(&self) -> &'static str {
        match self {
            InputError::NotFound { .. } => "check the path",
            InputError::Read { .. } => "check the file's permissions",
            InputError::Empty | InputError::NoText => {
                "the release has no text: add its text or remove the file from the batch"
            }
            InputError::Binary => "not a text file: pass .txt, .md, .html or .jsonl releases only",
            InputError::UnknownEncoding { .. } => "name a WHATWG encoding label",
            InputError::JsonLine { .. } => {
                "each JSONL line must be a JSON object with string fields \"id\" and \"text\""
            }
            InputError::Other(_) => "see the message",
        }
    }
}
