//! `mtsum translate`.

use clap::Args;

use crate::cli::{GlobalArgs, Outcome};
use crate::{Error, Result};

#[derive(Debug, Args)]
pub struct TranslateArgs {}

pub fn execute(_args: TranslateArgs, _global: &GlobalArgs) -> Result<Outcome> {
    Err(Error::Usage("`mtsum translate` is not built yet".into()))
}
