//! `mtsum run`.

use clap::Args;

use crate::cli::{GlobalArgs, Outcome};
use crate::{Error, Result};

#[derive(Debug, Args)]
pub struct RunArgs {}

pub fn execute(_args: RunArgs, _global: &GlobalArgs) -> Result<Outcome> {
    Err(Error::Usage("`mtsum run` is not built yet".into()))
}
