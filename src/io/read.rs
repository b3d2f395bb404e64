//! Inputs to releases: files and folders (recursively, sorted, hidden files skipped) or stdin;
//! the format by extension, else by content; JSONL with one release per line.

use std::io::Read;
use std::path::{Path, PathBuf};

use encoding_rs::Encoding;
use sha2::{Digest, Sha256};

use super::encoding::{self, Decoded};
use super::release::{Format, Release, SourceInfo};
use super::text_blocks::{self, Body};
use super::InputError;

/// One input as named on the command line, after folders are expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    File(PathBuf),
    Stdin,
}

impl Input {
    /// How the input is named in messages and outputs: the path, or `-`.
    pub fn label(&self) -> String {
        match self {
            Input::File(path) => path.display().to_string(),
            Input::Stdin => "-".to_string(),
        }
    }
}

/// Options that change how inputs are read.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadOptions {
    /// `--encoding`: used instead of detection (a byte-order mark still wins).
    pub encoding: Option<&'static Encoding>,
}

/// An input (or one JSONL line) that gave no release, with where it came from.
#[derive(Debug, thiserror::Error)]
#[error("{location}: {error}")]
pub struct ReadFailure {
    /// `path` or `path:line`.
    pub location: String,
    /// The release id when it was known (a JSONL line with a readable id).
    pub id: Option<String>,
    pub error: InputError,
}

impl ReadFailure {
    fn new(input: &Input, line: Option<usize>, error: InputError) -> Self {
        let location = match line {
            Some(n) => format!("{}:{n}", input.label()),
            None => input.label(),
        };
        ReadFailure {
            location,
            id: None,
            error,
        }
    }
}

/// What reading one input gives: its releases, or why each part could not be read.
pub type ReadItem = Result<Release, ReadFailure>;

/// Expands the command line's inputs: `-` is stdin; a folder gives its files recursively in
/// sorted order, skipping hidden files and folders; no inputs at all means stdin. A name that
/// does not exist is an error (nothing has been done yet, so the whole run stops).
pub fn expand(inputs: &[PathBuf]) -> Result<Vec<Input>, InputError> {
    if inputs.is_empty() {
        return Ok(vec![Input::Stdin]);
    }
    let mut out = Vec::new();
    for path in inputs {
        if path.as_os_str() == "-" {
            out.push(Input::Stdin);
        } else if path.is_dir() {
            walk(path, &mut out)?;
        } else if path.exists() {
            out.push(Input::File(path.clone()));
        } else {
            return Err(InputError::NotFound { path: path.clone() });
        }
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<Input>) -> Result<(), InputError> {
    let read_err = |source| InputError::Read {
        path: dir.to_path_buf(),
        source,
    };
    let mut entries = std::fs::read_dir(dir)
        .map_err(read_err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read_err)?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            walk(&path, out)?;
        } else {
            out.push(Input::File(path));
        }
    }
    Ok(())
}

/// Reads every input, in order. A bad input (or JSONL line) becomes a failure item; it never
/// stops the others.
pub fn read_all(inputs: &[Input], options: ReadOptions) -> Vec<ReadItem> {
    inputs.iter().flat_map(|i| read_input(i, options)).collect()
}

/// Reads one input: a JSONL file gives one item per non-empty line, any other file one item.
pub fn read_input(input: &Input, options: ReadOptions) -> Vec<ReadItem> {
    let bytes = match read_bytes(input) {
        Ok(bytes) => bytes,
        Err(error) => return vec![Err(ReadFailure::new(input, None, error))],
    };
    let decoded = match encoding::decode(&bytes, options.encoding) {
        Ok(decoded) => decoded,
        Err(error) => return vec![Err(ReadFailure::new(input, None, error))],
    };
    let format = format_of(input, &decoded.text);
    if format == Format::Jsonl {
        return jsonl::read(input, &decoded);
    }
    let body = body_of(format, &decoded.text);
    if body.blocks.is_empty() {
        return vec![Err(ReadFailure::new(input, None, InputError::NoText))];
    }
    let source = source_info(input, None, format, sha256_hex(&bytes), &decoded);
    vec![Ok(release(stem_id(input), body, source))]
}

/// The title and blocks of a text in `format` (JSONL lines are read as plain text here).
pub fn body_of(format: Format, text: &str) -> Body {
    match format {
        Format::Markdown => text_blocks::markdown(text),
        Format::Html => text_blocks::html(text),
        Format::Text | Format::Jsonl => text_blocks::plain(text),
    }
}

