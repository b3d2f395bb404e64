//! A release as read from its source: the unit the pipeline translates and summarizes.

use serde::{Deserialize, Serialize};

pub use crate::text::{Block, BlockKind};

/// One press release, ready for segmentation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Release {
    /// File stem, the JSONL `id`, or `stdin`. Not yet safe as a file name (see `names`).
    pub id: String,
    /// First heading, first short line, or the JSONL `title`.
    pub title: Option<String>,
    /// Headings, paragraphs and list items in reading order (the title is not among them).
    pub blocks: Vec<Block>,
    /// JSONL `date`, when given.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub date: Option<String>,
    /// JSONL `url`, when given.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub url: Option<String>,
    pub source: SourceInfo,
    /// JSONL fields other than id, text, title, date and url, carried through to the outputs.
    #[serde(skip_serializing_if = "serde_json::Map::is_empty", default)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// Where a release came from, so every output can be traced to its input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceInfo {
    /// The file as given (with the folder prefix), or `-` for stdin.
    pub path: String,
    /// 1-based line of a JSONL release.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub line: Option<usize>,
    pub format: Format,
    /// SHA-256 of the release's bytes: the whole file, or the JSONL line.
    pub sha256: String,
    /// WHATWG name of the encoding used to decode the file.
    pub encoding: String,
    /// `bom`, `utf-8`, `detected` or `override`.
    pub encoding_method: String,
    /// False when detection could not clearly tell the encoding from another one.
    pub encoding_confident: bool,
}

/// Input formats, chosen by extension, else by content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Text,
    Markdown,
    Html,
    Jsonl,
}

impl Format {
    /// The name used in outputs and logs: `text`, `markdown`, `html`, `jsonl`.
    pub fn name(self) -> &'static str {
        match self {
            Format::Text => "text",
            Format::Markdown => "markdown",
            Format::Html => "html",
            Format::Jsonl => "jsonl",
        }
    }
}

impl Release {
    /// The Russian body as plain text, one block per line (list markers included).
    pub fn body_text(&self) -> String {
        let lines: Vec<String> = self
            .blocks
            .iter()
            .map(|b| match &b.marker {
                Some(marker) => format!("{marker} {}", b.text),
                None => b.text.clone(),
            })
            .collect();
        lines.join("\n")
    }
}
