//! A plain-text document's blocks: headings, paragraphs and list items (Markdown and HTML are
//! parsed by `io::text_blocks`).

use super::sentences::is_space;

/// What a block is in the document's structure (`"heading"`, `"paragraph"`, `"list_item"` in
/// JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockKind {
    Heading,
    Paragraph,
    ListItem,
}

/// A heading, a paragraph or a list item, with its lines joined by single spaces.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Block {
    pub kind: BlockKind,
    /// The list marker as written (`1.`, `а)`, `—`, `•`), kept out of `text` so that it is not
    /// translated and can be written back in front of the translation.
    pub marker: Option<String>,
    pub text: String,
}

impl Block {
    fn new(kind: BlockKind, text: &str) -> Self {
        Block {
            kind,
            marker: None,
            text: text.to_string(),
        }
    }
}

/// The blocks of a plain-text or Markdown document, in order.
///
/// Blank lines separate blocks. Inside a run of lines, a Markdown heading (`# ...`) and every
/// list item (`- `, `* `, `• `, `1. `, `1) `, `а) `, and a dash line after a sentence end) stand
/// alone. Other lines are joined, unless the run is written one paragraph per line (most lines
/// end a sentence, as in press releases pasted from the web): then each line that ends a
/// sentence (or a colon) ends its paragraph, and a short line that ends without punctuation
/// before a capital is a heading. A block that is one short line without final punctuation is
/// a heading too.
pub fn paragraphs(doc: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    for chunk in chunks(doc) {
        blocks.extend(chunk_blocks(&chunk));
    }
    blocks
}

/// Runs of non-blank lines, trimmed.
fn chunks(doc: &str) -> Vec<Vec<&str>> {
    let mut chunks = vec![Vec::new()];
    for line in doc.lines() {
        let line = line.trim_matches(is_space);
        match (line.is_empty(), chunks.last_mut()) {
            (true, Some(last)) if !last.is_empty() => chunks.push(Vec::new()),
            (false, Some(last)) => last.push(line),
            _ => {}
        }
    }
    chunks.retain(|c| !c.is_empty());
    chunks
}

fn chunk_blocks(lines: &[&str]) -> Vec<Block> {
    let one_per_line = is_one_paragraph_per_line(lines);
    let mut blocks = Vec::new();
    let mut open: Option<Block> = None;
    for (i, &line) in lines.iter().enumerate() {
        let previous_ends = i == 0 || ends_item_or_sentence(lines[i - 1]);
        match (standalone_block(line, previous_ends), open.as_mut()) {
            (Some(block), _) => blocks.extend(open.replace(block)),
            (None, Some(block)) => {
                block.text.push(' ');
                block.text.push_str(line);
            }
            (None, None) => open = Some(Block::new(BlockKind::Paragraph, line)),
        }
        let next = lines.get(i + 1).copied();
        let Some(block) = open.take_if(|b| closes(b, line, next, one_per_line)) else {
            continue;
        };
        let single_line = block.text == line;
        let heading = block.kind == BlockKind::Paragraph
            && single_line
            && (one_per_line || lines.len() == 1)
            && looks_like_heading(line)
            && next.is_none_or(starts_like_heading_follower);
        blocks.push(if heading {
            Block {
                kind: BlockKind::Heading,
                ..block
            }
        } else {
            block
        });
    }
    blocks.extend(open);
    blocks
}

/// Whether the open `block` ends with its last line `line`, given the line after it.
fn closes(block: &Block, line: &str, next: Option<&str>, one_per_line: bool) -> bool {
    let Some(next) = next else { return true };
    match block.kind {
        BlockKind::Heading => true,
        BlockKind::ListItem => ends_sentence_or_colon(line) || line.ends_with([';', ',']),
        BlockKind::Paragraph => one_per_line && ends_paragraph(line, next),
    }
}

/// A Markdown heading or a list item: a line that starts a block of its own.
fn standalone_block(line: &str, previous_ends: bool) -> Option<Block> {
    if let Some(text) = markdown_heading(line) {
        return Some(Block::new(BlockKind::Heading, text));
    }
    let (marker, text) = list_marker(line)?;
    let is_dash = marker.chars().all(|c| matches!(c, '-' | '—' | '–'));
    if is_dash && !previous_ends {
        return None; // a dash that continues the sentence of the line before
    }
    Some(Block {
        kind: BlockKind::ListItem,
        marker: Some(marker.to_string()),
        text: text.to_string(),
    })
}

fn markdown_heading(line: &str) -> Option<&str> {
    let hashes = line.len() - line.trim_start_matches('#').len();
    let rest = &line[hashes..];
    if !(1..=6).contains(&hashes) || !rest.starts_with(' ') {
        return None;
    }
    let text = rest.trim().trim_end_matches('#').trim_end();
    (!text.is_empty()).then_some(text)
}

