//! `mtsum tokenize`.

use clap::Args;

use crate::cli::{GlobalArgs, Outcome};
use crate::{Error, Result};

#[derive(Debug, Args)]
pub struct TokenizeArgs {}

pub fn execute(_args: TokenizeArgs, _global: &GlobalArgs) -> Result<Outcome> {
    Err(Error::Usage("`mtsum tokenize` is not built yet".into()))
}
