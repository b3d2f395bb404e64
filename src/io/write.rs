//! Writers: `<file>.md` for people, `<file>.json` for programs, the digest and the run report.
//! Every file is written to a temporary file in the same folder and renamed into place, so a
//! killed run leaves either the old file or the new one, never half of one.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::output::{Bilingual, ReleaseOutput};
use super::release::BlockKind;
use super::{OutputError as Error, OutputResult as Result};

/// Prefix of our temporary files; leftovers of a killed run are removed on the next start.
const TEMP_PREFIX: &str = ".mtsum-tmp-";

/// The output folder of a batch.
#[derive(Debug, Clone)]
pub struct OutputDir {
    root: PathBuf,
    /// `shard-2-of-3` in a sharded run: the digest and report are then
    /// `digest.shard-2-of-3.md` and so on, so shards can share one folder.
    batch_tag: Option<String>,
}

impl OutputDir {
    /// Creates the folder if needed and proves it writable by writing (and removing) a file,
    /// so an unwritable folder is a fatal error before any model is loaded. Temporary files
    /// left by a killed run are removed.
    pub fn create(root: &Path) -> Result<Self> {
        std::fs::create_dir_all(root).map_err(|e| not_writable(root, e))?;
        let probe = tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .tempfile_in(root)
            .map_err(|e| not_writable(root, e))?;
        drop(probe);
        remove_leftovers(root);
        Ok(OutputDir {
            root: root.to_path_buf(),
            batch_tag: None,
        })
    }

    /// The same folder, with the digest and report named `<stem>.<tag>.<ext>` (a shard's
    /// `shard-2-of-3`), or plainly for `None`.
    pub fn with_batch_tag(&self, tag: Option<String>) -> OutputDir {
        OutputDir {
            root: self.root.clone(),
            batch_tag: tag,
        }
    }

