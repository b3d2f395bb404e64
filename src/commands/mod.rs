//! One module per subcommand: its flags and what it does with them, by turning them into the
//! library's plain options. Also the binary's side of things the library must not decide:
//! the allocator tuning (`allocator`) and stdout and its errors (`stdout`).

pub mod allocator;
pub mod bench;
mod bench_llm;
pub mod common;
pub mod generate;
pub mod merge;
pub mod models;
pub mod run;
pub mod segment;
pub mod shard;
pub mod stdout;
pub mod summarize;
pub mod tokenize;
pub mod translate;

use crate::cli::{Cli, Command};
use crate::Outcome;
use crate::{Error, Result};

/// Applies the global flags that affect the whole process, then runs the subcommand.
pub fn dispatch(cli: Cli) -> Result<Outcome> {
    let global = cli.global;
    allocator::one_arena();
    if let Some(n) = global.threads {
        if n == 0 {
            return Err(Error::Usage("--threads must be at least 1".into()));
        }
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