/// `- `, `* `, `• `, `— `, `1. `, `12) `, `а) `: the marker and the text after it.
fn list_marker(line: &str) -> Option<(&str, &str)> {
    let (marker, rest) = line.split_once(' ')?;
    let rest = rest.trim_start();
    if rest.is_empty() {
        return None;
    }
    let bullet = matches!(
        marker,
        "-" | "*" | "•" | "·" | "▪" | "●" | "◦" | "‣" | "—" | "–"
    );
    let numbered = marker
        .strip_suffix(['.', ')'])
        .is_some_and(|n| (1..=3).contains(&n.len()) && n.chars().all(|c| c.is_ascii_digit()));
    let lettered = marker.strip_suffix(')').is_some_and(|l| {
        let mut chars = l.chars();
        chars.next().is_some_and(char::is_lowercase) && chars.next().is_none()
    });
    (bullet || numbered || lettered).then_some((marker, rest))
}

/// Whether most lines that have a successor end a sentence: the run is one paragraph a line.
fn is_one_paragraph_per_line(lines: &[&str]) -> bool {
    let inner = &lines[..lines.len().saturating_sub(1)];
    let ending = inner.iter().filter(|l| ends_sentence_or_colon(l)).count();
    !inner.is_empty() && ending * 2 >= inner.len()
}

/// Whether `line` ends its paragraph, given the line after it (one-paragraph-a-line runs).
fn ends_paragraph(line: &str, next: &str) -> bool {
    ends_sentence_or_colon(line) || (looks_like_heading(line) && starts_like_heading_follower(next))
}

/// Whether a dash at the start of the line after `line` can open a list item.
fn ends_item_or_sentence(line: &str) -> bool {
    ends_sentence_or_colon(line) || line.ends_with(';') || list_marker(line).is_some()
}

fn ends_sentence_or_colon(line: &str) -> bool {
    let line = line.trim_end_matches(['»', '"', '”', ')']);
    line.ends_with(['.', '!', '?', '…', ':'])
}

/// A short line that ends without sentence punctuation and starts like a title.
fn looks_like_heading(text: &str) -> bool {
    const MAX_HEADING_CHARS: usize = 150;
    text.chars().count() <= MAX_HEADING_CHARS
        && !text.ends_with(['.', ',', ';', ':', '…', '-', '—', '–'])
        && text.starts_with(|c: char| c.is_uppercase() || c.is_ascii_digit() || "«\"„".contains(c))
}

fn starts_like_heading_follower(next: &str) -> bool {
    next.starts_with(|c: char| !c.is_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds_and_texts(blocks: &[Block]) -> Vec<(BlockKind, &str)> {
        blocks.iter().map(|b| (b.kind, b.text.as_str())).collect()
    }

    #[test]
    fn blank_lines_separate_paragraphs_and_wrapped_lines_join() {
        let doc = "Первая строка абзаца\nпродолжается здесь.\n\nВторой абзац.";
        assert_eq!(
            kinds_and_texts(&paragraphs(doc)),
            vec![
                (
                    BlockKind::Paragraph,
                    "Первая строка абзаца продолжается здесь."
                ),
                (BlockKind::Paragraph, "Второй абзац."),
            ]
        );
    }

    #[test]
    fn lines_that_end_sentences_are_paragraphs_of_their_own() {
        let doc = "Заголовок новости\nПервый абзац.\nВторой абзац.\nСправочно:\nТретий абзац.";
        assert_eq!(
            kinds_and_texts(&paragraphs(doc)),
            vec![
                (BlockKind::Heading, "Заголовок новости"),
                (BlockKind::Paragraph, "Первый абзац."),
                (BlockKind::Paragraph, "Второй абзац."),
                (BlockKind::Paragraph, "Справочно:"),
                (BlockKind::Paragraph, "Третий абзац."),
            ]
        );
    }

    #[test]
    fn markdown_headings_and_list_items_stand_alone() {
        let doc = "# Итоги года\nВ 2024 г. задержаны:\n1. Иванов;\n2) Петров;\n- Сидоров.";
        let blocks = paragraphs(doc);
        assert_eq!(
            kinds_and_texts(&blocks),
            vec![
                (BlockKind::Heading, "Итоги года"),
                (BlockKind::Paragraph, "В 2024 г. задержаны:"),
                (BlockKind::ListItem, "Иванов;"),
                (BlockKind::ListItem, "Петров;"),
                (BlockKind::ListItem, "Сидоров."),
            ]
        );
        assert_eq!(blocks[3].marker.as_deref(), Some("2)"));
    }

    #[test]
    fn a_dash_that_continues_a_sentence_is_no_list_item() {
        let doc = "«Мы готовы к работе»,\n— сказал он.";
        assert_eq!(
            kinds_and_texts(&paragraphs(doc)),
            vec![(BlockKind::Paragraph, "«Мы готовы к работе», — сказал он.")]
        );
    }

    #[test]
    fn a_short_standalone_line_without_a_full_stop_is_a_heading() {
        let blocks = paragraphs("МВД России и Интерпол\n\nТекст новости.");
        assert_eq!(blocks[0].kind, BlockKind::Heading);
        assert_eq!(blocks[1].kind, BlockKind::Paragraph);
    }
}
