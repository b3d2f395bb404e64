//! `mtsum segment`: shows how text is cut into blocks and sentences, so that users can debug
//! their input and we can measure the segmenter (`--format jsonl`, see
//! scripts/razdel_compare.py).

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::cli::GlobalArgs;
use crate::commands::common::read_utf8_inputs;
use crate::io::{read, Input};
use crate::text::{self, Block, BlockKind};
use crate::Outcome;
use crate::{Error, Result};

const EXAMPLES: &str = "\
Examples:
  mtsum segment release.txt                 sentences one per line, blank line between paragraphs
  mtsum segment page.html notes.md          HTML and Markdown keep their headings and list items
  echo 'В 2007 г. Ю. Шток посетил г. Лион. Встреча прошла успешно.' | mtsum segment
  mtsum segment --format jsonl < docs.txt   one JSON array of sentences per input line
";

#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct SegmentArgs {
    /// Files to read (plain text, Markdown, HTML; UTF-8). Reads stdin when none is given or
    /// for `-`.
    #[arg(value_name = "INPUT")]
    pub inputs: Vec<PathBuf>,
    /// `text`: the sentences one per line, a blank line between blocks (headings, paragraphs,
    /// list items). `jsonl`: every input line is one document, printed as a JSON array of its
    /// sentences.
    #[arg(long, value_enum, default_value_t = SegmentFormat::Text)]
    pub format: SegmentFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SegmentFormat {
    Text,
    Jsonl,
}

pub fn execute(args: SegmentArgs, _global: &GlobalArgs) -> Result<Outcome> {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut first = true;
    for (input, doc) in read_utf8_inputs(&args.inputs)? {
        let written = match args.format {
            SegmentFormat::Text => write_blocks(&mut out, &blocks_of(&input, &doc), &mut first),
            SegmentFormat::Jsonl => write_jsonl(&mut out, &doc),
        };
        if let Err(err) = written.and_then(|()| out.flush()) {
            return quiet_on_broken_pipe(err);
        }
    }
    Ok(Outcome::Done)
}

/// A closed pipe (`mtsum segment big.txt | head`) ends the output early, which is no error.
fn quiet_on_broken_pipe(err: std::io::Error) -> Result<Outcome> {
    if err.kind() == std::io::ErrorKind::BrokenPipe {
        Ok(Outcome::Done)
    } else {
        Err(Error::io("<stdout>", err))
    }
}

/// The blocks `mtsum run` would translate: the format by extension or content, HTML and
/// Markdown through their parsers, and the title as the first heading.
fn blocks_of(input: &Input, doc: &str) -> Vec<Block> {
    let body = read::body_of(read::format_of(input, doc), doc);
    let title = body.title.map(|text| Block {
        kind: BlockKind::Heading,
        marker: None,
        text,
    });
    title.into_iter().chain(body.blocks).collect()
}

/// Sentences one per line; a list item's marker stays in front of its first sentence.
fn write_blocks(out: &mut impl Write, blocks: &[Block], first: &mut bool) -> std::io::Result<()> {
    for block in blocks {
        if !std::mem::take(first) {
            writeln!(out)?;
        }
        let sentences = match block.kind {
            BlockKind::Heading => vec![block.text.clone()],
            BlockKind::Paragraph | BlockKind::ListItem => text::sentences(&block.text),
        };
        for (i, sentence) in sentences.iter().enumerate() {
            match (&block.marker, i) {
                (Some(marker), 0) => writeln!(out, "{marker} {sentence}")?,
                _ => writeln!(out, "{sentence}")?,
            }
        }
    }
    Ok(())
}

/// One JSON array of sentences per input line.
fn write_jsonl(out: &mut impl Write, doc: &str) -> std::io::Result<()> {
    for line in doc.lines() {
        let sentences = text::sentences(line);
        serde_json::to_writer(&mut *out, &sentences)?;
        writeln!(out)?;
    }
    Ok(())
}