/// The decoded text of one input (for line-oriented commands), with its encoding.
pub fn read_text(input: &Input, options: ReadOptions) -> Result<Decoded, ReadFailure> {
    read_bytes(input)
        .and_then(|bytes| encoding::decode(&bytes, options.encoding))
        .map_err(|error| ReadFailure::new(input, None, error))
}

fn read_bytes(input: &Input) -> Result<Vec<u8>, InputError> {
    match input {
        Input::File(path) => std::fs::read(path).map_err(|source| InputError::Read {
            path: path.clone(),
            source,
        }),
        Input::Stdin => {
            let mut bytes = Vec::new();
            std::io::stdin()
                .read_to_end(&mut bytes)
                .map_err(|source| InputError::Read {
                    path: "-".into(),
                    source,
                })?;
            Ok(bytes)
        }
    }
}

/// By extension; for stdin and unknown extensions, by content.
pub fn format_of(input: &Input, text: &str) -> Format {
    let ext = match input {
        Input::File(path) => path.extension().map(|e| e.to_string_lossy().to_lowercase()),
        Input::Stdin => None,
    };
    match ext.as_deref() {
        Some("txt" | "text") => Format::Text,
        Some("md" | "markdown") => Format::Markdown,
        Some("html" | "htm" | "xhtml") => Format::Html,
        Some("jsonl" | "ndjson") => Format::Jsonl,
        _ => sniff(text),
    }
}

/// HTML starts with a doctype or tag; JSONL has an object on every non-empty line; Markdown
/// has an ATX heading line; anything else is plain text.
fn sniff(text: &str) -> Format {
    let start = text.trim_start().to_ascii_lowercase();
    let mut lines = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .peekable();
    if start.starts_with("<!doctype html") || start.starts_with("<html") {
        Format::Html
    } else if lines.peek().is_some() && lines.clone().all(|l| l.starts_with('{')) {
        Format::Jsonl
    } else if lines.any(|l| l.starts_with("# ") || l.starts_with("## ")) {
        Format::Markdown
    } else {
        Format::Text
    }
}

fn stem_id(input: &Input) -> String {
    match input {
        Input::File(path) => path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "release".into()),
        Input::Stdin => "stdin".into(),
    }
}

fn release(id: String, body: Body, source: SourceInfo) -> Release {
    Release {
        id,
        title: body.title,
        blocks: body.blocks,
        date: None,
        url: None,
        source,
        extra: serde_json::Map::new(),
    }
}

fn source_info(
    input: &Input,
    line: Option<usize>,
    format: Format,
    sha256: String,
    decoded: &Decoded,
) -> SourceInfo {
    SourceInfo {
        path: input.label(),
        line,
        format,
        sha256,
        encoding: decoded.encoding.to_string(),
        encoding_method: decoded.method.to_string(),
        encoding_confident: decoded.confident,
    }
}

/// Lower-case hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

mod jsonl {
    //! One release per line: `{"id", "text"}` required; `title`, `date`, `url` optional
    //! strings; every other field carried through.

    use serde_json::{Map, Value};

    use super::*;

    pub(super) fn read(input: &Input, decoded: &Decoded) -> Vec<ReadItem> {
        decoded
            .text
            .lines()
            .enumerate()
            .filter(|(_, line)| !line.trim().is_empty())
            .map(|(i, line)| {
                read_line(input, i + 1, line, decoded).map_err(|(id, error)| ReadFailure {
                    id,
                    ..ReadFailure::new(input, Some(i + 1), error)
                })
            })
            .collect()
    }

    type LineError = (Option<String>, InputError);

