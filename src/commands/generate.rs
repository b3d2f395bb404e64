//! `mtsum generate`.

use clap::Args;

use crate::cli::{GlobalArgs, Outcome};
use crate::{Error, Result};

#[derive(Debug, Args)]
pub struct GenerateArgs {}

pub fn execute(_args: GenerateArgs, _global: &GlobalArgs) -> Result<Outcome> {
    Err(Error::Usage("`mtsum generate` is not built yet".into()))
}
