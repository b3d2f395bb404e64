//! One module per subcommand: its flags and what it does with them.

pub mod bench;
pub mod common;
pub mod generate;
pub mod merge;
pub mod models;
pub mod run;
pub mod segment;
pub mod shard;
pub mod summarize;
pub mod tokenize;
pub mod translate;

use crate::cli::{Cli, Command, Outcome};
use crate::Result;

/// Applies the global flags that affect the whole process, then runs the subcommand.
pub fn dispatch(cli: Cli) -> Result<Outcome> {
    let global = cli.global;
    crate::progress::init(&global);
    if let Some(n) = global.threads {
        crate::models::set_threads(n)?;
    }
    match cli.command {
        Command::Run(args) => run::execute(args, &global),
        Command::Merge(args) => merge::execute(args, &global),
        Command::Translate(args) => translate::execute(args, &global),
        Command::Summarize(args) => summarize::execute(args, &global),
        Command::Models(cmd) => models::execute(cmd, &global),
        Command::Tokenize(args) => tokenize::execute(args, &global),
        Command::Segment(args) => segment::execute(args, &global),
        Command::Generate(args) => generate::execute(args, &global),
        Command::Bench(args) => bench::execute(args, &global),
    }
}
