//! `mtsum summarize`.

use clap::Args;

use crate::cli::{GlobalArgs, Outcome};
use crate::{Error, Result};

#[derive(Debug, Args)]
pub struct SummarizeArgs {}

pub fn execute(_args: SummarizeArgs, _global: &GlobalArgs) -> Result<Outcome> {
    Err(Error::Usage("`mtsum summarize` is not built yet".into()))
}
