//! `mtsum summarize`: summaries only, on stdout.

use std::path::PathBuf;
use std::time::Instant;

use clap::{Args, ValueEnum};

use super::common::{self, Models, SummaryFlags};
use super::stdout::Stdout;
use crate::cli::GlobalArgs;
use crate::generate::TokenCounts;
use crate::io::{read, ReleaseOutput};
use crate::pipeline::batch;
use crate::pipeline::{each_release, Pipeline, PipelineOptions};
use crate::progress::{observer_for, Silent};
use crate::summary::SummarySide;
use crate::Outcome;
use crate::Result;

const EXAMPLES: &str = "\
Examples:
  mtsum summarize release.txt                 Russian and English summary on stdout
  mtsum summarize --lang ru releases/         Russian summaries only (no translator loaded)
  mtsum summarize --lines < docs.txt          one English summary line per input line
  mtsum summarize --lines --lang both < docs.txt   `ru<TAB>en` per input line
  mtsum summarize --extractive release.txt    lead and key sentences, no summarizer model
  mtsum summarize --summary-length short --summary-sentences 1 release.txt
";

/// Which language(s) to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Lang {
    Ru,
    En,
    Both,
}

#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct SummarizeArgs {
    /// Files, folders (read recursively) or `-` for stdin; none means stdin.
    #[arg(value_name = "INPUT")]
    pub inputs: Vec<PathBuf>,
    /// Every input line is one document; stdout has one summary line per input line.
    #[arg(long)]
    pub lines: bool,
    /// Summary language: ru (the summarizer's own output), en (translated), or both.
    #[arg(long, value_enum, default_value = "both")]
    pub lang: Lang,
    /// Input encoding instead of detection (utf-8, windows-1251, koi8-r, utf-16le, ...).
    #[arg(long, value_name = "LABEL")]
    pub encoding: Option<String>,
    /// A glossary (`russian<TAB>english` per line, or CSV with the header `ru,en`), repeatable:
    /// an English summary whose translation lacks the English of one of its terms is
    /// translated again with the terms as constraints (constrained beam search).
    #[arg(long, value_name = "FILE")]
    pub glossary: Vec<PathBuf>,
    #[command(flatten)]
    pub summaries: SummaryFlags,
}

pub fn execute(args: SummarizeArgs, global: &GlobalArgs) -> Result<Outcome> {
    let read_options = common::read_options(args.encoding.as_deref())?;
    let inputs = common::inputs(&args.inputs)?;
    let glossary = common::glossary(&args.glossary)?;
    let translator = args.lang != Lang::Ru || args.summaries.side() == SummarySide::En;
    let summarizer = args
        .summaries
        .needs_summarizer()
        .then(|| args.summaries.default_summarizer());
    let models = Models::load_with(global, translator, summarizer, args.summaries.sampling())?;
    let options = PipelineOptions {
        summarize: true,
        summary: args.summaries.overrides(global),
        summaries: args.summaries.options(),
        translation: common::overrides(global),
        glossary,
        ..PipelineOptions::default()
    };
    let pipeline = Pipeline::new(models.translator(), models.summarizer(), options)?;
    let observer = observer_for(global.verbosity());
    let started = Instant::now();
    let mut tokens = TokenCounts::default();
    let mut stdout = Stdout::lock();
    let mut written = Ok(());
    let outcome = if args.lines {
        let (lines, mut failed) = common::read_lines(&inputs, read_options, observer.as_ref());
        let mut number = 0;
        // One output line per input line: a blank line gives an empty line, and a failed one
        // is reported and left empty.
        pipeline.summarize_lines(&lines, batch::POOL_SEGMENTS, &Silent, |summary, spent| {
            number += 1;
            tokens += spent.counts;
            let line = match summary {
                Ok(Some(s)) => pick(args.lang, &s.ru, &s.en, "\t"),
                Ok(None) => String::new(),
                Err(err) => {
                    failed += 1;
                    common::line_failed(observer.as_ref(), number, &err);
                    String::new()
                }
            };
            written = stdout.line(&line);
            written.is_ok() && !stdout.closed()
        });
        Outcome::of_failures(failed)
    } else {
        let items = read::read_all(&inputs, read_options);
        each_release(&pipeline, items, observer.as_ref(), |output| {
            tokens += output.tokens;
            written = stdout.write(&summary_block(args.lang, output));
            written.is_ok() && !stdout.closed()
        })
    };
    written?;
    common::print_stdout_stats(global, models.load_seconds, started, tokens);
    Ok(outcome)
}

fn pick(lang: Lang, ru: &str, en: &str, separator: &str) -> String {
    match lang {
        Lang::Ru => ru.to_string(),
        Lang::En => en.to_string(),
        Lang::Both => format!("{ru}{separator}{en}"),
    }
}

/// `## <id>` then the summary in the chosen language(s).
fn summary_block(lang: Lang, output: &ReleaseOutput) -> String {
    let summary = output.summary.clone().unwrap_or_default();
    format!(
        "## {}\n\n{}\n\n",
        output.id,
        pick(lang, &summary.ru, &summary.en, "\n\n")
    )
}
