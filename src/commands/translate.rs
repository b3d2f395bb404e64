//! `mtsum translate`: English translations only, to stdout or an output folder.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use serde_json::json;

use super::common::{self, Models};
use super::stdout::Stdout;
use crate::cli::GlobalArgs;
use crate::generate::TokenCounts;
use crate::io::{read, BlockKind, OutputDir, ReleaseOutput};
use crate::pipeline::batch::{self, BatchOptions, POOL_SEGMENTS};
use crate::pipeline::{each_release, Pipeline, PipelineOptions};
use crate::progress::observer_for;
use crate::Outcome;
use crate::Result;

const EXAMPLES: &str = "\
Examples:
  mtsum translate release.txt                  the English translation on stdout
  mtsum translate --lines < sentences.txt      exactly one translated line per input line
  mtsum translate releases/ --out out/         <id>.md and <id>.json per release, no summaries
  mtsum translate release.html --side-by-side --out out/
";

#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct TranslateArgs {
    /// Files, folders (read recursively) or `-` for stdin; none means stdin.
    #[arg(value_name = "INPUT")]
    pub inputs: Vec<PathBuf>,
    /// Every input line is one segment, translated as is; stdout has one line per input line.
    #[arg(long, conflicts_with_all = ["out", "side_by_side"])]
    pub lines: bool,
    /// Write <id>.md, <id>.json and report.json into this folder instead of printing.
    #[arg(long, short, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Add a Russian | English sentence table to each Markdown page (with --out).
    #[arg(long, requires = "out")]
    pub side_by_side: bool,
    /// Redo releases whose outputs are up to date (with --out).
    #[arg(long, requires = "out")]
    pub force: bool,
    /// Input encoding instead of detection (utf-8, windows-1251, koi8-r, utf-16le, ...).
    #[arg(long, value_name = "LABEL")]
    pub encoding: Option<String>,
    /// A glossary (`russian<TAB>english` per line, or CSV with the header `ru,en`), repeatable
    /// (with --out): each sentence in <id>.json lists its terms and whether the translation
    /// has their English.
    #[arg(long, value_name = "FILE", requires = "out")]
    pub glossary: Vec<PathBuf>,
}

pub fn execute(args: TranslateArgs, global: &GlobalArgs) -> Result<Outcome> {
    let read_options = common::read_options(args.encoding.as_deref())?;
    let inputs = common::inputs(&args.inputs)?;
    let out = args.out.as_deref().map(OutputDir::create).transpose()?;
    let glossary = common::glossary(&args.glossary)?;
    let models = Models::load(global, true, None)?;
    let options = PipelineOptions {
        translate_body: true,
        summarize: false,
        translation: common::overrides(global),
        output_settings: json!({ "side_by_side": args.side_by_side }),
        glossary,
        ..PipelineOptions::default()
    };
    let pipeline = Pipeline::new(models.translator(), None, options)?;
    let observer = observer_for(global.verbosity());
    let started = Instant::now();
    if args.lines {
        let (lines, mut failed) = common::read_lines(&inputs, read_options, observer.as_ref());
        let mut tokens = TokenCounts::default();
        let mut stdout = Stdout::lock();
        let mut written = Ok(());
        let mut number = 0;
        // One output line per input line: a failed line is reported and left empty.
        pipeline.translate_lines(&lines, POOL_SEGMENTS, observer.as_ref(), |line, spent| {
            number += 1;
            tokens += spent.counts;
            let line = line.unwrap_or_else(|err| {
                failed += 1;
                common::line_failed(observer.as_ref(), number, &err);
                String::new()
            });
            written = stdout.line(&line);
            written.is_ok() && !stdout.closed()
        });
        written?;
        common::print_stdout_stats(global, models.load_seconds, started, tokens);
        return Ok(Outcome::of_failures(failed));
    }
    let items = read::read_all(&inputs, read_options);
    if let Some(out) = out {
        let batch_options = BatchOptions {
            side_by_side: args.side_by_side,
            force: args.force,
            load_seconds: models.load_seconds,
            ..BatchOptions::default()
        };
        let report = batch::run(&pipeline, items, &out, &batch_options, observer.as_ref())?;
        common::print_stats(global, &report.stats());
        return Ok(report.outcome());
    }
    let mut tokens = TokenCounts::default();
    let mut stdout = Stdout::lock();
    let mut written = Ok(());
    let outcome = each_release(&pipeline, items, observer.as_ref(), |output| {
        tokens += output.tokens;
        written = stdout.write(&plain_translation(output));
        written.is_ok() && !stdout.closed()
    });
    written?;
    common::print_stdout_stats(global, models.load_seconds, started, tokens);
    Ok(outcome)
}

/// The English title and paragraphs, blank-line separated, list markers kept.
fn plain_translation(output: &ReleaseOutput) -> String {
    let mut text = String::new();
    if let Some(title) = &output.title {
        text.push_str(&format!("{}\n\n", title.en));
    }
    for paragraph in &output.paragraphs {
        match (&paragraph.marker, paragraph.kind) {
            (Some(marker), BlockKind::ListItem) => {
                text.push_str(&format!("{marker} {}\n\n", paragraph.english()))
            }
            _ => text.push_str(&format!("{}\n\n", paragraph.english())),
        }
    }
    text
}