    /// `DIR/<stem>.<ext>` for the batch's own files, or `DIR/<stem>.shard-K-of-N.<ext>`.
    pub fn batch_file(&self, stem: &str, ext: &str) -> PathBuf {
        match &self.batch_tag {
            Some(tag) => self.root.join(format!("{stem}.{tag}.{ext}")),
            None => self.root.join(format!("{stem}.{ext}")),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `DIR/<file>.<ext>`; `file` comes from `names::NameAllocator`, so it stays inside DIR.
    pub fn path(&self, file: &str, ext: &str) -> PathBuf {
        self.root.join(format!("{file}.{ext}"))
    }

    /// Writes the release's Markdown and then its JSON. The JSON is written last: its presence
    /// (with a matching fingerprint) is what lets a rerun skip the release.
    pub fn write_release(&self, output: &ReleaseOutput, side_by_side: bool) -> Result<()> {
        let markdown = render_markdown(output, side_by_side);
        write_atomic(&self.path(&output.file, "md"), markdown.as_bytes())?;
        self.write_release_json(output)
    }

    /// Writes only the release's JSON (the Markdown does not change, e.g. when only its
    /// position in the batch moved).
    pub fn write_release_json(&self, output: &ReleaseOutput) -> Result<()> {
        write_json(&self.path(&output.file, "json"), output)
    }

    /// The earlier output of `file`, if it exists and parses.
    pub fn previous(&self, file: &str) -> Option<ReleaseOutput> {
        if !self.path(file, "md").is_file() {
            return None;
        }
        let bytes = std::fs::read(self.path(file, "json")).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// `digest.md` and `digest.jsonl` for the releases, in the order given.
    pub fn write_digest(&self, outputs: &[&ReleaseOutput], date: &str) -> Result<()> {
        write_atomic(
            &self.batch_file("digest", "md"),
            render_digest_markdown(outputs, date).as_bytes(),
        )?;
        let mut lines = String::new();
        for output in outputs {
            let entry = serde_json::to_string(&DigestEntry::from(*output)).expect("serializable");
            lines.push_str(&entry);
            lines.push('\n');
        }
        write_atomic(&self.batch_file("digest", "jsonl"), lines.as_bytes())
    }

    /// `report.json`.
    pub fn write_report(&self, report: &impl Serialize) -> Result<()> {
        write_json(&self.batch_file("report", "json"), report)
    }
}

fn not_writable(root: &Path, source: std::io::Error) -> Error {
    Error::OutputNotWritable {
        path: root.to_path_buf(),
        source,
    }
}

fn remove_leftovers(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Pretty JSON with a final newline, written atomically.
pub fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value).expect("output records serialize");
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

/// Writes `bytes` to a temporary file beside `path`, flushes it to disk and renames it over
/// `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let io_err = |e| Error::io(path, e);
    let mut file = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .tempfile_in(dir)
        .map_err(io_err)?;
    file.write_all(bytes).map_err(io_err)?;
    file.as_file().sync_all().map_err(io_err)?;
    file.persist(path).map_err(|e| io_err(e.error))?;
    Ok(())
}

/// The bilingual Markdown page of one release.
pub fn render_markdown(output: &ReleaseOutput, side_by_side: bool) -> String {
    let mut md = String::new();
    let title = output.title.as_ref();
    let heading = title.map_or(output.id.as_str(), |t| t.en.as_str());
    let _ = writeln!(md, "# {heading}\n");
    if let Some(t) = title {
        let _ = writeln!(md, "*{}*\n", t.ru);
    }
    if let Some(summary) = &output.summary {
        let _ = writeln!(md, "## Summary\n\n{}\n", summary.en);
        let _ = writeln!(md, "## Краткое содержание\n\n{}\n", summary.ru);
    }
    md.push_str("## Translation\n\n");
    let mut paragraphs = output.paragraphs.iter().peekable();
    while let Some(paragraph) = paragraphs.next() {
        let text = paragraph.english();
        let _ = match paragraph.kind {
            BlockKind::Heading => write!(md, "### {text}"),
            BlockKind::ListItem => {
                write!(md, "{} {text}", list_marker(paragraph.marker.as_deref()))
            }
            BlockKind::Paragraph => write!(md, "{text}"),
        };
        let tight = paragraph.kind == BlockKind::ListItem
            && paragraphs
                .peek()
                .is_some_and(|next| next.kind == BlockKind::ListItem);
        md.push_str(if tight { "\n" } else { "\n\n" });
    }
    if side_by_side {
        md.push_str(&side_by_side_table(output));
    }
    let _ = writeln!(
        md,
        "---\n\nSource: `{}` (sha256 `{}`, {})",
        output.source.path, output.source.sha256, output.source.encoding
    );
    md
}

/// The marker as Markdown writes it: `1.` and `1)` stay, bullets become `-`, and other
/// markers (`а)`) stay visible after a `-`.
fn list_marker(marker: Option<&str>) -> String {
    match marker {
        Some(m)
            if m.trim_end_matches(['.', ')'])
                .chars()
                .all(|c| c.is_ascii_digit())
                && m.len() > 1 =>
        {
            m.to_string()
        }
        Some("-" | "*" | "•" | "·" | "▪" | "●" | "◦" | "‣" | "—" | "–") | None => {
            "-".to_string()
        }
        Some(other) => format!("- {other}"),
    }
}

/// Russian sentence | English sentence, one row per sentence, the title first.
fn side_by_side_table(output: &ReleaseOutput) -> String {
    let mut table = String::from("## Side by side\n\n| Русский | English |\n|---|---|\n");
    let rows = output
        .title
        .iter()
        .chain(output.paragraphs.iter().flat_map(|p| &p.sentences));
    for Bilingual { ru, en, .. } in rows {
        let _ = writeln!(table, "| {} | {} |", table_cell(ru), table_cell(en));
    }
    table.push('\n');
    table
}

fn table_cell(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('|', "\\|")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// One line of `digest.jsonl`.
#[derive(Debug, Serialize)]
struct DigestEntry<'a> {
    id: &'a str,
    title: Option<&'a Bilingual>,
    summary: Option<Bilingual>,
    #[serde(skip_serializing_if = "Option::is_none")]
    date: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<&'a str>,
    markdown: String,
    json: String,
}

impl<'a> From<&'a ReleaseOutput> for DigestEntry<'a> {
    fn from(output: &'a ReleaseOutput) -> Self {
        DigestEntry {
            id: &output.id,
            title: output.title.as_ref(),
            summary: output
                .summary
                .as_ref()
                .map(|s| Bilingual::new(s.ru.clone(), s.en.clone())),
            date: output.date.as_deref(),
            url: output.url.as_deref(),
            markdown: format!("{}.md", output.file),
            json: format!("{}.json", output.file),
        }
    }
}

/// `digest.md`: a header with the date and count, then each release's titles and summaries
/// in both languages with a link to its page.
pub fn render_digest_markdown(outputs: &[&ReleaseOutput], date: &str) -> String {
    let mut md = format!("# Digest, {date}\n\n{} releases\n\n", outputs.len());
    for output in outputs {
        let (en, ru) = match &output.title {
            Some(t) => (t.en.as_str(), Some(t.ru.as_str())),
            None => (output.id.as_str(), None),
        };
        let _ = writeln!(md, "## {en}\n");
        if let Some(ru) = ru {
            let _ = writeln!(md, "*{ru}*\n");
        }
        if let Some(date) = &output.date {
            let _ = writeln!(md, "Date: {date}\n");
        }
        if let Some(summary) = &output.summary {
            let _ = writeln!(md, "{}\n\n{}\n", summary.en, summary.ru);
        }
        let _ = writeln!(md, "[Full text]({}.md)\n", link_target(&output.file));
    }
    md
}

/// A relative link to a file stem, with the characters Markdown links choke on escaped.
fn link_target(file: &str) -> String {
    file.replace('%', "%25")
        .replace(' ', "%20")
        .replace('(', "%28")
        .replace(')', "%29")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary_files() {
        let dir = tempfile::tempdir().unwrap();
        let out = OutputDir::create(dir.path()).unwrap();
        let path = out.path("a", "md");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn leftover_temporary_files_are_removed_on_start() {
        let dir = tempfile::tempdir().unwrap();
        let stale = dir.path().join(format!("{TEMP_PREFIX}abc"));
        std::fs::write(&stale, "half").unwrap();
        OutputDir::create(dir.path()).unwrap();
        assert!(!stale.exists());
    }

    #[test]
    fn a_file_in_the_way_makes_the_folder_unwritable() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, "x").unwrap();
        let err = OutputDir::create(&file.join("out")).unwrap_err();
        assert!(matches!(err, Error::OutputNotWritable { .. }), "{err}");
    }

    #[test]
    fn list_markers_become_markdown_markers() {
        let got: Vec<String> = [
            Some("1."),
            Some("12)"),
            Some("•"),
            Some("—"),
            Some("а)"),
            None,
        ]
        .into_iter()
        .map(list_marker)
        .collect();
        assert_eq!(got, ["1.", "12)", "-", "-", "- а)", "-"]);
    }

    #[test]
    fn table_cells_escape_pipes_and_newlines() {
        assert_eq!(table_cell("a | b\nc"), "a \\| b c");
    }
}
