//! `mtsum merge`: the shards of a sharded run put back together into one output folder.

use std::path::PathBuf;

use clap::Args;

use crate::cli::{DigestOrderFlag, GlobalArgs};
use crate::io::OutputDir;
use crate::pipeline::merge::{self, MergeOptions};
use crate::{Outcome, Result};

const EXAMPLES: &str = "\
Examples:
  mtsum merge shard-1/ shard-2/ shard-3/ --out digest/   one folder per shard
  mtsum merge out/ --out out/                            shards that shared one --out folder
  mtsum merge shards/*/ --out digest/ --digest-order date

Every shard 1..N of one run must be there (`shard 2/3 is missing` otherwise); shards of other
inputs, models or settings are refused. The result is what one `mtsum run` of the whole batch
writes: <id>.md, <id>.json, digest.md, digest.jsonl, report.json (with the shards it came from).
Exit codes: 0 all done, 1 some releases failed in a shard (listed), 2 fatal.
";

#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct MergeArgs {
    /// The shards' --out folders (or one folder they shared).
    #[arg(value_name = "DIR", required = true)]
    pub dirs: Vec<PathBuf>,
    /// Output folder (created if missing; may be the shared folder itself).
    #[arg(long, short, value_name = "DIR")]
    pub out: PathBuf,
    /// Order of the merged digest, as `run --digest-order`: `input` or `date`.
    #[arg(long, value_enum, default_value = "input", value_name = "ORDER")]
    pub digest_order: DigestOrderFlag,
}

pub fn execute(args: MergeArgs, global: &GlobalArgs) -> Result<Outcome> {
    let out = OutputDir::create(&args.out)?;
    let options = MergeOptions {
        digest_order: args.digest_order.into(),
    };
    let report = merge::merge(&args.dirs, &out, &options)?;
    for failure in &report.failures {
        eprintln!(
            "failed: {} ({}): {}; {}",
            failure.release, failure.source, failure.reason, failure.hint
        );
    }
    if !global.quiet {
        let c = report.counts;
        eprintln!(
            "merged {} shards into {}: {} inputs, {} processed, {} skipped, {} failed",
            report.merged_from.len(),
            args.out.display(),
            c.total,
            c.processed,
            c.skipped,
            c.failed
        );
    }
    Ok(report.outcome())
}