    fn read_line(
        input: &Input,
        line_no: usize,
        line: &str,
        decoded: &Decoded,
    ) -> Result<Release, LineError> {
        let bad = |reason: String| InputError::JsonLine {
            line: line_no,
            reason,
        };
        let mut fields: Map<String, Value> = match serde_json::from_str(line) {
            Ok(Value::Object(map)) => map,
            Ok(_) => return Err((None, bad("not a JSON object".into()))),
            Err(e) => return Err((None, bad(format!("invalid JSON: {e}")))),
        };
        let id = match fields.remove("id") {
            Some(Value::String(s)) if !s.trim().is_empty() => s,
            Some(Value::Number(n)) => n.to_string(),
            Some(_) => return Err((None, bad("`id` must be a non-empty string".into()))),
            None => return Err((None, bad("missing `id`".into()))),
        };
        let with_id = |e: InputError| (Some(id.clone()), e);
        let text = optional_string(&mut fields, "text", line_no)
            .map_err(with_id)?
            .ok_or_else(|| with_id(bad("missing `text`".into())))?;
        let title = optional_string(&mut fields, "title", line_no).map_err(with_id)?;
        let date = optional_string(&mut fields, "date", line_no).map_err(with_id)?;
        let url = optional_string(&mut fields, "url", line_no).map_err(with_id)?;
        let body = match title {
            Some(title) => Body {
                title: Some(title),
                blocks: crate::text::paragraphs(&text),
            },
            None => text_blocks::plain(&text),
        };
        if body.blocks.is_empty() {
            return Err(with_id(InputError::NoText));
        }
        let sha = sha256_hex(line.as_bytes());
        let source = source_info(input, Some(line_no), Format::Jsonl, sha, decoded);
        let mut release = release(id, body, source);
        release.date = date;
        release.url = url;
        release.extra = fields;
        Ok(release)
    }

    fn optional_string(
        fields: &mut Map<String, Value>,
        key: &str,
        line: usize,
    ) -> Result<Option<String>, InputError> {
        match fields.remove(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(InputError::JsonLine {
                line,
                reason: format!("`{key}` must be a string"),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_str(name: &str, text: &str) -> Vec<ReadItem> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        read_input(&Input::File(path), ReadOptions::default())
    }

    #[test]
    fn jsonl_bad_line_is_reported_and_the_others_read() {
        let items = read_str(
            "batch.jsonl",
            "{\"id\":\"a\",\"text\":\"Первый.\",\"lang\":\"ru\"}\n{oops\n\n{\"id\":7,\"text\":\"Второй.\",\"title\":\"Т\",\"date\":\"2024-01-02\"}\n{\"id\":\"c\"}\n",
        );
        assert_eq!(items.len(), 4);
        let a = items[0].as_ref().unwrap();
        assert_eq!((a.id.as_str(), a.source.line), ("a", Some(1)));
        assert_eq!(a.extra["lang"], "ru");
        let bad = items[1].as_ref().unwrap_err();
        assert!(bad.location.ends_with("batch.jsonl:2"), "{}", bad.location);
        assert!(bad.to_string().contains("line 2"), "{bad}");
        let seven = items[2].as_ref().unwrap();
        assert_eq!(seven.id, "7");
        assert_eq!(seven.title.as_deref(), Some("Т"));
        assert_eq!(seven.date.as_deref(), Some("2024-01-02"));
        let missing = items[3].as_ref().unwrap_err();
        assert_eq!(missing.id.as_deref(), Some("c"));
        assert!(missing.to_string().contains("missing `text`"));
    }

    #[test]
    fn folders_are_walked_sorted_without_hidden_files() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["b.txt", "a/z.md", "a/.hidden.txt", ".git/x.txt", "c.html"] {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, "x").unwrap();
        }
        let found: Vec<String> = expand(&[dir.path().to_path_buf()])
            .unwrap()
            .iter()
            .map(|i| i.label()[dir.path().display().to_string().len() + 1..].to_string())
            .collect();
        assert_eq!(found, ["a/z.md", "b.txt", "c.html"]);
        assert!(matches!(
            expand(&[dir.path().join("nope")]),
            Err(InputError::NotFound { .. })
        ));
    }

    #[test]
    fn format_is_sniffed_when_the_extension_says_nothing() {
        assert_eq!(sniff("<!DOCTYPE html><p>x</p>"), Format::Html);
        assert_eq!(sniff("{\"id\":1}\n\n{\"id\":2}"), Format::Jsonl);
        assert_eq!(sniff("# Заголовок\n\nТекст"), Format::Markdown);
        assert_eq!(sniff("Просто текст."), Format::Text);
    }

    #[test]
    fn a_file_release_records_its_source() {
        let items = read_str("release-1.txt", "Заголовок\n\nТекст релиза.");
        let release = items[0].as_ref().unwrap();
        assert_eq!(release.id, "release-1");
        assert_eq!(release.source.encoding, "UTF-8");
        assert_eq!(
            release.source.sha256,
            sha256_hex("Заголовок\n\nТекст релиза.".as_bytes())
        );
    }
}
