//! Readers (txt, md, html, jsonl, stdin; encoding detection) and writers (md, json, digest, report).
//!
//! Owner: batch shell issue (#2).

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{0}")]
    Other(String),
}
