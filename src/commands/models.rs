//! `mtsum models fetch|list|verify`.

use clap::Subcommand;

use crate::cli::{GlobalArgs, Outcome};
use crate::{Error, Result};

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// Download the default models (or the named ones) into the cache.
    Fetch { models: Vec<String> },
    /// List the models in the cache.
    List,
    /// Check cached files against the hub's checksums.
    Verify {
        models: Vec<String>,
        #[arg(long)]
        repair: bool,
    },
}

pub fn execute(_cmd: ModelsCommand, _global: &GlobalArgs) -> Result<Outcome> {
    Err(Error::Usage("`mtsum models` is not built yet".into()))
}
