//! `mtsum run`: translate and summarize every release into an output folder.

use std::path::PathBuf;

use clap::Args;
use serde_json::json;

use super::common::{self, Models, SummaryFlags};
use super::shard::ShardArg;
use crate::cli::{DigestOrderFlag, GlobalArgs};
use crate::io::read;
use crate::io::OutputDir;
use crate::pipeline::batch::{self, BatchOptions};
use crate::pipeline::{Pipeline, PipelineOptions};
use crate::progress::observer_for;
use crate::Outcome;
use crate::Result;

const EXAMPLES: &str = "\
Examples:
  mtsum run samples/ --out out/                 every release in a folder (recursively)
  mtsum run a.txt b.html news.jsonl --out out/  files of any accepted format
  cat release.txt | mtsum run --out out/        one release from stdin
  mtsum run old/ --encoding koi8-r --out out/   override encoding detection
  mtsum run samples/ --out out/ --dry-run       check the inputs only; no model is loaded
  mtsum run samples/ --out out/ --summary-length short --summary-sentences 2
  mtsum run samples/ --out out/ --extractive    fast summaries without a summarizer model
  mtsum run samples/ --out out/ --summarize-from en --summarizer distilbart-cnn-12-6
  mtsum run samples/ --out out/ --digest-order date
  mtsum run samples/ --out out/ --strict        exit 1 if a number went missing (CI review)
  mtsum run samples/ --out out/ --glossary terms.tsv   enforce and check glossary terms
  mtsum run samples/ --out out/ --shard 2/3     the second of three shards (CI matrix)
  mtsum run samples/ --out out/ --shard auto    Kubernetes Indexed Job or Slurm array

Outputs: out/<id>.md, out/<id>.json, out/digest.md, out/digest.jsonl, out/report.json.
A shard writes report.shard-K-of-N.json and digest.shard-K-of-N.md/.jsonl instead, so shards
may share one folder; `mtsum merge` puts them together.
A rerun skips releases whose outputs are up to date (same input, models and settings).
Exit codes: 0 all done, 1 some releases failed (the others are written) or, with --strict,
need review, 2 fatal.
";

#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct RunArgs {
    /// Files, folders (read recursively) or `-` for stdin; none means stdin.
    #[arg(value_name = "INPUT")]
    pub inputs: Vec<PathBuf>,
    /// Output folder (created if missing).
    #[arg(long, short, value_name = "DIR")]
    pub out: PathBuf,
    /// Add a two-column table (Russian sentence | English sentence) to each Markdown page.
    #[arg(long)]
    pub side_by_side: bool,
    /// Redo every release, even when its outputs are up to date.
    #[arg(long)]
    pub force: bool,
    /// Input encoding instead of detection (utf-8, windows-1251, koi8-r, utf-16le, ...).
    #[arg(long, value_name = "LABEL")]
    pub encoding: Option<String>,
    /// Translate only: no summarizer is loaded and no summaries are written.
    #[arg(long, conflicts_with = "extractive")]
    pub no_summary: bool,
    #[command(flatten)]
    pub summaries: SummaryFlags,
    /// Order of the digest: `input` (as read) or `date` (by the releases' dates, oldest
    /// first; releases without a date keep their place after the dated ones).
    #[arg(long, value_enum, default_value = "input", value_name = "ORDER")]
    pub digest_order: DigestOrderFlag,
    /// Read and check every input, write report.json, load no model, translate nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Exit 1 when any release needs review: a number or glossary term missing from a
    /// translation, a translation still degenerate after the guard's retry, a summary replaced
    /// by the lead sentences. The outputs are written all the same (`counts.needs_review` in
    /// the report).
    #[arg(long)]
    pub strict: bool,
    /// A glossary (`russian<TAB>english` per line, or CSV with the header `ru,en`); may be
    /// given more than once. A sentence whose translation lacks the English of one of its
    /// terms is translated again with the terms as constraints (constrained beam search), the
    /// summary's translation too; each sentence lists its terms and whether its translation
    /// has their English; a term the search could not place is a warning.
    #[arg(long, value_name = "FILE")]
    pub glossary: Vec<PathBuf>,
    /// Person names: `report` each with how the translation rendered it (in <id>.json), or
    /// `transliterate`: also make the translation write each as its ICAO transliteration
    /// (`И. П. Карташовым` -> `I. P. Kartashov`) where it does not, by a constrained retry.
    #[arg(long, value_enum, value_name = "MODE", default_value_t = common::NamesMode::Report)]
    pub names: common::NamesMode,
    /// Process only shard K of N (1-based) of the batch, by a stable hash of each release's
    /// name; `auto` reads JOB_COMPLETION_INDEX + MTSUM_SHARDS (Kubernetes Indexed Job),
    /// SLURM_ARRAY_TASK_ID/_MIN/_COUNT (Slurm array) or CI_NODE_INDEX/_TOTAL (GitLab).
    #[arg(long, value_name = "K/N|auto")]
    pub shard: Option<ShardArg>,
}

pub fn execute(args: RunArgs, global: &GlobalArgs) -> Result<Outcome> {
    let read_options = common::read_options(args.encoding.as_deref())?;
    let inputs = common::inputs(&args.inputs)?;
    let shard = args.shard.map(ShardArg::resolve).transpose()?;
    let out = OutputDir::create(&args.out)?;
    let glossary = common::glossary(&args.glossary)?;
    if args.dry_run {
        let items = read::read_all(&inputs, read_options);
        let observer = observer_for(global.verbosity());
        return Ok(batch::check(items, &out, shard, observer.as_ref())?.outcome());
    }
    let summarizer = (!args.no_summary && args.summaries.needs_summarizer())
        .then(|| args.summaries.default_summarizer());
    let models = Models::load_with(global, true, summarizer, args.summaries.sampling())?;
    let observer = observer_for(global.verbosity());
    let options = PipelineOptions {
        translate_body: true,
        summarize: !args.no_summary,
        translation: common::overrides(global),
        summary: args.summaries.overrides(global),
        summaries: args.summaries.options(),
        output_settings: json!({ "side_by_side": args.side_by_side }),
        glossary,
        transliterate_names: args.names == common::NamesMode::Transliterate,
    };
    let pipeline = Pipeline::new(models.translator(), models.summarizer(), options)?;
    let items = read::read_all(&inputs, read_options);
    let batch_options = BatchOptions {
        side_by_side: args.side_by_side,
        force: args.force,
        load_seconds: models.load_seconds,
        digest_order: args.digest_order.into(),
        shard,
        ..BatchOptions::default()
    };
    let report = batch::run(&pipeline, items, &out, &batch_options, observer.as_ref())?;
    common::print_stats(global, &report.stats());
    if args.strict && report.counts.needs_review > 0 {
        eprintln!(
            "mtsum: --strict: {} release(s) need review (numbers or glossary terms missing from \
             translations, guard fall-backs); see the warnings in the report in {}",
            report.counts.needs_review,
            args.out.display()
        );
        return Ok(Outcome::SomeFailed);
    }
    Ok(report.outcome())
}
